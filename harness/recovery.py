"""Planted-cause recovery: the stored attribution checked against the world card.

Each card entry is one check, counted three ways:

- ``increase`` / ``decrease``: **recovered** by an attributed effect of that sign (for a metric
  without per-item outcomes, a correlation over topics: the entry's level ``min_value`` reached
  with a change of that sign), else **missed**.
- ``flat``: an equivalence test at the decision's level, TOST with Holm's step-down over the k
  flat expectations of the run (``details.tost``: the interval at the level Holm tests the
  check at, and its Holm-adjusted p; the effect's own interval when the attribution did not
  expect it flat): **recovered** when that
  interval lies inside ± the metric's minimum effect (or the entry's ``bound``, where the world plants
  a known small shift) on the forbidden side(s) (``forbidden``:
  increase | decrease | both, default both: a forgetting decrease may be allowed); **missed**
  when an effect is attributed in a forbidden direction; otherwise **inconclusive** (too few
  items or too noisy to tell a flat metric from a small shift). "Nothing significant" is
  never enough.
- ``any`` (the stage moves the metric, no direction planted): listed, never counted; a shift
  there is allowed.

An expectation whose effect cannot be measured (no row, metric first measured there, refused
pairing) is missed. Expectations for stages not in the run are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from harness.lineage import as_rows

Row = dict[str, Any]
STATUS = {"recovered": "ok", "missed": "MISSED", "inconclusive": "inconclusive"}


def _finite(*xs: Any) -> bool:
    return all(isinstance(x, int | float) and math.isfinite(x) for x in xs)


def equivalence(row: Mapping[str, Any], forbidden: str = "both", bound: float | None = None) -> Row | None:
    """Whether an effect row shows a ``flat`` metric: an interval inside the bounds ± its minimum
    effect (or the card entry's own ``bound``) on the ``forbidden`` side(s). Paired rows use their TOST interval (``details.tost``),
    else the effect's interval; aggregate rows (no per-item outcomes) the child's stored
    interval around the parent's value, labelled descriptive. None when the row has no
    interval or no minimum effect."""
    d = row.get("details") or {}
    size = d.get("min_effect") if bound is None else bound
    tost = bool(d.get("kind") == "paired" and d.get("tost"))
    if tost:
        (lo, hi), level, descriptive = d["tost"]["ci"], d["tost"]["level"], False
    elif d.get("kind") == "paired":
        lo, hi, level, descriptive = row.get("ci_low"), row.get("ci_high"), d.get("ci_level"), False
    elif d.get("kind") == "aggregate":
        (lo, hi), centre, level, descriptive = d.get("child_ci") or (None, None), d.get("parent_value"), None, True
        lo, hi = (lo - centre, hi - centre) if _finite(lo, hi, centre) else (None, None)
    else:
        return None
    if not _finite(lo, hi, size):
        return None
    lower = -size if forbidden in ("both", "decrease") else None
    upper = size if forbidden in ("both", "increase") else None
    inside = (lower is None or lo > lower) and (upper is None or hi < upper)
    p_adjusted = d["tost"].get("p_adjusted") if tost else None
    if p_adjusted is not None and (d["tost"].get("bound"), d["tost"].get("forbidden")) == (size, forbidden):
        # the tested hypothesis, and Holm stopped earlier in its order: not shown either
        inside = inside and p_adjusted < d["alpha"]
    return {"lower": lower, "upper": upper, "ci": [lo, hi], "level": level, "equivalent": bool(inside),
            "descriptive": descriptive, "tost": tost, "forbidden": forbidden}


def bounds_text(eq: Mapping[str, Any]) -> str:
    """'±0.05', '< +0.05' or '> -0.05' (the side(s) the flat check bounds)."""
    lo, hi = eq.get("lower"), eq.get("upper")
    if lo is not None and hi is not None:
        return f"±{hi:.3g}"
    return f"< {hi:+.3g}" if hi is not None else f"> {lo:+.3g}"


def _eq_text(eq: Row | None) -> str:
    if eq is None:
        return "no interval or minimum effect to test equivalence"
    lo, hi = eq["ci"]
    level = f" at {100 * eq['level']:.6g}%" if eq.get("level") else ""
    what = ("the child's interval vs the parent (descriptive)" if eq["descriptive"]
            else f"{'TOST ' if eq.get('tost') else ''}interval{level}")
    verdict = "within" if eq["equivalent"] else "not within"
    return f"{what} [{lo:+.3g}, {hi:+.3g}] {verdict} {bounds_text(eq)}"


def _sign_ok(effect: float | None, direction: str) -> bool:
    return effect is not None and (effect > 0 if direction == "increase" else effect < 0)


def _check(e: Mapping[str, Any], r: Row | None) -> tuple[str, str, bool, Row | None]:
    """(status, how, shift allowed, equivalence) of one counted card entry against its effect row."""
    direction = e["direction"]
    d = (r or {}).get("details") or {}
    shifted = bool(r and (r.get("attributed") or d.get("descriptive_shift")))
    tag = " (descriptive: no per-item test)" if d.get("kind") == "aggregate" else ""
    if r is None or r.get("effect") is None:
        return "missed", d.get("reason", "not measured at this stage"), False, None
    effect = r["effect"]
    if direction == "flat":
        forbidden = e.get("forbidden", "both")
        eq = equivalence(r, forbidden, e.get("bound"))
        within = bool(eq and eq["equivalent"])
        # a card bound allows a known small shift: attributed but inside the bound is what was planted
        against = shifted and (forbidden == "both" or _sign_ok(effect, forbidden)) and not (
            e.get("bound") is not None and within)
        status = "missed" if against else "recovered" if within else "inconclusive"
        how = f"effect {effect:+.3g}{', attributed' if shifted else ''}; {_eq_text(eq)}{tag}"
        return status, how, shifted and not against, eq
    if e.get("min_value") is not None:
        child = d.get("child_value")
        ok = child is not None and _sign_ok(effect, direction) and (
            child >= e["min_value"] if direction == "increase" else child <= e["min_value"])
        how = f"effect {effect:+.3g}, value {child if child is None else round(child, 3)} vs required {e['min_value']}"
        return ("recovered" if ok else "missed"), how, False, None
    ok = shifted and _sign_ok(effect, direction)
    return ("recovered" if ok else "missed"), f"effect {effect:+.3g}: {d.get('reason', '')}{tag}", False, None


def planted_recovery(effects: pd.DataFrame | Iterable[Row], world_card: Mapping[str, Any] | None,
                     kinds: Mapping[str, str] | None = None) -> Row:
    """Check the attribution against the world card's expected effects (module docstring).

    Returns counts (``recovered``, ``missed``, ``inconclusive``, ``expected`` = their sum,
    ``any``), the ``summary`` line, one line per check and the counted ``checks`` (stage,
    metric, direction, status, effect, forbidden and equivalence of a flat one). Unplanted = attributed headline
    effects on a metric the card covers, at a stage or in a direction it does not expect;
    attributed effects on metrics the card never mentions (derived ones such as
    ``verbosity.mean_words``) are listed apart, as not covered.
    """
    rows = [r for r in as_rows(effects) if r.get("family", "headline") == "headline"]
    by = {(r["stage"], r["metric"]): r for r in rows}
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    kinds = kinds or {}
    counts = dict.fromkeys(("recovered", "missed", "inconclusive", "any"), 0)
    lines: list[str] = []
    checks: list[Row] = []
    planted: set[tuple[str, str]] = set()
    allowed: set[tuple[str, str]] = set()
    for e in (world_card or {}).get("expected_effects", []):
        metric, direction = e["metric"], e["direction"]
        matched = [s for s in stages if s == e["stage"]] or [s for s in stages if kinds.get(s) == e["stage"]]
        for stage in matched:
            r = by.get((stage, metric))
            if direction == "any":  # the card plants no direction here: allowed either way, not counted
                allowed.add((stage, metric))
                counts["any"] += 1
                effect = "not measured" if r is None or r.get("effect") is None else f"effect {r['effect']:+.3g}"
                lines.append(f"[any] {stage} {metric}: {effect}, no direction planted (not counted)")
                continue
            status, how, allow, eq = _check(e, r)
            counts[status] += 1
            checks.append({"stage": stage, "metric": metric, "direction": direction, "status": status,
                           "effect": (r or {}).get("effect"), "forbidden": e.get("forbidden", "both")
                           if direction == "flat" else None, "equivalence": eq})
            if allow:  # a shift the card allows (e.g. forgetting after pretraining)
                allowed.add((stage, metric))
            if status == "recovered" and direction != "flat":
                planted.add((stage, metric))
            may = f" (forbidden: {e.get('forbidden', 'both')})" if direction == "flat" else ""
            lines.append(f"[{STATUS[status]}] {stage} {metric} expected {direction}{may}: {how}")
    covered = {e["metric"] for e in (world_card or {}).get("expected_effects", [])}
    attributed = [r for r in rows if r.get("attributed") and (r["stage"], r["metric"]) not in planted | allowed]
    unplanted = [r for r in attributed if r["metric"] in covered]
    other = [r for r in attributed if r["metric"] not in covered]
    lines += [f"[unplanted] {r['stage']} {r['metric']} effect {r['effect']:+.3g} attributed" for r in unplanted]
    lines += [f"[not covered by the card] {r['stage']} {r['metric']} effect {r['effect']:+.3g} attributed"
              for r in other]
    expected = counts["recovered"] + counts["missed"] + counts["inconclusive"]
    summary = (f"planted effects recovered: {counts['recovered']}/{expected} (missed: {counts['missed']}, "
               f"inconclusive: {counts['inconclusive']}); 'any' rows, not counted: {counts['any']}; "
               f"unplanted effects attributed: {len(unplanted)}")
    return {**counts, "expected": expected, "unplanted_attributed": len(unplanted), "summary": summary,
            "not_covered_attributed": len(other), "lines": [summary, *lines], "checks": checks}
