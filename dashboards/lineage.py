"""The stage DAG of a run, from its checkpoints table (pure: DataFrames in, values out).

Edges are ``parent_stage -> stage``; other inputs (the reward model a PPO stage reads, a
judge) are drawn as dashed edges. Lineage paths come from `harness.lineage.lineage_paths`,
the same the report uses.
"""

from __future__ import annotations

import math

import pandas as pd

STATUS_COLOURS = {"complete": "#d8f0dc", "started": "#fff1c2", "running": "#fff1c2", "failed": "#f8d0d3"}
GATE_KEYS = ("gate", "gate_status", "gate_verdict")
NEWLINE = "\n"


def parents(checkpoints: pd.DataFrame) -> dict[str, str | None]:
    """stage -> parent stage (None for roots and for parents missing from the run)."""
    known = set(checkpoints["stage"])
    return {s: (p if p in known and p != s else None)
            for s, p in zip(checkpoints["stage"], checkpoints["parent_stage"], strict=True)}


def gate_status(metrics: dict[str, object]) -> str | None:
    """A checkpoint's gate verdict if one was recorded with its training metrics."""
    for key in GATE_KEYS:
        value = metrics.get(key)
        if isinstance(value, dict):
            value = value.get("status") or value.get("verdict")
        if value not in (None, ""):
            return str(value)
    return None


def format_effect(metric: str, effect: float) -> str:
    return f"{metric} {effect:+.3f}" if not math.isnan(effect) else f"{metric} n/a"


def edge_labels(effects: pd.DataFrame, max_lines: int = 3) -> dict[str, list[str]]:
    """stage -> lines naming its attributed headline effects: the most significant effect
    of each suite first (so one suite's many length metrics do not hide a refusal shift)."""
    if effects.empty:
        return {}
    hits = effects[effects["attributed"] & (effects["family"] == "headline")].copy()
    hits["suite"] = hits["metric"].str.split(".").str[0]
    hits["size"] = -hits["effect"].abs()
    hits = hits.sort_values(["p_adjusted", "size"], na_position="last", kind="stable")
    hits["rank"] = hits.groupby(["stage", "suite"]).cumcount()
    hits = hits.sort_values(["rank", "p_adjusted", "size"], na_position="last", kind="stable")
    out: dict[str, list[str]] = {}
    for stage, rows in hits.groupby("stage", sort=False):
        lines = [format_effect(m, e) for m, e in zip(rows["metric"], rows["effect"], strict=True)]
        extra = len(lines) - max_lines
        out[str(stage)] = lines[:max_lines] + ([f"+{extra} more"] if extra > 0 else [])
    return out


def _quote(text: str) -> str:
    """A DOT string literal; newlines become DOT line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def lineage_dot(checkpoints: pd.DataFrame, effects: pd.DataFrame, max_lines: int = 3) -> str:
    """Graphviz DOT of the run's stages: nodes coloured by status, parent edges labelled
    with attributed shifts and gate verdicts, other inputs dashed."""
    par = parents(checkpoints)
    labels = edge_labels(effects, max_lines)
    lines = ["digraph lineage {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for row in checkpoints.itertuples(index=False):
        colour = STATUS_COLOURS.get(row.status, "#eeeeee")
        label = f"{row.stage}\n{row.kind} · {row.status}"
        lines.append(f"  {_quote(row.stage)} [label={_quote(label)}, fillcolor={_quote(colour)}];")
    for row in checkpoints.itertuples(index=False):
        parent = par.get(row.stage)
        if parent is not None:
            text = list(labels.get(row.stage, []))
            gate = gate_status(row.metrics)
            if gate:
                text.append(f"gate: {gate}")
            attrs = f" [label={_quote(NEWLINE.join(text))}]" if text else ""
            lines.append(f"  {_quote(parent)} -> {_quote(row.stage)}{attrs};")
        for role, source in sorted(row.inputs.items()):
            if role != "parent" and isinstance(source, str) and source in par and source != parent:
                lines.append(f"  {_quote(source)} -> {_quote(row.stage)} "
                             f"[style=dashed, color=\"#999999\", label={_quote(role)}];")
    lines.append("}")
    return "\n".join(lines)
