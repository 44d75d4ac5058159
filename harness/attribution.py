"""Stage attribution: which training stage moved which behaviour metric. Pure functions over
the store's DataFrames (``Store.metrics / samples / checkpoints``), the world card and the
config's :class:`~harness.core.spec.AttributionSpec`.

**Effect** of a stage = child − parent on the *same items*, with the same backend, decoding,
suite version and reward model (else refused: ``details.kind='not_comparable'``). The parent
is the nearest evaluated ancestor policy (``reward`` stages are skipped). Per-item values
are outcomes averaged over samples; a short outcome key is qualified by its suite.
Tests (``harness.core.paired``): exact McNemar for 0/1 outcomes, seeded sign-flip permutation
otherwise; Holm over every headline metric × stage. Intervals at the decision's level
(``spec.intervals``; :func:`harness.core.paired.mean_diff_interval`). Decision rule:
:data:`DECISION_RULE` and :func:`_decide`; minimum effects: :func:`min_effect_for`. A ``flat``
expectation gets an equivalence test: TOST against ± its minimum effect (or the card's bound), with
Holm's step-down over the k flat expectations of the run (the i-th smallest TOST p tested at
alpha/(k − i + 1); ``details.tost``: p, Holm-adjusted p and the interval at that level;
``details.equivalence``: :func:`harness.recovery.equivalence`), which
:func:`harness.recovery.planted_recovery` counts.
Breakdowns (``metric[group]``) get raw p-values and 1 − alpha intervals, outside the Holm
family, never attributed. Metrics without per-item outcomes (correlations): difference of
stored values, no test, never attributed; ``details.descriptive_shift`` (``|effect| >= min
size`` and the child's stored interval excludes the parent value) is what the recovery uses
for them, labelled descriptive. A metric first measured at a stage gets a row without effect
(``details.kind='first_measured'``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from harness.core import margin_tests
from harness.core import paired as pt
from harness.core.spec import AttributionSpec
from harness.lineage import Lineage, expected_for, is_breakdown
from harness.recovery import equivalence

MAX_IDS = 20  # flipped item ids kept in an effect's details
DECISION_RULE = (
    "An effect (child − parent on the same items, same backend/decoding/suite version) is **attributed** "
    "to a stage when (1) its paired test (exact McNemar for 0/1 outcomes, seeded sign-flip permutation "
    "otherwise) is significant after Holm correction over all headline metrics × stages of the run: "
    "p_adjusted < alpha = {alpha}; (2) |effect| ≥ the metric's minimum effect ({rate} absolute for rates and "
    "accuracies; Cohen's d_z ≥ {dz} — |effect| ≥ {dz} × the SD of the paired differences — for continuous "
    "metrics without a natural unit, such as reward scores; the `attribution.min_effect` table for the others: "
    "{table}); (3) where the world card expects an increase or a decrease, the effect has that sign. "
    "Intervals are {intervals}. A `flat` expectation holds only when an equivalence test shows it: two "
    "one-sided tests (TOST) against ± the minimum effect, Holm's step-down over the k flat expectations of "
    "the run ({tost}), i.e. that interval inside the bounds on the forbidden side(s); otherwise it is inconclusive "
    "(not significant is not flat), or missed when an effect is attributed in a forbidden direction. Breakdowns (metric[group]) get raw p-values and 1 − alpha "
    "intervals and are never attributed; metrics without per-item outcomes get a difference only, never "
    "attributed.")
Row = dict[str, Any]


def decision_rule(spec: AttributionSpec | None = None) -> str:
    """:data:`DECISION_RULE` filled in with a spec's values."""
    spec = spec or AttributionSpec()
    table = ", ".join(f"{m}: {v}" for m, v in spec.min_effect.items() if v is not None) or "empty"
    intervals = ("simultaneous: each headline effect's at 1 − alpha/m for the m tested effects (Bonferroni), "
                 "the level of the decision" if spec.intervals == "simultaneous"
                 else "per effect at 1 − alpha (not adjusted for multiplicity)")
    tost = ("the i-th smallest TOST p tested at alpha/(k − i + 1), its interval at 1 − 2 alpha/(k − i + 1)"
            if spec.intervals == "simultaneous" else "intervals at 1 − 2 alpha, not adjusted for multiplicity")
    return DECISION_RULE.format(alpha=spec.alpha, rate=spec.rate_min_effect, dz=spec.standardised_min_effect,
                                table=table, intervals=intervals, tost=tost)


def spec_of(config: Mapping[str, Any] | None) -> AttributionSpec:
    """The attribution spec a run was configured with (its stored config), else the defaults."""
    raw = (config or {}).get("attribution") if isinstance(config, Mapping) else None
    return AttributionSpec.model_validate(raw or {})


def min_effect_for(metric: str, rate: bool, parent_value: float | None, sd: float | None,
                   spec: AttributionSpec | None = None) -> tuple[float | None, str]:
    """The minimum effect in the metric's unit and the rule that gave it: the metric's (or its
    base metric's) ``spec.min_effect`` entry, else absolute for correlations and rates, else
    standardised (``spec.standardised_min_effect`` × ``sd``, the SD of the paired differences).
    None when the rule needs what is missing (a standardised size without per-item values)."""
    spec = spec or AttributionSpec()
    base = metric.split("[", 1)[0]
    entry = spec.min_effect.get(metric, spec.min_effect.get(base))
    if entry is not None:
        kind, size = spec.rule(entry)
    elif "corr" in base:
        kind, size = "absolute", spec.correlation_min_effect
    elif rate:
        kind, size = "absolute", spec.rate_min_effect
    else:
        kind, size = "standardised", spec.standardised_min_effect
    if kind == "absolute":
        return size, f"{size:.3g} absolute"
    if kind == "relative":
        if parent_value is None or not math.isfinite(parent_value):
            return None, f"{size:.0%} of the parent value, which is missing"
        return abs(parent_value) * size, f"{size:.0%} of the parent value {parent_value:.3g}"
    if sd is None or not math.isfinite(sd):
        return None, f"d_z ≥ {size:.3g} needs per-item differences"
    return size * sd, f"d_z ≥ {size:.3g} (× SD of the paired differences {sd:.3g})"


def _seed(seed: int, stage: str, metric: str) -> int:
    return (seed + zlib.crc32(f"{stage}|{metric}".encode())) % 2**31


def _is_rate(metric: str, values: Iterable[float]) -> bool:
    base = metric.split("[", 1)[0]
    return base.endswith(("_rate", "accuracy")) and all(0 <= v <= 1 for v in values)


def stage_effects(metrics: pd.DataFrame, samples: pd.DataFrame, checkpoints: pd.DataFrame,
                  world_card: Mapping[str, Any] | None = None, spec: AttributionSpec | None = None,
                  run_id: str | None = None) -> list[Row]:
    """Effect rows (the store's effects shape, plus run_id) for every policy stage × metric."""
    if metrics is None or metrics.empty:
        return []
    spec = spec or AttributionSpec()
    run_id = run_id or str(metrics["run_id"].iloc[0])
    lin = Lineage(checkpoints, metrics["stage"].unique())
    by_metric, index = pt.metric_rows(metrics), pt.outcome_index(samples)
    jobs: list[Row] = []
    for stage in (s for s in lin.order if s in lin.evaluated and lin.is_policy(s)):
        parent = lin.evaluated_parent(stage)
        if parent is None:
            continue
        for metric in sorted(m for s, m in by_metric if s == stage):
            exp = None if is_breakdown(metric) else expected_for(world_card, stage, lin.kind_of(stage), metric)
            job: Row = {"run_id": run_id, "stage": stage, "parent_stage": parent, "metric": metric,
                        "family": "breakdown" if is_breakdown(metric) else "headline",
                        "expected_direction": exp.get("direction") if exp else None,
                        "details": {"why": exp.get("why")} if exp else {}}
            if exp and exp.get("direction") == "flat":
                job["details"]["forbidden"] = exp.get("forbidden", "both")
                if exp.get("bound") is not None:
                    job["details"]["equivalence_bound"] = exp["bound"]
            child_rows, parent_rows = by_metric[(stage, metric)], by_metric.get((parent, metric))
            if not parent_rows:
                job["details"].update(kind="first_measured", child_metric=child_rows[0]["value"],
                                      reason=f"first measured at {stage}: no value at {parent}")
            else:
                prow, crow, note = pt.pick_comparable(parent_rows, child_rows)
                if prow is None or crow is None:
                    job["details"].update(kind="not_comparable", reason=note)
                else:
                    job.update(prow=prow, crow=crow,
                               pv=index.get((parent, prow["eval_key"], metric)),
                               cv=index.get((stage, crow["eval_key"], metric)))
                    if note:
                        job["details"]["note"] = note
            jobs.append(job)
    # the Holm family: headline effects with common items; its size m sets the interval level.
    # The flat expectations among them (k) are the equivalence family: TOST, Holm over the k.
    tested = [j for j in jobs if j["family"] == "headline" and j.get("pv") and j.get("cv")
              and not set(j["pv"]).isdisjoint(j["cv"])]
    m, k = len(tested), sum(1 for j in tested if "forbidden" in j["details"])
    simultaneous = spec.intervals == "simultaneous"
    fam = {"headline": pt.family_confidence(spec.alpha, m, simultaneous), "breakdown": 1 - spec.alpha, "m": m,
           "k": k}
    n_perm = max(spec.permutations, math.ceil(2 * max(m, 1) / spec.alpha))
    rows = [_measure(j, spec, fam, n_perm) for j in jobs]
    _equivalence_family(rows, spec.alpha, simultaneous)
    family = [i for i, r in enumerate(rows) if r["family"] == "headline" and r["p_value"] is not None]
    for i, p in zip(family, pt.holm([rows[i]["p_value"] for i in family]), strict=True):
        rows[i]["p_adjusted"] = p
    for r in rows:
        _decide(r, spec.alpha)
    return [pt.json_safe(r) for r in rows]


def _measure(job: Row, spec: AttributionSpec, fam: Mapping[str, Any], n_perm: int) -> Row:
    """Fill effect, interval, p and details of one job (no Holm, no decision yet); for an
    expected flat, also its TOST p (:func:`_equivalence_family` adjusts it and adds the interval)."""
    row = {k: v for k, v in job.items() if k not in ("prow", "crow", "pv", "cv")}
    row.update(effect=None, ci_low=None, ci_high=None, p_value=None, p_adjusted=None, n=None,
               test="none", attributed=False)
    d = row["details"]
    d.update(alpha=spec.alpha, intervals=spec.intervals if row["family"] == "headline" else "per_effect",
             attribution=spec.model_dump())
    prow, crow, pv, cv = job.get("prow"), job.get("crow"), job.get("pv"), job.get("cv")
    if prow is None or crow is None:
        return row
    pval, cval = pt.plain(prow["value"]), pt.plain(crow["value"])
    d.update(parent_metric=pval, child_metric=cval, backend=crow.get("backend"),
             suite_version=crow.get("suite_version"))
    if pv and cv:
        s = _seed(spec.seed, row["stage"], row["metric"])
        head = row["family"] == "headline"
        res = pt.paired_compare(pv, cv, seed=s, n_permutations=n_perm, confidence=fam[row["family"]])
        rate = res.binary or _is_rate(row["metric"], [*pv.values(), *cv.values()])
        size, rule = min_effect_for(row["metric"], rate, res.parent_mean, res.sd, spec)
        row.update(effect=res.effect, ci_low=res.ci_low, ci_high=res.ci_high, p_value=res.p_value,
                   n=res.n, test=res.test)
        d.update(kind="paired", parent_value=res.parent_mean, child_value=res.child_mean,
                 n_parent_items=len(pv), n_child_items=len(cv), seed=s, n_permutations=n_perm,
                 ci_level=fam[row["family"]], family_size=fam["m"] if head else None,
                 sd_diff=res.sd, d_z=res.effect / res.sd if res.sd and math.isfinite(res.sd) else None,
                 min_effect=size, min_effect_rule=rule,
                 flips={"up": res.up, "down": res.down, "up_ids": res.up_ids[:MAX_IDS],
                        "down_ids": res.down_ids[:MAX_IDS]})
        if res.n == 0:
            d["reason"] = "no common items between parent and child"
        elif head and "forbidden" in d:
            _, a, b = pt.common_values(pv, cv)
            bound = d.get("equivalence_bound", size)
            row["_diffs"] = (b - a, res.binary)
            d["tost"] = {"p_value": tost_p(b - a, bound, d["forbidden"], res.binary), "bound": bound,
                         "forbidden": d["forbidden"], "family_size": fam["k"]}
        return row
    if pval is None or cval is None:
        d.update(kind="aggregate", reason="metric value missing at parent or child")
        return row
    effect = cval - pval
    size, rule = min_effect_for(row["metric"], _is_rate(row["metric"], [pval, cval]), pval, None, spec)
    lo, hi = pt.plain(crow.get("ci_low")), pt.plain(crow.get("ci_high"))
    outside = lo is not None and hi is not None and not (lo <= pval <= hi)
    row.update(effect=effect, n=pt.plain(crow.get("n")))
    d.update(kind="aggregate", parent_value=pval, child_value=cval, child_ci=[lo, hi], min_effect=size,
             min_effect_rule=rule, descriptive_shift=bool(size is not None and abs(effect) >= size and outside),
             reason="no per-item outcomes: difference of the stored values, not tested, never attributed")
    if "forbidden" in d:
        d["equivalence"] = equivalence(row, d["forbidden"], d.get("equivalence_bound"))
    return row


def tost_p(diffs: Any, bound: float | None, forbidden: str, binary: bool) -> float | None:
    """p of "the mean difference lies inside ± ``bound`` on the forbidden side(s)": the larger of the
    one-sided margin tests (``harness.core.margin_tests``: Tango's score test for 0/1, t otherwise)."""
    if bound is None or not math.isfinite(bound) or len(diffs) == 0:
        return None
    sides = {"both": (("less", bound), ("greater", -bound)), "increase": (("less", bound),),
             "decrease": (("greater", -bound),)}[forbidden]
    return max(margin_tests.margin_test(diffs, margin, alt, binary).p_value for alt, margin in sides)


def _equivalence_family(rows: list[Row], alpha: float, simultaneous: bool) -> None:
    """Holm's step-down over the flat expectations' TOST p-values (uniformly more powerful than
    testing each at alpha/k, with the same family-wise error): the i-th smallest p is tested at
    alpha/(k − i + 1), and its interval is shown at 1 − 2 × that level, so the interval lies inside the
    bounds exactly when that test rejects. A check after the first failure in that order fails too
    (the Holm-adjusted p, ``details.tost.p_adjusted``, is then >= alpha)."""
    flats = [r for r in rows if "_diffs" in r]
    ps = [r["details"]["tost"]["p_value"] for r in flats]
    adjusted = pt.holm(ps) if simultaneous else ps
    ranked = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: (ps[i], i))
    rank = {i: n for n, i in enumerate(ranked)}
    k = len(ranked)
    for i, row in enumerate(flats):
        diffs, binary = row.pop("_diffs")
        level_alpha = alpha / (k - rank[i]) if simultaneous and i in rank else alpha
        lo, hi = pt.mean_diff_interval(diffs, 1 - 2 * level_alpha, binary)
        row["details"]["tost"].update(ci=[lo, hi], alpha=level_alpha, level=1 - 2 * level_alpha,
                                      p_adjusted=adjusted[i], procedure="holm" if simultaneous else "per check")


def _decide(row: Row, alpha: float) -> None:
    d, e, p = row["details"], row["effect"], row["p_adjusted"]
    if d.get("kind") != "paired" or e is None or row["n"] in (None, 0):
        return
    size, direction = d["min_effect"], row["expected_direction"]
    if row["family"] == "breakdown":
        d["reason"] = "breakdown: reported with its raw p, not in the Holm family, never attributed"
    elif p is None or not p < alpha:
        d["reason"] = f"not significant: p_adjusted={p:.3g} >= alpha={alpha}"
    elif size is None:
        d["reason"] = f"significant, but no minimum effect: {d['min_effect_rule']}"
    elif abs(e) < size - 1e-12:
        d["reason"] = f"significant, but |effect|={abs(e):.3g} < minimum effect {size:.3g} ({d['min_effect_rule']})"
    elif direction in ("increase", "decrease") and (e > 0) != (direction == "increase"):
        d["reason"] = f"significant and large, but against the expected {direction}"
    else:
        row["attributed"] = True
        how = {"increase": "as expected (increase)", "decrease": "as expected (decrease)",
               "flat": "although the world card expects it flat",
               "any": "the world card plants no direction here"}.get(direction, "no expected direction stated")
        d["reason"] = f"attributed: p_adjusted={p:.3g} < {alpha}, |effect| >= {size:.3g}, {how}"
    if direction == "flat" and row["family"] == "headline":
        d["equivalence"] = equivalence(row, d.get("forbidden", "both"), d.get("equivalence_bound"))
