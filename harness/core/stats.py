"""Confidence intervals and small statistics helpers, pure and on scipy.

Every suite reports a 95% interval with each metric:
- a **rate** (share of items with a binary outcome) gets the Wilson score interval, which
  stays inside [0, 1] and behaves at 0 and 1 successes, unlike the normal approximation;
- a **mean / median / quantile** of a continuous outcome gets a seeded percentile bootstrap
  (``scipy.stats.bootstrap``) over items;
- a **correlation** gets the Fisher z interval (with Fieller's variance for Spearman).

Paired tests (McNemar, sign-flip permutation, Holm) and the interval of a mean paired
difference are in :mod:`harness.core.paired`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def _sps() -> Any:
    """scipy.stats, imported when first needed: a second of start-up every command would pay otherwise."""
    from scipy import stats

    return stats


def _z(confidence: float) -> float:
    return float(_sps().norm.ppf(0.5 + confidence / 2))


def wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``; ``(nan, nan)`` when ``n == 0``.

    ``successes`` may be fractional (a rate averaged over several samples per item).
    """
    if n <= 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[..., float] = np.mean,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (seeded, so reproducible).

    ``statistic`` takes an array and an ``axis`` keyword (``np.mean``, ``np.median``, :func:`quantile`).

    Returns ``(nan, nan)`` for fewer than two values, and ``(v, v)`` when every value is equal
    (scipy would warn about a degenerate distribution).
    """
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return math.nan, math.nan
    if np.all(data == data[0]):
        v = float(statistic(data))
        return v, v

    res = _sps().bootstrap(
        (data,),
        lambda sample, axis=-1: statistic(sample, axis=axis),
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def quantile(q: float) -> Callable[..., float]:
    """A statistic for :func:`bootstrap_ci`: the ``q`` quantile (linear interpolation)."""

    def stat(x: np.ndarray, axis: int | None = None) -> float:
        return np.quantile(x, q, axis=axis)

    return stat


def fisher_ci(r: float, n: int, confidence: float = CONFIDENCE, spearman: bool = False) -> tuple[float, float]:
    """Interval of a correlation by Fisher's z transform; Fieller's variance 1.06/(n-3) for Spearman."""
    if n <= 3 or not math.isfinite(r):
        return math.nan, math.nan
    if abs(r) >= 1:
        return r, r
    se = math.sqrt((1.06 if spearman else 1.0) / (n - 3))
    z = math.atanh(r)
    half = _z(confidence) * se
    return math.tanh(z - half), math.tanh(z + half)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value; ``(nan, nan)`` when undefined
    (fewer than three pairs, or either side constant)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan, math.nan
    res = _sps().spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation; nan when undefined (fewer than three pairs, or a constant side)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(_sps().pearsonr(a, b).statistic)


def ols_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``y`` on ``x``; 0 when ``x`` has no spread."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or np.all(a == a[0]):
        return 0.0
    return float(_sps().linregress(a, b).slope)


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa of two raters' labels on the same items: (p_o − p_e) / (1 − p_e), where p_e is the
    agreement expected from each rater's label frequencies alone. 1.0 when both raters agree and use one
    label only (no disagreement to explain); nan for no items."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} labels against {len(b)}")
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    expected = sum((sum(x == lab for x in a) / n) * (sum(y == lab for y in b) / n) for lab in labels)
    return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)
