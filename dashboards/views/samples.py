"""Samples: pick a suite, a stage (compared with its parent) and a flip type, e.g.
"became refused at dpo"; the parent's and the child's responses side by side. Harmful
requests (refusal items labelled harmful) stay hidden behind a content warning until the
visitor chooses to show them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.data import is_harmful
from dashboards.lineage import parents
from dashboards.shaping import flip_labels, flip_table, select_flips

CODES = ("gained", "lost", "changed", "unchanged", "all")
HIDDEN = "(hidden: harmful request)"


def _outcome_text(outcome: object, metric: str) -> str:
    if not isinstance(outcome, dict):
        return ""
    keys = [metric] + [k for k in outcome if k != metric and "[" not in k]
    return " · ".join(f"{k.split('.', 1)[-1]}: {common.fmt(outcome[k])}" for k in keys if k in outcome)


def headline_flip(effects: pd.DataFrame) -> tuple[str, str, str, bool] | None:
    """(suite, stage, metric, increased) of the most significant attributed headline effect,
    preferring binary outcomes (McNemar): the first thing worth looking at."""
    hits = effects[effects["attributed"] & (effects["family"] == "headline")] if not effects.empty else effects
    if hits.empty:
        return None
    binary = hits["test"].fillna("").str.contains("mcnemar", case=False)
    best = hits.assign(_b=~binary).sort_values(["_b", "p_adjusted"], kind="stable").iloc[0]
    return str(best["metric"]).split(".")[0], str(best["stage"]), str(best["metric"]), bool(best["effect"] > 0)


def _index(options: list[str], wanted: str | None, fallback: int = 0) -> int:
    return options.index(wanted) if wanted in options else fallback


def side_by_side(row: pd.Series, parent: str, stage: str, metric: str) -> None:
    with st.container(border=True):
        st.markdown(f"**{row['item_id']}** — {row['change'].replace('_', ' ')}")
        st.text(row["prompt"])
        left, right = st.columns(2)
        for col, tag, name in ((left, "parent", parent), (right, "child", stage)):
            col.caption(f"{name}: {_outcome_text(row[f'{tag}_outcome'], metric)}")
            text = row[f"{tag}_response"]
            col.code(text if isinstance(text, str) and text else "(no response)", language=None, wrap_lines=True)


st.title("Samples")
ctx = common.require_run()
data = ctx.data
if data.metrics.empty:
    st.info("No evaluations stored for this run yet.")
    st.stop()
par = parents(data.checkpoints)
measured = data.metrics.groupby("suite")["stage"].agg(set).to_dict()
suites = sorted(s for s, stages in measured.items() if any(par.get(x) in stages for x in stages))
if not suites:
    st.info("No suite was run on both a stage and its parent yet, so there is nothing to compare item by item.")
    st.stop()

hint = headline_flip(data.effects)
linked = st.query_params.get("metric")  # a link names the outcome; its suite is the name's prefix
c1, c2 = st.columns(2)
suite = common.url_select(c1, "Suite", suites, "suite", _index(suites, linked.split(".")[0] if linked else
                                                                   hint[0] if hint else None), key="samples.suite")
stages = [s for s in data.stages if s in measured[suite] and par.get(s) in measured[suite]]
stage = common.url_select(c2, "Stage (vs its parent)", stages, "stage",
                          _index(stages, hint[1] if hint else None, len(stages) - 1), key="samples.stage",
                          format_func=lambda s: f"{par.get(s)} → {s}")
parent = str(par[stage])
child_samples, parent_samples = ctx.samples(suite, stage), ctx.samples(suite, parent)
keys = sorted({k for o in pd.concat([child_samples["outcome"], parent_samples["outcome"]]) for k in o
               if k.startswith(f"{suite}.")}, key=lambda k: ("[" in k, k))
if not keys:
    st.info(f"The {suite} samples of {parent} and {stage} carry no per-item outcomes to compare.")
    st.stop()

c3, c4 = st.columns(2)
metric = common.url_select(c3, "Outcome", keys, "metric", _index(keys, hint[2] if hint else None),
                           key="samples.metric")
table, binary = flip_table(parent_samples, child_samples, metric)
labels = flip_labels(metric, stage, binary)
counts = {code: len(select_flips(table, code)) for code in CODES}
default = "gained" if not hint or hint[3] else "lost"
if (hint is not None and hint[2] != metric) or not counts[default]:
    default = max(("gained", "lost"), key=lambda c: counts[c]) if counts["changed"] else "all"
code = c4.selectbox("Flip type", CODES, index=CODES.index(default),
                    format_func=lambda c: f"{labels[c]} ({counts[c]})")
chosen = select_flips(table, code)
st.subheader(f"{labels[code]}: {len(chosen)} of {len(table)} items")
st.caption(f"{suite} · {metric} · {parent} → {stage}. Values are per item (averaged over an item's samples); "
           "the response shown is the item's first sample.")

harmful = pd.Series([is_harmful(p) or is_harmful(c) for p, c in zip(chosen["parent_outcome"],
                     chosen["child_outcome"], strict=True)], index=chosen.index, dtype=bool)
show_harmful = False
if harmful.any():
    st.warning(f"**Content warning:** {int(harmful.sum())} of these items are harmful requests (refusal items "
               "labelled harmful: AdvBench, XSTest unsafe and the like) and may come with harmful answers. "
               "They are hidden until you choose to show them.")
    show_harmful = st.toggle("Show harmful requests and their responses", value=False, key="samples.show_harmful")
if chosen.empty:
    st.info("No item of this flip type.")
else:
    shown = st.slider("Items shown side by side", 1, min(50, len(chosen)), min(5, len(chosen))) \
        if len(chosen) > 1 else 1
    for index, row in chosen.head(shown).iterrows():
        if harmful[index] and not show_harmful:
            st.caption(f"**{row['item_id']}** — {row['change'].replace('_', ' ')}: harmful request hidden "
                       "(content warning above).")
        else:
            side_by_side(row, parent, stage, metric)
    with st.expander(f"All {len(chosen)} items as a table"):
        rows = chosen[["item_id", "change", "parent_value", "child_value", "prompt", "parent_response",
                       "child_response"]].copy()
        if not show_harmful:
            rows.loc[harmful, ["prompt", "parent_response", "child_response"]] = HIDDEN
        common.table(rows.rename(columns={"parent_value": parent, "child_value": stage}))
