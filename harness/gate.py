"""`harness gate`: stop a checkpoint that regresses, without failing on noise.

Rules (:class:`harness.config.GateSpec`) bound a candidate stage's metrics: absolute ``min`` /
``max`` (point estimate, both modes); relative to a baseline stage of the same run,
``max_increase`` / ``max_decrease`` on ``delta = candidate − baseline`` and ``max_regression``
on the change in the *worse* direction (from the metric's ``higher_is_better``).
``significance`` mode: a crossed relative bound fails only when the paired test
(``harness.core.paired``, on the items both stages share) is significant at ``alpha`` after Holm
over the rules' tests, else it warns; without per-item outcomes the point estimate decides.
``strict`` mode: the point estimate alone. Candidate and baseline must share backend,
decoding, suite version and reward model, else the rule is an ``error`` (refused). A missing
baseline, suite or metric, or zero items, gets ``on_missing`` (fail | warn): never a silent pass.

Exit codes of :func:`run_gate` / ``python -m harness.gate``: **0** pass (warnings allowed),
**1** gate failed, **2** usage or config error (rules file, run, stage, refused comparison),
**3** internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from harness.core import paired as pt
from harness.config import ConfigError, GateRule, GateSpec
from harness.core.store import Store, StoreError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
SEVERITY = {"pass": 0, "warn": 1, "fail": 2, "error": 3}
SUMMARY_LIMIT = 1_000_000  # bytes; GitHub's step summary takes at most 1 MiB
EPS = 1e-12


class GateUsageError(Exception):
    """A mistake the user can fix (rules file, run, stage, incomparable results): exit 2."""


@dataclass
class RuleResult:
    index: int
    metric: str
    suite: str
    rule: str
    verdict: str = "pass"
    value: float | None = None
    baseline: float | None = None
    delta: float | None = None
    ci_low: float | None = None  # of the delta (relative rules) or of the value (absolute only)
    ci_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    n: int | None = None
    test: str = "none"
    higher_is_better: bool | None = None
    message: str = ""


@dataclass
class GateReport:
    candidate: str
    baseline: str | None
    run_id: str | None
    mode: str
    alpha: float
    on_missing: str
    results: list[RuleResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        worst = max((SEVERITY[r.verdict] for r in self.results), default=0)
        return {0: "pass", 1: "pass", 2: "fail", 3: "error"}[worst]

    @property
    def exit_code(self) -> int:
        return {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_USAGE}[self.status]

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.results) for v in SEVERITY}


# --------------------------------------------------------------------------- rules


def load_rules(path: Path | str) -> GateSpec:
    """Gate rules from a YAML file (the gate mapping itself, or a pipeline config with a
    ``gate:`` section); ConfigError names the file and the key on any problem."""
    return GateSpec.load(path)


def _bounds(rule: GateRule) -> str:
    names = ("min", "max", "max_increase", "max_decrease", "max_regression")
    return ", ".join(f"{n} {getattr(rule, n):g}" for n in names if getattr(rule, n) is not None)


# --------------------------------------------------------------------------- evaluation


def _one(rows: list[dict], who: str, metric: str) -> dict:
    if len({pt.identity(r) for r in rows}) > 1:
        raise GateUsageError(f"{who} has {len(rows)} evaluations of {metric} with different backend/decoding/"
                             f"suite version ({[pt.identity(r) for r in rows]}); keep one per stage to gate it")
    return rows[0]


def evaluate_gate(spec: GateSpec, candidate_metrics: pd.DataFrame, candidate_samples: pd.DataFrame | None,
                  baseline_metrics: pd.DataFrame | None = None, baseline_samples: pd.DataFrame | None = None,
                  *, candidate: str = "candidate", baseline: str | None = None, run_id: str | None = None,
                  seed: int = 0, baseline_note: str = "") -> GateReport:
    """Verdict of every rule for a candidate stage's metrics (+ samples) against an optional
    baseline stage's, as read from the store (``Store.metrics/samples(run, stage)``)."""
    report = GateReport(candidate, baseline, run_id, spec.mode, spec.alpha, spec.on_missing)
    cand, base = _by_metric(candidate_metrics), _by_metric(baseline_metrics)
    c_items, b_items = pt.outcome_index(candidate_samples), pt.outcome_index(baseline_samples)
    pending: list[tuple[RuleResult, GateRule, list[tuple[str, bool]]]] = []
    for i, rule in enumerate(spec.rules):
        res = RuleResult(i + 1, rule.metric, rule.metric.split(".", 1)[0], _bounds(rule))
        crossed = _evaluate_rule(spec, rule, res, cand, base, c_items, b_items, candidate, baseline,
                                 baseline_note, seed)
        pending.append((res, rule, crossed))
    tested = [res for res, rule, _ in pending if rule.is_relative() and res.p_value is not None]
    for res, p in zip(tested, pt.holm([r.p_value for r in tested]), strict=True):
        res.p_adjusted = p
    for res, _, crossed in pending:
        _verdict(res, crossed, spec)
        report.results.append(res)
    return report


def _by_metric(metrics: pd.DataFrame | None) -> dict[str, list[dict]]:
    return {} if metrics is None or metrics.empty else {m: r for (_, m), r in pt.metric_rows(metrics).items()}


def _missing(res: RuleResult, spec: GateSpec, why: str) -> list[tuple[str, bool]]:
    res.verdict, res.message = spec.on_missing, f"missing: {why} (on_missing: {spec.on_missing})"
    return []


def _evaluate_rule(spec: GateSpec, rule: GateRule, res: RuleResult, cand: dict[str, list[dict]],
                   base: dict[str, list[dict]], c_items: dict, b_items: dict, candidate: str,
                   baseline: str | None, baseline_note: str, seed: int) -> list[tuple[str, bool]]:
    """Fill value/baseline/delta/CI/p of one rule; return each bound's (text, crossed)."""
    if rule.metric not in cand:
        suites = sorted({m.split(".", 1)[0] for m in cand})
        what = f"metric {rule.metric}" if res.suite in suites else f"suite {res.suite!r} (evaluated: {suites})"
        return _missing(res, spec, f"candidate {candidate!r} has no {what}")
    crow = _one(cand[rule.metric], f"candidate {candidate!r}", rule.metric)
    res.value, res.n, hib = pt.plain(crow["value"]), pt.plain(crow.get("n")), pt.plain(crow.get("higher_is_better"))
    res.higher_is_better = None if hib is None else bool(hib)
    res.ci_low, res.ci_high = pt.plain(crow.get("ci_low")), pt.plain(crow.get("ci_high"))
    if res.value is None or not res.n:
        return _missing(res, spec, f"candidate {candidate!r}: {rule.metric} has zero items or all items errored")
    crossed = []
    if rule.min is not None:
        crossed.append((f"value {res.value:.4g} < min {rule.min:g}", res.value < rule.min - EPS))
    if rule.max is not None:
        crossed.append((f"value {res.value:.4g} > max {rule.max:g}", res.value > rule.max + EPS))
    if not rule.is_relative():
        return crossed
    if baseline is None or rule.metric not in base:
        why = "no baseline stage given" if baseline is None else f"baseline {baseline!r} has no {rule.metric}"
        _missing(res, spec, why + (f" {baseline_note}" if baseline_note else ""))
        return crossed if any(c for _, c in crossed) else []  # a crossed absolute bound still fails
    brow = pt.pick_comparable(base[rule.metric], [crow])[0]  # the baseline evaluation made like the candidate's
    if brow is None:
        diffs = [f"{f}: candidate {c!r}, baseline {b!r}" for f, b, c in
                 zip(pt.IDENTITY, pt.identity(base[rule.metric][0]), pt.identity(crow), strict=True) if b != c]
        res.verdict = "error"
        res.message = (f"refused: candidate {candidate!r} and baseline {baseline!r} were evaluated differently "
                       f"({'; '.join(diffs)}); results from different backends, decoding settings or suite "
                       "versions are never compared")
        return []
    res.baseline, n_base = pt.plain(brow["value"]), pt.plain(brow.get("n"))
    if res.baseline is None or not n_base:
        return _missing(res, spec, f"baseline {baseline!r}: {rule.metric} has zero items or all items errored")
    res.delta = res.value - res.baseline
    bv, cv = b_items.get((baseline, brow["eval_key"], rule.metric)), c_items.get((candidate, crow["eval_key"],
                                                                                 rule.metric))
    if bv and cv:
        paired = pt.paired_compare(bv, cv, seed=seed)
        if paired.n:
            res.ci_low, res.ci_high, res.p_value, res.test = paired.ci_low, paired.ci_high, paired.p_value, paired.test
            res.n = paired.n
    else:
        res.ci_low = res.ci_high = None
    d, hib = res.delta, res.higher_is_better
    if rule.max_regression is not None and hib is None:
        res.verdict, res.message = "error", f"{rule.metric} declares no higher_is_better: use max_increase/max_decrease"
        return []
    for limit, moved, text in ((rule.max_increase, d, f"delta {d:+.4g} > max_increase"),
                               (rule.max_decrease, -d, f"delta {d:+.4g} < -max_decrease"),
                               (rule.max_regression, -d if hib else d, f"worsened by {-d if hib else d:.4g} > max_regression")):
        if limit is not None:
            crossed.append((f"{text} {limit:g}", moved > limit + EPS))
    return crossed


def _verdict(res: RuleResult, crossed: list[tuple[str, bool]], spec: GateSpec) -> None:
    if res.verdict in ("error",) or (res.message.startswith("missing") and not crossed):
        return
    absolute = [t for t, c in crossed if c and t.startswith("value")]
    relative = [t for t, c in crossed if c and not t.startswith("value")]
    failures, warnings = list(absolute), []
    if relative:
        if spec.mode == "strict":
            failures += [f"{t} (strict: point estimate)" for t in relative]
        elif res.p_value is None:
            failures += [f"{t} (no paired per-item outcomes: point estimate)" for t in relative]
        elif res.p_adjusted is not None and res.p_adjusted < spec.alpha:
            failures += [f"{t}, significant: p_adj {res.p_adjusted:.3g} < alpha {spec.alpha:g}" for t in relative]
        else:
            warnings += [f"{t}, not significant: p_adj {res.p_adjusted:.3g} >= alpha {spec.alpha:g}" for t in relative]
    notes = [res.message] if res.message else []
    if failures:
        res.verdict, res.message = "fail", "; ".join(failures + notes)
    elif warnings or res.verdict == "warn":
        res.verdict, res.message = "warn", "; ".join(warnings + notes)
    else:
        res.verdict, res.message = "pass", "; ".join(notes) or "ok"


# --------------------------------------------------------------------------- outputs


def _f(x: float | None, signed: bool = False) -> str:
    return "—" if x is None else (f"{x:+.4g}" if signed else f"{x:.4g}")


def _ci(r: RuleResult) -> str:
    return "—" if r.ci_low is None or r.ci_high is None else f"[{r.ci_low:.4g}, {r.ci_high:.4g}]"


ICON = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "error": "💥 error"}


def to_markdown(report: GateReport, max_bytes: int = SUMMARY_LIMIT) -> str:
    """The gate's Markdown summary; passing rows (then the tail) are dropped to stay under
    ``max_bytes`` (everything is in the JSON report)."""
    c = report.counts()
    base = f" vs baseline `{report.baseline}`" if report.baseline else " (no baseline)"
    head = [f"## harness gate: {report.status.upper()} — candidate `{report.candidate}`{base}"
            + (f", run `{report.run_id}`" if report.run_id else ""), "",
            f"mode **{report.mode}**, alpha {report.alpha:g} (Holm over the rules' paired tests), on_missing "
            f"**{report.on_missing}**; {len(report.results)} rules: {c['pass']} pass, {c['warn']} warn, "
            f"{c['fail']} fail, {c['error']} error; exit code **{report.exit_code}** "
            "(0 pass, 1 gate failed, 2 usage/config error, 3 internal error)", "",
            "| # | verdict | metric | rule | value | baseline | delta | 95% CI (of delta, else value) | p (Holm) | n | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(r, f"| {r.index} | {ICON[r.verdict]} | `{r.metric}` | {r.rule} | {_f(r.value)} | {_f(r.baseline)} | "
                f"{_f(r.delta, True)} | {_ci(r)} | {_f(r.p_adjusted if r.p_adjusted is not None else r.p_value)} | "
                f"{_f(r.n)} | {r.message.replace('|', '/')} |") for r in report.results]
    text = "\n".join(head + [line for _, line in rows] + [""])
    if len(text.encode()) > max_bytes:
        kept = [line for r, line in rows if r.verdict != "pass"]
        note = f"_{len(rows) - len(kept)} passing rules omitted to stay under {max_bytes} bytes; all are in the JSON._"
        text = "\n".join(head + kept + ["", note, ""])
        if len(text.encode()) > max_bytes:
            cut = text.encode()[:max_bytes - 200].decode(errors="ignore").rsplit("\n", 1)[0]
            text = cut + "\n\n_... truncated to stay under the step summary limit: see the JSON report._\n"
    return text


def to_junit_xml(report: GateReport) -> str:
    """JUnit XML: one testcase per rule; fail -> <failure>, error -> <error>, warn -> system-out."""
    c = report.counts()
    attrs = {"tests": str(len(report.results)), "failures": str(c["fail"]), "errors": str(c["error"]),
             "skipped": "0", "time": "0"}
    suites = ET.Element("testsuites", {"name": "harness gate", **attrs})
    suite = ET.SubElement(suites, "testsuite", {"name": f"harness gate: {report.candidate} vs {report.baseline}",
                                                **attrs})
    for r in report.results:
        case = ET.SubElement(suite, "testcase", {"classname": f"gate.{r.suite}", "name": f"{r.metric}: {r.rule}",
                                                 "time": "0"})
        detail = (f"{r.message}\nvalue={_f(r.value)} baseline={_f(r.baseline)} delta={_f(r.delta, True)} "
                  f"CI={_ci(r)} p={_f(r.p_value)} p_adjusted={_f(r.p_adjusted)} n={_f(r.n)} test={r.test}")
        if r.verdict in ("fail", "error"):
            tag = "failure" if r.verdict == "fail" else "error"
            ET.SubElement(case, tag, {"message": detail.replace("\n", " | "), "type": f"gate.{tag}"}).text = detail
        elif r.verdict == "warn":
            ET.SubElement(case, "system-out").text = "warning: " + detail
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def to_json(report: GateReport) -> str:
    """The whole report as JSON (status, exit code, every rule)."""
    data = {k: v for k, v in asdict(report).items() if k != "results"}
    data.update(status=report.status, exit_code=report.exit_code, counts=report.counts(),
                results=[asdict(r) for r in report.results])
    return json.dumps(pt.json_safe(data), indent=2, ensure_ascii=False) + "\n"


def _escape(text: str, prop: bool = False) -> str:
    out = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return out.replace(":", "%3A").replace(",", "%2C") if prop else out


def github_annotations(report: GateReport, limit: int = 10) -> list[str]:
    """``::error`` workflow commands, one per failing (or erroring) suite, at most ``limit``;
    the last one summarises the suites beyond the limit (all are in the step summary)."""
    by_suite: dict[str, list[RuleResult]] = {}
    for r in report.results:
        if r.verdict in ("fail", "error"):
            by_suite.setdefault(r.suite, []).append(r)
    items = list(by_suite.items())
    lines = [f"::error title={_escape(f'harness gate: {suite}', True)}::"
             + _escape("; ".join(f"{r.metric}: {r.message}" for r in rs)) for suite, rs in items]
    if len(lines) > limit:
        rest = [s for s, _ in items[limit - 1:]]
        lines = lines[:limit - 1] + [f"::error title=harness gate::{len(rest)} more failing suites "
                                     f"({_escape(', '.join(rest))}): see the job summary"]
    return lines


# --------------------------------------------------------------------------- entry point


def run_gate(store_path: Path | str, run_id: str | None, candidate: str, baseline: str | None,
             rules_path: Path | str | None, junit: Path | str | None = None, summary: Path | str | None = None,
             json_path: Path | str | None = None, *, seed: int = 0, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    """Gate ``candidate`` (a stage of run ``run_id``, latest run when None) against ``baseline``
    with the rules of ``rules_path`` (default: the run config's ``gate:``). Prints the Markdown,
    writes the optional JUnit / Markdown / JSON files, appends the Markdown to
    ``$GITHUB_STEP_SUMMARY`` when set, prints ``::error`` annotations under GitHub Actions.
    Returns the exit code: 0 pass, 1 gate failed, 2 usage/config error, 3 internal error."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        report = _gate(store_path, run_id, candidate, baseline, rules_path, seed)
        md = to_markdown(report)
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
          rules_path: Path | str | None, seed: int) -> GateReport:
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
                             candidate=candidate, baseline=baseline, run_id=run_id, seed=seed, baseline_note=note)


_OPTIONS = (("--store", "results store file, or the run's output_dir"), ("--run", "run id (default: latest run)"),
            ("--candidate", "stage to gate"), ("--baseline", "stage to compare against (relative rules)"),
            ("--rules", "gate rules YAML (default: the run config's gate:)"), ("--junit", "write JUnit XML here"),
            ("--summary", "write the Markdown summary here"), ("--json", "write gate_report.json here"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.gate`` with the same options as ``harness gate``."""
    parser = argparse.ArgumentParser(prog="harness gate", description=__doc__.split("\n\n")[0],
                                     epilog="example: harness gate --store out/ --candidate ppo --baseline sft "
                                            "--rules examples/gate_rules.yaml --junit gate.xml")
    for flag, text in _OPTIONS:
        parser.add_argument(flag, required=flag in ("--store", "--candidate"), default=None, help=text)
    a = vars(parser.parse_args(argv))
    return run_gate(a["store"], a["run"], a["candidate"], a["baseline"], a["rules"], a["junit"], a["summary"],
                    a["json"])


if __name__ == "__main__":
    sys.exit(main())
