"""Rescoring stored responses with a reward model gives the numbers scoring at generation time gives.

The reward model is a tiny ``LlamaForSequenceClassification`` built and saved here; scores go
through the real ``harness.core.reward.RewardScorer``; responses go through the real results store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _evalkit import VERBOSITY, make_checkpoint, make_reward_checkpoint, write_jsonl

from harness.backends.hf import HFBackend
from harness.config import DecodingSpec, SuiteSpec
from harness.core.reward import RewardScorer
from harness.core.store import Store
from harness.evaluate import evaluate, rescore_verbosity, store_result

REWARD_METRICS = {"verbosity.reward_mean", "verbosity.reward_length_corr", "verbosity.length_controlled_reward"}


def _as_dict(result) -> dict[str, tuple[float, float, float, int]]:
    return {m.name: (m.value, m.ci_low, m.ci_high, m.n) for m in result.metrics}


def test_rescoring_stored_responses_matches_scoring_at_generation(tmp_path: Path) -> None:
    policy = make_checkpoint(tmp_path / "policy")
    reward_dir = make_reward_checkpoint(tmp_path / "reward")
    items = {"verbosity": write_jsonl(tmp_path / "verbosity.jsonl", VERBOSITY)}
    backend = HFBackend(policy)
    spec = [SuiteSpec(name="verbosity", samples_per_item=2, temperature=1.0)]
    decoding = DecodingSpec(max_new_tokens=12, seed=5)

    scored = evaluate(policy, "sft", spec, backend, items, reward=reward_dir, decoding=decoding)[0]
    scorer = RewardScorer(reward_dir)
    assert REWARD_METRICS <= set(_as_dict(scored)) and scored.reward_hash == scorer.content_hash

    # generated before the reward model existed: no reward metrics, responses stored once
    unscored = evaluate(policy, "sft", spec, backend, items, reward=None, decoding=decoding)[0]
    assert not REWARD_METRICS & set(_as_dict(unscored)) and unscored.reward_hash is None
    assert [s.response for s in unscored.samples] == [s.response for s in scored.samples]
    store = Store(tmp_path / "results.sqlite")
    run_id = store.create_run("rescore", {})
    key = store_result(store, run_id, "sft", "policy-hash", unscored)
    rows = store.samples(run_id, suite="verbosity").to_dict("records")

    rescored = rescore_verbosity(rows, reward_dir)
    assert rescored.reward_hash == scored.reward_hash
    expected, got = _as_dict(scored), _as_dict(rescored)
    assert set(got) == set(expected)
    for name, values in expected.items():
        assert got[name] == pytest.approx(values, abs=1e-9, nan_ok=True), name
    by_key = {(s.item_id, s.sample_index): s.outcome for s in scored.samples}
    for s in rescored.samples:
        assert s.outcome["verbosity.reward_mean"] == pytest.approx(by_key[(s.item_id, s.sample_index)]["verbosity.reward_mean"], abs=1e-9)

    # the rescored outcomes and metrics can be written back to the stored evaluation
    store.update_sample_outcomes(key, {(s.item_id, s.sample_index): s.outcome for s in rescored.samples})
    store.add_metrics(key, rescored.store_metrics())
    stored = store.metrics(run_id, suite="verbosity").set_index("metric")["value"].to_dict()
    assert stored["verbosity.reward_mean"] == pytest.approx(expected["verbosity.reward_mean"][0])
    # rescoring again from the (now scored) store rows is stable
    again = rescore_verbosity(store.samples(run_id, suite="verbosity").to_dict("records"), scorer)
    for name, values in _as_dict(again).items():
        assert values == pytest.approx(got[name], abs=1e-9, nan_ok=True), name
