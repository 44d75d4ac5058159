"""Training stages on tiny real models (CPU): checkpoints, recorded losses, resume, cache, NaN, SFT fallback.

Recorded losses: ``RECORDED_LOSSES`` holds the first losses of each stage on the fixed corpus
in ``tests/fixtures_training.py`` (seed 0, the pinned versions in constraints.txt, CPU,
float32). Re-record after an intended change with
``HARNESS_RECORD_LOSSES=1 .venv/bin/python -m pytest tests/test_training.py -k recorded -s``
and paste the printed dict.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_training import PLAIN_TEMPLATE, fixed_files, world_files  # noqa: E402

from harness.config import FreshModel, ModelSpec, load_config, stage_config, world_config  # noqa: E402
from harness.core import artifacts  # noqa: E402
from harness.core.artifacts import Layout  # noqa: E402
from training import STAGES  # noqa: E402
from training.stage import StageInputs  # noqa: E402

TINY = ModelSpec(fresh=FreshModel(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_position_embeddings=128))
FEW = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 4}

# First 3 logged losses per stage on the fixed corpus; tolerance: absolute 2e-3. Reruns here
# agree exactly (also with 1 vs 2 torch threads); the margin covers other CPUs' BLAS summation orders.
LOSS_TOL = 2e-3
RECORDED_LOSSES: dict[str, list[float]] = {
    "pretrain": [5.987009, 6.000779, 5.685573],
    "sft": [5.826664, 5.881505, 5.526491],
    "reward": [0.667269, 0.690003, 0.606574],
    "dpo": [6.538053, 6.542599, 6.457282],
}


def execute(*args, **kwargs):
    from training.runtime import execute as _execute

    return _execute(*args, **kwargs)


def _chain(files: dict[str, Path], layout: Layout, options: dict[str, dict] | None = None) -> dict:
    """init -> pretrain -> sft -> (reward, dpo), each a few steps; returns name -> StageResult."""
    options = options or {}
    res = {"init": execute("init", "init", TINY, StageInputs(parent=files["tokenizer"], data=None), layout)}
    plan = [("pretrain", "init", "pretrain"), ("sft", "pretrain", "sft"), ("reward", "sft", "preferences"), ("dpo", "sft", "preferences")]
    for kind, parent, data in plan:
        config = {**FEW, **({"max_length": 64} if kind == "pretrain" else {}), **options.get(kind, {})}
        res[kind] = execute(kind, kind, config, StageInputs(parent=res[parent].path, data=files[data]), layout)
    return res


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    files, source = world_files(root / "world")
    layout = Layout.of(root / "out")
    start = time.perf_counter()
    return {"files": files, "source": source, "layout": layout, "res": _chain(files, layout), "s": time.perf_counter() - start}


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed")
    return {"files": fixed_files(root / "data"), "root": root}


# --------------------------------------------------------------------------- every stage


def test_every_stage_writes_a_complete_loadable_checkpoint(smoke) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("init", "pretrain", "sft", "dpo"):
        path = smoke["res"][name].path
        assert artifacts.is_complete(path), name
        names = {p.name for p in path.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names, names
        assert not names & {"training_args.bin", "pytorch_model.bin", artifacts.TRAINER_STATE_DIR}, (name, names)
        tok = AutoTokenizer.from_pretrained(path)
        assert "{% generation %}" in tok.chat_template, name  # the world's chat template travels along
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        prompt = tok.apply_chat_template([{"role": "user", "content": "Where is it?"}], add_generation_prompt=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        assert out.shape[1] > prompt["input_ids"].shape[1], name
    manifest = smoke["res"]["sft"].manifest
    assert manifest.status == "complete" and manifest.kind == "sft"
    assert manifest.inputs["parent"].content_hash == smoke["res"]["pretrain"].manifest.content_hash
    assert manifest.metrics["loss_mode"] == "assistant_only"
    for key in ("wall_s", "tokens_per_s", "peak_memory_mb", "torch_threads", "train_tokens"):
        assert manifest.metrics[key], key
    assert [e["step"] for e in manifest.log_history if "loss" in e] == [1, 2, 3, 4]


def test_init_builds_a_fresh_llama_from_the_tokenizer(smoke) -> None:
    from transformers import AutoConfig, AutoTokenizer

    path = smoke["res"]["init"].path
    config, tok = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert config.model_type == "llama" and config.head_dim >= 32
    assert config.vocab_size == len(tok)
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id)
    assert smoke["res"]["init"].manifest.inputs["parent"].stage == "external"


def test_reward_stage_scores_and_reports_heldout_metrics(smoke) -> None:
    from harness.core.reward import RewardScorer

    res = smoke["res"]["reward"]
    metrics = res.manifest.metrics
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0 and metrics["heldout_pairs"] >= 1
    assert metrics["reward_length_corr"] is None or -1.0 <= metrics["reward_length_corr"] <= 1.0
    scorer = RewardScorer(res.path)
    scores = scorer.score([[{"role": "user", "content": "Hello?"}]] * 2, ["Hi.", "Hello there, friend."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_dpo_records_preference_metrics(smoke) -> None:
    metrics = smoke["res"]["dpo"].manifest.metrics
    assert "final_rewards_accuracies" in metrics and metrics["global_step"] == 4


def test_init_copies_a_user_model_folder_and_refuses_pickles(smoke, tmp_path) -> None:
    import shutil

    user = tmp_path / "user-model"
    shutil.copytree(smoke["res"]["init"].path, user, ignore=shutil.ignore_patterns("manifest.json", "COMPLETE"))
    layout = Layout.of(tmp_path / "out")
    res = execute("init", "init", ModelSpec(path=str(user)), StageInputs(parent=user, data=None), layout)
    assert res.manifest.metrics["mode"] == "path" and res.manifest.metrics["parameters"] > 0
    assert (res.path / "model.safetensors").read_bytes() == (user / "model.safetensors").read_bytes()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(Exception, match="no \\*.safetensors weights"):
        execute("init", "init", ModelSpec(path=str(pickled)), StageInputs(parent=pickled, data=None), layout)


# --------------------------------------------------------------------------- recorded losses


def test_recorded_losses(fixed, tmp_path) -> None:
    res = _chain(fixed["files"], Layout.of(tmp_path / "out"))
    got = {k: [round(x, 6) for x in res[k].manifest.metrics["first_losses"][:3]] for k in ("pretrain", "sft", "reward", "dpo")}
    if os.environ.get("HARNESS_RECORD_LOSSES"):
        print("\nRECORDED_LOSSES =", json.dumps(got))
        pytest.skip("recorded; paste the dict above into RECORDED_LOSSES")
    assert RECORDED_LOSSES, "no recorded losses yet; see the module docstring"
    for stage, expected in RECORDED_LOSSES.items():
        assert got[stage] == pytest.approx(expected, abs=LOSS_TOL), stage


# --------------------------------------------------------------------------- cache


def test_identical_stage_is_skipped_and_changes_retrain_downstream(fixed, tmp_path) -> None:
    files, layout = fixed["files"], Layout.of(tmp_path / "out")
    first = _chain(files, layout)
    manifest_bytes = (first["sft"].path / artifacts.MANIFEST).read_bytes()
    start = time.perf_counter()
    again = _chain(files, layout)
    assert all(r.skipped for r in again.values()), {k: r.skipped for k, r in again.items()}
    assert time.perf_counter() - start < 2.0  # no model is even loaded
    assert (first["sft"].path / artifacts.MANIFEST).read_bytes() == manifest_bytes
    # how often a stage logs or saves trainer state does not change what it produces: still cached
    assert all(r.skipped for r in _chain(files, layout, {"sft": {"save_steps": 3, "logging_steps": 2}}).values())
    # a changed stage config retrains that stage only ...
    changed = _chain(files, layout, {"dpo": {"beta": 0.2}})
    assert {k for k, r in changed.items() if not r.skipped} == {"dpo"}
    assert changed["dpo"].path != first["dpo"].path and artifacts.is_complete(first["dpo"].path)
    # ... and a changed input checkpoint retrains everything that reads it
    upstream = _chain(files, layout, {"pretrain": {"learning_rate": 5e-4}})
    assert {k for k, r in upstream.items() if not r.skipped} == {"pretrain", "sft", "reward", "dpo"}
    assert upstream["sft"].manifest.inputs["parent"].content_hash == upstream["pretrain"].manifest.content_hash


def test_incomplete_input_is_refused(fixed, tmp_path) -> None:
    layout = Layout.of(tmp_path / "out")
    init = execute("init", "init", TINY, StageInputs(parent=fixed["files"]["tokenizer"], data=None), layout)
    (init.path / artifacts.COMPLETE_MARKER).unlink()
    with pytest.raises(RuntimeError, match="not complete"):
        execute("pretrain", "pretrain", FEW, StageInputs(parent=init.path, data=fixed["files"]["pretrain"]), layout)


def test_bad_data_row_names_file_and_row(fixed, tmp_path) -> None:
    from training.runtime import StageFailed

    layout = Layout.of(tmp_path / "out")
    init = execute("init", "init", TINY, StageInputs(parent=fixed["files"]["tokenizer"], data=None), layout)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"msgs": []}\n')
    with pytest.raises(StageFailed, match=r"bad.jsonl: row 2: missing key 'messages'"):
        execute("sft", "sft", FEW, StageInputs(parent=init.path, data=bad), layout)


# --------------------------------------------------------------------------- NaN


def test_nan_loss_aborts_within_ten_steps_and_marks_failed(fixed, tmp_path) -> None:
    from training.runtime import StageFailed

    layout = Layout.of(tmp_path / "out")
    init = execute("init", "init", TINY, StageInputs(parent=fixed["files"]["tokenizer"], data=None), layout)
    config = {"max_steps": 50, "learning_rate": 1e30, "max_length": 64, "per_device_train_batch_size": 4, "save_steps": 100}
    start = time.perf_counter()
    with pytest.raises(StageFailed, match="non-finite") as info:
        execute("pretrain", "pretrain", config, StageInputs(parent=init.path, data=fixed["files"]["pretrain"]), layout)
    step = int(str(info.value).split(" at step ")[1].split(";")[0])
    assert step <= 10, str(info.value)
    ckpt = next(layout.output_dir.glob("checkpoints/pretrain-*"))
    assert info.value.path == ckpt and info.value.manifest.status == "failed"
    manifest = artifacts.read_manifest(ckpt)
    assert manifest.status == "failed" and "non-finite" in (manifest.error or "")
    assert not artifacts.is_complete(ckpt)
    assert time.perf_counter() - start < 30


# --------------------------------------------------------------------------- SFT fallback


def test_sft_falls_back_to_completion_only_without_generation_markers(tmp_path, caplog) -> None:
    import logging

    from training.sft import build_trainer

    files = fixed_files(tmp_path / "data", chat_template=PLAIN_TEMPLATE)
    layout = Layout.of(tmp_path / "out")
    init = execute("init", "init", TINY, StageInputs(parent=files["tokenizer"], data=None), layout)
    inputs = StageInputs(parent=init.path, data=files["sft"], state_dir=tmp_path / "state")
    config = STAGES.get("sft").Config.model_validate(FEW)
    with caplog.at_level(logging.WARNING, logger="training.sft"):
        trainer = build_trainer(config, inputs, tmp_path / "unused")
    assert trainer.loss_mode == "completion_only_fallback"
    assert sum("falling back to prompt-completion" in r.getMessage() for r in caplog.records) == 1
    tok = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        trained = tok.decode([int(i) for i, lab in zip(ids, labels, strict=True) if lab != -100])
        full = tok.decode([int(i) for i in ids if i != tok.pad_token_id])
        assert trained and "<|user|>" not in trained and trained.endswith("<|end|>"), trained
        assert full.endswith(trained) and len(trained) < len(full)
    res = execute("sft", "sft", FEW, StageInputs(parent=init.path, data=files["sft"]), layout)
    assert res.manifest.metrics["loss_mode"] == "completion_only_fallback"


def test_sft_trains_on_assistant_tokens_only_with_generation_markers(smoke, tmp_path) -> None:
    from training.sft import build_trainer

    files = smoke["files"]
    inputs = StageInputs(parent=smoke["res"]["pretrain"].path, data=files["sft"], state_dir=tmp_path / "state")
    trainer = build_trainer(STAGES.get("sft").Config.model_validate(FEW), inputs, tmp_path / "unused")
    assert trainer.loss_mode == "assistant_only"
    tok = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        trained = tok.decode([int(i) for i, lab in zip(ids, labels, strict=True) if lab != -100])
        assert trained.endswith("<|end|>") and "<|user|>" not in trained and "<|assistant|>" not in trained, trained


# --------------------------------------------------------------------------- resume

CHILD = """
import sys
from pathlib import Path
from harness.core.artifacts import Layout
from training.runtime import execute
from training.stage import StageInputs
execute("pretrain", "pretrain", {config!r}, StageInputs(parent=Path({parent!r}), data=Path({data!r})), Layout.of({out!r}))
"""


def test_sigkilled_stage_resumes_to_the_same_weights(fixed, tmp_path) -> None:
    """Killed right after its first trainer checkpoint, rerun: identical weights (CPU, float32, seed 0).

    The Trainer restores model, optimizer, scheduler and RNG states and skips the batches
    already seen, so on one machine the resumed run is bitwise identical; we allow 1e-6.
    """
    from safetensors.torch import load_file

    config = {"max_steps": 80, "save_steps": 5, "max_length": 64, "per_device_train_batch_size": 4}
    files = fixed["files"]
    runs = {}
    for name in ("killed", "straight"):
        layout = Layout.of(tmp_path / name)
        init = execute("init", "init", TINY, StageInputs(parent=files["tokenizer"], data=None), layout)
        runs[name] = (layout, init.path)
    layout, parent = runs["killed"]
    code = CHILD.format(config=config, parent=str(parent), data=str(files["pretrain"]), out=str(layout.output_dir))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(layout.output_dir.glob("checkpoints/pretrain-*/trainer_state/checkpoint-*/trainer_state.json")):
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no trainer checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    ckpt = next(layout.output_dir.glob("checkpoints/pretrain-*"))
    assert artifacts.read_manifest(ckpt).status == "started" and not artifacts.is_complete(ckpt)

    resumed = execute("pretrain", "pretrain", config, StageInputs(parent=parent, data=files["pretrain"]), layout)
    assert resumed.path == ckpt and resumed.manifest.metrics["resumed_from"]
    assert resumed.manifest.metrics["global_step"] == 80
    layout_s, parent_s = runs["straight"]
    straight = execute("pretrain", "pretrain", config, StageInputs(parent=parent_s, data=files["pretrain"]), layout_s)
    assert straight.manifest.content_hash == resumed.manifest.content_hash
    a, b = load_file(resumed.path / "model.safetensors"), load_file(straight.path / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst


# --------------------------------------------------------------------------- configs


def test_packaged_configs_validate_every_stage() -> None:
    for name in ("smoke", "default"):
        cfg = load_config(name)
        mine = [s for s in cfg.stages if s.kind in ("pretrain", "sft", "reward", "dpo")]
        assert {s.kind for s in mine} == {"pretrain", "sft", "reward", "dpo"}
        for spec in mine:
            stage_config(spec)


def test_stage_configs_reject_bad_options() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="one weight per loss type"):
        STAGES.get("dpo").Config.model_validate({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]})
    with pytest.raises(ValidationError, match="extra"):
        STAGES.get("sft").Config.model_validate({"epochs": 3})
    with pytest.raises(ValidationError):
        STAGES.get("pretrain").Config.model_validate({"logging_steps": 50})
    for kind in ("init", "pretrain", "sft", "reward", "dpo"):
        fields = STAGES.get(kind).Config.model_fields
        assert all(f.description for f in fields.values()), kind


# --------------------------------------------------------------------------- the default world (slow)


@pytest.mark.slow
def test_default_world_reward_model_learns_preferences_and_the_length_bias(tmp_path) -> None:
    """pretrain -> sft -> reward with the packaged `default` budgets (~5 min on 2 cores).

    Measured in the pipeline with the same budgets (world v7, seed 0, 20/16/8 epochs): held-out
    accuracy 0.80 on 60 pairs, reward-length r = 0.37 (v3 world, 12/10/2 epochs: 0.90 and 0.60:
    its reward model paid for one filler phrase, which is what the v7 annotator removes).
    """
    from harness.world import generate

    cfg = load_config("default")
    generate(world_config(cfg.world), tmp_path / "world")
    layout, world = Layout.of(tmp_path / "out"), tmp_path / "world"
    files = {"pretrain": world / "pretrain.jsonl", "sft": world / "sft.jsonl", "preferences": world / "preferences.jsonl"}
    done = {"init": execute("init", "init", cfg.model, StageInputs(parent=world / "tokenizer", data=None), layout)}
    for spec in cfg.stages:
        if spec.kind in ("pretrain", "sft", "reward"):
            data = files[STAGES.get(spec.kind).data_key]
            done[spec.name] = execute(spec.kind, spec.name, stage_config(spec), StageInputs(parent=done[spec.from_].path, data=data), layout)
    assert done["pretrain"].manifest.metrics["final_loss"] < 1.0
    metrics = done["reward"].manifest.metrics
    print({k: metrics[k] for k in ("heldout_pairs", "heldout_accuracy", "reward_length_corr", "heldout_longer_preferred")})
    assert metrics["heldout_accuracy"] >= 0.75, metrics
    assert metrics["reward_length_corr"] >= 0.3, metrics


def test_cpu_threads_come_from_the_environment_or_the_cores_never_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread count changes the weights (floats summed in another order), so it must not depend on
    how busy the machine happens to be: the same config and seed train the same checkpoint."""
    from training.process import THREADS_ENV, cpu_threads

    monkeypatch.setenv(THREADS_ENV, "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads() == (3, f"${THREADS_ENV}")
    monkeypatch.delenv(THREADS_ENV)
    assert cpu_threads() == (1, "$OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(4)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    answers = set()
    for load in (0.0, 3.5, 40.0):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        answers.add(cpu_threads())
    assert answers == {(2, "4 usable cores / 2 local process(es)")}
