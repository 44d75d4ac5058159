"""Stage attribution on synthetic stores built through the real Store API: a planted effect
is attributed at its stage and only there, null stages stay quiet, the decomposition
telescopes, flips are counted, reward hacking is flagged, recovery is checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.attribution import stage_effects
from harness.core.paired import qualify
from harness.core.spec import AttributionSpec
from harness.core.store import Store
from harness.flags import decompose, lineage_decompositions, reward_hacking_flags, sample_flips
from harness.lineage import lineage_paths
from harness.recovery import planted_recovery
from harness.report import compute_and_store_effects, print_report, render_report

DEC = {"max_new_tokens": 64, "temperature": 0.0}
N = 200
CARD = {"expected_effects": [
    {"stage": "pretrain", "metric": "hallucination.mc_accuracy", "direction": "increase", "why": "facts"},
    {"stage": "ppo", "metric": "refusal.harmful_refusal_rate", "direction": "increase", "why": "prefs"},
    {"stage": "dpo", "metric": "refusal.harmful_refusal_rate", "direction": "flat", "why": "null"},
    {"stage": "ppo", "metric": "verbosity.mean_tokens", "direction": "increase", "why": "length bias"},
    {"stage": "sft", "metric": "refusal.harmful_refusal_rate", "direction": "flat", "why": "latent"},
]}


def add_eval(store: Store, run_id: str, stage: str, suite: str, outcomes: dict[str, dict[str, float]],
             backend: str = "hf", extra: list[dict] | None = None, samples_per_item: int = 1) -> None:
    """One evaluation whose metrics are the means of the per-item outcomes (plus `extra` rows)."""
    key = f"{run_id}-{stage}-{suite}-{backend}"
    store.begin_evaluation(key, run_id, stage, suite, "1", "items", backend, DEC)
    names = sorted({m for o in outcomes.values() for m in o})
    metrics = [{"metric": qualify(m, suite), "value": float(np.mean([o[m] for o in outcomes.values() if m in o])),
                "ci_low": None, "ci_high": None, "n": sum(m in o for o in outcomes.values()),
                "higher_is_better": True} for m in names]
    samples = [{"item_id": item, "item_hash": f"h-{item}", "sample_index": j, "prompt": "p", "response": "r",
                "outcome": o} for item, o in outcomes.items() for j in range(samples_per_item)]
    store.write_evaluation(key, metrics + (extra or []), samples)


def binary(rng: np.random.Generator, rate: float, base: np.ndarray | None = None, flip_to: float = 0.0) -> np.ndarray:
    """0/1 outcomes: fresh draws at `rate`, or `base` with a share `flip_to` of its zeros set to 1."""
    if base is None:
        return (rng.random(N) < rate).astype(float)
    out = base.copy()
    out[(base == 0) & (rng.random(N) < flip_to)] = 1.0
    return out


def build(path: Path, planted: str = "ppo", ppo_backend: str = "hf") -> tuple[Store, str]:
    """init -> pretrain -> sft -> {reward, ppo, dpo}; refusal planted at `planted`, knowledge at
    pretrain, verbosity + reward up at ppo (with a length-correlated reward model)."""
    rng = np.random.default_rng(0)
    store = Store(path)
    run = store.create_run("synthetic", {"name": "synthetic"}, CARD, run_id="run1")
    for stage, kind, parent in [("init", "init", None), ("pretrain", "pretrain", "init"), ("sft", "sft", "pretrain"),
                                ("reward", "reward", "sft"), ("ppo", "ppo", "sft"), ("dpo", "dpo", "sft")]:
        inputs = {"parent": parent, "reward": "reward"} if stage == "ppo" else {"parent": parent}
        store.upsert_checkpoint(run, stage, kind, parent, f"hash-{stage}", None, "complete", inputs=inputs)
    ids = [f"q{i:03d}" for i in range(N)]
    mc = {"init": binary(rng, 0.25)}
    mc["pretrain"] = binary(rng, 0, mc["init"], 0.6)
    mc["sft"] = mc["ppo"] = mc["dpo"] = mc["pretrain"]
    refusal = {"sft": binary(rng, 0.1)}
    for stage in ("ppo", "dpo"):
        refusal[stage] = binary(rng, 0, refusal["sft"], 0.7 if stage == planted else 0.0)
    tokens = {"sft": rng.normal(30, 5, N)}
    tokens["ppo"] = tokens["sft"] + rng.normal(12, 3, N)
    tokens["dpo"] = tokens["sft"] + rng.normal(0, 3, N)
    reward = {s: tokens[s] / 10 + rng.normal(0, 0.1, N) for s in tokens}
    for stage in ("init", "pretrain", "sft", "ppo", "dpo"):
        add_eval(store, run, stage, "hallucination", {i: {"mc_accuracy": mc[stage][k]} for k, i in enumerate(ids)},
                 extra=[{"metric": "topic_coverage.share_correlation", "value": 0.1 if stage == "init" else 0.9,
                         "ci_low": -0.5 if stage == "init" else 0.6, "ci_high": 0.6 if stage == "init" else 0.98}])
        if stage in refusal:
            backend = ppo_backend if stage == "ppo" else "hf"
            add_eval(store, run, stage, "refusal",
                     {i: {"refusal.harmful_refusal_rate": refusal[stage][k],
                          f"refusal.harmful_refusal_rate[{'a' if k % 2 else 'b'}]": refusal[stage][k]}
                      for k, i in enumerate(ids)}, backend=backend)
            add_eval(store, run, stage, "verbosity",
                     {i: {"verbosity.mean_tokens": tokens[stage][k], "reward_mean": reward[stage][k]}
                      for k, i in enumerate(ids)})
    key = f"{run}-reward-reward_model"
    store.begin_evaluation(key, run, "reward", "reward_model", "1", "pairs", "hf", DEC)
    store.write_evaluation(key, [{"metric": "reward_model.reward_length_corr", "value": 0.7, "n": 100}], [])
    return store, run


SUMMARY = ("planted effects recovered: 4/5 (missed: 1, inconclusive: 0); 'any' rows, not counted: 0; "
           "unplanted effects attributed: 0")


def effects_of(store: Store, run: str, spec: AttributionSpec | None = None, card: dict | None = None) -> list[dict]:
    return stage_effects(store.metrics(run), store.samples(run), store.checkpoints(run),
                         store.get_run(run)["world_card"] if card is None else card, spec, run_id=run)


def by(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["stage"], r["metric"]): r for r in rows}


@pytest.mark.parametrize("planted", ["ppo", "dpo"])
def test_planted_effect_attributed_at_its_stage_only(tmp_path: Path, planted: str) -> None:
    store, run = build(tmp_path / "s.sqlite", planted=planted)
    rows = by(effects_of(store, run))
    refusal = {s: rows[(s, "refusal.harmful_refusal_rate")] for s in ("ppo", "dpo")}
    null = "dpo" if planted == "ppo" else "ppo"
    assert refusal[planted]["attributed"] and refusal[planted]["effect"] > 0.5
    assert refusal[planted]["test"] == "mcnemar" and refusal[planted]["p_adjusted"] < 0.01
    assert refusal[planted]["details"]["flips"]["down"] == 0
    assert not refusal[null]["attributed"] and refusal[null]["effect"] == 0
    assert rows[("pretrain", "hallucination.mc_accuracy")]["attributed"]
    assert not any(rows[(s, "hallucination.mc_accuracy")]["attributed"] for s in ("sft", "ppo", "dpo"))
    # the reward stage is no policy; sft's parent is pretrain; breakdowns are never attributed
    assert not any(r["stage"] == "reward" for r in rows.values())
    assert rows[("sft", "hallucination.mc_accuracy")]["parent_stage"] == "pretrain"
    assert not any(r["attributed"] for r in rows.values() if r["family"] == "breakdown")
    assert all(r["p_adjusted"] is None for r in rows.values() if r["family"] == "breakdown")
    # the verbosity suite's short key `reward_mean` is qualified by its suite
    assert rows[("ppo", "verbosity.reward_mean")]["test"] == "sign_flip"
    first = rows[("sft", "refusal.harmful_refusal_rate")]
    assert first["effect"] is None and first["details"]["kind"] == "first_measured"


def test_expected_direction_gates_attribution_and_recovery(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    card = {"expected_effects": [{"stage": "ppo", "metric": "refusal.harmful_refusal_rate", "direction": "decrease"},
                                 {"stage": "ppo", "metric": "verbosity.mean_tokens", "direction": "flat"}]}
    rows = by(stage_effects(store.metrics(run), store.samples(run), store.checkpoints(run), card))
    ref = rows[("ppo", "refusal.harmful_refusal_rate")]
    assert not ref["attributed"] and "against the expected decrease" in ref["details"]["reason"]
    tok = rows[("ppo", "verbosity.mean_tokens")]
    assert tok["attributed"] and "expects it flat" in tok["details"]["reason"]
    rec = planted_recovery(list(rows.values()), card)
    assert rec["recovered"] == 0 and rec["expected"] == 2
    allowed = {"expected_effects": [{**card["expected_effects"][1], "forbidden": "decrease"}]}
    assert planted_recovery(list(rows.values()), allowed)["recovered"] == 1


def test_aggregate_metric_reported_not_tested(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    row = by(effects_of(store, run))[("pretrain", "topic_coverage.share_correlation")]
    assert row["test"] == "none" and row["p_value"] is None and not row["attributed"]
    assert row["effect"] == pytest.approx(0.8) and row["details"]["descriptive_shift"] is True


def test_results_are_deterministic(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    assert json.dumps(effects_of(store, run), sort_keys=True) == json.dumps(effects_of(store, run), sort_keys=True)


def test_cross_backend_pair_is_refused(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite", ppo_backend="vllm")
    row = by(effects_of(store, run))[("ppo", "refusal.harmful_refusal_rate")]
    assert row["effect"] is None and not row["attributed"]
    assert row["details"]["kind"] == "not_comparable" and "backend: parent 'hf' vs child 'vllm'" in row["details"]["reason"]


def test_lineage_paths_and_telescoping(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    paths = lineage_paths(store.checkpoints(run))
    assert paths == [["init", "pretrain", "sft", "ppo"], ["init", "pretrain", "sft", "dpo"]]
    decs = lineage_decompositions(store.metrics(run), store.samples(run), store.checkpoints(run))
    assert decs
    for d in decs:
        assert sum(c["effect"] for c in d["contributions"]) == pytest.approx(d["total"], abs=1e-12)
        assert d["total"] == pytest.approx(d["leaf_value"] - d["root_value"], abs=1e-12)
    # telescoping on the common items, even when stages have different item sets
    values = {"a": {"1": 0.0, "2": 1.0, "3": 0.0}, "b": {"1": 1.0, "2": 1.0}, "c": {"1": 1.0, "2": 0.0, "4": 1.0}}
    d = decompose(["a", "b", "c"], values)
    assert d["n"] == 2 and [c["effect"] for c in d["contributions"]] == [0.5, -0.5] and d["total"] == 0.0


def _samples(stage: str, outcomes: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"stage": stage, "suite": "refusal", "eval_key": stage, "item_id": item, "sample_index": j,
             "outcome": {"harmful_refusal_rate": v}} for item, vs in outcomes.items() for j, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_sample_flips_both_ways_with_samples_averaged() -> None:
    parent = _samples("sft", {"a": [0], "b": [1], "c": [0], "d": [1], "e": [0]})
    child = _samples("ppo", {"a": [1], "b": [0], "c": [1], "d": [1], "e": [1, 0], "z": [1]})
    flips = sample_flips(parent, child, "refusal.harmful_refusal_rate")
    assert (flips["n"], flips["up"], flips["down"]) == (5, 3, 1)
    assert flips["up_ids"] == ["a", "c", "e"] and flips["down_ids"] == ["b"]


def test_reward_hacking_flag(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    rows = effects_of(store, run)
    flags = reward_hacking_flags(rows, store.metrics(run), store.checkpoints(run))
    assert flags["ppo"]["flagged"] and flags["ppo"]["reward_stage"] == "reward"
    assert not flags["dpo"]["flagged"] and "tokens_up" in flags["dpo"]["reason"]
    strict = reward_hacking_flags(rows, store.metrics(run), store.checkpoints(run), corr_threshold=0.8)
    assert not strict["ppo"]["flagged"] and "reward_length_corr_high" in strict["ppo"]["reason"]


def test_reward_hacking_flag_reads_the_length_correlation_on_the_parents_answers(tmp_path: Path) -> None:
    """The reward model's pay for length is taken from the parent policy's verbosity answers scored by that
    same reward model (the distribution RL exploits) when stored, else from its held-out pairs (0.7)."""
    for scored_by, corr, source in (("hash-reward", 0.55, "verbosity.reward_length_corr at sft"),
                                    ("hash-other", 0.7, "reward_model.reward_length_corr at reward")):
        store, run = build(tmp_path / f"{scored_by}.sqlite")
        rows = effects_of(store, run)
        key = f"{run}-sft-verbosity-rm"
        store.begin_evaluation(key, run, "sft", "verbosity", "1", "items-rm", "hf", DEC, reward_hash=scored_by)
        store.write_evaluation(key, [{"metric": "verbosity.reward_length_corr", "value": 0.55, "n": 240}], [])
        flags = reward_hacking_flags(rows, store.metrics(run), store.checkpoints(run), corr_threshold=0.6)
        assert flags["ppo"]["reward_length_corr"] == pytest.approx(corr)
        assert flags["ppo"]["reward_length_corr_source"] == source
        assert flags["ppo"]["flagged"] == (corr > 0.6)  # the on-policy 0.55 decides against the held-out 0.7


def test_length_correlation_must_be_significantly_positive() -> None:
    from harness.flags import correlation_p

    assert correlation_p(0.19, 240) == pytest.approx(0.0015, abs=3e-4)  # weak but real on 240 answers
    assert correlation_p(0.19, 30) > 0.1 and correlation_p(-0.3, 240) > 0.99 and correlation_p(0.5, 3) is None


def test_planted_recovery_line(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    rec = planted_recovery(effects_of(store, run), CARD)
    # sft refusal is first measured at sft: not measurable, so not recovered
    # ppo's reward rise is real but its metric is not in the card: listed apart, not "unplanted"
    assert rec["summary"] == SUMMARY
    assert rec["lines"][0] == rec["summary"] and rec["not_covered_attributed"] == 1
    # dpo's refusal is flat (no item flipped on 200): shown equivalent within ±0.05
    assert any(line.startswith("[ok] dpo refusal.harmful_refusal_rate expected flat (forbidden: both)")
               and "within ±0.05" in line for line in rec["lines"])
    assert any(line.startswith("[MISSED] sft refusal.harmful_refusal_rate") for line in rec["lines"])
    assert any(line.startswith("[not covered by the card] ppo verbosity.reward_mean") for line in rec["lines"])
    moved_store, moved_run = build(tmp_path / "m.sqlite", planted="dpo")
    moved = planted_recovery(effects_of(moved_store, moved_run), CARD)
    assert (moved["recovered"], moved["unplanted_attributed"]) == (2, 1)  # the refusal effect moved to dpo
    assert any(line.startswith("[MISSED] dpo refusal.harmful_refusal_rate expected flat") for line in moved["lines"])


def test_report_stores_effects_once_and_renders(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    stored = compute_and_store_effects(store, run)
    assert len(stored) > 10 and stored["attributed"].sum() >= 3
    tok = stored[(stored.stage == "ppo") & (stored.metric == "verbosity.mean_tokens")].iloc[0]
    assert tok["details"]["reward_hacking"]["flagged"]
    md = render_report(store, run)
    assert md.rstrip().endswith(SUMMARY)
    assert "| dpo | refusal.harmful_refusal_rate | both | +0 [" in md and "| ±0.05 | recovered |" in md
    for part in ("## Stage effects", "## Decision rule", "Holm", "## Lineage decompositions", "## Sample flips",
                 "**FLAGGED**", "init → pretrain → sft → ppo"):
        assert part in md
    store.close()
    with Store(tmp_path / "s.sqlite", readonly=True) as ro:
        assert render_report(ro, run) == md
        print_report(ro, run)


# --------------------------------------------------------------------------- flat, any, minimum effects


def pair_store(path: Path, suite: str, parent: dict[str, float], child: dict[str, float],
               card: dict | None = None) -> tuple[Store, str]:
    """sft -> dpo, one suite evaluated at both (`parent` / `child`: item -> outcome of one metric)."""
    store = Store(path)
    run = store.create_run("pair", {"name": "pair"}, card, run_id="pair")
    store.upsert_checkpoint(run, "sft", "sft", None, "hash-sft", None, "complete", inputs={})
    store.upsert_checkpoint(run, "dpo", "dpo", "sft", "hash-dpo", None, "complete", inputs={"parent": "sft"})
    for stage, values in (("sft", parent), ("dpo", child)):
        add_eval(store, run, stage, suite, {i: dict(v) for i, v in values.items()})
    return store, run


def flipped(n: int, up: int, down: int, seed: int = 0) -> tuple[dict, dict]:
    """0/1 outcomes of n items at a rate of 1/2; the child flips `up` zeros to 1 and `down` ones to 0."""
    rng = np.random.default_rng(seed)
    base = (np.arange(n) % 2).astype(float)
    rng.shuffle(base)
    child = base.copy()
    child[np.flatnonzero(base == 0)[:up]] = 1.0
    child[np.flatnonzero(base == 1)[:down]] = 0.0
    key = "refusal.harmful_refusal_rate"
    return ({f"q{i:04d}": {key: base[i]} for i in range(n)}, {f"q{i:04d}": {key: child[i]} for i in range(n)})


FLAT = {"expected_effects": [{"stage": "dpo", "metric": "refusal.harmful_refusal_rate", "direction": "flat",
                              "why": "no pair prefers refusal"}]}


def test_flat_needs_equivalence_not_just_no_significance(tmp_path: Path) -> None:
    """Nothing is significant in either run; only the narrow interval shows the metric flat."""
    wide_store, wide_run = pair_store(tmp_path / "w.sqlite", "refusal", *flipped(40, 6, 6), card=FLAT)
    narrow_store, narrow_run = pair_store(tmp_path / "n.sqlite", "refusal", *flipped(1000, 3, 3), card=FLAT)
    for store, run, verdict in ((wide_store, wide_run, "inconclusive"), (narrow_store, narrow_run, "recovered")):
        rows = effects_of(store, run)
        row = by(rows)[("dpo", "refusal.harmful_refusal_rate")]
        assert row["effect"] == 0 and row["p_adjusted"] == 1 and not row["attributed"]
        eq = row["details"]["equivalence"]
        assert (eq["lower"], eq["upper"]) == (-0.05, 0.05) and eq["equivalent"] == (verdict == "recovered")
        assert row["details"]["ci_level"] == pytest.approx(0.99)  # one tested effect: 1 − alpha/1
        tost = row["details"]["tost"]  # one flat expectation: TOST at alpha, its 1 − 2 alpha interval
        assert (tost["level"], tost["family_size"]) == (pytest.approx(0.98), 1) and eq["ci"] == tost["ci"]
        rec = planted_recovery(rows, FLAT)
        assert (rec["recovered"], rec["inconclusive"], rec["missed"], rec["expected"]) == (
            (1, 0, 0, 1) if verdict == "recovered" else (0, 1, 0, 1))
        line = next(x for x in rec["lines"] if "expected flat" in x)
        assert line.startswith("[ok]" if verdict == "recovered" else "[inconclusive]") and "±0.05" in line
    assert by(effects_of(wide_store, wide_run))[("dpo", "refusal.harmful_refusal_rate")]["ci_high"] > 0.05


def test_flat_with_a_forbidden_side(tmp_path: Path) -> None:
    """Forgetting allowed (forbidden: increase): a significant decrease is within the one-sided bound."""
    card = {"expected_effects": [{**FLAT["expected_effects"][0], "forbidden": "increase"}]}
    down_store, down_run = pair_store(tmp_path / "d.sqlite", "refusal", *flipped(400, 0, 60), card=card)
    rows = effects_of(down_store, down_run)
    row = by(rows)[("dpo", "refusal.harmful_refusal_rate")]
    assert row["attributed"] and row["effect"] == pytest.approx(-0.15)
    assert row["details"]["equivalence"]["upper"] == 0.05 and row["details"]["equivalence"]["lower"] is None
    rec = planted_recovery(rows, card)
    assert (rec["recovered"], rec["unplanted_attributed"]) == (1, 0) and "< +0.05" in rec["lines"][1]
    up_store, up_run = pair_store(tmp_path / "u.sqlite", "refusal", *flipped(400, 60, 0), card=card)
    rec = planted_recovery(effects_of(up_store, up_run), card)
    assert (rec["missed"], rec["recovered"]) == (1, 0) and rec["lines"][1].startswith("[MISSED]")


def flat_family(tmp_path: Path, n: int, ups: dict[str, int]) -> list[dict]:
    """sft -> dpo on `n` items, every metric 0 at sft; dpo turns the first `ups[metric]` items to 1;
    the card expects each metric flat (forbidden: both), so the k = len(ups) flats form one family."""
    metrics = [f"refusal.{m}" for m in ups]
    parent = {f"q{i:04d}": dict.fromkeys(metrics, 0.0) for i in range(n)}
    child = {f"q{i:04d}": {f"refusal.{m}": float(i < up) for m, up in ups.items()} for i in range(n)}
    card = {"expected_effects": [{"stage": "dpo", "metric": m, "direction": "flat", "why": "?"} for m in metrics]}
    store, run = pair_store(tmp_path / "f.sqlite", "refusal", parent, child, card=card)
    rows = by(effects_of(store, run))
    return [rows[("dpo", m)] for m in metrics]


def test_flat_checks_are_one_holm_family() -> None:
    """TOST p against ± the bound (Tango's score test for 0/1) agrees with its interval at 1 − 2p."""
    from harness.attribution import tost_p
    from harness.core.paired import mean_diff_interval

    diffs = np.zeros(1005)
    diffs[:33] = 1
    p = tost_p(diffs, 0.05, "both", binary=True)
    assert 0.005 < p < 0.01  # the upper side decides: 33 of 1005 up, nothing down
    assert mean_diff_interval(diffs, 1 - 2 * p * 1.001, binary=True)[1] == pytest.approx(0.05, abs=1e-4)
    assert tost_p(diffs, 0.05, "decrease", binary=True) < 1e-12  # only the lower side is tested
    assert tost_p(diffs, None, "both", binary=True) is None


def test_holm_shows_a_flat_check_that_alpha_over_k_could_not(tmp_path: Path) -> None:
    """Two clearly flat metrics and one at +0.033 (TOST p 0.0063): at alpha/3 each (Bonferroni) it
    would be inconclusive; Holm tests it last, at alpha/1, and shows it flat, its interval at 98%."""
    clear_a, clear_b, edge = flat_family(tmp_path, 1005, {"over_refusal_rate": 0, "over_partial_rate": 0,
                                                           "harmful_refusal_rate": 33})
    for row in (clear_a, clear_b):
        assert row["details"]["tost"]["p_adjusted"] < 1e-6 and row["details"]["equivalence"]["equivalent"]
    tost = edge["details"]["tost"]
    assert 0.005 < tost["p_value"] < 0.01 / 1 and tost["p_value"] > 0.01 / 3
    assert (tost["family_size"], tost["alpha"], tost["level"]) == (3, pytest.approx(0.01), pytest.approx(0.98))
    assert tost["p_adjusted"] == pytest.approx(tost["p_value"]) and edge["details"]["equivalence"]["equivalent"]
    assert tost["ci"][1] < 0.05 < mean_diff_interval_at(edge, 1 - 2 * 0.01 / 3)


def mean_diff_interval_at(row: dict, level: float) -> float:
    from harness.core.paired import mean_diff_interval

    diffs = np.zeros(int(row["n"]))
    diffs[: row["details"]["flips"]["up"]] = 1
    return mean_diff_interval(diffs, level, binary=True)[1]


def test_holm_stops_at_the_first_flat_check_it_cannot_show(tmp_path: Path) -> None:
    """p 0.0063 fails its Holm level alpha/2; the next, p 0.0093, is then not shown flat either, though its
    own interval at alpha/1 lies inside ± 0.05: both inconclusive, neither counted as recovered."""
    first, second = flat_family(tmp_path, 1005, {"over_refusal_rate": 33, "harmful_refusal_rate": 34})
    assert first["details"]["tost"]["p_value"] < second["details"]["tost"]["p_value"] < 0.01
    assert first["details"]["tost"]["alpha"] == pytest.approx(0.005)
    assert second["details"]["tost"]["alpha"] == pytest.approx(0.01) and second["details"]["tost"]["ci"][1] < 0.05
    assert second["details"]["tost"]["p_adjusted"] >= 0.01
    assert not first["details"]["equivalence"]["equivalent"] and not second["details"]["equivalence"]["equivalent"]
    card = {"expected_effects": [{"stage": "dpo", "metric": r["metric"], "direction": "flat", "why": "?"}
                                 for r in (first, second)]}
    rec = planted_recovery([first, second], card)
    assert (rec["recovered"], rec["inconclusive"], rec["missed"]) == (0, 2, 0)


def test_any_rows_are_listed_never_counted(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    card = {"expected_effects": [*CARD["expected_effects"],
                                 {"stage": "ppo", "metric": "verbosity.reward_mean", "direction": "any", "why": "?"},
                                 {"stage": "dpo", "metric": "verbosity.mean_tokens", "direction": "any", "why": "?"}]}
    rows = effects_of(store, run, card=card)
    rec = planted_recovery(rows, card)
    assert (rec["recovered"], rec["expected"], rec["any"]) == (4, 5, 2)  # as without the `any` rows
    assert rec["not_covered_attributed"] == 0  # the ppo reward rise is allowed by its `any` row
    assert "'any' rows, not counted: 2" in rec["summary"]
    assert [x for x in rec["lines"] if x.startswith("[any]")] == [
        f"[any] ppo verbosity.reward_mean: effect {by(rows)[('ppo', 'verbosity.reward_mean')]['effect']:+.3g}, "
        "no direction planted (not counted)",
        f"[any] dpo verbosity.mean_tokens: effect {by(rows)[('dpo', 'verbosity.mean_tokens')]['effect']:+.3g}, "
        "no direction planted (not counted)"]


def reward_pair(tmp_path: Path, name: str, shift: float, noise: float, n: int, offset: float) -> dict:
    """A reward-like score (arbitrary origin: `offset` added to parent and child) moved by `shift`."""
    rng = np.random.default_rng(7)
    parent = rng.normal(0.05, 1.0, n) + offset
    child = parent + shift + rng.normal(0.0, noise, n)
    store, run = pair_store(tmp_path / f"{name}.sqlite", "verbosity",
                            {f"p{i:04d}": {"reward_mean": parent[i]} for i in range(n)},
                            {f"p{i:04d}": {"reward_mean": child[i]} for i in range(n)})
    return by(effects_of(store, run))[("dpo", "verbosity.reward_mean")]


def test_standardised_min_effect_ignores_the_scores_origin(tmp_path: Path) -> None:
    """A reward score's zero is arbitrary: the decision may not change when a constant is added to
    parent and child (10% of the parent value attributed +0.3 at a parent of 0.05, not at 100)."""
    for shift, noise, n, attributed in ((0.3, 0.5, 120, True), (0.14, 1.0, 1000, False)):
        rows = [reward_pair(tmp_path, f"r{n}-{offset}", shift, noise, n, offset) for offset in (0.0, 100.0)]
        for row in rows:
            assert row["p_adjusted"] < 0.01 and row["attributed"] is attributed, row["details"]["reason"]
            d = row["details"]
            assert d["min_effect"] == pytest.approx(0.2 * d["sd_diff"]) and d["min_effect_rule"].startswith("d_z ≥ 0.2")
        assert rows[0]["effect"] == pytest.approx(rows[1]["effect"], abs=1e-9)
        assert rows[0]["details"]["d_z"] == pytest.approx(rows[1]["details"]["d_z"], abs=1e-9)
    assert "d_z ≥ 0.2" in rows[0]["details"]["reason"]  # significant, below the standardised minimum


def test_spec_sets_alpha_intervals_and_min_effects(tmp_path: Path) -> None:
    store, run = build(tmp_path / "s.sqlite")
    default = by(effects_of(store, run))
    tok = default[("ppo", "verbosity.mean_tokens")]
    m = tok["details"]["family_size"]
    assert m == sum(1 for r in default.values() if r["family"] == "headline" and r["p_value"] is not None)
    assert tok["details"]["ci_level"] == pytest.approx(1 - 0.01 / m)  # simultaneous: the decision's level
    assert tok["details"]["min_effect_rule"].startswith("10% of the parent value")  # tokens keep their unit
    assert tok["details"]["attribution"] == AttributionSpec().model_dump()
    spec = AttributionSpec(alpha=0.05, intervals="per_effect", min_effect={"verbosity.mean_tokens": 15})
    custom = by(effects_of(store, run, spec))
    tok = custom[("ppo", "verbosity.mean_tokens")]
    assert tok["details"]["ci_level"] == pytest.approx(0.95) and tok["details"]["min_effect"] == 15
    assert not tok["attributed"] and "< minimum effect 15" in tok["details"]["reason"]
    assert tok["ci_high"] - tok["ci_low"] < default[("ppo", "verbosity.mean_tokens")]["ci_high"] - \
        default[("ppo", "verbosity.mean_tokens")]["ci_low"]
    assert tok["details"]["attribution"]["min_effect"]["verbosity.mean_words"] == "10%"  # merged over the defaults


def test_flat_with_a_planted_latent_bound(tmp_path: Path) -> None:
    """A card entry may bound a known small shift (SFT's latent refusal): +0.04 on 400 items is not
    within +0.05 at the TOST level, but is within the entry's own bound of +0.20."""
    entry = {**FLAT["expected_effects"][0], "forbidden": "increase"}
    for card, verdict, bound in (({"expected_effects": [entry]}, "inconclusive", 0.05),
                                 ({"expected_effects": [{**entry, "bound": 0.2}]}, "recovered", 0.2)):
        store, run = pair_store(tmp_path / f"{verdict}.sqlite", "refusal", *flipped(400, 16, 0), card=card)
        rows = effects_of(store, run)
        eq = by(rows)[("dpo", "refusal.harmful_refusal_rate")]["details"]["equivalence"]
        assert eq["upper"] == bound and eq["equivalent"] == (verdict == "recovered"), eq
        rec = planted_recovery(rows, card)
        assert rec[verdict] == 1 and f"< +{bound:g}" in rec["lines"][1], rec["lines"]
