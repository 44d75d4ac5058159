"""Paired tests against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.core.margin_tests import tango_z
from harness.core.paired import (
    family_confidence,
    holm,
    mcnemar_exact,
    mean_diff_interval,
    outcome_index,
    outcome_number,
    paired_compare,
    pick_comparable,
    qualify,
    sign_flip_pvalue,
)


def test_mcnemar_exact_known_values() -> None:
    # 9 gains, 1 loss: two-sided binomial = 2 * P(X >= 9 | n=10, 1/2) = 2 * 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
    for losses, gains in [(0, 1), (3, 7), (12, 30), (250, 310), (1000, 1111), (40, 40)]:
        ref = sps.binomtest(gains, losses + gains, 0.5).pvalue
        assert mcnemar_exact(losses, gains) == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_sign_flip_exact_by_hand() -> None:
    # flips of (1, 2, 3): |sums| = 6,4,2,0,0,2,4,6 -> two of eight reach 6
    assert sign_flip_pvalue([1, 2, 3]) == pytest.approx(2 / 8)
    assert sign_flip_pvalue([0, 0, 1, 2, 3]) == pytest.approx(2 / 8)  # zeros never change the sum
    assert sign_flip_pvalue([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    assert sign_flip_pvalue([-1, 1]) == 1.0
    assert sign_flip_pvalue([]) == 1.0 and sign_flip_pvalue([0.0, 0.0]) == 1.0
    assert sign_flip_pvalue([0.0, -1.7e-06, 0.0]) == 1.0  # one non-zero difference: both flips tie


def test_sign_flip_exact_matches_scipy() -> None:
    d = np.random.default_rng(3).normal(0.4, 1.0, 12)
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided").pvalue
    assert sign_flip_pvalue(d) == pytest.approx(ref, rel=1e-9)


def test_sign_flip_monte_carlo_is_seeded_and_close_to_exact() -> None:
    d = np.random.default_rng(5).normal(0.3, 1.0, 16)
    exact = sign_flip_pvalue(d, exact_max_n=16)
    assert exact == 28470 / 2**16  # of the 2^16 flips, 28470 reach |sum(d)| (counted by hand with numpy)
    mc = sign_flip_pvalue(d, n_permutations=20_000, seed=1, exact_max_n=0)
    assert mc == sign_flip_pvalue(d, n_permutations=20_000, seed=1, exact_max_n=0)
    assert abs(mc - exact) < 0.01
    # the +1 correction: never 0, floor 1 / (N + 1)
    assert sign_flip_pvalue(np.full(40, 2.0), n_permutations=999) == pytest.approx(1 / 1000)


def test_sign_flip_recorded_values_are_seeded() -> None:
    d = np.random.default_rng(11).normal(0.2, 1.0, 60)
    p = sign_flip_pvalue(d, n_permutations=5000, seed=3)
    assert p == sign_flip_pvalue(d, n_permutations=5000, seed=3) != sign_flip_pvalue(d, n_permutations=5000, seed=4)
    ref = sps.permutation_test((d,), lambda x, axis: np.abs(np.sum(x, axis=axis)), permutation_type="samples",
                               n_resamples=5000, alternative="greater", vectorized=True,
                               rng=np.random.default_rng(3)).pvalue
    assert p == ref == 1144 / 5001  # (hits + 1) / (N + 1): 1143 of the 5000 seeded flips reach |sum(d)|


def test_mean_diff_interval_t_and_tango() -> None:
    d = np.random.default_rng(0).normal(1.0, 2.0, 400)
    low, high = mean_diff_interval(d, 0.95)
    ref = sps.t.interval(0.95, d.size - 1, loc=d.mean(), scale=sps.sem(d))
    assert (low, high) == pytest.approx(ref, rel=1e-12)
    wider = mean_diff_interval(d, family_confidence(0.01, 50))
    assert wider[0] < low and wider[1] > high
    assert mean_diff_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(x) for x in mean_diff_interval([1.0]))
    assert all(math.isnan(x) for x in mean_diff_interval([], binary=True))
    # no item flipped: the score interval is ±z²/(n + z²) (Tango's statistic is -sqrt(n δ / (1 - δ)))
    for n, confidence in ((72, family_confidence(0.01, 50)), (200, 0.95)):
        z = sps.norm.isf((1 - confidence) / 2)
        assert mean_diff_interval(np.zeros(n), confidence, binary=True) == pytest.approx(
            (-z * z / (n + z * z), z * z / (n + z * z)), abs=1e-8)
    assert mean_diff_interval(np.zeros(72), family_confidence(0.01, 50), binary=True)[1] == pytest.approx(0.1611, abs=1e-4)
    # 3 gains, 1 loss in 10 items: the bounds are where Tango's score statistic reaches ±z
    flips = [1, 1, 1, -1, 0, 0, 0, 0, 0, 0]
    low, high = mean_diff_interval(flips, 0.95, binary=True)
    assert low < 0.2 < high and tango_z(3, 1, 10, low) == pytest.approx(1.959964, abs=1e-5)
    assert tango_z(3, 1, 10, high) == pytest.approx(-1.959964, abs=1e-5)
    assert mean_diff_interval(np.ones(5), 0.95, binary=True)[1] == 1.0
    assert family_confidence(0.01, 4) == pytest.approx(0.9975) and family_confidence(0.01, 4, False) == 0.99


def test_holm_known_values() -> None:
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.9, float("nan")]) == [pytest.approx(1.0), None, pytest.approx(1.0), None]
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_paired_compare_picks_test_and_counts_flips() -> None:
    parent = {"a": 0.0, "b": 1.0, "c": 0.0, "d": 0.0, "only-parent": 1.0}
    child = {"d": 1.0, "c": 1.0, "b": 1.0, "a": 1.0, "only-child": 0.0}
    res = paired_compare(parent, child)
    assert (res.test, res.n, res.up, res.down) == ("mcnemar", 4, 3, 0)
    assert res.up_ids == ("a", "c", "d") and res.effect == pytest.approx(0.75)
    assert res.p_value == pytest.approx(mcnemar_exact(0, 3))
    cont = paired_compare({"x": 1.5, "y": 2.0}, {"y": 2.5, "x": 1.0})
    assert cont.test == "sign_flip" and cont.effect == pytest.approx(0.0) and (cont.up, cont.down) == (1, 1)
    assert paired_compare({"a": 1.0}, {"b": 1.0}).test == "none"


def test_outcome_index_qualifies_and_averages() -> None:
    df = pd.DataFrame([
        {"stage": "sft", "suite": "verbosity", "eval_key": "k", "item_id": "1", "outcome": {"mean_tokens": 10}},
        {"stage": "sft", "suite": "verbosity", "eval_key": "k", "item_id": "1", "outcome": {"mean_tokens": 20}},
        {"stage": "sft", "suite": "verbosity", "eval_key": "k", "item_id": "2",
         "outcome": {"verbosity.mean_tokens": 5, "label": "x", "lp": [1.0], "none": None, "flag": True}},
    ])
    idx = outcome_index(df)
    assert idx[("sft", "k", "verbosity.mean_tokens")] == {"1": 15.0, "2": 5.0}
    assert outcome_index(df, by=(), metrics=["verbosity.mean_tokens"]) == {("verbosity.mean_tokens",): {"1": 15.0,
                                                                                                     "2": 5.0}}
    assert [outcome_number(v) for v in (True, np.int64(3), np.float32(0.5), "1", None, math.nan, math.inf)] == [
        1.0, 3.0, 0.5, None, None, None, None]
    assert idx[("sft", "k", "verbosity.flag")] == {"2": 1.0}
    assert ("sft", "k", "verbosity.label") not in idx
    assert qualify("harmful_refusal_rate[weapons]", "refusal") == "refusal.harmful_refusal_rate[weapons]"
    assert qualify("a.b[x.y]", "s") == "a.b[x.y]"


def test_pick_comparable_refuses_other_backends() -> None:
    row = {"suite_version": "1", "backend": "hf", "decoding_json": "{}", "reward_hash": None, "eval_key": "a"}
    other = {**row, "backend": "vllm", "eval_key": "b"}
    assert pick_comparable([row], [row])[0] is row
    p, c, why = pick_comparable([row], [other])
    assert p is None and c is None and "backend: parent 'hf' vs child 'vllm'" in why
    p, c, why = pick_comparable([row, other], [other])
    assert p is other and c is other and why == ""
