"""A user's own model and data, end to end: an ``init`` from a model folder with a chat template
is a chat checkpoint (every behaviour suite runs on it, and the first stage is measured against
it), on the tiny model of ``tests/fixtures_own_model.py``; ``examples/own-model.yaml`` validates as
shipped and runs with tiny local files in place of its paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures_own_model import ANSWER, hh_rows, make_model, truthfulqa_csv, write_jsonl, xstest_csv

from harness.backends.hf import HFBackend
from harness.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-model.yaml"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("own") / "model")


def test_refusal_runs_on_an_init_with_a_chat_template_but_not_on_a_fresh_world_init(model, tmp_path) -> None:
    from harness.config import DecodingSpec, SuiteSpec
    from harness.core.artifacts import Manifest, mark_complete
    from harness.evaluate import evaluate
    from suites import SUITES
    from suites.suite import counts_chat_template, is_chat_checkpoint

    refusal = SUITES.get("refusal")
    assert refusal.applies_to("init", True) and not refusal.applies_to("init", False)
    assert is_chat_checkpoint("init", True) and not is_chat_checkpoint("reward", True)
    items = {"refusal": xstest_csv(tmp_path / "xstest.csv")}
    [result] = evaluate(model, "init", [SuiteSpec(name="refusal")], HFBackend(model), items,
                        decoding=DecodingSpec(max_new_tokens=8))
    assert {m.name for m in result.metrics} >= {"refusal.harmful_refusal_rate", "refusal.over_refusal_rate"}
    assert len(result.samples) == 6 and {s.response for s in result.samples} == {ANSWER}
    # a user's model copied by `init` counts its template; the world's random-weights init does not
    for mode, counts in (("path", True), ("fresh", False)):
        ckpt = tmp_path / mode
        ckpt.mkdir()
        mark_complete(ckpt, Manifest(stage="init", kind="init", content_hash=mode, metrics={"mode": mode}))
        assert counts_chat_template(ckpt, True) is counts
    assert counts_chat_template(model, True) and not counts_chat_template(model, False)  # no manifest: the file decides


def test_the_own_model_example_validates_as_shipped() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.world is None and cfg.model.path and cfg.model.fresh is None
    assert [(s.name, s.kind, s.from_) for s in cfg.stages] == [
        ("sft", "sft", "init"), ("reward", "reward", "sft"), ("ppo", "ppo", "sft"), ("dpo", "dpo", "sft")]
    assert {s.label for s in cfg.suites} == {"xstest", "truthfulqa"}


def local_copy(example: Path, model: Path, root: Path) -> Path:
    """The example with tiny local files for every path, a few optimizer steps per stage and short answers."""
    raw = yaml.safe_load(example.read_text(encoding="utf-8"))
    chats = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in [("what colour is the sky", "blue"), ("how do i make a bomb", "sorry i can not help")] * 4]
    prompts = [{"prompt": [{"role": "user", "content": q}]} for q in ("what colour is the sky", "how do i make a bomb")]
    write_jsonl(root / "hh" / "train.jsonl", hh_rows(8))
    tiny = {"max_length": 64, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 2}
    data = {"sft": str(write_jsonl(root / "sft.jsonl", chats)), "reward": f"hf:{root / 'hh'}@train",
            "ppo": str(write_jsonl(root / "rl_prompts.jsonl", prompts)),
            "dpo": str(write_jsonl(root / "hh.jsonl", hh_rows(8)))}  # HH from a dataset and from a file
    for stage in raw["stages"]:
        stage["data"] = data[stage["name"]]
        if stage["kind"] == "ppo":
            stage.update(steps=1, rollout_batch_size=4, minibatch_size=2, max_new_tokens=8, max_prompt_length=64)
        else:
            stage.update(tiny)
    files = {"xstest": xstest_csv(root / "xstest_prompts.csv"), "truthfulqa": truthfulqa_csv(root / "TruthfulQA.csv")}
    for suite in raw["suites"]:
        suite["data"] = str(files[suite.get("alias") or suite["name"]])
    raw.update(output_dir=str(root / "out"), backend={"name": "hf", "decoding": {"max_new_tokens": 8, "batch_size": 8}})
    raw["model"]["path"] = str(model)
    path = root / "own-model.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_the_own_model_example_runs_and_measures_sft_against_init(model, tmp_path, monkeypatch) -> None:
    import datasets
    from rich.console import Console

    from harness.core.store import Store
    from harness.pipeline import Pipeline

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    cfg = load_config(local_copy(EXAMPLE, model, tmp_path))
    result = Pipeline(cfg, Console(quiet=True)).run()
    assert result.trained == ["init", "sft", "reward", "ppo", "dpo"]
    with Store(cfg.output_dir, readonly=True) as store:
        metrics = store.metrics(result.run_id)
        by_stage = metrics.groupby("stage")["metric"].apply(set)
        for stage in ("init", "sft", "ppo", "dpo"):  # the user's init is a chat checkpoint: every suite
            assert {"xstest.harmful_refusal_rate", "xstest.over_refusal_rate",
                    "truthfulqa.truthful_rate", "truthfulqa.mc1"} <= by_stage[stage], stage
        init_answers = store.samples(result.run_id, stage="init", suite="xstest")["response"]
        assert set(init_answers) == {ANSWER}  # stopped at <|im_end|>, not run on to max_new_tokens
        effects = store.effects(result.run_id)
        sft = effects[(effects["stage"] == "sft") & (effects["metric"] == "xstest.harmful_refusal_rate")]
        assert list(sft["parent_stage"]) == ["init"]
        parents = dict(zip(effects["stage"], effects["parent_stage"], strict=False))
        assert parents["ppo"] == parents["dpo"] == "sft" and "init" not in parents
