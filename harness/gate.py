"""`harness gate`: the decisions -- stop a checkpoint that regresses, without failing on noise.

Rules (:class:`harness.config.GateSpec`) bound a candidate stage's metrics. Absolute ``min`` /
``max`` use the point estimate in every mode. Relative bounds compare with a baseline stage of
the same run on the items both evaluated: ``max_increase`` / ``max_decrease`` on
``delta = candidate − baseline`` and ``max_regression`` on the change in the *worse* direction
(from the metric's ``higher_is_better``). For a bound with margin ``m`` the per-item regression
is ``x_i = ±(candidate_i − baseline_i)`` (+ = worse) and ``θ`` its mean. The modes:

- ``significance`` (default): a bound fails when the regression is *shown to exceed* the margin:
  one-sided test of H0 ``θ ≤ m`` vs H1 ``θ > m`` (:mod:`harness.core.margin_tests`: Tango's score
  test for 0/1 outcomes, the t test otherwise), Holm at ``alpha`` over the bounds that can fail
  (those whose point estimate crosses the margin). Crossed but not shown: ``inconclusive``
  (exit code from ``on_inconclusive``: warn -> 0, fail -> 1). Without per-item outcomes the
  point estimate decides.
- ``non_inferiority``: the candidate carries the burden of proof: a bound passes only when the
  regression is *shown to be within* the margin (H0 ``θ ≥ m`` rejected vs H1 ``θ < m``, Holm at
  ``alpha`` over every tested relative bound); otherwise it fails (also without per-item outcomes).
- ``strict``: the point estimate alone (tests and intervals are shown, they decide nothing).

Every relative bound reports the regression the suite can detect with 80% power at one-sided
``alpha`` (:func:`harness.core.margin_tests.detectable`): in ``significance`` / ``strict`` the
smallest true regression that would fail, in ``non_inferiority`` the largest that would pass.
Intervals of the delta are two-sided ``1 − 2 α_j`` (each end a one-sided ``1 − α_j`` bound)
where ``α_j = alpha / (k − j + 1)`` is the rule's Holm step level (``alpha`` outside the
family): an end beyond the margin is what the rule's own Holm step needs (Holm also needs every
smaller p to pass its step). Candidate and baseline must share backend, decoding, suite version
and reward model, else the rule is an ``error`` (refused). A missing baseline, suite or metric,
or zero items, gets ``on_missing`` (fail | warn): never a silent pass.

Exit codes of :func:`run_gate` (the ``harness gate`` command): **0** pass (warnings and, with
``on_inconclusive: warn``, inconclusive rules allowed), **1** gate failed, **2** usage or config
error (rules file, run, stage, refused comparison), **3** internal error.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from harness.config import ConfigError, GateRule, GateSpec
from harness.core import margin_tests as mt
from harness.core import paired as pt
from harness.core.store import Store, StoreError
from harness.gate_render import (
    EXIT_INTERNAL,
    EXIT_USAGE,
    SEVERITY,
    BoundResult,
    GateReport,
    RuleResult,
    github_annotations,
    to_json,
    to_junit_xml,
    to_markdown,
)

EPS = 1e-12
RELATIVE = ("max_increase", "max_decrease", "max_regression")


class GateUsageError(Exception):
    """A mistake the user can fix (rules file, run, stage, incomparable results): exit 2."""


@dataclass
class _Pairs:
    diff: np.ndarray  # candidate − baseline per shared item
    binary: bool


def load_rules(path: Path | str) -> GateSpec:
    """Gate rules from a YAML file (the gate mapping itself, or a pipeline config with a
    ``gate:`` section); ConfigError names the file and the key on any problem."""
    return GateSpec.load(path)


def _bounds(rule: GateRule) -> str:
    names = ("min", "max", *RELATIVE)
    return ", ".join(f"{n} {getattr(rule, n):g}" for n in names if getattr(rule, n) is not None)


def _one(rows: list[dict], who: str, metric: str) -> dict:
    if len({pt.identity(r) for r in rows}) > 1:
        raise GateUsageError(f"{who} has {len(rows)} evaluations of {metric} with different backend/decoding/"
                             f"suite version ({[pt.identity(r) for r in rows]}); keep one per stage to gate it")
    return rows[0]


def evaluate_gate(spec: GateSpec, candidate_metrics: pd.DataFrame, candidate_samples: pd.DataFrame | None,
                  baseline_metrics: pd.DataFrame | None = None, baseline_samples: pd.DataFrame | None = None,
                  *, candidate: str = "candidate", baseline: str | None = None, run_id: str | None = None,
                  baseline_note: str = "") -> GateReport:
    """Verdict of every rule for a candidate stage's metrics (+ samples) against an optional
    baseline stage's, as read from the store (``Store.metrics/samples(run, stage)``)."""
    report = GateReport(candidate, baseline, run_id, spec.mode, spec.alpha, spec.on_missing, spec.on_inconclusive)
    cand, base = _by_metric(candidate_metrics), _by_metric(baseline_metrics)
    c_items, b_items = pt.outcome_index(candidate_samples), pt.outcome_index(baseline_samples)
    pending: list[tuple[RuleResult, list[str], _Pairs | None]] = []
    for i, rule in enumerate(spec.rules):
        res = RuleResult(i + 1, rule.metric, rule.metric.split(".", 1)[0], _bounds(rule))
        absolute, pairs = _evaluate_rule(spec, rule, res, cand, base, c_items, b_items, candidate, baseline,
                                         baseline_note)
        pending.append((res, absolute, pairs))
    _test_bounds(spec, [(res, pairs) for res, _, pairs in pending if pairs is not None])
    for res, absolute, pairs in pending:
        _verdict(res, absolute, spec)
        _summarise(res, pairs, spec)
        report.results.append(res)
    return report


def _by_metric(metrics: pd.DataFrame | None) -> dict[str, list[dict]]:
    return {} if metrics is None or metrics.empty else {m: r for (_, m), r in pt.metric_rows(metrics).items()}


def _missing(res: RuleResult, spec: GateSpec, why: str) -> None:
    res.verdict, res.message = spec.on_missing, f"missing: {why} (on_missing: {spec.on_missing})"


def _evaluate_rule(spec: GateSpec, rule: GateRule, res: RuleResult, cand: dict[str, list[dict]],
                   base: dict[str, list[dict]], c_items: dict, b_items: dict, candidate: str,
                   baseline: str | None, baseline_note: str) -> tuple[list[str], _Pairs | None]:
    """Fill value/baseline/delta and the relative bounds of one rule; return the crossed
    absolute bounds' texts and the paired per-item differences (None without them)."""
    if rule.metric not in cand:
        suites = sorted({m.split(".", 1)[0] for m in cand})
        what = f"metric {rule.metric}" if res.suite in suites else f"suite {res.suite!r} (evaluated: {suites})"
        _missing(res, spec, f"candidate {candidate!r} has no {what}")
        return [], None
    crow = _one(cand[rule.metric], f"candidate {candidate!r}", rule.metric)
    res.value, res.n, hib = pt.plain(crow["value"]), pt.plain(crow.get("n")), pt.plain(crow.get("higher_is_better"))
    res.higher_is_better = None if hib is None else bool(hib)
    res.ci_low, res.ci_high = pt.plain(crow.get("ci_low")), pt.plain(crow.get("ci_high"))
    if res.value is None or not res.n:
        _missing(res, spec, f"candidate {candidate!r}: {rule.metric} has zero items or all items errored")
        return [], None
    absolute = []
    if rule.min is not None and res.value < rule.min - EPS:
        absolute.append(f"value {res.value:.4g} < min {rule.min:g}")
    if rule.max is not None and res.value > rule.max + EPS:
        absolute.append(f"value {res.value:.4g} > max {rule.max:g}")
    if not rule.is_relative():
        return absolute, None
    res.ci_low = res.ci_high = None  # the metric's interval is of the value, not of a delta
    if baseline is None or rule.metric not in base:
        why = "no baseline stage given" if baseline is None else f"baseline {baseline!r} has no {rule.metric}"
        _missing(res, spec, why + (f" {baseline_note}" if baseline_note else ""))
        return absolute, None
    brow = pt.pick_comparable(base[rule.metric], [crow])[0]  # the baseline evaluation made like the candidate's
    if brow is None:
        diffs = [f"{f}: candidate {c!r}, baseline {b!r}" for f, b, c in
                 zip(pt.IDENTITY, pt.identity(base[rule.metric][0]), pt.identity(crow), strict=True) if b != c]
        res.verdict = "error"
        res.message = (f"refused: candidate {candidate!r} and baseline {baseline!r} were evaluated differently "
                       f"({'; '.join(diffs)}); results from different backends, decoding settings or suite "
                       "versions are never compared")
        return [], None
    res.baseline, n_base = pt.plain(brow["value"]), pt.plain(brow.get("n"))
    if res.baseline is None or not n_base:
        _missing(res, spec, f"baseline {baseline!r}: {rule.metric} has zero items or all items errored")
        return absolute, None
    if rule.max_regression is not None and res.higher_is_better is None:
        res.verdict, res.message = "error", f"{rule.metric} declares no higher_is_better: use max_increase/max_decrease"
        return [], None
    res.delta = res.value - res.baseline
    pairs = _pairs(b_items.get((baseline, brow["eval_key"], rule.metric)),
                   c_items.get((candidate, crow["eval_key"], rule.metric)))
    if pairs is not None:
        res.delta, res.n = float(pairs.diff.mean()), int(pairs.diff.size)
    worse = -1 if res.higher_is_better else 1
    for name, direction in (("max_increase", 1), ("max_decrease", -1), ("max_regression", worse)):
        limit = getattr(rule, name)
        if limit is not None:
            moved = direction * res.delta + 0.0  # no -0
            res.bounds.append(BoundResult(name, float(limit), direction, moved, moved > limit + EPS))
    return absolute, pairs


def _pairs(base: Mapping[str, float] | None, cand: Mapping[str, float] | None) -> _Pairs | None:
    items = sorted(set(base or {}) & set(cand or {}))
    if not items:
        return None
    a = np.array([float(base[i]) for i in items])  # type: ignore[index]
    b = np.array([float(cand[i]) for i in items])  # type: ignore[index]
    return _Pairs(b - a, pt.is_binary(a) and pt.is_binary(b))


def _test_bounds(spec: GateSpec, tested: list[tuple[RuleResult, _Pairs]]) -> None:
    """p-values, Holm family and step levels, detectable effects of every paired relative bound."""
    alternative = "less" if spec.mode == "non_inferiority" else "greater"
    bounds = []
    for res, pairs in tested:
        for b in res.bounds:
            t = mt.margin_test(b.direction * pairs.diff, b.margin, alternative, pairs.binary)
            b.test, b.p_value, b.level = t.test, t.p_value, spec.alpha
            b.detectable = mt.detectable(t, spec.alpha)
            bounds.append(b)
    family = [b for b in bounds if spec.mode == "non_inferiority" or b.crossed]
    order = sorted(range(len(family)), key=lambda k: (family[k].p_value, k))  # pt.holm's order
    for rank, k in enumerate(order):
        family[k].level = spec.alpha / (len(family) - rank)
    for b, p in zip(family, pt.holm([b.p_value for b in family]), strict=True):
        b.p_adjusted = p


def _verdict(res: RuleResult, absolute: list[str], spec: GateSpec) -> None:
    """The rule's verdict from its absolute bounds, its relative bounds' tests and any missing data."""
    if res.verdict == "error":
        return
    for b in res.bounds:
        _bound_verdict(b, spec)
    failures = absolute + [b.note for b in res.bounds if b.verdict == "fail"]
    unsure = [b.note for b in res.bounds if b.verdict == "inconclusive"]
    notes = [res.message] if res.message else []
    if failures:
        res.verdict, res.message = "fail", "; ".join(failures + unsure + notes)
    elif unsure:
        res.verdict, res.message = "inconclusive", "; ".join(unsure + notes)
    elif res.verdict != "pass":  # on_missing
        res.message = "; ".join(notes)
    else:
        res.message = "; ".join([b.note for b in res.bounds if b.note] + notes) or "ok"


def _bound_verdict(b: BoundResult, spec: GateSpec) -> None:
    what = f"{b.bound} {b.margin:g}: regression {b.regression:+.4g}"
    p = f"p_adj {b.p_adjusted:.3g}" if b.p_adjusted is not None else ""
    if spec.mode == "strict" or b.p_value is None:
        why = "strict: point estimate" if spec.mode == "strict" else "no paired per-item outcomes"
        if spec.mode == "non_inferiority":
            b.verdict, b.note = "fail", f"{what}, within the margin not shown ({why})"
        elif b.crossed:
            b.verdict, b.note = "fail", f"{what} > margin ({why})"
    elif spec.mode == "non_inferiority":
        can = _detect_text(b.detectable, "passes at 80% power only if the true regression is <= {}",
                           "non-inferiority cannot be shown on these items")
        if b.p_adjusted is not None and b.p_adjusted <= spec.alpha:
            b.note = f"{what}, shown within the margin ({p} <= alpha {spec.alpha:g})"
        else:
            b.verdict, b.note = "fail", f"{what}, not shown within the margin ({p} > alpha {spec.alpha:g}; {can})"
    elif b.crossed:
        can = _detect_text(b.detectable, "detectable regression >= {} at 80% power",
                           "no regression is detectable on these items")
        if b.p_adjusted is not None and b.p_adjusted <= spec.alpha:
            b.verdict, b.note = "fail", f"{what} > margin, shown ({p} <= alpha {spec.alpha:g})"
        else:
            b.verdict, b.note = "inconclusive", f"{what} > margin, not shown ({p} > alpha {spec.alpha:g}; {can})"


def _detect_text(value: float | None, template: str, none: str) -> str:
    return none if value is None else template.format(f"{value:.3g}")


def _summarise(res: RuleResult, pairs: _Pairs | None, spec: GateSpec) -> None:
    """Rule-level test figures and delta interval from the deciding bound (worst verdict, then
    furthest past its margin), the interval at that bound's Holm step level."""
    if not res.bounds or res.verdict == "error":
        return
    main = max(res.bounds, key=lambda b: (SEVERITY[b.verdict], b.regression - b.margin))
    res.p_value, res.p_adjusted, res.detectable, res.test = main.p_value, main.p_adjusted, main.detectable, main.test
    if pairs is not None and main.level is not None:
        ci = mt.interval(pairs.diff, pairs.binary, main.level)
        if ci is not None:
            res.ci_low, res.ci_high, res.ci_level = ci[0], ci[1], 1 - 2 * main.level


# --------------------------------------------------------------------------- entry point


def run_gate(store_path: Path | str, run_id: str | None, candidate: str, baseline: str | None,
             rules_path: Path | str | None, junit: Path | str | None = None, summary: Path | str | None = None,
             json_path: Path | str | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
             dashboard_url: str | None = None) -> int:
    """Gate ``candidate`` (a stage of run ``run_id``, latest run when None) against ``baseline``
    with the rules of ``rules_path`` (default: the run config's ``gate:``). Prints the Markdown,
    writes the optional JUnit / Markdown / JSON files, appends the Markdown to
    ``$GITHUB_STEP_SUMMARY`` when set, prints ``::error`` / ``::warning`` annotations under
    GitHub Actions; with ``dashboard_url``, the Markdown links each rule's dashboard views.
    Returns the exit code: 0 pass, 1 gate failed, 2 usage/config error, 3 internal."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        report = _gate(store_path, run_id, candidate, baseline, rules_path)
        md = to_markdown(report)
        if dashboard_url:
            from harness.dashboard_links import gate_summary_links

            md += "\n" + gate_summary_links(dashboard_url, store_path, report)
        for path, text in ((junit, to_junit_xml(report)), (summary, md), (json_path, to_json(report))):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text, encoding="utf-8")
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
                fh.write(md + "\n")
        out.write(md)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            out.write("\n".join(github_annotations(report)) + "\n")
        return report.exit_code
    except (GateUsageError, ConfigError, StoreError) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except Exception:  # noqa: BLE001 - the documented exit code 3
        err.write(traceback.format_exc() + "internal error in harness gate (exit 3); please report it\n")
        return EXIT_INTERNAL


def _gate(store_path: Path | str, run_id: str | None, candidate: str, baseline: str | None,
          rules_path: Path | str | None) -> GateReport:
    with Store(store_path, readonly=True) as store:
        run_id = store.require_run(run_id)
        config = store.get_run(run_id).get("config") or {}
        if rules_path is not None:
            spec = load_rules(rules_path)
        elif isinstance(config.get("gate"), Mapping):
            spec = GateSpec.from_mapping(config["gate"], f"config of run {run_id}", "gate.")
        else:
            raise GateUsageError(f"no --rules given and the config of run {run_id} has no `gate:` section")
        stages = list(dict.fromkeys([*store.checkpoints(run_id)["stage"], *store.evaluations(run_id)["stage"]]))
        if candidate not in stages:
            raise GateUsageError(f"candidate stage {candidate!r} is not in run {run_id} (stages: {stages})")
        note = "" if baseline is None or baseline in stages else f"(stage not in run {run_id}; stages: {stages})"
        return evaluate_gate(spec, store.metrics(run_id, candidate), store.samples(run_id, candidate),
                             store.metrics(run_id, baseline) if baseline else None,
                             store.samples(run_id, baseline) if baseline else None,
                             candidate=candidate, baseline=baseline, run_id=run_id, baseline_note=note)
