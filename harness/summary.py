"""The run summary: headline metric x checkpoint, in lineage order, for the terminal and as Markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.config import INIT
from harness.core.artifacts import write_text_atomic
from harness.core.store import Store


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


def print_table(table: pd.DataFrame, title: str, console: Console) -> None:
    if table.empty:
        console.print(f"{title}: no metrics stored yet")
        return
    rich_table = Table(title=title, show_lines=False)
    rich_table.add_column("metric")
    for stage in table.columns:
        rich_table.add_column(stage, justify="right")
    for metric, row in table.iterrows():
        rich_table.add_row(escape(str(metric)), *(_fmt(v) for v in row))
    console.print(rich_table)


def write_summary(store: Store, run_id: str, path: Path, console: Console | None = None) -> str:
    """Print the summary and write it as Markdown to ``path``; returns the Markdown."""
    run = store.get_run(run_id)
    title = f"Run {run_id} ({run['name']}): metric per checkpoint"
    table = summary_table(store, run_id)
    if console is not None:
        print_table(table, title, console)
    text = to_markdown(table, title)
    write_text_atomic(path, text)
    return text


def print_metrics(table: pd.DataFrame, title: str, console: Console) -> None:
    """A metrics table (metric, value, 95% CI, n, direction) for one checkpoint."""
    rich_table = Table(title=title)
    for col, justify in (("metric", "left"), ("value", "right"), ("95% CI", "right"), ("n", "right"), ("better", "center")):
        rich_table.add_column(col, justify=justify)
    for _, row in table.iterrows():
        ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if row["ci_low"] is not None else "—"
        rich_table.add_row(escape(row["metric"]), _fmt(row["value"]), ci, str(row["n"]), "↑" if row["higher_is_better"] else "↓")
    console.print(rich_table)
