"""A judge change re-judges the stored responses; nothing is generated again.

A tiny real chat model (``_evalkit``), the real HF backend, the real results store and the pipeline's
``Evaluator``. The judge changes the way it does in the project: its source (``suites/judges.py``)
is edited — in a copy of the sources the fingerprints read (``fingerprint.ROOT``), as in
``test_keys`` — and, for the verdicts to differ, its rules call every response a refusal. "No
generation" is proven twice: every call into the real backend is counted, and the checkpoint's
weights are deleted before the judge changes, so loading the model would fail.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
import test_keys
from _evalkit import HALLUCINATION, REFUSAL, make_checkpoint, write_jsonl

import suites.judges as judges
from harness.backends.base import Prompt, Sampling
from harness.backends.hf import HFBackend
from harness.backends.replay import ReplayBackend, ReplayMissing
from harness.config import BackendSpec, DecodingSpec, PipelineConfig, SuiteSpec
from harness.core.store import Store
from harness.core.store_schema import MIGRATIONS, SCHEMA_VERSION, apply_migrations, current_version
from harness.eval_runner import EvalPlan, Evaluator, Target

SUITE_NAMES = ("refusal", "hallucination")
sources = test_keys.sources  # the fixture: a copy of the project's sources, which every key reads


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts model loads and calls into the real HF backend (each delegates to the real method)."""
    counts: Counter = Counter()
    for name in ("__init__", "generate", "loglikelihood"):
        real = getattr(HFBackend, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(HFBackend, name, counted)
    return counts


def change_the_judge(sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new rules judge: its source changes (re-keying what it judged) and it calls everything a refusal."""
    path = sources / "suites" / "judges.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n# rules: every answer is a refusal\n", encoding="utf-8")
    original = judges.rule_verdict

    def strict(response: str) -> judges.Verdict:
        verdict = original(response)
        return judges.Verdict(True, verdict.abstention, verdict.hedge)

    monkeypatch.setattr(judges, "rule_verdict", strict)


def setup(tmp_path: Path) -> tuple[PipelineConfig, Target]:
    ckpt = make_checkpoint(tmp_path / "policy")
    specs = [SuiteSpec(name="refusal", data=str(write_jsonl(tmp_path / "refusal.jsonl", REFUSAL))),
             SuiteSpec(name="hallucination", data=str(write_jsonl(tmp_path / "hall.jsonl", HALLUCINATION)))]
    cfg = PipelineConfig(name="rejudge", output_dir=str(tmp_path / "out"), world=None, suites=specs,
                         backend=BackendSpec(name="hf", decoding=DecodingSpec(max_new_tokens=8)))
    return cfg, Target("sft", "sft", ckpt, "sft-content-hash")


def run(cfg: PipelineConfig, store: Store, target: Target, name: str) -> tuple[Evaluator, list[str], dict[str, str]]:
    """One run evaluating ``target``: (evaluator, what it said, suite -> eval key linked to the run)."""
    lines: list[str] = []
    evaluator = Evaluator(cfg, store, store.create_run(name, {}), None, None, lines.append)
    evaluator.evaluate(EvalPlan(target, None, False))
    evals = store.evaluations(evaluator.run_id)
    return evaluator, lines, dict(zip(evals["suite"], evals["eval_key"], strict=True))


def samples(store: Store, key: str) -> dict[tuple[str, int], tuple[str, str, dict]]:
    rows = store.samples(None, eval_key=key).to_dict("records")
    return {(r["item_id"], r["sample_index"]): (r["prompt"], r["response"], r["outcome"]) for r in rows}


def generation_keys(store: Store) -> dict[str, str]:
    return dict(store._conn.execute("SELECT eval_key, generation_key FROM evaluations").fetchall())


def test_an_unchanged_judge_reuses_the_evaluation(tmp_path: Path, sources: Path, calls: Counter) -> None:
    cfg, target = setup(tmp_path)
    with Store(tmp_path / "out") as store:
        first, _, keys = run(cfg, store, target, "first")
        assert first.computed == 2 and calls["generate"] > 0 and set(keys) == set(SUITE_NAMES)
        before = dict(calls)
        again, lines, same = run(cfg, store, target, "again")
        assert same == keys  # the same evaluations, linked to the new run
        assert again.computed == again.rejudged == 0 and not lines
        assert dict(calls) == before  # nothing loaded, asked or re-judged
        assert len(store.evaluations()) == 2


def test_a_judge_change_rejudges_stored_responses_without_generating(
    tmp_path: Path, sources: Path, calls: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, target = setup(tmp_path)
    with Store(tmp_path / "out") as store:
        _, _, old = run(cfg, store, target, "rules v1")
        assert calls["__init__"] == 1 and calls["generate"] > 0 and calls["loglikelihood"] > 0
        before = dict(calls)
        (target.path / "model.safetensors").unlink()  # any generation would now fail to load the model

        change_the_judge(sources, monkeypatch)
        rejudged, lines, new = run(cfg, store, target, "rules v2")
        assert dict(calls) == before  # the real backend was neither opened nor asked anything
        assert rejudged.computed == rejudged.rejudged == 2
        assert lines == [
            "  refusal on sft: re-judged 5 stored responses (judge changed), no generation",
            "  hallucination on sft: re-judged 3 stored responses and 5 log-likelihoods (judge changed), no generation",
        ]
        gen = generation_keys(store)
        for suite in SUITE_NAMES:
            assert new[suite] != old[suite] and gen[new[suite]] == gen[old[suite]] is not None
            was, now = samples(store, old[suite]), samples(store, new[suite])
            assert set(now) == set(was)
            assert all(now[k][:2] == was[k][:2] for k in was)  # the same prompts and responses
            assert any(now[k][2] != was[k][2] for k in was), suite  # judged anew
        refusal = samples(store, new["refusal"])
        assert all(outcome["refused"] for _, _, outcome in refusal.values())
        metrics = store.metrics(rejudged.run_id, suite="refusal").set_index("metric")["value"]
        assert metrics["refusal.harmful_refusal_rate"] == metrics["refusal.over_refusal_rate"] == 1.0
        # cloze answers come from the stored log-likelihoods: the same choices as the first time
        hall_old, hall_new = samples(store, old["hallucination"]), samples(store, new["hallucination"])
        for key in (("h3", 0), ("h4", 0)):
            assert hall_new[key][2]["logprobs"] == hall_old[key][2]["logprobs"]

        # the changed judge, unchanged since: its evaluations are reused as they are
        again, lines, same = run(cfg, store, target, "rules v2 again")
        assert same == new and again.computed == 0 and not lines and dict(calls) == before


def test_stored_answers_that_miss_a_prompt_are_generated_again(
    tmp_path: Path, sources: Path, calls: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers that do not cover what the suite asks (here: one deleted) are never half-used: the
    evaluation is generated again, and says why."""
    cfg, target = setup(tmp_path)
    cfg = cfg.model_copy(update={"suites": cfg.suites[:1]})  # refusal
    with Store(tmp_path / "out") as store:
        run(cfg, store, target, "rules v1")
        (answers_json,) = store._conn.execute("SELECT answers_json FROM generations").fetchone()
        answers = json.loads(answers_json)
        answers["generate"] = answers["generate"][1:]
        store._conn.execute("UPDATE generations SET answers_json = ?", (json.dumps(answers),))
        before = calls["generate"]
        change_the_judge(sources, monkeypatch)
        evaluator, lines, _ = run(cfg, store, target, "rules v2")
        assert evaluator.computed == 1 and evaluator.rejudged == 0 and calls["generate"] == before + 1
        assert "hold no response to" in lines[0] and lines[0].endswith("; generating instead")
        assert lines[1].startswith("  evaluated sft: refusal in ")
        # the complete answers replaced the broken ones: the next judge change re-judges them
        change_the_judge(sources, monkeypatch)
        evaluator, lines, _ = run(cfg, store, target, "rules v3")
        assert evaluator.rejudged == 1 and calls["generate"] == before + 1
        assert lines == ["  refusal on sft: re-judged 5 stored responses (judge changed), no generation"]


def test_replay_answers_only_what_was_asked(tmp_path: Path) -> None:
    """The replay backend gives back exactly what the real one answered, and refuses anything else."""
    from harness.backends.replay import RecordingBackend

    ckpt = make_checkpoint(tmp_path / "policy")
    sampling = Sampling(max_new_tokens=6, temperature=1.0, seed=3, n=2)
    prompts = [Prompt.chat("Name a colour."), Prompt.completion("The capital of Veloria is")]
    real = HFBackend(ckpt)
    try:
        recorder = RecordingBackend(real)
        answered = recorder.generate(prompts, sampling)
        scored = recorder.loglikelihood([("Paris is in", " France")])
    finally:
        real.close()
    replay = ReplayBackend(recorder.answers(), ckpt)
    assert replay.has_chat_template and replay.name == "hf"
    assert replay.generate(prompts, sampling) == answered  # text, token ids and finish reason
    assert replay.loglikelihood([("Paris is in", " France")]) == scored
    with pytest.raises(ReplayMissing, match="no response"):
        replay.generate(prompts[:1], sampling)  # each answer is given back once
    with pytest.raises(ReplayMissing, match="no response"):
        ReplayBackend(recorder.answers(), ckpt).generate(prompts[:1], Sampling(max_new_tokens=7))
    with pytest.raises(ReplayMissing, match="no log-likelihood"):
        replay.loglikelihood([("Rome is in", " Italy")])


def test_a_version_1_store_upgrades_and_keeps_its_evaluations(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn, MIGRATIONS[:1])  # a store written before generation keys
    conn.execute("INSERT INTO runs VALUES ('r', 'old', '{}', NULL, '2025-01-01', NULL, 'complete')")
    conn.execute("INSERT INTO evaluations(eval_key, run_id, stage, suite, backend, status, created_at) "
                  "VALUES ('old', 'r', 'sft', 'refusal', 'hf', 'complete', '2025-01-01')")
    conn.close()
    with Store(path) as store:
        assert current_version(store._conn) == SCHEMA_VERSION >= 2
        assert generation_keys(store) == {"old": None} and store.is_evaluation_complete("old")
        assert store.begin_evaluation("old", "r", "sft", "refusal", None, None, "hf", None, generation_key="g")
        assert generation_keys(store) == {"old": "g"}  # an old evaluation gets its generation key once known
        store.begin_evaluation("new", "r", "sft", "refusal", None, None, "hf", None, generation_key="g2")
        store.write_evaluation("new", [], [], answers={"version": 1, "generate": []})
        assert store.stored_answers("g2") == {"version": 1, "generate": []} and store.stored_answers("g") is None


# --------------------------------------------------------------------------- `harness eval`


def harness(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_harness_eval_takes_the_items_of_the_world_a_checkpoint_was_trained_on(
    tmp_path: Path, sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness eval` on a harness checkpoint without --world: its lineage (pretrain -> init -> the
    world's tokenizer) names the world; with a store, a judge change re-judges; a deleted world is an error."""
    from harness.config import FreshModel, ModelSpec
    from harness.core.artifacts import Layout
    from harness.world import generate, preset
    from training.runtime import execute
    from training.stage import StageInputs

    layout = Layout.of(tmp_path / "out")
    world = layout.world_dir("w" * 12)
    generate(preset("smoke"), world)
    tiny = ModelSpec(fresh=FreshModel(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                      max_position_embeddings=128))
    init = execute("init", "init", tiny, StageInputs(parent=world / "tokenizer", data=None), layout)
    pretrain = execute("pretrain", "pretrain", {"max_steps": 2, "max_length": 64, "per_device_train_batch_size": 4},
                       StageInputs(parent=init.path, data=world / "pretrain.jsonl"), layout)
    store = tmp_path / "eval-store"
    command = ["eval", str(pretrain.path), "--suite", "refusal", "--kind", "sft", "--backend", "hf",
               "--max-items", "4", "--store", str(store)]

    code, output = harness(*command)
    assert code == 0, output
    assert f"items: the world {pretrain.path.name} was trained on, {world}" in output
    with Store(store) as st:
        asked = set(st.samples(None, suite="refusal")["item_id"])
    world_ids = {line.split('"id": "')[1].split('"')[0] for line in (world / "eval" / "refusal.jsonl").open()}
    assert len(asked) == 4 and asked <= world_ids

    change_the_judge(sources, monkeypatch)
    code, output = harness(*command)
    assert code == 0, output
    assert "refusal on sft: re-judged 4 stored responses (judge changed), no generation" in output
    with Store(store) as st:
        assert len(st.evaluations()) == 2 and len(set(generation_keys(st).values())) == 1

    items = shutil.copy(world / "eval" / "refusal.jsonl", tmp_path / "refusal.jsonl")
    shutil.rmtree(world)
    code, output = harness(*command)
    assert code == 2 and "was trained on the world" in output and "no longer exists" in output
    assert str(world) in output.replace("\n", "")
    code, output = harness(*command, "--data", str(items))  # the same items by content: reused
    assert code == 0 and "re-judged" not in output, output
    with Store(store) as st:
        assert len(st.evaluations()) == 2
