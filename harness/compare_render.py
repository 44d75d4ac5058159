"""``harness compare``'s output: the tables of :func:`harness.compare.compare` as a terminal table,
Markdown and JSON. One set of rows (:func:`tables`) feeds every format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

Row = dict[str, Any]


def _num(x: Any, signed: bool = False) -> str:
    if x is None:
        return "—"
    x = float(x)
    digits = 1 if abs(x) >= 100 else 3
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(ci: Sequence[Any] | None, signed: bool = True) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{_num(ci[0], signed)}, {_num(ci[1], signed)}]"


def _p(p: Any) -> str:
    return "—" if p is None else f"{p:.2g}"


def _seeds(entries: Sequence[Row], key: str, signed: bool) -> str:
    return " / ".join(f"{e['seed']}: {_num(e.get(key), signed)}" for e in entries) or "—"


def tables(result: Row) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of the effects, pairs and profile tables."""
    level = f"{100 * result['ci_level']:.4g}%"
    seed_level = f"{100 * result['seed_ci_level']:.4g}%"
    effects = [[
        e["metric"], e["method"], ", ".join(e["parents"]), str(e["n_seeds"]),
        _num(e["mean"]) + _ci(e["seed_ci"], signed=False), _seeds(e["per_seed"], "value", False),
        _seeds(e["per_seed"], "diff", True), _num(e["pooled"]["diff"], True) + _ci(e["pooled"]["ci"]),
        str(e["pooled"]["n"]), _p(e["pooled"]["p_adjusted"]), e["verdict"],
    ] for e in sorted(result["effects"], key=lambda e: e["metric"])]
    pairs = [[
        p["metric"], p["a"], p["b"], _seeds(p["per_seed"], "diff", True),
        _num(p["pooled"]["diff"], True) + _ci(p["pooled"]["ci"]), str(p["pooled"]["n"]),
        _p(p["pooled"]["p_adjusted"]), p["verdict"],
    ] for p in sorted(result["pairs"], key=lambda p: p["metric"])]
    profile = [[
        m["label"], m["kind"], ", ".join(map(str, m["seeds"])), ", ".join(m["parents"]), _num(m["wall_s"]),
        "—" if m["train_tokens"] is None else f"{m['train_tokens']:.0f}", m["reward_hacking"] or "—",
        "; ".join(m["notes"]) or "",
    ] for m in result["methods"]]
    return [
        (f"Method × metric: mean over seeds [{seed_level} seed-level CI]; effect vs the shared parent per seed "
         f"and pooled [{level} simultaneous CI]",
         ["metric", "method", "parent", "seeds", "mean [seed CI]", "value per seed", "effect per seed",
          "pooled effect [CI]", "pairs", "p (Holm)", "verdict"], effects),
        (f"Pairs of methods: B − A on the same items, per seed and pooled [{level} simultaneous CI]",
         ["metric", "A", "B", "B − A per seed", "pooled B − A [CI]", "pairs", "p (Holm)", "verdict"], pairs),
        ("Per method", ["method", "kind", "seeds", "parent", "wall s (mean)", "tokens trained (mean)",
                        "reward hacking flagged", "notes"], profile),
    ]


def explanation(result: Row) -> str:
    m = result["family_size"]
    return (f"α = {result['alpha']}; Holm over the {m} pooled tests of this table (every method's effect and "
            f"every pair's difference, every metric), intervals simultaneous at 1 − α/{m}. Pooled: the items "
            "of all seeds together (exact McNemar for 0/1 outcomes, sign-flip otherwise); per-seed numbers are "
            "estimates (raw tests in the JSON). A verdict needs p (Holm) < α and the metric's minimum effect. "
            f"Seeds: {', '.join(map(str, result['seeds']))}.")


def print_compare(result: Row, console: Console) -> None:
    for title, headers, rows in tables(result):
        table = Table(title=escape(title), show_lines=False)
        for h in headers:
            table.add_column(h, overflow="fold")
        for r in rows:
            table.add_row(*map(escape, r))  # variant labels are "dpo[dpo.beta=0.2]", not markup
        console.print(table)
    console.print(explanation(result), highlight=False)


def render_markdown(result: Row) -> str:
    lines = [f"# Method comparison ({result['store']})", "", explanation(result), ""]
    for title, headers, rows in tables(result):
        lines += [f"## {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def write_outputs(result: Row, markdown: Path | None, json_path: Path | None) -> None:
    if markdown is not None:
        markdown.write_text(render_markdown(result), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")


def seed_rows(result: Row) -> tuple[list[Row], list[Row]]:
    """The per-seed numbers behind the tables, unformatted: each method × metric × seed (its run, the
    parent's value and its own, the paired effect with its raw p and 95% interval), and each pair of
    methods × metric × seed (B − A). Per-seed tests are estimates, outside the Holm family."""
    def test(e: Row) -> Row:
        ci = e.get("ci") or [None, None]
        return {"paired items": e.get("n"), "ci low": ci[0], "ci high": ci[1], "p (raw)": e.get("p_value"),
                "note": e.get("note", "")}

    effects = [{"method": j["method"], "metric": j["metric"], "seed": e["seed"], "run": e["run_id"],
                "parent": e["parent"], "parent value": e["parent_value"], "value": e["value"], "effect": e["diff"],
                **test(e)} for j in result["effects"] for e in j["per_seed"]]
    pairs = [{"metric": j["metric"], "A": j["a"], "B": j["b"], "seed": e["seed"], "A value": e["a_value"],
              "B value": e["b_value"], "B − A": e["diff"], **test(e)} for j in result["pairs"] for e in j["per_seed"]]
    return effects, pairs
