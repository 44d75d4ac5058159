"""Paired statistics: two checkpoints compared on the *same* items.

- :func:`mcnemar_exact` — binary outcomes (0/1 per item): an exact binomial test on the
  discordant pairs (items that flipped), two-sided, at probability 1/2.
- :func:`sign_flip_pvalue` — continuous outcomes: a permutation test of the mean paired
  difference under random sign flips (exact enumeration of all 2^m flips for m ≤ 16
  non-zero differences, otherwise seeded Monte Carlo with the +1 correction).
- :func:`bootstrap_mean_ci` — a seeded percentile bootstrap interval of the mean paired
  difference (an interval, never a p-value).
- :func:`holm` — Holm's step-down adjustment of a family of p-values.
- :func:`paired_compare` — all of the above for two ``item -> value`` maps.
- :func:`outcome_index` / :func:`pick_comparable` — per-item values from the store's samples
  and the choice of two evaluations that may be compared (same :data:`IDENTITY`).

Everything is pure and deterministic given ``seed``; results do not depend on item order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
DEFAULT_PERMUTATIONS = 10_000
EXACT_MAX_N = 16
BOOTSTRAP_RESAMPLES = 2000
_CHUNK = 2000  # rows of sign / index matrices drawn at once (bounds memory)
IDENTITY = ("suite_version", "backend", "decoding_json", "reward_hash")  # equal, or no comparison
Row = dict[str, Any]


def mcnemar_exact(losses: int, gains: int) -> float:
    """Two-sided exact McNemar p-value.

    ``losses`` = items with outcome 1 before and 0 after, ``gains`` = 0 before and 1 after.
    Under H0 each discordant item is a loss or a gain with probability 1/2, so the p-value
    is the two-sided binomial test of ``gains`` out of ``n = losses + gains`` at 1/2 (the
    same as ``scipy.stats.binomtest``): ``min(1, 2 * P(X <= min(losses, gains)))``, computed
    exactly in integers. 1.0 with no flips.
    """
    if losses < 0 or gains < 0:
        raise ValueError(f"flip counts must be >= 0, got losses={losses}, gains={gains}")
    n = losses + gains
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(losses, gains) + 1))
    return min(1.0, 2 * tail / 2**n)


def _all_signs(m: int) -> np.ndarray:
    """The 2^m sign vectors (rows) of length m."""
    bits = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
    return 1 - 2 * bits


def sign_flip_pvalue(
    diffs: Sequence[float],
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    exact_max_n: int = EXACT_MAX_N,
) -> float:
    """Two-sided sign-flip permutation p-value for H0: paired differences are symmetric about 0.

    Statistic: ``|sum(d)|`` (equivalent to the mean). Zero differences are the same under
    any flip, so they are dropped before counting. With m ≤ ``exact_max_n`` non-zero
    differences all 2^m flips are enumerated and ``p = #{|T*| >= |T|} / 2^m`` (the observed
    flip is one of them). Otherwise ``n_permutations`` seeded random flips give
    ``p = (#{|T*| >= |T|} + 1) / (n_permutations + 1)``, so p is never 0. 1.0 when every
    difference is 0 or there are none.
    """
    d = np.asarray(diffs, dtype=float)
    if not np.all(np.isfinite(d)):
        raise ValueError("paired differences must be finite")
    d = d[d != 0]
    m = d.size
    if m == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if m <= exact_max_n:
        totals = np.abs(_all_signs(m) @ d)
        return float(np.mean(totals >= observed - tol))
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < n_permutations:
        rows = min(_CHUNK, n_permutations - done)
        signs = rng.integers(0, 2, size=(rows, m), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
        done += rows
    return (hits + 1) / (n_permutations + 1)


def bootstrap_mean_ci(
    diffs: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Seeded percentile-bootstrap interval of the mean of ``diffs`` (items resampled with
    replacement). ``(nan, nan)`` for fewer than two values; ``(v, v)`` when all are equal."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        rows = min(_CHUNK, n_resamples - start)
        means[start:start + rows] = d[rng.integers(0, d.size, size=(rows, d.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


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
    ``none`` (no common item). ``up`` / ``down`` count items whose value rose / fell (for
    binary outcomes: gains 0→1 and losses 1→0), with their ids in ``up_ids`` / ``down_ids``.
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
    """Compare per-item values (already averaged over samples) on their common items.

    McNemar exact when both sides are 0/1 on every common item, else the sign-flip test;
    the interval is the bootstrap interval of the mean difference in both cases.
    """
    items = sorted(set(parent) & set(child))
    nan = math.nan
    if not items:
        return PairedResult(0, nan, nan, nan, nan, nan, nan, "none", 0, 0, (), ())
    a = np.array([float(parent[i]) for i in items])
    b = np.array([float(child[i]) for i in items])
    d = b - a
    up_ids = tuple(i for i, x in zip(items, d, strict=True) if x > 0)
    down_ids = tuple(i for i, x in zip(items, d, strict=True) if x < 0)
    if is_binary(a) and is_binary(b):
        test, p = "mcnemar", mcnemar_exact(len(down_ids), len(up_ids))
    else:
        test, p = "sign_flip", sign_flip_pvalue(d, n_permutations, seed)
    low, high = bootstrap_mean_ci(d, confidence, seed=seed)
    return PairedResult(len(items), float(a.mean()), float(b.mean()), float(d.mean()), low, high, p, test,
                        len(up_ids), len(down_ids), up_ids, down_ids)


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


def outcome_index(samples: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, float]]:
    """``(stage, eval_key, metric) -> {item_id: value averaged over samples}`` for every
    numeric outcome (bools count as 0/1; strings, lists and None are skipped)."""
    acc: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    if samples is None or samples.empty:
        return {}
    cols = (samples[c] for c in ("stage", "suite", "eval_key", "item_id", "outcome"))
    for stage, suite, key, item, outcome in zip(*cols, strict=True):
        for name, v in (outcome or {}).items():
            if isinstance(v, bool | int | float | np.number) and math.isfinite(float(v)):
                acc.setdefault((stage, key, qualify(name, suite)), {}).setdefault(str(item), []).append(float(v))
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
