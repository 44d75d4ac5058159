"""Paired statistics: two checkpoints compared on the *same* items.

- :func:`mcnemar_exact` — binary outcomes (0/1 per item): the exact two-sided binomial test
  of the discordant pairs (items that flipped) at 1/2 (``scipy.stats.binomtest``).
- :func:`sign_flip_pvalue` — continuous outcomes: a permutation test of the mean paired
  difference under random sign flips (``scipy.stats.permutation_test``; every one of the 2^m
  flips for m ≤ :data:`EXACT_MAX_N` non-zero differences, otherwise seeded Monte Carlo with
  the +1 correction).
- :func:`mean_diff_interval` — the interval of the mean paired difference at any level:
  Tango's score interval for 0/1 outcomes, Student t otherwise
  (:func:`harness.core.margin_tests.interval`, the one the gate's margin tests invert).
  Analytic, so it holds at the extreme levels a multiplicity-adjusted decision needs
  (1 − α/m puts each tail near 1e-4, where a percentile bootstrap would need 10^5–10^6
  resamples per effect to be stable); the score interval keeps an honest width when few or
  no items flipped (0 of 72 at 99.98%: ±0.16), where a Wald-type interval collapses.
- :func:`family_confidence` — the simultaneous (Bonferroni) level 1 − α/m of m intervals.
- :func:`holm` — Holm's step-down adjustment of a family of p-values.
- :func:`paired_compare` — all of the above for two ``item -> value`` maps.
- :func:`outcome_number` / :func:`outcome_index` — per-item numeric values from the store's
  samples (the one rule the attribution, the gate and the dashboard share);
  :func:`pick_comparable` — two evaluations that may be compared (same :data:`IDENTITY`).

Everything is pure and deterministic given ``seed``; results do not depend on item order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.core import margin_tests
from harness.core.stats import CONFIDENCE

DEFAULT_PERMUTATIONS = 10_000
EXACT_MAX_N = 12  # scipy enumerates flips in Python batches: 2^12 is instant, 2^16 takes ~0.5 s
_BATCH = 4096  # flips drawn at once (bounds memory)
IDENTITY = ("suite_version", "backend", "decoding_json", "reward_hash")  # equal, or no comparison
Row = dict[str, Any]


def mcnemar_exact(losses: int, gains: int) -> float:
    """Two-sided exact McNemar p-value.

    ``losses`` = items with outcome 1 before and 0 after, ``gains`` = 0 before and 1 after.
    Under H0 each discordant item is a loss or a gain with probability 1/2: the two-sided
    binomial test of ``gains`` out of ``losses + gains`` at 1/2. 1.0 with no flips.
    """
    if losses < 0 or gains < 0:
        raise ValueError(f"flip counts must be >= 0, got losses={losses}, gains={gains}")
    n = losses + gains
    return 1.0 if n == 0 else float(sps.binomtest(gains, n, 0.5).pvalue)


def _abs_sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.abs(np.sum(x, axis=axis))


def sign_flip_pvalue(
    diffs: Sequence[float],
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    exact_max_n: int = EXACT_MAX_N,
) -> float:
    """Two-sided sign-flip permutation p-value for H0: paired differences are symmetric about 0.

    Statistic ``|sum(d)|`` (equivalent to the mean), one-sided ``greater`` on it, which is
    the two-sided test. Zero differences are the same under any flip, so they are dropped.
    With m ≤ ``exact_max_n`` non-zero differences all 2^m flips are enumerated:
    ``p = #{|T*| >= |T|} / 2^m``. Otherwise ``n_permutations`` seeded random flips give
    ``p = (#{|T*| >= |T|} + 1) / (n_permutations + 1)``, never 0. 1.0 when there is at most one
    non-zero difference.
    """
    d = np.asarray(diffs, dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite")
    d = d[d != 0]
    if d.size <= 1:  # one difference: both of its 2 flips give the same |T|, so p = 2/2 (scipy needs 2)
        return 1.0
    exact = d.size <= exact_max_n
    res = sps.permutation_test((d,), _abs_sum, permutation_type="samples", vectorized=True,
                               n_resamples=np.inf if exact else n_permutations, alternative="greater",
                               batch=_BATCH, rng=np.random.default_rng(seed))
    return float(res.pvalue)


def family_confidence(alpha: float, m: int, simultaneous: bool = True) -> float:
    """The level of m intervals that hold together with probability ≥ 1 − alpha
    (Bonferroni: 1 − alpha/m), or 1 − alpha each when not ``simultaneous``."""
    return 1 - alpha / max(m, 1) if simultaneous else 1 - alpha


def mean_diff_interval(diffs: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE,
                       binary: bool = False) -> tuple[float, float]:
    """Two-sided interval of the mean paired difference at ``confidence``: each end a one-sided
    ``(1 + confidence) / 2`` bound, so it lies inside ``(-m, m)`` exactly when both one-sided
    margin tests reject at ``(1 - confidence) / 2`` (TOST). ``binary`` (both sides 0/1, each
    difference −1, 0 or +1): Tango's score interval; otherwise Student t. ``(nan, nan)`` with
    no items (binary) or fewer than two (t); ``(v, v)`` when every (continuous) difference is v.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    got = margin_tests.interval(d, binary, (1 - confidence) / 2)
    return (math.nan, math.nan) if got is None else (float(got[0]), float(got[1]))


def common_values(parent: Mapping[str, float], child: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The items both maps have (sorted) and their parent and child values."""
    items = sorted(set(parent) & set(child))
    return items, np.array([float(parent[i]) for i in items]), np.array([float(child[i]) for i in items])


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, ``adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j))``.
    None / NaN entries are not part of the family and stay None. Rejecting where
    ``adj < alpha`` controls the family-wise error rate at ``alpha``.
    """
    idx = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    out: list[float | None] = [None] * len(p_values)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: (p_values[k], k))):
        p = float(p_values[i])  # type: ignore[arg-type]
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class PairedResult:
    """Child − parent on the items both have.

    ``test`` is ``mcnemar`` (both sides 0/1 on every item), ``sign_flip`` (continuous) or
    ``none`` (no common item). ``sd`` is the standard deviation of the paired differences
    (ddof 1; the unit of a standardised effect d_z = effect / sd). ``ci_low``/``ci_high``
    are at ``confidence`` (:func:`mean_diff_interval`). ``up`` / ``down`` count items whose
    value rose / fell (for binary outcomes: gains 0→1 and losses 1→0), ids in ``up_ids`` /
    ``down_ids``.
    """

    n: int
    parent_mean: float
    child_mean: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    up: int
    down: int
    up_ids: tuple[str, ...]
    down_ids: tuple[str, ...]
    sd: float = math.nan
    confidence: float = CONFIDENCE

    @property
    def binary(self) -> bool:
        return self.test == "mcnemar"


def is_binary(values: Sequence[float] | np.ndarray) -> bool:
    """True when every value is exactly 0 or 1."""
    arr = np.asarray(values, dtype=float)
    return bool(np.all((arr == 0) | (arr == 1)))


def paired_compare(
    parent: Mapping[str, float],
    child: Mapping[str, float],
    seed: int = 0,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    confidence: float = CONFIDENCE,
) -> PairedResult:
    """Compare per-item values (already averaged over samples) on their common items:
    McNemar exact when both sides are 0/1 on every common item, else the sign-flip test;
    the interval of the mean difference at ``confidence`` (:func:`mean_diff_interval`)."""
    items, a, b = common_values(parent, child)
    nan = math.nan
    if not items:
        return PairedResult(0, nan, nan, nan, nan, nan, nan, "none", 0, 0, (), (), nan, confidence)
    d = b - a
    up_ids = tuple(i for i, x in zip(items, d, strict=True) if x > 0)
    down_ids = tuple(i for i, x in zip(items, d, strict=True) if x < 0)
    binary = is_binary(a) and is_binary(b)
    if binary:
        test, p = "mcnemar", mcnemar_exact(len(down_ids), len(up_ids))
    else:
        test, p = "sign_flip", sign_flip_pvalue(d, n_permutations, seed)
    low, high = mean_diff_interval(d, confidence, binary)
    sd = float(d.std(ddof=1)) if d.size > 1 else nan
    return PairedResult(len(items), float(a.mean()), float(b.mean()), float(d.mean()), low, high, p, test,
                        len(up_ids), len(down_ids), up_ids, down_ids, sd, confidence)


# --------------------------------------------------------------------------- pairing store rows


def plain(x: Any) -> Any:
    """NaN / pandas missing -> None, numpy scalars -> Python."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return None
    return x.item() if hasattr(x, "item") else x


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None, numpy -> Python, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return plain(obj)


def qualify(key: str, suite: str) -> str:
    """``suite.key`` unless the key (before any ``[group]``) already names a suite."""
    return key if "." in key.split("[", 1)[0] else f"{suite}.{key}"


def outcome_number(value: Any) -> float | None:
    """A per-item outcome as a float (bools count 0/1, numpy numbers too); None when it is
    not a finite number (strings, lists, None, NaN, inf)."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.number) and math.isfinite(float(value)):
        return float(value)
    return None


def outcome_index(samples: pd.DataFrame | None, by: Sequence[str] = ("stage", "eval_key"),
                  metrics: Iterable[str] | None = None) -> dict[tuple[Any, ...], dict[str, float]]:
    """``(*by, metric) -> {item_id: value averaged over samples}`` for every numeric outcome
    (:func:`outcome_number`) of the samples (columns ``suite``, ``item_id``, ``outcome`` and
    those in ``by``); a short outcome key is qualified by its suite (:func:`qualify`).
    ``metrics`` keeps only those (qualified) names."""
    if samples is None or samples.empty:
        return {}
    wanted = None if metrics is None else set(metrics)
    acc: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    keys = list(zip(*(samples[c] for c in by), strict=True)) if by else [()] * len(samples)
    for key, suite, item, outcome in zip(keys, samples["suite"], samples["item_id"], samples["outcome"], strict=True):
        for name, raw in (outcome if isinstance(outcome, Mapping) else {}).items():
            metric = qualify(str(name), str(suite))
            if (wanted is None or metric in wanted) and (v := outcome_number(raw)) is not None:
                acc.setdefault((*key, metric), {}).setdefault(str(item), []).append(v)
    return {k: {i: float(np.mean(v)) for i, v in items.items()} for k, items in acc.items()}


def identity(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two evaluations to be compared: :data:`IDENTITY` fields."""
    return tuple(plain(row.get(c)) for c in IDENTITY)


def pick_comparable(parent: list[Row], child: list[Row]) -> tuple[Row | None, Row | None, str]:
    """The parent and child evaluation rows with the same identity, or a refusal reason."""
    common = sorted({identity(r) for r in parent} & {identity(r) for r in child}, key=str)
    if not common:
        diffs = [f"{f}: parent {p!r} vs child {c!r}" for f, p, c in
                 zip(IDENTITY, identity(parent[0]), identity(child[0]), strict=True) if p != c]
        return None, None, "not comparable (" + "; ".join(diffs) + ")"
    note = f"{len(common)} comparable evaluations; used {common[0]}" if len(common) > 1 else ""
    return (next(r for r in parent if identity(r) == common[0]),
            next(r for r in child if identity(r) == common[0]), note)


def metric_rows(metrics: pd.DataFrame) -> dict[tuple[str, str], list[Row]]:
    """Metric rows (dicts) grouped by (stage, metric); several when a stage has several evaluations."""
    out: dict[tuple[str, str], list[Row]] = {}
    for r in metrics.to_dict("records"):
        out.setdefault((r["stage"], r["metric"]), []).append(r)
    return out
