"""`harness gate`: verdicts, significance vs strict, missing data policy, refused comparisons,
exit codes through a subprocess, JUnit / Markdown / JSON / annotations."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from harness.config import ConfigError, GateSpec
from harness.gate import evaluate_gate, github_annotations, load_rules, run_gate, to_junit_xml, to_markdown
from harness.core.store import Store

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


def make_store(tmp: Path, harmful: float = 0.95, over_up: int = 0, over_n: int = 40,
               baseline_backend: str = "hf", with_baseline: bool = True) -> Path:
    """sft (baseline) and ppo (candidate). ppo's over-refusal = sft's plus `over_up` flipped items."""
    path = tmp / "results.sqlite"
    with Store(path) as store:
        run = store.create_run("gate-test", {"name": "gate-test"}, None, run_id="r1")
        for stage, parent in (("sft", None), ("ppo", "sft")):
            store.upsert_checkpoint(run, stage, stage, parent, f"h-{stage}", None, "complete")
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


def rules(tmp: Path, mode: str = "significance", on_missing: str = "fail") -> Path:
    path = tmp / f"rules-{mode}-{on_missing}.yaml"
    path.write_text(RULES.format(mode=mode, on_missing=on_missing), encoding="utf-8")
    return path


def gate(store: Path, rules_path: Path | None, baseline: str | None = "sft", **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_gate(store, None, "ppo", baseline, rules_path, out=out, err=err, **kw)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


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
    procs = {name: subprocess.Popen([sys.executable, "-m", "harness.gate", "--store", str(args[0]), "--candidate",
                                     "ppo", *map(str, args[1:])], cwd=ROOT, env=env, text=True,
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


def test_non_significant_regression_passes_in_significance_mode_fails_in_strict(tmp_path: Path) -> None:
    store = make_store(tmp_path, over_up=3)  # 0.10 -> 0.175 on 40 items: 3 flips, McNemar p = 0.25
    reports = []
    for _ in range(2):
        code, out, _ = gate(store, rules(tmp_path), json_path=tmp_path / "g.json")
        assert code == 0 and "not significant" in out
        reports.append((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert reports[0] == reports[1]  # deterministic
    rule = json.loads(reports[0])["results"][1]
    assert rule["verdict"] == "warn" and rule["delta"] == pytest.approx(0.075) and rule["test"] == "mcnemar"
    assert rule["p_value"] == pytest.approx(0.25) and rule["p_adjusted"] == pytest.approx(0.25)
    code, out, _ = gate(store, rules(tmp_path, mode="strict"))
    assert code == 1 and "strict: point estimate" in out


def test_significant_regression_fails(tmp_path: Path) -> None:
    store = make_store(tmp_path, over_up=40, over_n=200)  # 0.10 -> 0.30 on 200 items
    code, out, _ = gate(store, rules(tmp_path), junit=tmp_path / "g.xml")
    assert code == 1 and "significant: p_adj" in out
    root = ET.parse(tmp_path / "g.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    cases = suite.findall("testcase")
    assert len(cases) == 3
    failure = cases[1].find("failure")
    assert failure is not None and "baseline=0.1" in failure.get("message", "") and "CI=[" in failure.text


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
