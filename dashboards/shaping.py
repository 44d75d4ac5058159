"""Pure shaping of store frames for the pages: waterfall, topic points,
reward-hacking signals and sample flips. No Streamlit here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dashboards.data import item_values, latest_value_rows, outcome_number

TOKENS, REWARD = "verbosity.mean_tokens", "verbosity.reward_mean"
REWARD_CORR = "verbosity.reward_length_corr"
TOPIC_ACCURACY = "topic_coverage.accuracy"
KNOWLEDGE = ("hallucination.accuracy", "hallucination.mc_accuracy", TOPIC_ACCURACY)


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
            f"{_float(corr):.2f} > {facts.get('corr_threshold')}"
            + (f" ({facts['reward_length_corr_source']})" if facts.get("reward_length_corr_source") else ""))


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
