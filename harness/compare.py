"""Compare alignment methods across seeds: what ``harness compare`` prints (``harness.compare_render``).

**Methods** are stage names of any kind, their variants (``dpo[dpo.beta=0.2]``) and the run of each seed
found by :mod:`harness.compare_methods`.

**Statistics**, per method (variant) × metric, all on per-item outcomes (``harness.core.paired``):

- the mean over seeds of the stored metric value, with a seed-level Student t interval at 1 − α over
  the seeds (descriptive: it is what another seed may give; none with one seed);
- the within-seed paired effect against the shared parent (the stage's evaluated parent in the same
  run, e.g. ``sft``: child − parent on the same items), per seed and pooled over seeds;
- for each pair of methods, the paired difference B − A on the same items per seed (both from runs of
  that seed) and pooled over seeds.

Pooled = the item-level differences of every seed together (an item of seed 0 and the same item of
seed 1 are two pairs): exact McNemar for 0/1 outcomes, the seeded sign-flip test otherwise, valid
given the items because seeds are independent trainings. The pooled tests of the whole table (every
method's effect and every pair's difference, every metric) are one Holm family at α; their
intervals are simultaneous at 1 − α/m (Bonferroni), the level of the decision. A difference is
called (``verdict``) only where the Holm-adjusted p is below α and the effect reaches the metric's
minimum effect (``harness.attribution.min_effect_for``, the attribution's rule). Per-seed tests show
their raw p and are outside the family. α is the runs' ``attribution.alpha`` unless given.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.attribution import min_effect_for, spec_of
from harness.compare_methods import CompareError, Method, find_methods
from harness.core import paired as pt
from harness.core.store import Store
from harness.flags import reward_hacking_flags
from harness.lineage import is_breakdown

DEFAULT_METRICS = (
    "refusal.harmful_refusal_rate", "refusal.over_refusal_rate", "hallucination.abstention_rate",
    "hallucination.accuracy", "hallucination.mc_accuracy", "topic_coverage.accuracy", "verbosity.mean_tokens",
    "verbosity.reward_mean", "capabilities.acc",
)
Row = dict[str, Any]
__all__ = ["DEFAULT_METRICS", "CompareError", "Method", "compare", "find_methods", "seed_interval"]


# --------------------------------------------------------------------------- per-item values


class Values:
    """Metric rows and per-item values of (run, stage), read once each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._rows: dict[tuple[str, str], dict[str, list[Row]]] = {}
        self._items: dict[tuple[str, str], dict[tuple[str, str], dict[str, float]]] = {}

    def rows(self, run_id: str, stage: str | None, metric: str) -> list[Row]:
        if stage is None:
            return []
        if (run_id, stage) not in self._rows:
            grouped: dict[str, list[Row]] = {}
            for r in self.store.metrics(run_id, stage).to_dict("records"):
                grouped.setdefault(r["metric"], []).append(r)
            self._rows[(run_id, stage)] = grouped
        return self._rows[(run_id, stage)].get(metric, [])

    def _index(self, run_id: str, stage: str) -> dict[tuple[str, str], dict[str, float]]:
        if (run_id, stage) not in self._items:
            self._items[(run_id, stage)] = pt.outcome_index(self.store.samples(run_id, stage), by=("eval_key",))
        return self._items[(run_id, stage)]

    def items(self, run_id: str, stage: str, row: Row, metric: str) -> dict[str, float]:
        return self._index(run_id, stage).get((row["eval_key"], metric), {})

    def metric_names(self, methods: Iterable[Method]) -> list[str]:
        """Headline metrics with per-item outcomes that some method measured."""
        names: set[str] = set()
        for m in methods:
            for run_id in m.runs.values():
                self.rows(run_id, m.stage, "")
                stored = self._rows[(run_id, m.stage)]
                names |= {k[1] for k in self._index(run_id, m.stage) if k[1] in stored and not is_breakdown(k[1])}
        return sorted(names)


def _pair_seed(values: Values, a: tuple[str, str | None], b: tuple[str, str | None], metric: str
               ) -> tuple[Row | None, Row | None, dict[str, float], dict[str, float], str]:
    """The comparable evaluations of two (run, stage) at one seed and their per-item values."""
    rows_a, rows_b = values.rows(a[0], a[1], metric), values.rows(b[0], b[1], metric)
    if not rows_a or not rows_b:
        return None, None, {}, {}, "not measured" if not rows_b else "parent not measured"
    ra, rb, note = pt.pick_comparable(rows_a, rows_b)
    if ra is None or rb is None:
        return None, None, {}, {}, note
    return ra, rb, values.items(a[0], a[1] or "", ra, metric), values.items(b[0], b[1] or "", rb, metric), note


def seed_interval(xs: Sequence[float], confidence: float) -> tuple[float | None, float | None]:
    """Student t interval of the mean over seeds (None with fewer than two)."""
    x = np.asarray([v for v in xs if v is not None and math.isfinite(v)], dtype=float)
    if x.size < 2:
        return None, None
    half = float(sps.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean() - half), float(x.mean() + half)


# --------------------------------------------------------------------------- the table


def compare(store: Store, wanted: Sequence[str], metrics: Sequence[str] | None = None,
            alpha: float | None = None) -> Row:
    """The comparison of ``wanted`` methods on ``metrics`` (default: :data:`DEFAULT_METRICS` measured;
    ``["all"]``: every headline metric with per-item outcomes) as one JSON-safe dict (module docs)."""
    methods = find_methods(store, wanted)
    runs = store.runs().set_index("run_id")
    first = next(iter(methods[0].runs.values()))
    spec = spec_of(runs.loc[first, "config"])
    alpha = spec.alpha if alpha is None else alpha
    values = Values(store)
    measured = values.metric_names(methods)
    if metrics is None:
        names = [m for m in DEFAULT_METRICS if m in measured]
    elif list(metrics) == ["all"]:
        names = measured
    else:
        names = list(metrics)
    jobs: list[Row] = []
    for m in methods:
        for metric in names:
            jobs.append(_effect_job(values, m, metric, alpha))
    for a, b in combinations(methods, 2):
        for metric in names:
            jobs.append(_pair_job(values, a, b, metric))
    tested = [j for j in jobs if j["pooled_items"][0]]
    m_family = len(tested)
    conf = pt.family_confidence(alpha, m_family)
    n_perm = max(spec.permutations, math.ceil(2 * max(m_family, 1) / alpha))
    for j in jobs:
        _pool(j, conf, n_perm)
    family = [j for j in jobs if j["pooled"]["p_value"] is not None]
    for j, p in zip(family, pt.holm([j["pooled"]["p_value"] for j in family]), strict=True):
        j["pooled"]["p_adjusted"] = p
    for j in jobs:
        _verdict(j, alpha, spec)
        del j["pooled_items"]
    seeds = sorted({s for m in methods for s in m.runs})
    return pt.json_safe({
        "store": str(store.path), "alpha": alpha, "family_size": m_family, "ci_level": conf,
        "seed_ci_level": 1 - alpha, "seeds": seeds, "metrics": names,
        "methods": [_profile(store, m, spec) for m in methods],
        "effects": [j for j in jobs if j["type"] == "effect"],
        "pairs": [j for j in jobs if j["type"] == "pair"],
    })


def _effect_job(values: Values, m: Method, metric: str, alpha: float) -> Row:
    per_seed, parent_items, child_items = [], {}, {}
    for seed, run_id in sorted(m.runs.items()):
        parent = m.parents.get(seed)
        prow, crow, pv, cv, note = _pair_seed(values, (run_id, parent), (run_id, m.stage), metric)
        entry: Row = {"seed": seed, "run_id": run_id, "parent": parent,
                      "value": pt.plain(crow["value"]) if crow else _stored(values, run_id, m.stage, metric),
                      "parent_value": pt.plain(prow["value"]) if prow else None}
        _seed_test(entry, pv, cv, seed, metric, note)
        parent_items.update({f"{seed}|{i}": v for i, v in pv.items()})
        child_items.update({f"{seed}|{i}": v for i, v in cv.items()})
        per_seed.append(entry)
    vals = [e["value"] for e in per_seed if e["value"] is not None]
    return {"type": "effect", "method": m.label, "metric": metric,
            "parents": sorted({str(e["parent"]) for e in per_seed}), "per_seed": per_seed,
            "mean": float(np.mean(vals)) if vals else None, "n_seeds": len(vals),
            "seed_ci": list(seed_interval(vals, 1 - alpha)), "pooled_items": (parent_items, child_items)}


def _pair_job(values: Values, a: Method, b: Method, metric: str) -> Row:
    per_seed, a_items, b_items = [], {}, {}
    for seed in sorted(set(a.runs) & set(b.runs)):
        ra, rb, av, bv, note = _pair_seed(values, (a.runs[seed], a.stage), (b.runs[seed], b.stage), metric)
        entry: Row = {"seed": seed, "a_value": pt.plain(ra["value"]) if ra else None,
                      "b_value": pt.plain(rb["value"]) if rb else None}
        _seed_test(entry, av, bv, seed, metric, note)
        a_items.update({f"{seed}|{i}": v for i, v in av.items()})
        b_items.update({f"{seed}|{i}": v for i, v in bv.items()})
        per_seed.append(entry)
    return {"type": "pair", "a": a.label, "b": b.label, "metric": metric, "per_seed": per_seed,
            "pooled_items": (a_items, b_items)}


def _stored(values: Values, run_id: str, stage: str, metric: str) -> float | None:
    rows = values.rows(run_id, stage, metric)
    return pt.plain(rows[0]["value"]) if rows else None


def _seed(*parts: Any) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) % 2**31


def _seed_test(entry: Row, before: dict[str, float], after: dict[str, float], seed: int, metric: str,
               note: str) -> None:
    """One seed's paired difference (raw p, 95% interval), or why there is none."""
    if not before or not after:
        entry.update(diff=None, n=0, p_value=None, note=note or "no per-item outcomes")
        return
    res = pt.paired_compare(before, after, seed=_seed(seed, metric))
    entry.update(diff=res.effect, n=res.n, p_value=res.p_value, ci=[res.ci_low, res.ci_high], test=res.test)
    if note:
        entry["note"] = note


def _pool(job: Row, confidence: float, n_perm: int) -> None:
    before, after = job["pooled_items"]
    pooled: Row = {"diff": None, "ci": [None, None], "p_value": None, "p_adjusted": None, "n": 0, "test": "none"}
    if before and after:
        res = pt.paired_compare(before, after, seed=_seed(job.get("method") or job.get("a"), job.get("b"),
                                                          job["metric"]),
                                n_permutations=n_perm, confidence=confidence)
        if res.n:
            pooled.update(diff=res.effect, ci=[res.ci_low, res.ci_high], p_value=res.p_value, n=res.n,
                          test=res.test, sd=res.sd, before=res.parent_mean, after=res.child_mean,
                          up=res.up, down=res.down)
    job["pooled"] = pooled


def _verdict(job: Row, alpha: float, spec: Any) -> None:
    p, d = job["pooled"], job["pooled"]["diff"]
    if d is None:
        job["verdict"] = "not comparable" if job["per_seed"] else "no common seeds"
        return
    rate = p["test"] == "mcnemar" or job["metric"].split("[", 1)[0].endswith(("_rate", "accuracy"))
    size, rule = min_effect_for(job["metric"], rate, p.get("before"), p.get("sd"), spec)
    p.update(min_effect=size, min_effect_rule=rule)
    if p["p_adjusted"] is None or not p["p_adjusted"] < alpha:
        job["verdict"] = "no clear difference" if job["type"] == "pair" else "no clear effect"
    elif size is not None and abs(d) < size - 1e-12:
        job["verdict"] = "significant, below the minimum effect"
    elif job["type"] == "pair":
        job["verdict"] = f"{job['b'] if d > 0 else job['a']} higher"
    else:
        job["verdict"] = "raises" if d > 0 else "lowers"


def _profile(store: Store, m: Method, spec: Any) -> Row:
    """Seeds, runs, parent, wall time, tokens trained, reward-hacking flags, feedback notes of a method."""
    flagged, checked = 0, 0
    for run_id in m.runs.values():
        try:
            flags = reward_hacking_flags(store.effects(run_id), store.metrics(run_id), store.checkpoints(run_id),
                                         spec.alpha, spec.reward_length_corr_threshold)
        except (KeyError, ValueError):
            continue
        if m.stage in flags:
            checked += 1
            flagged += bool(flags[m.stage]["flagged"])
    train = list(m.training.values())

    def mean(key: str) -> float | None:
        xs = [t[key] for t in train if isinstance(t.get(key), int | float)]
        return float(np.mean(xs)) if xs else None

    notes = sorted({str(t["feedback_note"]) for t in train if t.get("feedback_note")})
    return {"label": m.label, "stage": m.stage, "kind": m.kind, "seeds": sorted(m.runs), "runs": m.runs,
            "parents": sorted({str(p) for p in m.parents.values()}), "wall_s": mean("wall_s"),
            "train_tokens": mean("train_tokens"), "reward_hacking": f"{flagged}/{checked}" if checked else None,
            "notes": notes}
