"""Shared fixtures. One smoke pipeline run per test session, reused by every integration test."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def smoke_overrides(output_dir: Path) -> list[str]:
    return [f"output_dir={output_dir}", "backend.name=hf", "backend.decoding.max_new_tokens=24"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory):
    """A complete `harness run smoke` (real tiny models, every stage and suite): (config, RunResult)."""
    from rich.console import Console

    from harness.config import load_config
    from harness.pipeline import Pipeline

    out = tmp_path_factory.mktemp("smoke-run")
    cfg = load_config("smoke", smoke_overrides(out))
    result = Pipeline(cfg, Console(quiet=True)).run()
    return cfg, result


@pytest.fixture
def smoke_copy(smoke_run, tmp_path: Path) -> Path:
    """A private copy of the smoke run's output_dir, for tests that add runs or break things."""
    cfg, _ = smoke_run
    dest = tmp_path / "out"
    shutil.copytree(cfg.output_dir, dest)
    return dest


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test starts without accelerate's process-wide state, as a fresh process would: a trainer one
    test builds directly (TRL, ``use_cpu=True``) must not decide the options of the Accelerator another
    test's PPO makes ("AcceleratorState has already been initialized")."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)
