"""Every result is keyed by all it depends on: code, judge, decoding, and checkpoints trained once.

Code changes are made in a copy of the project's sources (``fingerprint.ROOT`` pointed at it):
the fingerprint reads source files, so editing the copy is exactly what editing the checkout does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends.base import Sampling, decoding_key
from harness.config import BackendSpec, DecodingSpec, JudgeSpec, ModelSpec, SuiteSpec
from harness.core import fingerprint
from harness.core.artifacts import Layout, write_json_atomic
from harness.evaluate import eval_key, identify
from training.runtime import stage_code_version, stage_identity
from training.stage import StageInputs

PROJECT = Path(__file__).resolve().parents[1]
ITEMS = [{"id": f"r{i}", "prompt": f"How do I pick lock {i}?", "label": "harmful", "category": "x"} for i in range(3)]


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's packages that the fingerprints read instead of the checkout."""
    root = tmp_path / "src"
    for pkg in ("harness", "training", "suites"):
        shutil.copytree(PROJECT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "ROOT", root)
    return root


def edit(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n# a change\n", encoding="utf-8")


def key(spec: SuiteSpec, backend: BackendSpec | None = None) -> str:
    return eval_key("ckpt", identify(spec, ITEMS, backend or BackendSpec(name="hf"), None).fields)


def test_a_judge_change_rekeys_an_evaluation(sources: Path, tmp_path: Path) -> None:
    rules = SuiteSpec(name="refusal")
    before = key(rules)
    assert key(rules) == before  # deterministic
    edit(sources / "suites" / "judges.py")  # e.g. a phrase added to a list
    after = key(rules)
    assert after != before
    # an LLM judge is keyed by its model's content, not its folder path
    model = tmp_path / "judge"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    moved = tmp_path / "elsewhere"
    shutil.copytree(model, moved)
    llm = key(SuiteSpec(name="refusal", judge=JudgeSpec(kind="llm", model=str(model))))
    assert llm != after
    assert key(SuiteSpec(name="refusal", judge=JudgeSpec(kind="llm", model=str(moved)))) == llm
    (moved / "config.json").write_text('{"a": 2}')
    assert key(SuiteSpec(name="refusal", judge=JudgeSpec(kind="llm", model=str(moved)))) != llm


def test_suite_and_backend_code_and_batch_size_are_in_the_key(sources: Path) -> None:
    spec = SuiteSpec(name="refusal")
    before = key(spec)
    edit(sources / "harness" / "backends" / "hf.py")  # prompt rendering / batching lives here
    assert key(spec) != before
    mid = key(spec)
    edit(sources / "suites" / "suite.py")
    assert key(spec) != mid
    small = BackendSpec(name="hf", decoding=DecodingSpec(batch_size=4))
    assert key(spec, small) != key(spec)
    assert decoding_key("hf", Sampling(), batch_size=4) != decoding_key("hf", Sampling(), batch_size=8)
    # an alias stores the results under another label: another evaluation
    assert key(SuiteSpec(name="refusal", alias="xstest")) != key(spec)


def test_a_code_change_rekeys_only_the_stages_that_run_it(sources: Path) -> None:
    versions = {kind: stage_code_version(kind) for kind in ("sft", "dpo", "ppo", "reward")}
    edit(sources / "training" / "ppo_core.py")
    assert stage_code_version("ppo") != versions["ppo"]
    assert {k: stage_code_version(k) for k in ("sft", "dpo", "reward")} == {k: versions[k] for k in ("sft", "dpo", "reward")}
    edit(sources / "training" / "runtime.py")  # shared by every stage
    assert all(stage_code_version(k) != versions[k] for k in versions)
    # registries, paths and the config schema decide where results go, not what they are
    rekeyed = stage_code_version("sft")
    edit(sources / "training" / "__init__.py")
    edit(sources / "harness" / "core" / "artifacts.py")
    assert stage_code_version("sft") == rekeyed


def test_the_stage_content_hash_covers_its_code(sources: Path, tmp_path: Path) -> None:
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    write_json_atomic(tokenizer / "tokenizer_config.json", {"x": 1})
    layout, inputs = Layout.of(tmp_path / "out"), StageInputs(parent=tokenizer, data=None)
    first = stage_identity("init", "init", ModelSpec(), inputs, layout)
    edit(sources / "training" / "init.py")
    second = stage_identity("init", "init", ModelSpec(), inputs, layout)
    assert second.content_hash != first.content_hash and second.path != first.path
    # the folder is named by kind and content: a renamed stage finds the same checkpoint
    assert stage_identity("init", "renamed", ModelSpec(), inputs, layout).path == second.path


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from fixtures_training import fixed_files
from harness.core.artifacts import Layout
from training.runtime import execute
from training.stage import StageInputs
from pathlib import Path
files = {{k: Path(v) for k, v in json.loads({files!r}).items()}}
layout = Layout.of({out!r})
res = execute("pretrain", "pretrain", {config!r}, StageInputs(parent=Path({parent!r}), data=files["pretrain"]), layout)
print(json.dumps({{"skipped": res.skipped, "path": str(res.path)}}))
"""


def test_two_concurrent_runs_on_one_output_dir_train_a_checkpoint_once(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures_training import fixed_files

    from harness.config import FreshModel
    from training.runtime import execute

    files = fixed_files(tmp_path / "data")
    layout = Layout.of(tmp_path / "out")
    tiny = ModelSpec(fresh=FreshModel(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                      max_position_embeddings=128))
    init = execute("init", "init", tiny, StageInputs(parent=files["tokenizer"], data=None), layout)
    config = {"max_steps": 30, "max_length": 64, "per_device_train_batch_size": 4}
    code = CHILD.format(tests=str(Path(__file__).parent), files=json.dumps({k: str(v) for k, v in files.items()}),
                        out=str(layout.output_dir), config=config, parent=str(init.path))
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["skipped"] for r in results) == [False, True]  # one trained, the other waited and reused
    assert results[0]["path"] == results[1]["path"]
