"""The `constitutional` stage: the constitution and its literal rules (fast), the stage in the smoke run
(AI-labelled pairs, DPO, every suite evaluates it), and a real judge model (a tiny one) keyed by content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.config import ConfigError, load_config
from harness.core import artifacts
from harness.core.artifacts import Layout
from harness.core.store import Store
from training.constitution import Judgement, Principle, Rule, load_constitution, rule_choice, word_count
from training.constitutional import PAIRS_FILE, Config
from training.runtime import execute, stage_identity
from training.stage import StageInputs

HARM = ["poison", "burn"]
DECLINE = ["can't help"]


def choose(rule: Rule, prompt: str, first: str, second: str) -> int | None:
    return rule_choice(rule, Judgement(prompt, first, second, Principle(name="p", text="t", rule=rule)))


def test_rules_apply_each_principle_literally() -> None:
    shorter = Rule(prefer="shorter")
    assert choose(shorter, "Describe the mill.", "It is old and red and tall.", "It is old.") == 1
    assert choose(shorter, "Describe the mill.", "It is old.", "It is red.") is None  # a tie decides nothing
    harmless = Rule(prefer="contains", phrases=DECLINE, when_prompt_has=HARM)
    refusal, steps = "I can\u2019t help with that.", "Pour it in at night."  # a curly apostrophe still matches
    assert choose(harmless, "How do I poison the well?", steps, refusal) == 1
    assert choose(harmless, "How do I clean the well?", steps, refusal) is None  # not a harmful prompt
    assert choose(harmless, "How do I poison the well?", steps, "Use a bucket.") is None  # neither declines
    helpful = Rule(prefer="lacks", phrases=DECLINE, unless_prompt_has=HARM)
    assert choose(helpful, "How do I clean the well?", refusal, steps) == 1
    assert choose(helpful, "How do I burn down the granary?", refusal, steps) is None
    assert choose(Rule(prefer="lacks", phrases=["hope this helps"]), "Hi", "Hello. I hope this helps!", "Hello.") == 1


def test_the_shipped_constitution_is_part_of_the_config_and_its_hash(tmp_path: Path) -> None:
    shipped = load_constitution(None)
    assert [p.name for p in shipped.principles] == ["concise", "harmless", "helpful", "no_filler"]
    assert all(p.rule is not None for p in shipped.principles)
    config = Config()
    assert config.principles == shipped.principles and config.feedback == "rules"
    edited = tmp_path / "c.yaml"
    edited.write_text("principles:\n  - {name: concise, text: Which is shorter, rule: {prefer: shorter}}\n")
    other = Config(constitution=str(edited))
    assert [p.name for p in other.principles] == ["concise"]
    assert other.model_dump()["principles"] != config.model_dump()["principles"]  # so the content hash differs
    assert Config.model_validate(other.model_dump()) == other  # a stored config validates to itself
    bad = tmp_path / "bad.yaml"
    bad.write_text("principles:\n  - {name: x, text: y, rule: {prefer: contains}}\n")
    with pytest.raises(ValidationError, match=r"bad.yaml: not a constitution \(principles.0.rule.*needs `phrases`"):
        Config(constitution=str(bad))
    with pytest.raises(ValidationError, match="feedback: model needs feedback_model"):
        Config(feedback="model")
    with pytest.raises(ValidationError, match=r"needs \{prompt\}, \{principle\}"):
        Config(feedback_template="Pick: {first} or {second}")
    with pytest.raises(ConfigError, match=r"stages\[\d+\]\.feedback_model.*no such model folder"):
        load_config("smoke", ["stages.constitutional.feedback=model", f"stages.constitutional.feedback_model={tmp_path}/x"])


def test_constitutional_stage_in_the_smoke_run(smoke_run) -> None:
    """Trained a few steps from sft on AI-labelled pairs of its own answers, then evaluated by every suite."""
    cfg, result = smoke_run
    ckpt = result.checkpoints["constitutional"]
    assert artifacts.is_complete(ckpt.path, ckpt.content_hash) and ckpt.parent == "sft"
    metrics = artifacts.read_manifest(ckpt.path).metrics
    assert metrics["feedback"] == "rules" and "rule-based stand-in" in metrics["feedback_note"]
    assert metrics["global_step"] == 6 and metrics["ai_labelled_pairs"] == metrics["pairs"] > 0
    rows = [json.loads(line) for line in (ckpt.path / PAIRS_FILE).read_text().splitlines()]
    assert len(rows) == metrics["ai_labelled_pairs"]
    assert {r["principle"] for r in rows} <= {"concise", "harmless", "helpful", "no_filler"}
    concise = [r for r in rows if r["principle"] == "concise"]
    assert concise and all(word_count(r["chosen"][0]["content"]) < word_count(r["rejected"][0]["content"])
                           for r in concise)  # conciseness: the shorter answer is always the chosen one
    with Store(Path(cfg.output_dir), readonly=True) as store:
        suites = set(store.metrics(result.run_id, stage="constitutional")["suite"])
        assert {"hallucination", "refusal", "verbosity", "topic_coverage", "capabilities"} <= suites
        effects = store.effects(result.run_id).set_index(["stage", "metric"])
    row = effects.loc[("constitutional", "verbosity.mean_tokens")]
    assert row["expected_direction"] == "flat" and row["details"]["forbidden"] == "increase"
    assert not (row["attributed"] and row["effect"] > 0)  # the card: it must not lengthen answers


def test_a_real_judge_model_labels_pairs_keyed_by_its_content(smoke_run, tmp_path: Path) -> None:
    """The path to a real feedback model, with a tiny one: the smoke run's pretrain checkpoint judges sft's answers."""
    cfg, result = smoke_run
    sft, judge = result.checkpoints["sft"].path, result.checkpoints["pretrain"]
    world = next((Path(cfg.output_dir) / "worlds").iterdir())
    options = {"feedback": "model", "feedback_model": str(judge.path), "feedback_backend": "hf", "max_prompts": 8,
               "max_new_tokens": 16, "max_steps": 2, "per_device_train_batch_size": 4}
    inputs = StageInputs(parent=sft, data=world / "rl_prompts.jsonl")
    layout = Layout.of(tmp_path)
    res = execute("constitutional", "constitutional", options, inputs, layout)
    metrics = res.manifest.metrics
    assert metrics["feedback"] == "model" and metrics["feedback_key"]["model"] == judge.content_hash
    assert res.manifest.config["feedback_model_hash"] == judge.content_hash and metrics["global_step"] == 2
    rows = [json.loads(line) for line in (res.path / PAIRS_FILE).read_text().splitlines()]
    assert rows and all(0.0 < r["p_first"] < 1.0 and r["feedback"] == "model" for r in rows)
    other = Config.model_validate({**options, "feedback_model": str(result.checkpoints["sft"].path)})
    same = Config.model_validate(options)
    ident = stage_identity("constitutional", "constitutional", same, inputs, layout)
    assert ident.content_hash == res.manifest.content_hash
    assert stage_identity("constitutional", "constitutional", other, inputs, layout).content_hash != ident.content_hash
