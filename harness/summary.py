"""The run summary: headline metric x checkpoint, in lineage order, for the terminal and as Markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness import terminal_tables
from harness.config import INIT
from harness.core.artifacts import write_text_atomic
from harness.core.store import Store
from harness.terminal_tables import metric_stage_blocks, print_blocks


def stage_order(checkpoints: pd.DataFrame) -> list[str]:
    """Stages parents-first (init first), siblings in recorded order."""
    parents = dict(zip(checkpoints["stage"], checkpoints["parent_stage"], strict=False))
    depth: dict[str, int] = {}

    def d(stage: str) -> int:
        if stage not in depth:
            parent = parents.get(stage)
            depth[stage] = 0 if stage == INIT or not isinstance(parent, str) or parent not in parents else d(parent) + 1
        return depth[stage]

    stages = list(checkpoints["stage"])
    return sorted(stages, key=lambda s: (d(s), stages.index(s)))


def summary_table(store: Store, run_id: str, headline_only: bool = True) -> pd.DataFrame:
    """metric x stage values (NaN where a suite does not apply), stages in lineage order."""
    metrics = store.metrics(run_id)
    if metrics.empty:
        return pd.DataFrame()
    if headline_only:
        metrics = metrics[~metrics["metric"].str.contains(r"\[", regex=True)]
    table = metrics.pivot_table(index="metric", columns="stage", values="value", aggfunc="first")
    order = [s for s in stage_order(store.checkpoints(run_id)) if s in table.columns]
    return table[order].sort_index()


def _fmt(value: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def to_markdown(table: pd.DataFrame, title: str) -> str:
    if table.empty:
        return f"# {title}\n\nNo metrics stored for this run yet.\n"
    head = "| metric | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [f"| {metric} | " + " | ".join(_fmt(v) for v in row) + " |" for metric, row in table.iterrows()]
    return f"# {title}\n\n" + "\n".join([head, rule, *rows]) + "\n"


def print_table(table: pd.DataFrame, title: str, console: Console, wide: bool = False) -> None:
    """The metric x stage table: a block per suite that fits the console (:mod:`harness.terminal_tables`),
    or with ``wide`` one table of every metric and stage."""
    if table.empty:
        console.print(f"{title}: no metrics stored yet")
        return
    if not wide:
        values = {str(metric): {str(s): _fmt(v) for s, v in row.items()} for metric, row in table.iterrows()}
        print_blocks(console, title, metric_stage_blocks(console, values, [str(s) for s in table.columns]))
        return
    rich_table = Table(title=title, show_lines=False)
    rich_table.add_column("metric")
    for stage in table.columns:
        rich_table.add_column(stage, justify="right")
    for metric, row in table.iterrows():
        rich_table.add_row(escape(str(metric)), *(_fmt(v) for v in row))
    console.print(rich_table)


def write_summary(store: Store, run_id: str, path: Path, console: Console | None = None, wide: bool = False) -> str:
    """Print the summary (``wide``: as one table) and write it as Markdown to ``path``; returns the Markdown."""
    run = store.get_run(run_id)
    title = f"Run {run_id} ({run['name']}): metric per checkpoint"
    table = summary_table(store, run_id)
    if console is not None:
        print_table(table, title, console, wide)
    text = to_markdown(table, title)
    write_text_atomic(path, text)
    return text


def print_metrics(table: pd.DataFrame, title: str, console: Console, wide: bool = False) -> None:
    """A metrics table (metric, value, 95% CI, n, direction) for one checkpoint: metrics under a heading per
    suite (``wide``: full names, one table)."""
    if not wide:
        t = terminal_tables.table(["metric", "value", "95% CI", "n", "better"],
                                  ["left", "right", "right", "right", "center"], title=escape(title))
        terminal_tables.add_by_suite(t, ((row["metric"], _metric_cells(row)) for _, row in table.iterrows()))
        console.print(t)
        return
    rich_table = Table(title=title)
    for col, justify in (("metric", "left"), ("value", "right"), ("95% CI", "right"), ("n", "right"), ("better", "center")):
        rich_table.add_column(col, justify=justify)
    for _, row in table.iterrows():
        rich_table.add_row(escape(row["metric"]), *_metric_cells(row))
    console.print(rich_table)


def _metric_cells(row: pd.Series) -> list[str]:
    ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if row["ci_low"] is not None else "—"
    return [_fmt(row["value"]), ci, str(row["n"]), "↑" if row["higher_is_better"] else "↓"]
