"""Terminal tables that fit the console (80 columns and up) and never cut a name.

The wide layouts (one row per metric with every stage, or every effect with its stage and parent, in one
table) need 120-200 columns; squeezed into 80, rich cuts names to ``hallucination.absten…``. Here:

- metrics are listed under a heading per suite, without the suite prefix (``hallucination`` then
  ``abstention_rate``), so the name column stays short;
- a table of metric x stage is one block per suite with only the stages that have a value, and is split
  into several blocks of stages when they still do not fit;
- effects and flat checks are one block per stage.

Every column folds (wraps) what does not fit instead of cutting it with an ellipsis. The cells are
formatted by the callers (``harness.summary``, ``harness.report``); this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

Cells = Sequence[RenderableType]


def suite_of(metric: str) -> tuple[str, str]:
    """``"refusal.over_refusal_rate[x]"`` -> ``("refusal", "over_refusal_rate[x]")`` (no prefix: ``("", name)``)."""
    suite, _, rest = metric.partition(".")
    return (suite, rest) if rest and "[" not in suite else ("", metric)


def table(headers: Sequence[str], justify: Sequence[str] = (), title: str | None = None) -> Table:
    """A compact table: a rule under the header, one space between columns, every column folding."""
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False,
              title_justify="left", title_style="bold")
    for i, header in enumerate(headers):
        t.add_column(header, justify=justify[i] if i < len(justify) else "left", overflow="fold")  # type: ignore[arg-type]
    return t


def add_by_suite(t: Table, rows: Iterable[tuple[str, Cells]]) -> None:
    """Rows ``(metric, cells)`` under a bold heading row per suite, the names without the suite prefix
    (rows of one suite kept together); a breakdown ``name[group]`` right under its ``name``, as ``[group]``."""
    rows = list(rows)
    for suite in dict.fromkeys(suite_of(m)[0] for m, _ in rows):
        members = [(suite_of(m)[1], cells) for m, cells in rows if suite_of(m)[0] == suite]
        width = len(members[0][1])
        if suite:
            t.add_row(Text(suite, style="bold"), *([""] * width))
        indent = " " if suite else ""
        bases = list(dict.fromkeys(name.split("[", 1)[0] for name, _ in members))
        for base in bases:
            group = [(name, cells) for name, cells in members if name.split("[", 1)[0] == base]
            if all("[" in name for name, _ in group):  # a breakdown without its headline row: name it once
                t.add_row(escape(indent + base), *([""] * width))
            for name, cells in group:
                shown = name if "[" not in name else "  " + name[len(base):]
                t.add_row(escape(indent + shown), *cells)


def fits(console: Console, renderable: RenderableType) -> bool:
    """Whether ``renderable`` at its natural width fits the console."""
    return console.measure(renderable, options=console.options.update_width(1 << 16)).maximum <= console.width


def stage_blocks(console: Console, stages: Sequence[str], make: Callable[[Sequence[str]], Table]) -> list[Table]:
    """``make(stages)`` for consecutive groups of ``stages``, each as large as the console's width allows."""
    blocks, chunk = [], []
    for stage in stages:
        if chunk and not fits(console, make([*chunk, stage])):
            blocks.append(make(chunk))
            chunk = []
        chunk.append(stage)
    if chunk:
        blocks.append(make(chunk))
    return blocks


def print_blocks(console: Console, title: str | None, blocks: Sequence[RenderableType]) -> None:
    """A bold title, then the blocks, each followed by a blank line."""
    parts: list[RenderableType] = [Text(title, style="bold")] if title else []
    for block in blocks:
        parts += [block, Text("")]
    console.print(Group(*parts))


def metric_stage_blocks(console: Console, values: dict[str, dict[str, str]], stages: Sequence[str]) -> list[Table]:
    """``values``: metric -> stage -> formatted value. One block per suite (header: the suite's name and the
    stages with a value for it), split by stage groups that fit."""
    suites: dict[str, list[str]] = {}
    for metric in values:
        suites.setdefault(suite_of(metric)[0], []).append(metric)
    blocks = []
    for suite, metrics in suites.items():
        present = [s for s in stages if any(values[m].get(s) not in (None, "", "—") for m in metrics)] or list(stages)

        def make(chunk: Sequence[str], suite: str = suite, metrics: list[str] = metrics) -> Table:
            t = table([suite or "metric", *chunk], ["left", *(["right"] * len(chunk))])
            t.columns[0].header_style = "bold"
            for m in metrics:
                t.add_row(escape(suite_of(m)[1]), *(values[m].get(s, "") for s in chunk))
            return t

        blocks += stage_blocks(console, present, make)
    return blocks
