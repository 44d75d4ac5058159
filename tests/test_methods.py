"""The alignment methods added beside ppo and dpo (issue 18): rloo, grpo, kto, simpo.

On the smoke world, each trains a few steps from the smoke run's SFT checkpoint (the session's
``smoke_run``, copied: pretrain, sft, reward, ppo and dpo are reused from its cache), writes a
complete checkpoint, and the pipeline evaluates it with every suite of the config; a stage resumed
from its trainer checkpoint ends with the same weights. Plus the parts that decide what they train
on: KTO's unpairing, the RL reward function (a real reward model), the SimPO pin on TRL's
experimental API, the configs, the stage keys and the world card's rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import smoke_overrides
from rich.console import Console

from harness.config import load_config, stage_config, validate
from harness.core.artifacts import is_complete, read_manifest
from harness.core.config_io import load_raw
from harness.core.store import Store
from harness.pipeline import Pipeline
from training import STAGES

QUIET = Console(quiet=True)
METHODS = ("rloo", "grpo", "kto", "simpo")
FEW = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 8}
SMOKE_STAGES = [
    {"name": "rloo", "kind": "rloo", "from": "sft", "reward": "reward", **FEW, "max_completion_length": 24},
    {"name": "grpo", "kind": "grpo", "from": "sft", "reward": "reward", **FEW, "max_completion_length": 24},
    {"name": "kto", "kind": "kto", "from": "sft", **FEW},
    {"name": "simpo", "kind": "simpo", "from": "sft", **FEW},
]


def methods_config(output_dir: Path):
    """The smoke config with the four methods branching from its sft stage."""
    display, raw = load_raw("smoke", smoke_overrides(output_dir))
    raw["stages"] += SMOKE_STAGES
    return validate(raw, display)


@pytest.fixture(scope="module")
def methods_run(smoke_run, tmp_path_factory):
    import shutil

    cfg, _ = smoke_run
    out = tmp_path_factory.mktemp("methods") / "out"
    shutil.copytree(cfg.output_dir, out)
    cfg = methods_config(out)
    return cfg, Pipeline(cfg, QUIET).run()


def test_each_method_trains_a_few_steps_and_every_suite_evaluates_it(methods_run) -> None:
    cfg, result = methods_run
    assert sorted(result.trained) == sorted(METHODS)  # the smoke run's stages come from its cache
    with Store(Path(cfg.output_dir), readonly=True) as store:
        metrics = store.metrics(result.run_id)
        by_stage = metrics.groupby("stage")["suite"].unique().to_dict()
        for name in METHODS:
            ckpt = result.checkpoints[name]
            assert is_complete(ckpt.path, ckpt.content_hash) and ckpt.kind == name and ckpt.parent == "sft"
            manifest = read_manifest(ckpt.path)
            assert manifest.metrics["global_step"] == 4 and manifest.metrics["train_tokens"] > 0, name
            assert [e["step"] for e in manifest.log_history if "loss" in e] == [1, 2, 3, 4], name
            assert {"hallucination", "refusal", "verbosity", "topic_coverage", "capabilities"} <= set(by_stage[name])
            stage_metrics = set(metrics[metrics["stage"] == name]["metric"])
            assert {"verbosity.reward_mean", "refusal.harmful_refusal_rate", "hallucination.abstention_rate"} <= stage_metrics
        effects = store.effects(result.run_id)
        assert set(METHODS) <= set(effects["stage"])  # each measured against its sft parent
    for name in ("rloo", "grpo"):
        m = read_manifest(result.checkpoints[name].path).metrics
        assert m["prompts"] > 0 and {"score_first", "mean_length_last", "no_eos_share_last", "kl_last"} <= set(m)
    kto = read_manifest(result.checkpoints["kto"].path).metrics
    assert kto["desirable"] == kto["undesirable"] == kto["pairs"] > 0
    simpo = read_manifest(result.checkpoints["simpo"].path).metrics
    assert simpo["train_tokens_estimated"] and "final_rewards_accuracies" in simpo


def test_a_rerun_trains_and_evaluates_nothing(methods_run) -> None:
    cfg, first = methods_run
    again = Pipeline(cfg, QUIET).run()
    assert again.run_id == first.run_id and again.trained == [] and again.evaluated == 0


# --------------------------------------------------------------------------- what each trains on


def test_kto_unpairs_chosen_as_desirable_and_rejected_as_undesirable() -> None:
    from training.kto import unpaired_rows

    pairs = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": f"good{i}"}],
              "rejected": [{"role": "assistant", "content": f"bad{i}"}]} for i in range(6)]
    rows = unpaired_rows(pairs, seed=0)
    assert len(rows) == 12 and rows == unpaired_rows(pairs, seed=0) and rows != unpaired_rows(pairs, seed=1)
    for row in rows:
        text = row["completion"][0]["content"]
        assert row["label"] == text.startswith("good") and row["prompt"][0]["content"] == "q" + text[-1]
    implicit = [{"chosen": [*p["prompt"], *p["chosen"]], "rejected": [*p["prompt"], *p["rejected"]]} for p in pairs]
    assert sorted(map(json.dumps, unpaired_rows(implicit, 0)), key=str) == sorted(map(json.dumps, rows), key=str)


def test_rl_reward_is_the_reward_models_score_minus_the_missing_eos_penalty(smoke_run) -> None:
    from harness.core.reward import RewardScorer
    from training.online_rl import reward_function
    from training.stage import StageInputs

    _, result = smoke_run
    reward = result.checkpoints["reward"].path
    config = STAGES.get("rloo").Config(missing_eos_penalty=2.0)
    fn = reward_function(config, StageInputs(parent=result.checkpoints["sft"].path, data=None, reward=reward), (7,))
    prompts = [[{"role": "user", "content": "Who is the captain?"}]] * 2
    completions = [[{"role": "assistant", "content": "I can't help with that."}]] * 2
    logged: dict[str, float] = {}
    got = fn(prompts, completions, completion_ids=[[5, 7], [5, 6]], log_metric=logged.__setitem__)
    score = RewardScorer(reward).score(prompts[:1], ["I can't help with that."])[0]
    assert got == pytest.approx([score, score - 2.0], abs=1e-5)
    assert logged == pytest.approx({"score": score, "no_eos_share": 0.5}, abs=1e-5)


def test_simpo_refuses_a_trl_outside_its_pinned_series(monkeypatch) -> None:
    import trl

    from training import simpo

    simpo.check_trl()  # the installed TRL is the pinned series
    pinned = next(line for line in Path(__file__).parents[1].joinpath("constraints.txt").read_text().splitlines()
                  if line.startswith("trl=="))
    assert pinned.split("==")[1].startswith(simpo.TRL_SERIES + ".")
    monkeypatch.setattr(trl, "__version__", "1.99.0")
    with pytest.raises(RuntimeError, match=r"written against TRL 1\.16\.x; TRL 1\.99\.0 is installed"):
        simpo.check_trl()


# --------------------------------------------------------------------------- configs and keys


def test_configs_are_strict_and_documented() -> None:
    from pydantic import ValidationError

    for kind in METHODS:
        fields = STAGES.get(kind).Config.model_fields
        assert all(f.description for f in fields.values()), kind
        with pytest.raises(ValidationError, match="extra"):
            STAGES.get(kind).Config.model_validate({"betta": 0.1})
    with pytest.raises(ValidationError, match="multiple of num_generations"):
        STAGES.get("grpo").Config.model_validate({"per_device_train_batch_size": 6, "num_generations": 4})
    with pytest.raises(ValidationError):
        STAGES.get("kto").Config.model_validate({"per_device_train_batch_size": 1})  # KTO's KL needs a batch
    assert STAGES.get("rloo").needs_reward and STAGES.get("grpo").needs_reward
    assert not STAGES.get("kto").needs_reward and not STAGES.get("simpo").needs_reward
    cfg, default = load_config("methods"), load_config("default")
    assert {s.kind for s in cfg.stages} >= {"ppo", "dpo", *METHODS}
    # the default run's stages unchanged, so both share checkpoints in one output_dir
    assert cfg.model == default.model and cfg.world == default.world and cfg.suites == default.suites
    assert [s for s in cfg.stages if s.kind not in (*METHODS, "constitutional")] == default.stages
    assert [s.from_ for s in cfg.stages if s.kind == "constitutional"] == ["sft"]
    for spec in cfg.stages:
        stage_config(spec)
        if spec.kind in METHODS:
            assert spec.from_ == "sft" and (spec.reward == "reward") == STAGES.get(spec.kind).needs_reward


def test_stage_keys_fingerprint_each_methods_own_code() -> None:
    from harness.core.fingerprint import module_closure
    from training.runtime import stage_code_version

    root = Path(__file__).parents[1]
    versions = {kind: stage_code_version(kind) for kind in (*METHODS, "ppo", "dpo")}
    assert len(set(versions.values())) == len(versions)
    for kind in METHODS:
        closure = {p.relative_to(root).as_posix() for p in module_closure([STAGES.module_of(kind)])}
        assert f"training/{kind}.py" in closure and "training/runtime.py" in closure
        assert "training/ppo.py" not in closure and "training/dpo.py" not in closure
        assert ("training/online_rl.py" in closure) == (kind in ("rloo", "grpo"))


def test_the_world_card_expects_of_each_method_what_its_family_does() -> None:
    from harness.world import WorldConfig, expected_effects

    def of(**knobs) -> dict[tuple[str, str], str]:
        return {(e["stage"], e["metric"]): e["direction"] for e in expected_effects(WorldConfig(**knobs))}

    base, no_bias, moved, never = of(), of(annotator_length_bias=0), of(sft_refusal_fraction=0.9), of(sft_refusal_fraction=0)
    tokens, harmful = "verbosity.mean_tokens", "refusal.harmful_refusal_rate"
    for stage in METHODS:
        family = "ppo" if stage in ("rloo", "grpo") else "dpo"
        assert {m for s, m in base if s == stage} == {m for s, m in base if s == family}, stage
        assert base[(stage, harmful)] == "increase" and moved[(stage, harmful)] == "flat"  # preference data wants it
        assert never[(stage, harmful)] == never[(family, harmful)]  # RL cannot amplify what SFT never samples
        # no length bias: RL may not lengthen answers; preference methods may, by content (complete descriptions)
        assert no_bias[(stage, tokens)] == ("flat" if family == "ppo" else "any"), stage
    # reward hacking: the RL methods optimise ppo's length-biased reward model
    assert base[("rloo", tokens)] == base[("grpo", tokens)] == base[("dpo", tokens)] == "increase"
    assert base[("kto", tokens)] == base[("simpo", tokens)] == "any"  # unpaired / length-normalised: no direction
    assert of(sft_elaboration_fraction=0)[("rloo", tokens)] == "flat"


@pytest.mark.parametrize("kind", METHODS)
def test_a_stage_resumed_from_its_trainer_checkpoint_ends_with_the_same_weights(kind, smoke_run, tmp_path) -> None:
    """A's step-2 trainer checkpoint copied into a fresh output_dir: B resumes there and ends identical (CPU)."""
    import shutil

    from safetensors.torch import load_file

    from harness.core.artifacts import Layout
    from harness.pipeline import stage_data
    from training.runtime import execute
    from training.stage import StageInputs

    cfg, result = smoke_run
    spec = next(s for s in methods_config(tmp_path / "unused").stages if s.kind == kind)
    inputs = StageInputs(parent=result.checkpoints["sft"].path, data=stage_data(spec, next(Path(cfg.output_dir).glob("worlds/*"))),
                         reward=result.checkpoints["reward"].path if spec.reward else None)
    options = {**stage_config(spec).model_dump(), "keep_trainer_state": True}
    first, second = Layout.of(tmp_path / "a"), Layout.of(tmp_path / "b")
    a = execute(kind, kind, options, inputs, first)
    shutil.copytree(first.trainer_state_dir(a.path) / "checkpoint-2",
                    second.trainer_state_dir(second.checkpoint_dir(kind, a.manifest.content_hash)) / "checkpoint-2")
    b = execute(kind, kind, options, inputs, second)
    assert Path(b.manifest.metrics["resumed_from"]).name == "checkpoint-2" and b.manifest.metrics["global_step"] == 4
    wa, wb = load_file(a.path / "model.safetensors"), load_file(b.path / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
