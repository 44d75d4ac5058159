"""Attribution: pick a metric and a lineage path -> a waterfall from the first measured stage
to the leaf, one bar per stage effect with its CI; and every stored stage × metric effect."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.shaping import waterfall
from harness.attribution import decision_rule
from harness.lineage import lineage_paths
from harness.report import interval_label, stored_spec

BAR_COLOURS = {"measured value": "#4c78a8", "attributed": "#e45756", "not attributed": "#bab0ac",
               "no stored effect": "#e7e1dc"}


def _bar_class(kind: str, attributed: bool, note: str) -> str:
    if kind != "effect":
        return "measured value"
    if note.startswith("no stored"):
        return "no stored effect"
    return "attributed" if attributed else "not attributed"


def waterfall_chart(wf: pd.DataFrame, metric: str) -> alt.LayerChart:
    wf = wf.assign(
        bar=[_bar_class(k, a, n) for k, a, n in zip(wf["kind"], wf["attributed"], wf["note"], strict=True)],
        label=[f"{e:+.3f}{' ★' if a else ''}" if k == "effect" else f"{t:.3f}"
               for k, e, a, t in zip(wf["kind"], wf["effect"], wf["attributed"], wf["top"], strict=True)],
        label_y=wf[["base", "top"]].max(axis=1))
    x = alt.X("step:N", sort=list(wf["step"]), title=None, axis=alt.Axis(labelAngle=0))
    base = alt.Chart(wf).encode(x=x)
    colour = alt.Color("bar:N", title=None, scale=alt.Scale(domain=list(BAR_COLOURS),
                                                             range=list(BAR_COLOURS.values())))
    bars = base.mark_bar(size=42).encode(
        y=alt.Y("base:Q", title=metric), y2="top:Q", color=colour,
        tooltip=["stage", "note", alt.Tooltip("effect:Q", format="+.4f"), alt.Tooltip("err_low:Q", format=".4f"),
                 alt.Tooltip("err_high:Q", format=".4f"), alt.Tooltip("p_adjusted:Q", format=".2g")])
    ci = base.mark_rule(strokeWidth=2, color="#222222").encode(y="err_low:Q", y2="err_high:Q")
    ticks = base.mark_tick(color="#222222", thickness=2, size=14)
    text = base.mark_text(dx=26, align="left", fontSize=12).encode(y="label_y:Q", text="label:N")
    return (bars + ci + ticks.encode(y="err_low:Q") + ticks.encode(y="err_high:Q") + text).properties(height=380)


def path_through(stage: str, paths: list[list[str]]) -> list[str] | None:
    """The lineage path that ends at `stage`, else the first one through it."""
    return next((p for p in paths if p[-1] == stage), next((p for p in paths if stage in p), None))


st.title("Attribution")
ctx = common.require_run()
data = ctx.data
effects = data.effects
if effects.empty:
    st.info("No stage effects are stored for this run yet. They are computed once, after every stage is "
            "evaluated (`harness report`), so this page, the report and the gate always agree.")
    st.stop()
records = effects[["family", "details"]].to_dict("records")
intervals = interval_label(records)

paths = [p for p in lineage_paths(data.checkpoints) if len(p) > 1]
linked = st.query_params.get("metric")  # a link to a breakdown metric opens with breakdowns shown
breakdowns = st.toggle("Include breakdown metrics (per topic / family)", key="attribution.breakdowns",
                       value=bool(linked) and linked in set(effects.loc[effects["family"] == "breakdown", "metric"]))
pool = effects if breakdowns else effects[effects["family"] == "headline"]
metrics = sorted(pool["metric"].unique())
if not metrics or not paths:
    st.info("The stored effects name no metric on a lineage path of this run.")
    st.stop()
ranked = pool.groupby("metric")["attributed"].sum().sort_values(ascending=False, kind="stable")
left, right = st.columns([2, 3])
metric = common.url_select(left, "Metric", metrics, "metric", metrics.index(str(ranked.index[0])),
                           key="attribution.metric")
path = common.url_select(right, "Lineage path", paths, "stage", key="attribution.path", encode=lambda p: p[-1],
                         pick=path_through, write=False, format_func=" → ".join)
if st.query_params.get("stage") not in path:  # a linked stage inside the path stays in the URL
    st.query_params["stage"] = path[-1]

wf = waterfall(path, metric, data.metrics, effects)
if wf.empty:
    st.info(f"`{metric}` was not measured at any stage of {' → '.join(path)}.")
else:
    st.altair_chart(waterfall_chart(wf, metric), width="stretch")
    start, effs = wf.iloc[0], wf[wf["kind"] == "effect"]
    total = effs["effect"].sum()
    leaf = wf[wf["kind"] == "measured"]
    measured = f"; measured at {leaf.iloc[0]['stage']}: {common.fmt(float(leaf.iloc[0]['top']))}" if len(leaf) else ""
    st.caption(f"`{metric}` starts at {common.fmt(float(start['top']))} at {start['stage']}; the stage effects "
               f"sum to {total:+.3f}{measured}. Bars are child − parent on the same items; black whiskers "
               f"are the effects' {intervals}; ★ marks effects attributed to the stage.")
    common.table(wf[["stage", "note", "effect", "err_low", "err_high", "p_adjusted"]]
                 .rename(columns={"err_low": "ci low (abs.)", "err_high": "ci high (abs.)"}))

st.subheader("All stage × metric effects")
c1, c2 = st.columns(2)
only = c1.toggle("Attributed only", value=False)
family = c2.segmented_control("Family", ["headline", "breakdown", "all"], default="headline") or "all"
rows = effects if family == "all" else effects[effects["family"] == family]
rows = rows[rows["attributed"]] if only else rows
st.caption(f"{len(rows)} effects (child − parent on the same items; headline {intervals}; p_adjusted is Holm "
           "over the run's headline metrics × stages).")
with st.expander("Decision rule"):
    st.markdown(decision_rule(stored_spec(records, data.run.get("config"))))
shown = rows.assign(reason=[str(d.get("reason") or "") for d in rows["details"]])
common.table(shown[["stage", "parent_stage", "metric", "effect", "ci_low", "ci_high", "p_value", "p_adjusted",
                    "n", "test", "attributed", "expected_direction", "reason", "family"]])
