"""Topics: per-topic accuracy (`topic_coverage.accuracy[topic]`) against each topic's share
of the pretraining corpus (from the world card), one series per checkpoint."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.data import latest_value_rows
from dashboards.shaping import TOPIC_ACCURACY, topic_points

st.title("Topics")
ctx = common.require_run()
data = ctx.data
points = topic_points(data.metrics, data.run.get("world_card")) if not data.metrics.empty else pd.DataFrame()
if points.empty:
    st.info(f"No per-topic accuracy (`{TOPIC_ACCURACY}[topic]`) is stored for this run yet: the "
            "topic_coverage suite writes it for every checkpoint.")
    st.stop()

order = common.in_order(data.stages, points["stage"])
chosen = st.multiselect("Checkpoints", order, default=order)
points = points[points["stage"].isin(chosen)]
stage_colour = alt.Color("stage:N", sort=order, title="checkpoint", scale=alt.Scale(scheme="tableau10"))
tooltip = ["stage", "topic", alt.Tooltip("share:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f"),
           alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")]

if points["share"].notna().any():
    with_share = points.dropna(subset=["share"]).sort_values("share")
    x = alt.X("share:Q", title="share of the pretraining corpus (log)", scale=alt.Scale(type="log", nice=False, padding=24))
    base = alt.Chart(with_share).encode(x=x, color=stage_colour)
    chart = (base.mark_line(point=True).encode(y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
                                               tooltip=tooltip)
             + base.mark_rule(opacity=0.35).encode(y="ci_low:Q", y2="ci_high:Q"))
    st.altair_chart(chart.properties(height=420), width="stretch")
    missing = sorted(set(points.loc[points["share"].isna(), "topic"]))
    if missing:
        st.warning(f"No pretraining share in the world card for: {', '.join(missing)} (left out of the chart).")
    st.caption("One line per checkpoint: multiple-choice accuracy on each topic's evaluation entities against "
               "how much of the pretraining corpus the topic took. Pretraining should lift frequent topics most.")
else:
    st.warning("This run's world card gives no topic shares: showing accuracy per topic only.")
    chart = alt.Chart(points).mark_bar().encode(x=alt.X("topic:N", title=None), xOffset=alt.XOffset("stage:N", sort=order),
                                                y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])),
                                                color=stage_colour, tooltip=tooltip)
    st.altair_chart(chart.properties(height=380), width="stretch")

corr = latest_value_rows(data.metrics[data.metrics["metric"] == "topic_coverage.share_correlation"])
if not corr.empty:
    st.subheader("Accuracy–share rank correlation")
    corr = corr.set_index("stage").reindex(common.in_order(data.stages, corr["stage"])).reset_index()
    cols = st.columns(min(len(corr), 6))
    for col, row in zip(cols, corr.itertuples(index=False), strict=False):
        col.metric(str(row.stage), common.fmt(float(row.value), 2),
                   help=f"Spearman over topics; 95% CI [{common.fmt(row.ci_low, 2)}, {common.fmt(row.ci_high, 2)}]")

st.subheader("Per-topic accuracy")
wide = points.pivot_table(index="topic", columns="stage", values="accuracy")
wide = wide[[s for s in order if s in wide.columns]]
wide.insert(0, "share", points.drop_duplicates("topic").set_index("topic")["share"].reindex(wide.index))
common.table(wide.reset_index().sort_values("share", ascending=False, na_position="last"))
