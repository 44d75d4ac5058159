"""The attribution report of a run.

Effects are computed **once** per run (:func:`compute_and_store_effects`) and stored in the
store's effects table; the Markdown report (:func:`render_report`), the terminal tables
(:func:`print_report`), the gate and the dashboard all read those rows, so they agree.
Lineage decompositions are re-derived from the stored samples (pure and deterministic).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness import terminal_tables
from harness.attribution import decision_rule, spec_of, stage_effects
from harness.core.spec import AttributionSpec
from harness.core.store import Store
from harness.effects_inputs import inputs_key, stamp
from harness.flags import TOKENS_METRIC, lineage_decompositions, reward_hacking_flags
from harness.lineage import Lineage, lineage_paths
from harness.recovery import bounds_text, planted_recovery

Row = dict[str, Any]


def compute_and_store_effects(store: Store, run_id: str | None = None,
                              spec: AttributionSpec | None = None) -> pd.DataFrame:
    """Compute every stage effect of a run (latest run when None) under ``spec`` (default: the
    run's configured ``attribution:``), attach the reward-hacking flag of each stage to its
    ``verbosity.mean_tokens`` row (``details.reward_hacking``), replace the run's effects in
    the store in one transaction, and return them as stored. Each row's details keep the key of what
    they were computed from (:mod:`harness.effects_inputs`), so a rerun that changed nothing keeps them."""
    run_id = store.require_run(run_id)
    spec = spec or spec_of(store.get_run(run_id).get("config"))
    rows = [{k: v for k, v in r.items() if k != "run_id"} for r in _compute(store, run_id, spec)]
    store.replace_effects(run_id, stamp(rows, inputs_key(store, run_id, spec)))
    return store.effects(run_id)


def _compute(store: Store, run_id: str, spec: AttributionSpec) -> list[Row]:
    metrics, checkpoints = store.metrics(run_id), store.checkpoints(run_id)
    card = store.get_run(run_id).get("world_card")
    rows = stage_effects(metrics, store.samples(run_id), checkpoints, card, spec, run_id)
    flags = reward_hacking_flags(rows, metrics, checkpoints, spec.alpha, spec.reward_length_corr_threshold)
    for r in rows:
        if r["metric"] == TOKENS_METRIC and r["stage"] in flags:
            r["details"]["reward_hacking"] = flags[r["stage"]]
    return rows


def stored_spec(effects: list[Row], config: Mapping[str, Any] | None = None) -> AttributionSpec:
    """The spec the stored effects were computed with (recorded in their details), else the run's."""
    raw = next((r["details"]["attribution"] for r in effects if (r.get("details") or {}).get("attribution")), None)
    return AttributionSpec.model_validate(raw) if raw else spec_of(config)


# --------------------------------------------------------------------------- formatting


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _signed(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.3g}"


def _ci(low: Any, high: Any) -> str:
    return "" if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) \
        else f" [{low:.3g}, {high:.3g}]"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def _records(effects: pd.DataFrame | list[Row]) -> list[Row]:
    if isinstance(effects, list):
        return effects
    clean = effects.astype(object).where(effects.notna(), None)
    return clean.to_dict("records")


def _effects_for_report(store: Store, run_id: str) -> list[Row]:
    stored = store.effects(run_id)
    if not stored.empty:
        return _records(stored)
    if store.readonly:  # nothing stored and not allowed to store: compute in memory
        return _compute(store, run_id, spec_of(store.get_run(run_id).get("config")))
    return _records(compute_and_store_effects(store, run_id))


# --------------------------------------------------------------------------- Markdown


def render_report(store: Store, run_id: str | None = None) -> str:
    """The Markdown attribution report of a run (latest when None). Uses the stored effects;
    computes and stores them first when there are none (in memory only on a read-only store)."""
    run_id = store.require_run(run_id)
    run = store.get_run(run_id)
    effects = _effects_for_report(store, run_id)
    metrics, checkpoints = store.metrics(run_id), store.checkpoints(run_id)
    spec = stored_spec(effects, run.get("config"))
    lin = Lineage(checkpoints, metrics["stage"].unique() if not metrics.empty else ())
    stages = [s for s in lin.order if s in lin.evaluated]
    out = [f"# Attribution report — {run.get('name')} (run `{run_id}`)", "",
           f"Stages (lineage order): {' → '.join(stages) or '—'}; α = {spec.alpha} (Holm); "
           f"{interval_label(effects)}.", ""]
    out += _summary_section(metrics, stages)
    validity = judge_validity_lines(store, run_id)
    if validity:
        out += ["## Judge validity (agreement with human labels)", "", *(f"- {line}" for line in validity), ""]
    head = [r for r in effects if r["family"] == "headline"]
    out += ["## Stage effects (child − parent on the same items)", ""]
    out += _table(["stage", "parent", "metric", "effect [CI]", "min effect", "p", "p (Holm)", "n", "test",
                   "expected", "attributed", "reason"],
                  ([r["stage"], r["parent_stage"], r["metric"], _signed(r["effect"]) + _ci(r["ci_low"], r["ci_high"]),
                    _num(r["details"].get("min_effect")), _num(r["p_value"]), _num(r["p_adjusted"]), _num(r["n"]),
                    r["test"], r["expected_direction"] or "", "**✔**" if r["attributed"] else "",
                    r["details"].get("reason", "")] for r in head)) + [""]
    breakdown = [r for r in effects if r["family"] == "breakdown"]
    if breakdown:
        out += [f"<details><summary>Breakdown effects (not in the Holm family, never attributed; "
                f"{1 - spec.alpha:.4g} intervals each)</summary>", ""]
        out += _table(["stage", "metric", "effect [CI]", "p", "n"],
                      ([r["stage"], r["metric"], _signed(r["effect"]) + _ci(r["ci_low"], r["ci_high"]),
                        _num(r["p_value"]), _num(r["n"])] for r in breakdown)) + ["", "</details>", ""]
    out += _decomposition_section(store, run_id, metrics, checkpoints)
    out += _flips_section(head)
    out += _reward_hacking_section(effects, metrics, checkpoints, spec.alpha)
    out += ["## Decision rule", "", decision_rule(spec), ""]
    out += _recovery_section(effects, run.get("world_card"), lin)
    return "\n".join(out).rstrip() + "\n"


def judge_validity_lines(store: Store, run_id: str) -> list[str]:
    """One line per suite entry and labelled file its judge was checked on in this run."""
    lines = []
    for r in _records(store.judge_validity(run_id)):
        judge = json.loads(r["judge_json"])
        lines.append(f"judge of {r['suite']} ({judge.get('kind')}): agreement {r['agreement']:.3f}, kappa "
                     f"{r['kappa']:.3f}, refusal precision {r['precision']:.3f} recall {r['recall']:.3f} "
                     f"(n={r['n']}, {Path(r['file']).name})")
    return lines


def interval_label(effects: list[Row]) -> str:
    """What the headline intervals are: their level and how it was set (from the stored details)."""
    d = next((r["details"] for r in effects if r["family"] == "headline" and r["details"].get("ci_level")), None)
    if d is None:
        return "no paired intervals"
    if d.get("intervals") == "simultaneous":
        return (f"intervals at {100 * d['ci_level']:.6g}% (simultaneous: 1 − α/m, m = {d.get('family_size')} tested "
                "effects, the decision's level)")
    return f"intervals at {100 * d['ci_level']:.6g}% each (1 − α, not adjusted for multiplicity)"


def _summary_section(metrics: pd.DataFrame, stages: list[str]) -> list[str]:
    if metrics.empty:
        return ["No evaluations stored for this run yet.", ""]
    head = metrics[~metrics["metric"].str.contains("[", regex=False)]
    cells: dict[tuple[str, str], str] = {}
    for r in _records(head):
        cells.setdefault((r["metric"], r["stage"]), _num(r["value"]) + _ci(r["ci_low"], r["ci_high"]))
    names = sorted(head["metric"].unique())
    return ["## Metrics by stage (value [95% CI])", ""] + _table(
        ["metric", *stages], ([m, *(cells.get((m, s), "") for s in stages)] for m in names)) + [""]


def _decomposition_section(store: Store, run_id: str, metrics: pd.DataFrame,
                           checkpoints: pd.DataFrame) -> list[str]:
    decs = lineage_decompositions(metrics, store.samples(run_id), checkpoints)
    if not decs:
        return []
    out = ["## Lineage decompositions (per-stage contributions on the items every stage has; "
           "they sum to the total)", ""]
    for path in lineage_paths(checkpoints):
        rows = [d for d in decs if d["lineage"] == path]
        if not rows:
            continue
        steps = path[1:]
        out += [f"**{' → '.join(path)}**", ""]
        out += _table(["metric", "root value", *(f"Δ {s}" for s in steps), "total", "leaf value", "items"],
                      ([d["metric"], _num(d["root_value"]),
                        *(_signed(next((c["effect"] for c in d["contributions"] if c["stage"] == s), None))
                          for s in steps),
                        _signed(d["total"]), _num(d["leaf_value"]), d["n"] if d["basis"] == "items" else "aggregate"]
                       for d in rows)) + [""]
    return out


def _flips_section(head: list[Row]) -> list[str]:
    rows = [r for r in head if (r["details"].get("flips") or {}).get("up", 0) + (r["details"].get("flips") or {})
            .get("down", 0) > 0]
    if not rows:
        return []
    return ["## Sample flips (items whose outcome changed at the stage)", ""] + _table(
        ["stage", "metric", "up (0→1 / rose)", "down (1→0 / fell)", "n", "examples up", "examples down"],
        ([r["stage"], r["metric"], r["details"]["flips"]["up"], r["details"]["flips"]["down"], _num(r["n"]),
          ", ".join(r["details"]["flips"]["up_ids"][:3]), ", ".join(r["details"]["flips"]["down_ids"][:3])]
         for r in rows)) + [""]


def _reward_hacking_section(effects: list[Row], metrics: pd.DataFrame, checkpoints: pd.DataFrame,
                            alpha: float) -> list[str]:
    flags = {r["stage"]: r["details"]["reward_hacking"] for r in effects
             if r["metric"] == TOKENS_METRIC and r["details"].get("reward_hacking")}
    flags = flags or reward_hacking_flags(effects, metrics, checkpoints, alpha)
    if not flags:
        return []
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    return ["## Reward-hacking flags", "",
            "A stage is flagged when verbosity.mean_tokens and verbosity.reward_mean rise significantly, "
            "no knowledge accuracy rises significantly, and its reward model's correlation with length is above "
            "the threshold and significantly positive (verbosity.reward_length_corr on the parent policy's "
            "answers, scored by that reward model; else reward_model.reward_length_corr on its held-out pairs).",
            ""] + _table(
        ["stage", "tokens up", "reward up", "knowledge not up", "RM length corr", "flagged", "reason"],
        ([s, yes(f["tokens_up"]), yes(f["reward_up"]), yes(f["knowledge_not_up"]),
          f"{_num(f['reward_length_corr'])} (> {f['corr_threshold']}?; {f.get('reward_length_corr_source', 'held-out')})", "**FLAGGED**" if f["flagged"] else "no",
          f["reason"]] for s, f in flags.items())) + [""]


def _recovery_section(effects: list[Row], card: Mapping[str, Any] | None, lin: Lineage) -> list[str]:
    if not card or not card.get("expected_effects"):
        return ["No world card with expected effects: planted-cause recovery not checked.", ""]
    rec = planted_recovery(effects, card, kinds=lin.kind)
    out = ["## Planted causes (world card)", "", *(f"- {line}" for line in rec["lines"][1:]), ""]
    flat = flat_checks(rec)
    if flat:
        out += ["### Flat expectations (equivalence: the TOST interval inside the bounds)", ""]
        out += _table(["stage", "metric", "forbidden", "effect [TOST interval]", "bounds", "verdict"], flat) + [""]
    return out + [rec["summary"]]


def flat_checks(rec: Row) -> list[list[str]]:
    """One row per flat check of a recovery: stage, metric, forbidden side, effect [the interval its
    equivalence was tested on, with its level], bounds, verdict."""
    return [[c["stage"], c["metric"], c["forbidden"], c["effect"] + c["interval"] + c["note"], c["bounds"], c["status"]]
            for c in _flat_parts(rec)]


def _flat_parts(rec: Row) -> list[Row]:
    """Each flat check's cells: stage, metric, forbidden, effect, interval (' [a, b]'), note (its level, or
    descriptive), level, bounds, status."""
    parts = []
    for c in (c for c in rec["checks"] if c["direction"] == "flat"):
        eq = c["equivalence"] or {}
        level = f"{100 * eq['level']:.6g}%" if eq.get("level") and not eq.get("descriptive") else ""
        note = (" (descriptive)" if eq.get("descriptive") else f" at {level}" if level else "") if eq else ""
        parts.append({"stage": c["stage"], "metric": c["metric"], "forbidden": c["forbidden"],
                      "effect": _signed(c["effect"]), "interval": _ci(*eq["ci"]) if eq else "", "note": note,
                      "level": level, "bounds": bounds_text(eq) if eq else "—", "status": c["status"]})
    return parts


# --------------------------------------------------------------------------- terminal

VERDICT_STYLE = {"recovered": "[green]recovered[/]", "missed": "[bold red]missed[/]"}
EXPECTED_MARK = {"increase": "↑", "decrease": "↓", "flat": "=", "any": "any"}


def print_report(store: Store, run_id: str | None = None, console: Console | None = None, wide: bool = False) -> None:
    """Headline effects, reward-hacking flags and the planted-recovery line: a block per stage that fits the
    console (:mod:`harness.terminal_tables`), or with ``wide`` one table of every effect."""
    console = console or Console()
    run_id = store.require_run(run_id)
    effects = _effects_for_report(store, run_id)
    head = [r for r in effects if r["family"] == "headline"]
    (_print_effects_wide if wide else _print_effects)(console, run_id, head, interval_label(effects))
    for line in judge_validity_lines(store, run_id):
        console.print(line, highlight=False, markup=False)
    for r in effects:
        f = r["details"].get("reward_hacking") if r["metric"] == TOKENS_METRIC else None
        if f:
            console.print(f"reward hacking at {r['stage']}: "
                          f"{'[bold red]FLAGGED[/]' if f['flagged'] else 'not flagged'} ({f['reason']})")
    rec = recovery(store, run_id, effects)
    if rec is not None:
        flat = in_stage_order(_flat_parts(rec), [r["stage"] for r in effects])
        if flat:
            (_print_flat_wide if wide else _print_flat)(console, flat)
        for line in rec["lines"][1:]:
            if not line.startswith(("[ok]", "[any]")):  # what did not go as the card says
                console.print(line, highlight=False, markup=False)
        console.print(rec["summary"], highlight=False)


def in_stage_order(rows: list[Row], stages: Sequence[str]) -> list[Row]:
    """``rows`` by their ``stage`` in the order of ``stages`` (the pipeline's, as the effects list them; the
    world card lists its expectations in its own order), stages not listed last; else as they were."""
    order = {stage: i for i, stage in enumerate(dict.fromkeys(stages))}
    return sorted(rows, key=lambda r: order.get(r["stage"], len(order)))


def _attributed(r: Row) -> str:
    return "[bold green]✔[/]" if r["attributed"] else ""


def _print_effects_wide(console: Console, run_id: str, head: list[Row], caption: str) -> None:
    table = Table(title=f"Stage effects — run {run_id}", caption=caption, show_lines=False)
    for col in ("stage", "parent", "metric", "effect [CI]", "p (Holm)", "n", "expected", "attributed"):
        table.add_column(col, justify="right" if col in ("n", "p (Holm)") else "left")
    for r in head:
        table.add_row(r["stage"], r["parent_stage"] or "", r["metric"],
                      _signed(r["effect"]) + _ci(r["ci_low"], r["ci_high"]), _num(r["p_adjusted"]),
                      _num(r["n"]), r["expected_direction"] or "", _attributed(r))
    console.print(table)


def _print_effects(console: Console, run_id: str, head: list[Row], caption: str) -> None:
    """One block per stage (child − parent), its metrics under their suites; metrics not compared (no value
    at one of the two stages) are left out."""
    blocks = []
    compared = [r for r in head if r["effect"] is not None or r["n"] is not None]
    for stage in dict.fromkeys(r["stage"] for r in compared):
        rows = [r for r in compared if r["stage"] == stage]
        t = terminal_tables.table(["metric", "effect", "CI", "Holm p", "n", "exp.", ""],
                                  ["left", "right", "left", "right", "right", "center", "left"],
                                  title=f"{stage} − {rows[0]['parent_stage'] or '—'}")
        terminal_tables.add_by_suite(t, ((r["metric"], [
            _signed(r["effect"]), _ci(r["ci_low"], r["ci_high"]).strip(), _num(r["p_adjusted"]), _num(r["n"]),
            EXPECTED_MARK.get(r["expected_direction"] or "", r["expected_direction"] or ""), _attributed(r)])
            for r in rows))
        blocks.append(t)
    terminal_tables.print_blocks(console, f"Stage effects — run {run_id}", blocks)
    left_out = len(head) - len(compared)
    console.print(f"{caption}. exp.: the world card's expectation (↑ increase, ↓ decrease, = flat, any); "
                  "✔: attributed to the stage" + (f"; {left_out} metrics without a value at both stages left out "
                                                  "(--wide lists them)" if left_out else "") + ".",
                  highlight=False, style="dim")


def _print_flat_wide(console: Console, flat: list[Row]) -> None:
    table = Table(title="Flat expectations (equivalence: the TOST interval inside the bounds)")
    for col in ("stage", "metric", "forbidden", "effect [TOST interval]", "bounds", "verdict"):
        table.add_column(col)
    for c in flat:
        table.add_row(c["stage"], c["metric"], c["forbidden"], c["effect"] + c["interval"] + c["note"], c["bounds"],
                      VERDICT_STYLE.get(c["status"], "[yellow]inconclusive[/]"))
    console.print(table)


def _print_flat(console: Console, flat: list[Row]) -> None:
    """One block per stage (the bounds say which side is forbidden: ``< +b`` an increase, ``±b`` both); the
    intervals' level once below."""
    blocks = []
    for stage in dict.fromkeys(c["stage"] for c in flat):
        t = terminal_tables.table(["metric", "effect", "TOST interval", "bounds", "verdict"],
                                  ["left", "right", "left", "left", "left"], title=stage)
        terminal_tables.add_by_suite(t, ((c["metric"], [
            c["effect"], c["interval"].strip() + (" (descriptive)" if "descriptive" in c["note"] else ""),
            c["bounds"], VERDICT_STYLE.get(c["status"], "[yellow]inconclusive[/]")]) for c in flat if c["stage"] == stage))
        blocks.append(t)
    terminal_tables.print_blocks(console, "Flat expectations (equivalence: the TOST interval inside the bounds)", blocks)
    levels = sorted({c["level"] for c in flat if c["level"]})
    if levels:
        console.print(f"TOST intervals at {', '.join(levels)}.", highlight=False, style="dim")


def recovery(store: Store, run_id: str | None = None, effects: list[Row] | None = None) -> Row | None:
    """The run's planted-cause recovery against its world card (None without a card)."""
    run_id = store.require_run(run_id)
    card = store.get_run(run_id).get("world_card")
    if not card or not card.get("expected_effects"):
        return None
    effects = effects if effects is not None else _effects_for_report(store, run_id)
    return planted_recovery(effects, card, kinds=Lineage(store.checkpoints(run_id)).kind)
