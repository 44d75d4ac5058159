"""`harness gate`: what a gate reports (:class:`GateReport`, exit codes) and its renderers -- Markdown (terminal and
``$GITHUB_STEP_SUMMARY``), JUnit XML, JSON, GitHub workflow annotations.

Every renderer shows every verdict (pass, warn, inconclusive, fail, error), the hypothesis the
mode tests, and for relative rules the interval of the delta at the level the decision uses
and the regression the suite could detect (see :mod:`harness.gate`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

from harness.core import paired as pt

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
SUMMARY_LIMIT = 1_000_000  # bytes; GitHub's step summary takes at most 1 MiB
ICON = {"pass": "✅ pass", "warn": "⚠️ warn", "inconclusive": "❔ inconclusive", "fail": "❌ fail",
        "error": "💥 error"}
EXIT_LEGEND = "(0 pass, 1 gate failed, 2 usage/config error, 3 internal error)"


SEVERITY = {"pass": 0, "warn": 1, "inconclusive": 2, "fail": 3, "error": 4}
@dataclass
class BoundResult:
    """One relative bound of a rule: its hypothesis test against the margin."""

    bound: str  # max_increase | max_decrease | max_regression
    margin: float
    direction: int  # regression = direction * (candidate − baseline)
    regression: float  # point estimate of the regression (+ = worse)
    crossed: bool  # regression > margin
    verdict: str = "pass"
    test: str = "none"  # tango | t | none (no paired per-item outcomes)
    p_value: float | None = None  # one-sided, for the mode's alternative
    p_adjusted: float | None = None  # Holm, within the family (None outside it)
    level: float | None = None  # one-sided level of its Holm step (alpha outside the family)
    detectable: float | None = None  # see harness.core.margin_tests.detectable
    note: str = ""


@dataclass
class RuleResult:
    index: int
    metric: str
    suite: str
    rule: str
    verdict: str = "pass"
    value: float | None = None
    baseline: float | None = None
    delta: float | None = None  # paired mean over the shared items when per-item outcomes exist
    ci_low: float | None = None  # of the delta (relative rules) or of the value (absolute only)
    ci_high: float | None = None
    ci_level: float | None = None  # two-sided confidence of [ci_low, ci_high] (1 − 2 α_j for the delta)
    p_value: float | None = None  # of the deciding bound
    p_adjusted: float | None = None
    detectable: float | None = None
    n: int | None = None
    test: str = "none"
    higher_is_better: bool | None = None
    message: str = ""
    bounds: list[BoundResult] = field(default_factory=list)


@dataclass
class GateReport:
    candidate: str
    baseline: str | None
    run_id: str | None
    mode: str
    alpha: float
    on_missing: str
    on_inconclusive: str = "warn"
    results: list[RuleResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        worst = max((SEVERITY[r.verdict] for r in self.results), default=0)
        return ("pass", "pass", "inconclusive", "fail", "error")[worst]

    @property
    def exit_code(self) -> int:
        if self.status == "inconclusive":
            return EXIT_FAIL if self.on_inconclusive == "fail" else EXIT_PASS
        return {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_USAGE}[self.status]

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.results) for v in SEVERITY}


def _f(x: float | None, signed: bool = False) -> str:
    return "—" if x is None else (f"{x:+.4g}" if signed else f"{x:.4g}")


def _ci(r: RuleResult) -> str:
    if r.ci_low is None or r.ci_high is None:
        return "—"
    span = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]"
    return f"Δ {span} ({r.ci_level:.4g})" if r.ci_level is not None else f"value {span}"


def _p(r: RuleResult) -> str:
    """The Holm-adjusted p of a bound in the family, else its unadjusted one-sided p, marked."""
    if r.p_adjusted is not None:
        return _f(r.p_adjusted)
    return "—" if r.p_value is None else f"{r.p_value:.4g} (unadj.)"


def family_size(report: GateReport) -> int:
    """How many relative bounds Holm adjusted over."""
    return sum(b.p_adjusted is not None for r in report.results for b in r.bounds)


def hypotheses(report: GateReport) -> str:
    """What the report's mode tests, in one paragraph (Markdown)."""
    a, k = f"{report.alpha:g}", family_size(report)
    tests = "Tango's score test for 0/1 outcomes, the t test otherwise"
    if report.mode == "non_inferiority":
        rule = (f"a relative bound **passes only when the regression is shown to be within its margin**: one-sided "
                f"H0 regression ≥ margin vs H1 regression < margin ({tests}), Holm at alpha {a} over the {k} "
                "tested relative bounds; otherwise it fails.")
        detect = "the largest true regression that would pass with 80% power at one-sided alpha (negative: " \
                 "the candidate would have to improve)"
    else:
        rule = (f"a relative bound **fails when the regression is shown to exceed its margin**: one-sided H0 "
                f"regression ≤ margin vs H1 regression > margin ({tests}), Holm at alpha {a} over the {k} bounds "
                f"whose point estimate crosses the margin; crossed but not shown is **inconclusive** "
                f"(on_inconclusive: **{report.on_inconclusive}**).")
        detect = "the smallest true regression that would fail with 80% power at one-sided alpha"
        if report.mode == "strict":
            rule = "**point estimates decide** (tests and intervals are for information: " + rule + ")"
    return (f"mode **{report.mode}**: {rule} Absolute min/max bounds use the point estimate. Interval: the delta's "
            "two-sided 1 − 2α_j interval, i.e. one-sided 1 − α_j bounds, α_j = the rule's Holm step level "
            f"(alpha over (family size − rank + 1); alpha outside the family). Detectable: {detect}.")


def to_markdown(report: GateReport, max_bytes: int = SUMMARY_LIMIT) -> str:
    """The gate's Markdown summary; passing rows (then the tail) are dropped to stay under
    ``max_bytes`` (everything is in the JSON report)."""
    c = report.counts()
    base = f" vs baseline `{report.baseline}`" if report.baseline else " (no baseline)"
    head = [f"## harness gate: {report.status.upper()} — candidate `{report.candidate}`{base}"
            + (f", run `{report.run_id}`" if report.run_id else ""), "",
            hypotheses(report), "",
            f"on_missing **{report.on_missing}**; {len(report.results)} rules: "
            + ", ".join(f"{c[v]} {v}" for v in ICON) + f"; exit code **{report.exit_code}** {EXIT_LEGEND}", "",
            "| # | verdict | metric | rule | value | baseline | delta | interval (confidence) | one-sided p (Holm) | "
            "detectable | n | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(r, f"| {r.index} | {ICON[r.verdict]} | `{r.metric}` | {r.rule} | {_f(r.value)} | {_f(r.baseline)} | "
                f"{_f(r.delta, True)} | {_ci(r)} | {_p(r)} | "
                f"{_f(r.detectable)} | {_f(r.n)} | {r.message.replace('|', '/')} |") for r in report.results]
    text = "\n".join(head + [line for _, line in rows] + [""])
    if len(text.encode()) > max_bytes:
        kept = [line for r, line in rows if r.verdict != "pass"]
        note = f"_{len(rows) - len(kept)} passing rules omitted to stay under {max_bytes} bytes; all are in the JSON._"
        text = "\n".join(head + kept + ["", note, ""])
        if len(text.encode()) > max_bytes:
            cut = text.encode()[:max_bytes - 200].decode(errors="ignore").rsplit("\n", 1)[0]
            text = cut + "\n\n_... truncated to stay under the step summary limit: see the JSON report._\n"
    return text


def _is_failure(report: GateReport, r: RuleResult) -> bool:
    return r.verdict == "fail" or (r.verdict == "inconclusive" and report.on_inconclusive == "fail")


def to_junit_xml(report: GateReport) -> str:
    """JUnit XML: one testcase per rule; fail -> <failure>, error -> <error>, inconclusive -> <failure>
    with ``on_inconclusive: fail`` else system-out (like warn)."""
    failures = sum(_is_failure(report, r) for r in report.results)
    attrs = {"tests": str(len(report.results)), "failures": str(failures),
             "errors": str(report.counts()["error"]), "skipped": "0", "time": "0"}
    suites = ET.Element("testsuites", {"name": "harness gate", **attrs})
    suite = ET.SubElement(suites, "testsuite", {"name": f"harness gate: {report.candidate} vs {report.baseline}",
                                                **attrs})
    ET.SubElement(ET.SubElement(suite, "properties"), "property",
                  {"name": "hypotheses", "value": hypotheses(report).replace("**", "")})
    for r in report.results:
        case = ET.SubElement(suite, "testcase", {"classname": f"gate.{r.suite}", "name": f"{r.metric}: {r.rule}",
                                                 "time": "0"})
        detail = (f"{r.verdict}: {r.message}\nvalue={_f(r.value)} baseline={_f(r.baseline)} "
                  f"delta={_f(r.delta, True)} CI={_ci(r)} p={_f(r.p_value)} p_adjusted={_f(r.p_adjusted)} "
                  f"detectable={_f(r.detectable)} n={_f(r.n)} test={r.test}")
        if r.verdict == "error" or _is_failure(report, r):
            tag = "error" if r.verdict == "error" else "failure"
            ET.SubElement(case, tag, {"message": detail.replace("\n", " | "), "type": f"gate.{r.verdict}"}).text = detail
        elif r.verdict in ("warn", "inconclusive"):
            ET.SubElement(case, "system-out").text = detail
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def to_json(report: GateReport) -> str:
    """The whole report as JSON (status, exit code, hypotheses, every rule and bound)."""
    data = {k: v for k, v in asdict(report).items() if k != "results"}
    data.update(status=report.status, exit_code=report.exit_code, counts=report.counts(),
                holm_family_size=family_size(report), hypotheses=hypotheses(report).replace("**", ""),
                results=[asdict(r) for r in report.results])
    return json.dumps(pt.json_safe(data), indent=2, ensure_ascii=False) + "\n"


def _escape(text: str, prop: bool = False) -> str:
    out = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return out.replace(":", "%3A").replace(",", "%2C") if prop else out


def _by_suite(report: GateReport, level: str, limit: int) -> list[str]:
    what = "failing" if level == "error" else "inconclusive"
    by_suite: dict[str, list[RuleResult]] = {}
    for r in report.results:
        is_error = r.verdict == "error" or _is_failure(report, r)
        if (level == "error" and is_error) or (level == "warning" and r.verdict == "inconclusive" and not is_error):
            by_suite.setdefault(r.suite, []).append(r)
    items = list(by_suite.items())
    lines = [f"::{level} title={_escape(f'harness gate: {suite}', True)}::"
             + _escape("; ".join(f"{r.metric} ({r.verdict}): {r.message}" for r in rs)) for suite, rs in items]
    if len(lines) > limit:
        rest = [s for s, _ in items[limit - 1:]]
        lines = lines[:limit - 1] + [f"::{level} title=harness gate::{len(rest)} more {what} suites "
                                     f"({_escape(', '.join(rest))}): see the job summary"]
    return lines


def github_annotations(report: GateReport, limit: int = 10) -> list[str]:
    """``::error`` workflow commands, one per failing (or erroring) suite, and ``::warning`` ones
    per suite with inconclusive rules (``::error`` with ``on_inconclusive: fail``), at most
    ``limit`` of each; the last of each summarises the suites beyond the limit."""
    return _by_suite(report, "error", limit) + _by_suite(report, "warning", limit)
