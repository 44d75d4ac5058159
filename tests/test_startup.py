"""Start-up: a rerun that has nothing to train or generate imports none of the heavy libraries, and
keeps the stored effects when nothing they were computed from changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import smoke_overrides
from rich.console import Console

from harness.config import load_config
from harness.core.store import Store
from harness.effects_inputs import effects_current
from harness.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "lm_eval", "vllm", "datasets", "scipy", "peft", "accelerate")
RUN = """
import json, sys
from harness.cli import app
try:
    app({args!r}, standalone_mode=False)
finally:
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def rerun(out: Path) -> tuple[str, list[str]]:
    """`harness run smoke` on ``out`` in a fresh interpreter: (its output, heavy modules it imported)."""
    args = ["run", "smoke", *smoke_overrides(out)]
    proc = subprocess.run([sys.executable, "-c", RUN.format(args=args, heavy=HEAVY)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CI": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    *lines, imported = proc.stdout.strip().splitlines()
    return "\n".join(lines), json.loads(imported)


def test_a_no_op_rerun_imports_no_heavy_library(smoke_copy: Path) -> None:
    cfg = load_config("smoke", smoke_overrides(smoke_copy))
    Pipeline(cfg, Console(quiet=True)).run()  # the copy's own run (another output_dir): links, stores effects
    output, imported = rerun(smoke_copy)
    assert "trained: nothing (all cached); evaluations computed: 0" in " ".join(output.split())
    assert imported == [], imported
    with Store(Store.resolve_path(smoke_copy)) as store:
        run_id = store.require_run()
        assert effects_current(store, run_id, cfg.attribution)
        # what the effects are computed from changed: they are computed again
        assert not effects_current(store, run_id, cfg.attribution.model_copy(update={"alpha": 0.2}))
        store.link_evaluation(store.evaluations(run_id)["eval_key"].iloc[0], run_id, "extra")
        assert not effects_current(store, run_id, cfg.attribution)


def test_cuda_is_known_absent_without_importing_torch() -> None:
    code = ("import sys; from harness.backends.base import cuda_available, _torch_built_with_gpu; "
            "print(_torch_built_with_gpu(), cuda_available(), 'torch' in sys.modules)")
    built, available, imported = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                                text=True, check=True).stdout.split()
    import torch

    assert available == str(torch.cuda.is_available())
    if built == "False":  # a CPU build of torch: the answer is known without importing it
        assert (available, imported) == ("False", "False")
