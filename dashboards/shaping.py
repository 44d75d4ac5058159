"""Pure shaping of store frames for the pages: waterfall, paired sibling differences,
topic points, reward-hacking signals and sample flips. No Streamlit here."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from dashboards.data import item_values, latest_value_rows, outcome_number
from harness.core.paired import family_confidence, holm, paired_compare
from harness.core.spec import AttributionSpec

TOKENS, REWARD = "verbosity.mean_tokens", "verbosity.reward_mean"
REWARD_CORR = "verbosity.reward_length_corr"
TOPIC_ACCURACY = "topic_coverage.accuracy"
KNOWLEDGE = ("hallucination.accuracy", "hallucination.mc_accuracy", TOPIC_ACCURACY)
PAIRED_COLUMNS = ["metric", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "ci_level", "p_value", "p_adjusted",
                  "test"]
ALPHA = AttributionSpec().alpha


def _float(value: Any) -> float:
    number = outcome_number(value)
    return math.nan if number is None else number


# -- attribution waterfall ------------------------------------------------------------
def waterfall(path: list[str], metric: str, metrics: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """Bars from the first stage on `path` that measured `metric` to the leaf: a start bar
    (its value), one floating bar per stage effect (base -> base + effect, with the CI
    shifted to the bar's base), and the leaf's measured value. A stage without a stored
    effect uses the difference of the two measured values, marked as such."""
    vals = latest_value_rows(metrics[metrics["metric"] == metric]).set_index("stage")["value"].to_dict()
    effs = effects[effects["metric"] == metric].drop_duplicates("stage").set_index("stage")
    present = [s for s in path if s in vals]
    rows: list[dict[str, Any]] = []
    if not present:
        return pd.DataFrame(rows)
    start = path.index(present[0])
    cum = float(vals[present[0]])
    rows.append(_bar("start", present[0], 0.0, cum, note=f"{metric} at {present[0]}"))
    prev = present[0]
    for stage in path[start + 1:]:
        if stage in effs.index and not math.isnan(effs.at[stage, "effect"]):
            e = effs.loc[stage]
            lo, hi = float(e["ci_low"]), float(e["ci_high"])
            rows.append(_bar("effect", stage, cum, cum + float(e["effect"]), err=(cum + lo, cum + hi),
                             attributed=bool(e["attributed"]), p=float(e["p_adjusted"]),
                             note="attributed" if e["attributed"] else "not attributed"))
            cum += float(e["effect"])
        elif stage in vals and prev in vals:
            delta = float(vals[stage]) - float(vals[prev])
            why = effs.at[stage, "details"].get("reason") if stage in effs.index else None
            rows.append(_bar("effect", stage, cum, cum + delta,
                             note=f"no stored effect: difference of values{f' ({why})' if why else ''}"))
            cum += delta
        else:
            continue
        prev = stage
    leaf = path[-1]
    if leaf in vals and len(rows) > 1:
        rows.append(_bar("measured", leaf, 0.0, float(vals[leaf]), note=f"{metric} measured at {leaf}"))
    frame = pd.DataFrame(rows)
    frame["step"] = [f"{i + 1}. {s}" + (" (measured)" if k == "measured" else "")
                     for i, (s, k) in enumerate(zip(frame["stage"], frame["kind"], strict=True))]
    return frame


def _bar(kind: str, stage: str, base: float, top: float, err: tuple[float, float] = (math.nan, math.nan),
         attributed: bool = False, p: float = math.nan, note: str = "") -> dict[str, Any]:
    return {"kind": kind, "stage": stage, "base": base, "top": top, "effect": top - base,
            "err_low": err[0], "err_high": err[1], "attributed": attributed, "p_adjusted": p, "note": note}


# -- compare siblings -----------------------------------------------------------------
def paired_differences(a: pd.DataFrame, b: pd.DataFrame, alpha: float = ALPHA, seed: int = 0,
                       only: Iterable[str] | None = None, simultaneous: bool = True) -> pd.DataFrame:
    """Per metric (those in `only`, when given), B − A on the items both measured (per-item
    values from `item_values`), with `harness.core.paired`: n, mean_a, mean_b, diff, p-value
    (exact McNemar for 0/1 outcomes, sign-flip permutation otherwise) and the test; p_adjusted
    is Holm over these m comparisons, and the interval is at 1 − alpha/m (simultaneous, the
    level of a Holm decision at `alpha`; 1 − alpha each when not `simultaneous`)."""
    keep = None if only is None else set(only)
    maps = [{m: dict(zip(g["item_id"], g["value"], strict=True)) for m, g in f.groupby("metric", sort=True)
             if keep is None or m in keep} for f in (a, b)]
    pairs = [m for m in sorted(set(maps[0]) & set(maps[1])) if not set(maps[0][m]).isdisjoint(maps[1][m])]
    level = family_confidence(alpha, len(pairs), simultaneous)
    rows = []
    for metric in pairs:
        r = paired_compare(maps[0][metric], maps[1][metric], seed=seed, confidence=level)
        rows.append([metric, r.n, r.parent_mean, r.child_mean, r.effect, r.ci_low, r.ci_high, level, r.p_value,
                     math.nan, r.test])
    out = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    out["p_adjusted"] = pd.Series(holm(list(out["p_value"])), index=out.index, dtype=float)
    return out


def compare_table(metrics: pd.DataFrame, parent: str, a: str, b: str, diffs: pd.DataFrame,
                  alpha: float = ALPHA) -> pd.DataFrame:
    """Every metric measured at `a` or `b`: parent, A and B values, and the paired B − A with
    its verdict (a winner only where the difference is significant after Holm at `alpha`)."""
    vals = latest_value_rows(metrics[metrics["stage"].isin([parent, a, b])])
    wide = vals.pivot(index="metric", columns="stage", values="value")
    meta = vals.drop_duplicates("metric").set_index("metric")[["family", "higher_is_better"]]
    table = pd.DataFrame({"metric": wide.index})
    for stage in (parent, a, b):
        table[stage] = wide[stage].to_numpy() if stage in wide.columns else math.nan
    table = table[table[[a, b]].notna().any(axis=1)]
    table = table.merge(meta, left_on="metric", right_index=True, how="left")
    table = table.merge(diffs, on="metric", how="left")
    table["verdict"] = [_verdict(r, a, b, alpha) for r in table.to_dict("records")]
    order = ["metric", "family", parent, a, b, "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "n", "verdict",
             "higher_is_better"]
    table = table.assign(_rank=table["family"] != "headline").sort_values(["_rank", "metric"], kind="stable")
    return table[order].reset_index(drop=True)


def metrics_of(metrics: pd.DataFrame, stages: Iterable[str]) -> list[str]:
    """The metrics measured at any of `stages` (the rows of their compare table)."""
    return sorted(set(metrics.loc[metrics["stage"].isin(list(stages)), "metric"])) if not metrics.empty else []


def _verdict(row: dict[str, Any], a: str, b: str, alpha: float) -> str:
    p, diff = row.get("p_adjusted"), row.get("diff")
    if p is None or diff is None or pd.isna(p) or pd.isna(diff):
        return "no per-item outcomes"
    if not p < alpha or diff == 0:
        return "no clear difference"
    higher = b if diff > 0 else a  # the sibling with the higher value
    hib = row.get("higher_is_better")
    if hib is None or pd.isna(hib):
        return f"{higher} higher"
    lower = a if higher == b else b
    return f"{higher if hib else lower} better"


# -- topics ---------------------------------------------------------------------------
def topic_shares(world_card: dict[str, Any] | None) -> dict[str, float]:
    """topic -> its actual share of the pretraining corpus (target share as a fallback)."""
    topics = (world_card or {}).get("topics")
    out: dict[str, float] = {}
    for topic in topics if isinstance(topics, list) else []:
        if isinstance(topic, dict) and topic.get("name") is not None:
            share = _float(topic.get("share_actual", topic.get("share_target")))
            if not math.isnan(share):
                out[str(topic["name"])] = share
    return out


def topic_points(metrics: pd.DataFrame, world_card: dict[str, Any] | None) -> pd.DataFrame:
    """stage, topic, accuracy, ci_low, ci_high, share for every per-topic accuracy."""
    rows = latest_value_rows(metrics[(metrics["base"] == TOPIC_ACCURACY) & metrics["group"].notna()])
    shares = topic_shares(world_card)
    out = pd.DataFrame({"stage": rows["stage"], "topic": rows["group"], "accuracy": rows["value"],
                        "ci_low": rows["ci_low"], "ci_high": rows["ci_high"]})
    out["share"] = [shares.get(t, math.nan) for t in out["topic"]]
    return out.reset_index(drop=True)


# -- reward hacking -------------------------------------------------------------------
def verbosity_points(samples: pd.DataFrame) -> pd.DataFrame:
    """stage, item_id, tokens, reward (mean over an item's samples) from verbosity samples."""
    frames = []
    for stage, group in samples.groupby("stage", sort=False):
        values = item_values(group, [TOKENS, REWARD])
        wide = values.pivot(index="item_id", columns="metric", values="value")
        frames.append(pd.DataFrame({"stage": stage, "item_id": wide.index,
                                    "tokens": wide[TOKENS] if TOKENS in wide else math.nan,
                                    "reward": wide[REWARD] if REWARD in wide else math.nan}))
    cols = ["stage", "item_id", "tokens", "reward"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


RM_METRICS = ("reward_model.heldout_accuracy", "reward_model.reward_length_corr")


def reward_models(checkpoints: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Reward-model stages with their held-out accuracy and reward–length correlation: the
    ``reward_model.*`` metrics the pipeline records, else the checkpoint's training metrics."""
    rm = checkpoints[checkpoints["kind"] == "reward"]
    stored = latest_value_rows(metrics[metrics["metric"].isin(RM_METRICS)]) if not metrics.empty else metrics
    values = {(s, m): v for s, m, v in zip(stored.get("stage", []), stored.get("metric", []),
                                          stored.get("value", []), strict=True)}

    def value(stage: str, train: dict[str, Any], name: str) -> float:
        got = values.get((stage, f"reward_model.{name}"))
        return _float(train.get(name)) if got is None else float(got)

    return pd.DataFrame({"stage": rm["stage"], "status": rm["status"],
                         "heldout_accuracy": [value(s, m, "heldout_accuracy") for s, m in zip(rm["stage"], rm["metrics"], strict=True)],
                         "reward_length_corr": [value(s, m, "reward_length_corr")
                                                for s, m in zip(rm["stage"], rm["metrics"], strict=True)]})


def _hack_details(details: dict[str, Any]) -> tuple[bool, dict[str, Any]] | None:
    """(flagged, facts) from an effect's details, when it carries a reward-hacking verdict:
    ``details.reward_hacking`` as a dict with ``flagged`` (what `harness report` stores), or
    any truthy ``*hack*`` key / a ``flags`` list naming it."""
    for key, value in details.items():
        if "hack" in str(key).lower():
            if isinstance(value, dict):
                return bool(value.get("flagged")), value
            if value not in (None, False, 0, ""):
                return True, {"reason": details.get("reason") or f"{key} = {value}"}
    flags = details.get("flags")
    if isinstance(flags, list | str) and any("hack" in str(f).lower() for f in np.atleast_1d(flags)):
        return True, {"reason": details.get("reason") or "flagged: reward hacking"}
    return None


def _why(facts: dict[str, Any]) -> str:
    if facts.get("tokens_effect") is None:
        return str(facts.get("reason") or "flagged")
    corr = facts.get("reward_length_corr")
    return (f"length {_float(facts['tokens_effect']):+.3g} tokens, reward {_float(facts.get('reward_effect')):+.3g}, "
            f"no knowledge gain; the reward model ({facts.get('reward_stage')}) has reward–length corr "
            f"{_float(corr):.2f} > {facts.get('corr_threshold')}")


def hacking_verdicts(effects: pd.DataFrame) -> pd.DataFrame:
    """Per stage with a reward-hacking verdict in its effects' details: stage, flagged, the
    criteria it was made of (when stored) and why."""
    rows: dict[str, dict[str, Any]] = {}
    for stage, metric, details in zip(effects["stage"], effects["metric"], effects["details"], strict=True):
        found = _hack_details(details)
        if found is None and "reward_hacking" in str(metric):
            found = (True, {"reason": details.get("reason") or f"{metric} attributed"})
        if found and stage not in rows:
            flagged, facts = found
            rows[stage] = {"stage": stage, "flagged": flagged,
                           **{k: facts.get(k) for k in ("tokens_up", "reward_up", "knowledge_not_up",
                                                        "reward_length_corr_high")},
                           "why": _why(facts) if flagged else str(facts.get("reason") or "")}
    cols = ["stage", "flagged", "tokens_up", "reward_up", "knowledge_not_up", "reward_length_corr_high", "why"]
    return pd.DataFrame(list(rows.values()), columns=cols)


def length_reward_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """Per stage with a length effect: its length, reward and (mean) knowledge effects."""
    heads = effects[effects["family"] == "headline"]
    wide = heads.pivot_table(index="stage", columns="metric", values="effect", aggfunc="first", sort=False)
    if TOKENS not in wide.columns:
        return pd.DataFrame(columns=["stage", "length effect", "reward effect", "knowledge effect"])
    know = [m for m in KNOWLEDGE if m in wide.columns]
    return pd.DataFrame({"stage": wide.index, "length effect": wide[TOKENS].to_numpy(),
                         "reward effect": wide[REWARD].to_numpy() if REWARD in wide else math.nan,
                         "knowledge effect": wide[know].mean(axis=1).to_numpy() if know else math.nan}
                        ).dropna(subset=["length effect"]).reset_index(drop=True)


# -- sample flips ---------------------------------------------------------------------
_FLIP_WORDS = (("refusal", "became refused", "no longer refused"),
               ("abstention", "started abstaining", "stopped abstaining"),
               ("confident_wrong", "became confidently wrong", "no longer confidently wrong"),
               ("hedg", "started hedging", "stopped hedging"),
               ("accuracy", "became correct", "became wrong"))


def flip_labels(metric: str, stage: str, binary: bool) -> dict[str, str]:
    """Flip code -> what the user reads, e.g. 'gained' -> 'became refused at dpo'."""
    short = metric.split(".", 1)[-1]
    if binary:
        up, down = next(((u, d) for key, u, d in _FLIP_WORDS if key in short), (f"{short} 0→1", f"{short} 1→0"))
    else:
        up, down = f"{short} went up", f"{short} went down"
    return {"gained": f"{up} at {stage}", "lost": f"{down} at {stage}", "changed": f"any change at {stage}",
            "unchanged": f"unchanged at {stage}", "all": "all items"}


def flip_table(parent: pd.DataFrame, child: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, bool]:
    """Items of both stages side by side on `metric`, with the change from parent to child
    ('gained', 'lost', 'unchanged'; 'only in parent/child'). Also whether the metric is binary."""
    sides = []
    for frame, tag in ((parent, "parent"), (child, "child")):
        vals = item_values(frame, [metric]).set_index("item_id")["value"]
        first = frame.sort_values("sample_index", kind="stable").drop_duplicates("item_id").set_index("item_id")
        sides.append(pd.DataFrame({"prompt": first["prompt"], f"{tag}_response": first["response"],
                                   f"{tag}_value": vals.reindex(first.index),
                                   f"{tag}_outcome": first["outcome"]}))
    table = sides[0].join(sides[1].drop(columns="prompt").rename_axis("item_id"), how="outer")
    table["prompt"] = table["prompt"].fillna(child.drop_duplicates("item_id").set_index("item_id")["prompt"])
    values = pd.concat([table["parent_value"], table["child_value"]]).dropna()
    binary = bool(len(values)) and bool(values.isin([0.0, 1.0]).all())
    table["change"] = [_change(p, c) for p, c in zip(table["parent_value"], table["child_value"], strict=True)]
    return table.reset_index(names="item_id"), binary


def _change(parent: float, child: float) -> str:
    if pd.isna(parent) and pd.isna(child):
        return "not measured"
    if pd.isna(child):
        return "only in parent"
    if pd.isna(parent):
        return "only in child"
    return "gained" if child > parent else "lost" if child < parent else "unchanged"


def select_flips(table: pd.DataFrame, code: str) -> pd.DataFrame:
    """Rows of a flip table for a flip code from `flip_labels`."""
    if code == "all":
        return table
    if code == "changed":
        return table[table["change"].isin(["gained", "lost"])]
    return table[table["change"] == code]
