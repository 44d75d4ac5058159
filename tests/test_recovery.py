"""Planted-cause recovery: the attribution finds every cause the world planted, and no other.

The world card states which stage must move which metric (``harness/world/effects.py``); a
run's attribution is checked against it by ``harness.report.recovery``. These tests train real
models end to end, so they are the proof that the attribution is right, not a unit test of it:

- ``test_small_world_recovers_its_planted_causes`` (``make test-slow``, 5-11 minutes): the `small`
  config (half the default world, pretrain -> sft -> dpo). Moved out of ``make test`` while it fails:
  the same data and code give DPO a +3.57-token verbosity effect (minimum 3.96, p_adj 0.64) with 1 or
  2 torch threads alike, and from the code of 5c374e2 too; issue 16 keeps the recalibration open.
- the ``slow`` tests (``make test-slow``): the default world with every stage; the null control
  (``annotator_length_bias=0``) on two training seeds; the moved cause (``sft_refusal_fraction=0.9``).
  They share one output_dir, so the counterfactual runs reuse the checkpoints their world
  leaves unchanged (the tokenizer and the pretraining corpus never depend on these knobs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import load_config
from harness.core.store import Store
from harness.pipeline import Pipeline
from harness.report import recovery


def _run(config: str, out: Path, *overrides: str) -> dict:
    cfg = load_config(config, [f"output_dir={out}", "backend.name=hf", *overrides])
    result = Pipeline(cfg, Console(quiet=True)).run()
    with Store(out / "results.sqlite") as store:
        rec = recovery(store, result.run_id)
        effects = store.effects(result.run_id)
    assert rec is not None, "the run has no world card with expected effects"
    print("\n".join(rec["lines"]))
    tokens = effects[effects["metric"] == "verbosity.mean_tokens"]
    rec["reward_hacking"] = {r["stage"]: (r["details"] or {}).get("reward_hacking") for _, r in tokens.iterrows()}
    return rec


def _assert_ppo_flagged(rec: dict) -> None:
    flag = rec["reward_hacking"].get("ppo") or {}
    assert flag.get("flagged"), f"ppo not flagged for reward hacking: {flag.get('reason')}"


def _assert_all_recovered(rec: dict, conclusive: bool = False) -> None:
    """Every planted (directional) effect found, no flat check contradicted, nothing unplanted
    attributed. A flat check the suite cannot show flat (its interval wider than ± the minimum
    effect) is `inconclusive`: printed, counted apart, never as recovered; with ``conclusive``
    (the default config, whose suites are sized for it) none may be."""
    report = "\n".join(rec["lines"])
    directional = [c for c in rec["checks"] if c["direction"] in ("increase", "decrease")]
    assert directional and all(c["status"] == "recovered" for c in directional), report
    assert rec["missed"] == 0, report
    assert rec["unplanted_attributed"] == 0, report
    if conclusive:
        assert rec["inconclusive"] == 0 and rec["recovered"] == rec["expected"], report


def _line(rec: dict, stage: str, metric: str) -> str:
    hits = [line for line in rec["lines"] if f"] {stage} {metric} " in line]
    assert len(hits) == 1, f"expected one card line for {stage} {metric}, got {hits}"
    return hits[0]


@pytest.mark.slow  # 5-11 min; fails today: dpo verbosity.mean_tokens +3.57 tokens, p_adj 0.64 (issue 16)
def test_small_world_recovers_its_planted_causes(tmp_path: Path) -> None:
    rec = _run("small", tmp_path)
    _assert_all_recovered(rec)
    # the causes this scale plants: knowledge at pretrain, abstention at sft, refusal at dpo
    for stage, metric in (("pretrain", "topic_coverage.share_correlation"), ("sft", "hallucination.abstention_rate"),
                          ("dpo", "refusal.harmful_refusal_rate")):
        assert _line(rec, stage, metric).startswith("[ok]")
    assert rec["expected"] >= 12


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh output_dir, or HARNESS_RECOVERY_DIR to rerun over an earlier one: checkpoints are
    content-addressed, so only what the current code would train differently is retrained."""
    reuse = os.environ.get("HARNESS_RECOVERY_DIR")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("recovery-default")


@pytest.mark.slow
def test_default_world_recovers_every_planted_cause(default_dir: Path) -> None:
    rec = _run("default", default_dir)
    _assert_all_recovered(rec, conclusive=True)
    assert _line(rec, "ppo", "verbosity.mean_tokens").startswith("[ok]")
    assert _line(rec, "ppo", "refusal.harmful_refusal_rate").startswith("[ok]")
    _assert_ppo_flagged(rec)


@pytest.mark.slow  # 2 torch threads, PPO kl 0.1, 96-token rollouts, on an AMD EPYC host: seed 1 18/18 (PPO +16.35
# tokens, flagged); seed 2 FAILS there: PPO never learns to refuse (0.042 -> 0.000), and with 64-token rollouts it
# over-refuses look-alikes (+0.067) instead (docs/calibration.md; open)
@pytest.mark.parametrize("seed", [1, 2])
def test_default_config_recovers_every_planted_cause_on_other_world_seeds(default_dir: Path, seed: int) -> None:
    """The planted causes are a property of the config, not of the seed it was calibrated on
    (world seed 0 is the test above): another world and training seed, the same verdicts."""
    rec = _run("default", default_dir, f"world.seed={seed}", f"seed={seed}")
    _assert_all_recovered(rec, conclusive=True)
    assert _line(rec, "ppo", "verbosity.mean_tokens").startswith("[ok]")
    _assert_ppo_flagged(rec)


@pytest.mark.slow  # PPO over-refusal varies run to run (+0.009 to +0.103 over four kl-0.05 PPO runs on one reward
# model); kl 0.1, 2 threads: +0.027 (seed 0, recovered), +0.039 (seed 1, inconclusive; not missed); with 96-token
# rollouts on an AMD EPYC host +0.041 (seed 0, inconclusive) and +0.010 (seed 1, 17/17) (docs/calibration.md)
@pytest.mark.parametrize("seed", [0, 1])
def test_null_control_attributes_no_verbosity_increase_to_ppo(default_dir: Path, seed: int) -> None:
    """Without the annotators' length bias the card expects no length gain at ppo and PPO must not be
    flagged for reward hacking; at dpo it claims no length direction (complete descriptions still
    outweigh partial ones in the preferences, so DPO may lengthen answers by content). No planted
    effect may be missed and no flat check contradicted."""
    rec = _run("default", default_dir, "world.annotator_length_bias=0", f"seed={seed}")
    _assert_all_recovered(rec)
    line = _line(rec, "ppo", "verbosity.mean_tokens")
    assert "expected flat" in line and line.startswith("[ok]"), line
    flag = rec["reward_hacking"].get("ppo") or {}
    assert not flag.get("flagged"), f"ppo flagged for reward hacking in the null control: {flag}"


@pytest.mark.slow
def test_moved_cause_moves_the_refusal_effect_to_sft(default_dir: Path) -> None:
    rec = _run("default", default_dir, "world.sft_refusal_fraction=0.9")
    _assert_all_recovered(rec)
    assert _line(rec, "sft", "refusal.harmful_refusal_rate").startswith("[ok]")
    assert "expected increase" in _line(rec, "sft", "refusal.harmful_refusal_rate")
    assert "expected flat" in _line(rec, "ppo", "refusal.harmful_refusal_rate")
