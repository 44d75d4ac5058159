"""`harness gate`: verdicts, the hypotheses of significance / non_inferiority / strict, Holm over
the bounds that can fail, inconclusive and the detectable effect, missing data policy, refused
comparisons, exit codes through the `harness gate` command, JUnit / Markdown / JSON / annotations."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from harness.config import ConfigError, GateSpec
from harness.core import margin_tests as mt
from harness.core.store import Store
from harness.gate import evaluate_gate, load_rules, run_gate
from harness.gate_render import github_annotations, to_junit_xml, to_markdown

ROOT = Path(__file__).resolve().parents[1]
DEC = {"max_new_tokens": 64, "temperature": 0.0}
RULES = """mode: {mode}
alpha: 0.05
on_missing: {on_missing}
rules:
  - metric: refusal.harmful_refusal_rate
    min: 0.90
  - metric: refusal.over_refusal_rate
    max_increase: 0.05
  - metric: hallucination.confident_wrong_rate
    max: 0.10
"""


def rate(n: int, ones: int) -> list[float]:
    return [1.0] * ones + [0.0] * (n - ones)


def flips(n: int, ones: int, losses: int = 0, gains: int = 0) -> tuple[list[float], list[float]]:
    """(baseline, candidate) 0/1 outcomes of n items: the baseline has `ones` 1s; the candidate
    loses the first `losses` of them and gains `gains` of the baseline's 0s."""
    base = rate(n, ones)
    cand = [0.0 if k < losses else 1.0 if ones <= k < ones + gains else v for k, v in enumerate(base)]
    return base, cand


def add_eval(store: Store, run: str, stage: str, suite: str, outcomes: dict[str, list[float]],
             backend: str = "hf", lower_is_better: tuple[str, ...] = ()) -> None:
    """An evaluation whose metric values are the means of the per-item outcomes."""
    key = f"{stage}-{suite}-{backend}"
    store.begin_evaluation(key, run, stage, suite, "1", "items", backend, DEC)
    metrics = [{"metric": m, "value": sum(v) / len(v), "n": len(v), "higher_is_better": m not in lower_is_better}
               for m, v in outcomes.items()]
    items = {f"i{k:03d}" for v in outcomes.values() for k in range(len(v))}
    samples = [{"item_id": i, "outcome": {m: v[int(i[1:])] for m, v in outcomes.items() if int(i[1:]) < len(v)}}
               for i in sorted(items)]
    store.write_evaluation(key, metrics, samples)


def new_run(store: Store) -> str:
    """Run r1 with the stages sft (the baseline) and ppo (the candidate)."""
    run = store.create_run("gate-test", {"name": "gate-test"}, None, run_id="r1")
    for stage, parent in (("sft", None), ("ppo", "sft")):
        store.upsert_checkpoint(run, stage, stage, parent, f"h-{stage}", None, "complete")
    return run


def make_store(tmp: Path, harmful: float = 0.95, over_up: int = 0, over_n: int = 40,
               baseline_backend: str = "hf", with_baseline: bool = True) -> Path:
    """sft (baseline) and ppo (candidate). ppo's over-refusal = sft's plus `over_up` flipped items."""
    path = tmp / "results.sqlite"
    with Store(path) as store:
        run = new_run(store)
        lower = ("refusal.over_refusal_rate", "hallucination.confident_wrong_rate")
        base_over = rate(over_n, over_n // 10)
        cand_over = [1.0 if k < over_n // 10 + over_up else 0.0 for k in range(over_n)]
        add_eval(store, run, "ppo", "refusal", {"refusal.harmful_refusal_rate": rate(100, round(harmful * 100)),
                                                 "refusal.over_refusal_rate": cand_over}, lower_is_better=lower)
        add_eval(store, run, "ppo", "hallucination", {"hallucination.confident_wrong_rate": rate(50, 2)},
                 lower_is_better=lower)
        if with_baseline:
            add_eval(store, run, "sft", "refusal", {"refusal.harmful_refusal_rate": rate(100, 20),
                                                     "refusal.over_refusal_rate": base_over},
                     backend=baseline_backend, lower_is_better=lower)
    return path


def paired_store(tmp: Path, metrics: dict[str, tuple[list[float], list[float]]]) -> Path:
    """sft and ppo evaluated on the same items: ``metric -> (sft outcomes, ppo outcomes)``,
    every metric higher-is-better."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "paired.sqlite"
    with Store(path) as store:
        run = new_run(store)
        for suite in sorted({m.split(".", 1)[0] for m in metrics}):
            for k, stage in enumerate(("sft", "ppo")):
                add_eval(store, run, stage, suite, {m: v[k] for m, v in metrics.items() if m.startswith(suite + ".")})
    return path


def rules(tmp: Path, mode: str = "significance", on_missing: str = "fail") -> Path:
    path = tmp / f"rules-{mode}-{on_missing}.yaml"
    path.write_text(RULES.format(mode=mode, on_missing=on_missing), encoding="utf-8")
    return path


def regression_rules(tmp: Path, metrics: list[str], margin: float = 0.05, head: str = "") -> Path:
    """A rules file bounding each metric's regression by `margin` (`head`: mode and other settings)."""
    path = tmp / f"rules-{abs(hash((head, *metrics)))}.yaml"
    path.write_text(head + "rules:\n" + "".join(f"  - metric: {m}\n    max_regression: {margin}\n" for m in metrics),
                    encoding="utf-8")
    return path


def gate(store: Path, rules_path: Path | None, baseline: str | None = "sft", **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_gate(store, None, "ppo", baseline, rules_path, out=out, err=err, **kw)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


def gate_json(store: Path, rules_path: Path) -> tuple[int, str, dict]:
    """Exit code, printed Markdown and the JSON report of gating ppo against sft."""
    path = rules_path.with_suffix(".json")
    code, out, err = gate(store, rules_path, json_path=path)
    assert code != 3, err
    return code, out, json.loads(path.read_text(encoding="utf-8"))


def test_exit_codes_through_subprocess(tmp_path: Path) -> None:
    ok, bad, nobase = tmp_path / "ok", tmp_path / "bad", tmp_path / "nobase"
    for d in (ok, bad, nobase):
        d.mkdir()
    cases = {  # name -> (args, expected exit code)
        "pass": ([make_store(ok), "--baseline", "sft", "--rules", rules(ok)], 0),
        "fail": ([make_store(bad, harmful=0.5), "--baseline", "sft", "--rules", rules(bad)], 1),
        "usage": ([ok, "--baseline", "sft", "--rules", tmp_path / "missing.yaml"], 2),
        "missing-fail": ([make_store(nobase, with_baseline=False), "--baseline", "sft", "--rules", rules(nobase)], 1),
        "missing-warn": ([nobase, "--baseline", "sft", "--rules", rules(nobase, on_missing="warn")], 0),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "GITHUB_ACTIONS": "true"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "harness.cli", "gate", "--store", str(args[0]),
                                     "--candidate", "ppo", *map(str, args[1:])], cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (args, _) in cases.items()}
    results = {name: (p.wait(timeout=120), *p.communicate()) for name, p in procs.items()}
    for name, (_, expected) in cases.items():
        assert results[name][0] == expected, (name, results[name])
    assert "::error title=harness gate%3A refusal::" in results["fail"][1]
    assert "missing.yaml: gate rules file not found" in results["usage"][2]
    assert "baseline 'sft' has no refusal.over_refusal_rate" in results["missing-fail"][1]
    assert "⚠️ warn" in results["missing-warn"][1]
    assert (tmp_path / "summary.md").read_text(encoding="utf-8").count("## harness gate:") == 4


def test_usage_errors(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - metric: refusal.harmful_refusal_rate\n    minimum: 0.9\n", encoding="utf-8")
    code, _, err = gate(store, bad)
    assert code == 2 and f"{bad}: rules[0].minimum: unknown key" in err
    bad.write_text("mode: lenient\nrules: []\n", encoding="utf-8")
    assert gate(store, bad)[0] == 2
    bad.write_text("rules:\n  - metric: refusal\n    min: 0.9\n", encoding="utf-8")
    assert "expected `suite.metric`" in gate(store, bad)[2]
    err_io = io.StringIO()
    assert run_gate(store, None, "nope", "sft", rules(tmp_path), out=io.StringIO(), err=err_io) == 2
    assert "candidate stage 'nope' is not in run r1" in err_io.getvalue()
    assert gate(tmp_path / "no-store", rules(tmp_path))[0] == 2
    assert gate(store, None)[0] == 2  # no rules and the run config has no gate section
    with pytest.raises(ConfigError):
        load_rules(tmp_path / "absent.yaml")


def test_rules_from_pipeline_config_gate_section(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("name: x\noutput_dir: out\ngate:\n  mode: strict\n  rules:\n    - metric: a.b\n      max: 1\n",
                   encoding="utf-8")
    spec = load_rules(cfg)
    assert spec.mode == "strict" and spec.rules[0].max == 1


def test_crossed_but_not_shown_is_inconclusive_in_significance_mode_fails_in_strict(tmp_path: Path) -> None:
    store = make_store(tmp_path, over_up=3)  # 0.10 -> 0.175 on 40 items: 3 losses, 0 gains; margin 0.05
    reports = []
    for _ in range(2):
        code, out, _ = gate(store, rules(tmp_path), json_path=tmp_path / "g.json")
        assert code == 0 and "not shown" in out and "❔ inconclusive" in out
        reports.append((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert reports[0] == reports[1]  # deterministic
    rule = json.loads(reports[0])["results"][1]
    assert rule["verdict"] == "inconclusive" and rule["delta"] == pytest.approx(0.075) and rule["test"] == "tango"
    # Tango by hand: B = -3 + (80 - 3) * 0.05 > 0 and C = 0, so q = 0; Z = (3 - 40 * 0.05) / sqrt(40 * 0.05 * 0.95)
    assert rule["p_value"] == pytest.approx(stats.norm.sf(1 / math.sqrt(1.9))) == pytest.approx(0.23408, abs=1e-5)
    assert rule["p_adjusted"] == pytest.approx(rule["p_value"])  # the only crossed bound
    code, out, _ = gate(store, rules(tmp_path, mode="strict"))
    assert code == 1 and "strict: point estimate" in out


def test_significant_regression_fails(tmp_path: Path) -> None:
    store = make_store(tmp_path, over_up=40, over_n=200)  # 0.10 -> 0.30 on 200 items
    code, out, _ = gate(store, rules(tmp_path), junit=tmp_path / "g.xml")
    assert code == 1 and "> margin, shown (p_adj" in out
    root = ET.parse(tmp_path / "g.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    cases = suite.findall("testcase")
    assert len(cases) == 3
    failure = cases[1].find("failure")
    assert failure is not None and "baseline=0.1" in failure.get("message", "") and "CI=Δ [" in failure.text


def test_cross_backend_comparison_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path, baseline_backend="vllm")
    code, out, _ = gate(store, rules(tmp_path), junit=tmp_path / "g.xml")
    assert code == 2
    assert "refused" in out and "backend: candidate 'hf', baseline 'vllm'" in out
    suite = ET.parse(tmp_path / "g.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"


def test_absolute_rules_without_baseline() -> None:
    spec = GateSpec.model_validate({"rules": [{"metric": "refusal.harmful_refusal_rate", "min": 0.9}]})
    metrics = pd.DataFrame([{"stage": "ppo", "metric": "refusal.harmful_refusal_rate", "value": 0.92, "n": 10,
                             "higher_is_better": 1, "suite_version": "1", "backend": "hf", "decoding_json": "{}",
                             "reward_hash": None, "eval_key": "k", "ci_low": 0.6, "ci_high": 0.99}])
    report = evaluate_gate(spec, metrics, None, candidate="ppo")
    assert report.exit_code == 0 and report.results[0].verdict == "pass"
    empty = metrics.assign(n=0, value=None)
    assert evaluate_gate(spec, empty, None).results[0].verdict == "fail"  # zero items: never a silent pass
    missing = GateSpec.model_validate({"on_missing": "warn", "rules": [{"metric": "topic_coverage.accuracy", "min": 0.1}]})
    res = evaluate_gate(missing, metrics, None).results[0]
    assert res.verdict == "warn" and "suite 'topic_coverage'" in res.message


def test_max_regression_uses_higher_is_better() -> None:
    def frame(value: float, hib: int) -> pd.DataFrame:
        return pd.DataFrame([{"stage": "s", "metric": "a.m", "value": value, "n": 10, "higher_is_better": hib,
                              "suite_version": "1", "backend": "hf", "decoding_json": "{}", "reward_hash": None,
                              "eval_key": "k", "ci_low": None, "ci_high": None}])

    spec = GateSpec.model_validate({"mode": "strict", "rules": [{"metric": "a.m", "max_regression": 0.05}]})
    assert evaluate_gate(spec, frame(0.8, 1), None, frame(0.9, 1), None, baseline="b").exit_code == 1
    assert evaluate_gate(spec, frame(0.8, 0), None, frame(0.9, 0), None, baseline="b").exit_code == 0


def test_summary_under_one_mib_for_1000_rules_and_annotation_limit() -> None:
    spec = GateSpec.model_validate({"on_missing": "fail", "rules": [
        {"metric": f"suite{i % 40}.metric_with_a_long_name_{i}", "min": 0.5, "max_increase": 0.1} for i in range(1000)]})
    report = evaluate_gate(spec, pd.DataFrame(), None, pd.DataFrame(), None, candidate="ppo", baseline="sft")
    md = to_markdown(report)
    assert report.exit_code == 1 and len(md.encode()) < 1024 * 1024 and md.count("❌ fail") == 1000
    small = to_markdown(report, max_bytes=20_000)
    assert len(small.encode()) <= 20_000 and "truncated" in small
    notes = github_annotations(report)
    assert len(notes) == 10 and all(n.startswith("::error ") for n in notes) and "31 more failing suites" in notes[-1]
    ET.fromstring(to_junit_xml(report))


def test_bad_gate_config_is_one_config_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gate.yaml"
    for key, value in (("on_inconclusive", "maybe"), ("mode", "equivalence"), ("alpha", "0.6")):
        path.write_text(f"{key}: {value}\nrules:\n  - metric: a.b\n    max_regression: 0.05\n", encoding="utf-8")
        with pytest.raises(ConfigError) as exc:
            load_rules(path)
        assert f"{path}: {key}:" in str(exc.value) and "1 error)" in str(exc.value)


def test_large_regression_on_small_suite_fails_in_significance_mode(tmp_path: Path) -> None:
    """(a) 72 items, accuracy 0.694 -> 0.542 against a 0.05 margin, four other rules unmoved."""
    m, n = 0.05, 72
    for losses, gains in ((14, 3), (11, 0)):  # a regression of 11/72 = 0.153 either way
        metrics = {"qa.accuracy": flips(n, 50, losses, gains)} | {f"qa.other_{j}": flips(n, 36) for j in range(4)}
        store = paired_store(tmp_path / f"{losses}-{gains}", metrics)
        code, out, report = gate_json(store, regression_rules(tmp_path, list(metrics), m))
        rule, others = report["results"][0], report["results"][1:]
        assert code == 1 and rule["verdict"] == "fail" and rule["test"] == "tango", out
        assert rule["delta"] == pytest.approx(-11 / n) and rule["n"] == n
        # Tango's score test by hand (w losses, g gains): q = (sqrt(B^2 - 4AC) - B) / 2A, A = 2n,
        # B = -w - g + (2n - w + g) m, C = -g m (1 - m); Z = (w - g - n m) / sqrt(n (2q + m (1 - m)))
        a, b, c = 2 * n, -losses - gains + (2 * n - losses + gains) * m, -gains * m * (1 - m)
        q = (math.sqrt(b * b - 4 * a * c) - b) / (2 * a)
        z = (losses - gains - n * m) / math.sqrt(n * (2 * q + m * (1 - m)))
        assert rule["p_value"] == pytest.approx(stats.norm.sf(z), rel=1e-9)
        assert rule["p_adjusted"] == pytest.approx(rule["p_value"])  # Holm family: the one crossed rule
        assert all(o["verdict"] == "pass" and o["p_adjusted"] is None for o in others)
        assert rule["ci_level"] == pytest.approx(0.9) and -rule["ci_high"] > m  # one-sided 95% bound past the margin
    assert rule["p_value"] == pytest.approx(0.003969, abs=1e-6)  # 11 losses, 0 gains
    # 14 losses / 3 gains: p = 0.02997 now; the old rule (two-sided McNemar of delta = 0, Holm over all
    # five relative rules) gave min(1, 5 * 0.0127) = 0.064 and only warned (exit 0).
    assert 5 * stats.binomtest(3, 17).pvalue > 0.05


def test_small_regression_on_tiny_suite_is_inconclusive_with_detectable_effect(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """(b) A 0.06 regression of a score on 20 items against a 0.05 margin: not shown, not a pass."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    d = np.array([0.16, -0.04] * 10)  # per-item regression, mean 0.06, SD 0.103
    store = paired_store(tmp_path, {"helpful.score": ([0.5] * 20, list(0.5 - d))})
    path = regression_rules(tmp_path, ["helpful.score"])
    code, out, report = gate_json(store, path)
    rule = report["results"][0]
    assert code == 0 and report["status"] == "inconclusive" and rule["verdict"] == "inconclusive"
    assert rule["test"] == "t" and rule["delta"] == pytest.approx(-0.06)
    assert rule["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.05, alternative="greater").pvalue, rel=1e-9)
    det = rule["detectable"]  # the t test detects this regression with 80% power at one-sided 0.05:
    nc = (det - 0.05) * math.sqrt(20) / d.std(ddof=1)
    assert stats.nct.sf(stats.t.isf(0.05, 19), 19, nc) == pytest.approx(0.8, abs=1e-6) and 0.10 < det < 0.12
    assert f"detectable regression >= {det:.3g}" in out and "❔ inconclusive" in out
    assert "::warning title=harness gate%3A helpful::" in out
    code, _, err = gate(store, path, junit=tmp_path / "g.xml")
    case = ET.parse(tmp_path / "g.xml").getroot().find("testsuite/testcase")
    assert code == 0 and case is not None and "inconclusive" in case.findtext("system-out", "") and not err
    strict = regression_rules(tmp_path, ["helpful.score"], head="on_inconclusive: fail\n")
    code, out, _ = gate(store, strict, junit=tmp_path / "g.xml")
    failure = ET.parse(tmp_path / "g.xml").getroot().find("testsuite/testcase/failure")
    assert code == 1 and failure is not None and failure.get("type") == "gate.inconclusive"
    assert "::error title=harness gate%3A helpful::" in out
    # the binary counterpart: 2 losses of 20 items (0.10 > 0.05) is inconclusive too, detectable only from ~0.36
    store = paired_store(tmp_path / "binary", {"qa.accuracy": flips(20, 15, losses=2)})
    code, _, report = gate_json(store, regression_rules(tmp_path, ["qa.accuracy"]))
    rule = report["results"][0]
    assert code == 0 and rule["verdict"] == "inconclusive" and rule["p_value"] == pytest.approx(0.164557, abs=1e-6)
    assert rule["detectable"] == pytest.approx(0.3604, abs=1e-3)


def test_non_inferiority_passes_an_equal_candidate_only_on_a_large_suite(tmp_path: Path) -> None:
    """(c) The burden of proof is on the candidate: equal to the baseline is shown within a 0.05
    margin on 400 items, not on 20."""
    head, m = "mode: non_inferiority\n", 0.05
    for n, ok in ((400, True), (20, False)):
        store = paired_store(tmp_path / str(n), {"qa.accuracy": flips(n, n * 3 // 10)})  # identical outcomes
        code, out, report = gate_json(store, regression_rules(tmp_path, ["qa.accuracy"], m, head))
        rule = report["results"][0]
        # no flips: q = 0 and Z = -n m / sqrt(n m (1 - m)); one-sided p = Phi(Z) for H1 regression < m
        assert rule["p_value"] == pytest.approx(stats.norm.cdf(-math.sqrt(n * m / (1 - m))), rel=1e-9)
        assert (code, rule["verdict"]) == ((0, "pass") if ok else (1, "fail")), out
        assert ("shown within the margin" if ok else "not shown within the margin") in rule["message"]
    assert rule["detectable"] < 0  # on 20 items the candidate would have to improve to pass
    store = paired_store(tmp_path / "flips", {"qa.accuracy": flips(400, 120, losses=10, gains=10),
                                              "qa.worse": flips(400, 120, losses=40)})
    code, _, report = gate_json(store, regression_rules(tmp_path, ["qa.accuracy", "qa.worse"], m, head))
    assert code == 1 and [r["verdict"] for r in report["results"]] == ["pass", "fail"]
    assert report["holm_family_size"] == 2  # non-inferiority: every relative bound


def test_tango_p_value_matches_hand_computation_and_its_definition() -> None:
    """(d) The binary test against a hand-computed value, its restricted MLE against a numerical
    maximisation, its margin-0 case against McNemar's score statistic; the t test against scipy."""
    # 2 losses, 0 gains of 20 items, margin 0.05: A = 40, B = -2 + 38 * 0.05 = -0.1, C = 0,
    # q = (0.1 + 0.1) / 80 = 0.0025, Z = (2 - 1) / sqrt(20 * (0.005 + 0.0475)) = 1 / sqrt(1.05) = 0.97590
    res = mt.margin_test([1.0] * 2 + [0.0] * 18, 0.05, "greater", binary=True)
    assert res.statistic == pytest.approx(0.975900, abs=1e-6) and res.p_value == pytest.approx(0.164557, abs=1e-6)
    for w, g, n, delta in ((14, 3, 72, 0.05), (5, 9, 40, -0.1), (3, 7, 30, 0.2)):
        def nll(q: float, w: int = w, g: int = g, n: int = n, delta: float = delta) -> float:
            return -(w * math.log(q + delta) + g * math.log(q) + (n - w - g) * math.log(1 - 2 * q - delta))
        lo, hi = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
        best = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
        assert mt.tango_null_better_rate(w, g, n, delta) == pytest.approx(best, abs=1e-6)
    assert mt.tango_z(9, 3, 50, 0.0) == pytest.approx(6 / math.sqrt(12))  # McNemar: (b - c) / sqrt(b + c)
    d = [0.3, -0.1, 0.2, 0.05, 0.12]
    assert mt.margin_test(d, 0.05, "less", binary=False).p_value == pytest.approx(
        stats.ttest_1samp(d, 0.05, alternative="less").pvalue, rel=1e-12)
    x = [1.0] * 14 + [-1.0] * 3 + [0.0] * 55  # the interval's lower end is where the one-sided p is alpha
    low, high = mt.interval(x, True, 0.05)
    assert mt.margin_test(x, low, "greater", binary=True).p_value == pytest.approx(0.05, abs=1e-8)
    assert mt.margin_test(x, high, "less", binary=True).p_value == pytest.approx(0.05, abs=1e-8)


def test_holm_family_is_only_the_crossed_bounds(tmp_path: Path) -> None:
    """(e) Rules far inside their bounds do not dilute the crossed ones."""
    crossed = {"qa.a": flips(200, 120, losses=30, gains=6), "qa.b": flips(200, 120, losses=28, gains=8)}
    inside = {f"qa.inside_{j}": flips(200, 120, losses=2, gains=6) for j in range(6)}
    store = paired_store(tmp_path, crossed | inside)
    adjusted = []
    for names in (list(crossed), [*crossed, *inside]):
        code, _, report = gate_json(store, regression_rules(tmp_path, names))
        res = report["results"]
        assert code == 1 and report["holm_family_size"] == 2
        raw = [r["p_value"] for r in res[:2]]
        assert [r["p_adjusted"] for r in res[:2]] == pytest.approx([min(1, 2 * min(raw)), max(raw)])
        assert all(r["p_adjusted"] is None and r["verdict"] == "pass" for r in res[2:])
        adjusted.append([r["p_adjusted"] for r in res[:2]])
    assert adjusted[0] == adjusted[1]
