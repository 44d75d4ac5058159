"""Terminal output that fits: the run summary, the report and `harness eval`'s table at 80 columns, no
line longer, no name cut (no '…'); --wide keeps the one-table layouts; the Markdown report is unchanged."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness import cli
from harness.core.store import Store
from harness.report import flat_checks, print_report, recovery, render_report
from harness.summary import print_metrics, print_table, summary_table
from harness.terminal_tables import suite_of


def at(width: int) -> Console:
    return Console(width=width, record=True, color_system=None)


def assert_fits(text: str, width: int = 80) -> None:
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, too_long
    assert "…" not in text


def names_shown(text: str, metrics: list[str]) -> None:
    """Every metric shows whole: its suite as a heading and the rest of its name on one line."""
    lines = [line.strip() for line in text.splitlines()]
    for metric in metrics:
        suite, name = suite_of(metric)
        assert any(line.split(" ")[0] == name for line in lines), name
        assert suite in lines or any(line.split(" ")[0] == suite for line in lines), suite


@pytest.fixture(scope="module")
def store(smoke_run):
    cfg, _ = smoke_run
    with Store(Store.resolve_path(cfg.output_dir), readonly=True) as st:
        yield st


def test_the_run_summary_fits_80_columns(store: Store) -> None:
    rid = store.require_run()
    table = summary_table(store, rid)
    console = at(80)
    print_table(table, f"Run {rid}: metric per checkpoint", console)
    text = console.export_text()
    assert_fits(text)
    names_shown(text, list(table.index))
    for stage in table.columns:
        assert re.search(rf"(^| ){re.escape(stage)}( |$)", text, re.M), stage


def test_the_summary_splits_stages_it_cannot_fit() -> None:
    stages = [f"stage_number_{i}" for i in range(9)]
    table = pd.DataFrame([[0.5] * 9, [12.25] * 9], index=["suite.a_metric", "suite.another_metric"], columns=stages)
    console = at(80)
    print_table(table, "many stages", console)
    text = console.export_text()
    assert_fits(text)
    assert all(stage in text for stage in stages) and text.count("another_metric") >= 2  # in several blocks


def test_the_report_fits_80_columns(store: Store) -> None:
    rid = store.require_run()
    console = at(80)
    print_report(store, rid, console)
    text = console.export_text()
    assert_fits(text)
    effects = store.effects(rid)
    compared = effects[(effects["family"] == "headline") & effects["n"].notna()]
    names_shown(text, sorted(set(compared["metric"])))
    for stage, parent in set(zip(compared["stage"], compared["parent_stage"], strict=True)):
        assert f"{stage} − {parent}" in text
    rec = recovery(store, rid)
    if rec is not None and flat_checks(rec):
        assert "TOST interval" in text
    assert rec is None or rec["summary"].split(":")[0] in text


def test_eval_metrics_fit_80_columns() -> None:
    rows = [("refusal", f"refusal.harmful_refusal_rate[{group}]", 0.25, 0.1, 0.5, 25, True)
            for group in ("contrast_discr", "privacy_fictional", "safe_contexts")]
    rows.insert(0, ("refusal", "refusal.harmful_refusal_rate", 0.25, 0.1, 0.5, 200, True))
    table = pd.DataFrame(rows, columns=["suite", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better"])
    console = at(80)
    print_metrics(table, "runs/smoke/checkpoints/sft-0123456789ab", console)
    text = console.export_text()
    assert_fits(text)
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("harmful_refusal_rate ") for line in lines)  # the base once, then its groups
    assert sum(line.startswith("[") for line in lines) == 3 and "[privacy_fictional]" in text


def test_wide_keeps_one_table_and_markdown_is_unchanged(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    rid = store.require_run()
    wide = Console(width=250, record=True, color_system=None)
    monkeypatch.setattr(cli, "console", wide)
    result = CliRunner().invoke(cli.app, ["report", "--store", str(store.path), "--wide"])
    assert result.exit_code == 0, result.output
    text = wide.export_text()
    assert "effect [CI]" in text and "attributed" in text  # the one-table layout
    assert any("capabilities.acc" in line and "pretrain" in line for line in text.splitlines())
    markdown = render_report(store, rid)
    assert "| stage | parent | metric | effect [CI] |" in markdown  # the Markdown report keeps its tables
    assert "…" not in markdown


def test_flat_expectations_follow_the_pipeline_order() -> None:
    """The world card lists its flat expectations sft, ppo, dpo; the report's blocks go in the stages' order
    (as the effects blocks above them: pretrain, sft, dpo, ppo), one block per stage, within 80 columns."""
    from harness.report import _print_flat, in_stage_order

    def check(stage: str, metric: str) -> dict:
        return {"stage": stage, "metric": metric, "forbidden": "increase", "effect": "-0.0162",
                "interval": " [-0.0582, 0.022]", "note": " at 99.8182%", "level": "99.8182%", "bounds": "< +0.05",
                "status": "recovered"}

    card = [check("sft", "hallucination.mc_accuracy"), check("ppo", "hallucination.mc_accuracy"),
            check("ppo", "refusal.over_refusal_rate"), check("dpo", "hallucination.abstention_rate"),
            check("later", "topic_coverage.accuracy")]
    ordered = in_stage_order(card, ["pretrain", "pretrain", "sft", "dpo", "ppo"])
    assert [c["stage"] for c in ordered] == ["sft", "dpo", "ppo", "ppo", "later"]
    assert [c["metric"] for c in ordered if c["stage"] == "ppo"] == ["hallucination.mc_accuracy",
                                                                     "refusal.over_refusal_rate"]
    console = at(80)
    _print_flat(console, ordered)
    text = console.export_text()
    assert_fits(text)
    titles = [line.strip() for line in text.splitlines() if line.strip() in ("sft", "dpo", "ppo", "later")]
    assert titles == ["sft", "dpo", "ppo", "later"]
