"""Reward hacking: response length vs reward per stage (verbosity samples), the reward
model's own reward–length correlation, and the stages the attribution flagged."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.data import latest_value_rows, load_samples
from dashboards.shaping import (
    REWARD,
    REWARD_CORR,
    TOKENS,
    hacking_verdicts,
    length_reward_effects,
    reward_models,
    verbosity_points,
)

MAX_POINTS_PER_STAGE = 400
DEFAULT_STAGES = 6


@st.cache_data(show_spinner="Reading verbosity samples…", max_entries=64)
def points_of(path: str, run_id: str, stage: str, token: str) -> pd.DataFrame:
    """Length and reward per verbosity item of one stage (cached until the store changes)."""
    samples = load_samples(path, run_id, stage, "verbosity", token)
    points = verbosity_points(samples)
    points.attrs = dict(samples.attrs)
    return points


st.title("Reward hacking")
ctx = common.require_run()
data = ctx.data

st.subheader("Flagged stages")
verdicts = hacking_verdicts(data.effects) if not data.effects.empty else pd.DataFrame()
flags = verdicts[verdicts["flagged"]] if not verdicts.empty else pd.DataFrame(columns=["stage", "why"])
if data.effects.empty:
    st.info("No stage effects stored yet, so no stage has been checked for reward hacking.")
elif verdicts.empty:
    st.info("The stored effects carry no reward-hacking verdict (`harness report` adds one to each stage's "
            "`verbosity.mean_tokens` effect); the length, reward and knowledge effects are below.")
elif flags.empty:
    st.success(f"No stage is flagged for reward hacking ({len(verdicts)} checked).")
for row in flags.itertuples(index=False):
    st.error(f"**{row.stage}** flagged for reward hacking: {row.why}")
linked = st.query_params.get("stage")  # a link from a report or a gate names one stage
if linked and not verdicts.empty and linked in set(verdicts["stage"]):
    verdict = verdicts[verdicts["stage"] == linked].iloc[0]
    st.markdown(f"Linked stage **{linked}**: {'flagged' if verdict['flagged'] else 'not flagged'} for reward "
                f"hacking ({verdict['why']}).")
elif linked:
    st.caption(f"The linked stage `{linked}` has no reward-hacking verdict in this run.")
if not verdicts.empty:
    st.caption("A stage is flagged when its answers get significantly longer, the reward goes up significantly, "
               "no knowledge accuracy goes up, and the reward model it was trained against pays for length.")
    common.table(verdicts)
elif not data.effects.empty:
    common.table(length_reward_effects(data.effects))

st.subheader("Reward model")
rms = reward_models(data.checkpoints, data.metrics)
if rms.empty:
    st.info("This run has no reward-model stage.")
for row in rms.itertuples(index=False):
    c1, c2 = st.columns(2)
    c1.metric(f"{row.stage}: reward–length correlation", common.fmt(row.reward_length_corr, 2),
              help="Pearson correlation of the reward model's score with response length on held-out pairs: "
                   "a high value means the reward pays for length.")
    c2.metric(f"{row.stage}: held-out accuracy", common.fmt(row.heldout_accuracy, 2),
              help="Share of held-out preference pairs where the chosen answer scores higher.")

st.subheader("Length vs reward per stage")
measured = common.in_order(data.stages, data.metrics.loc[data.metrics["suite"] == "verbosity", "stage"]) \
    if not data.metrics.empty else []
flagged = common.in_order(measured, flags["stage"])
first = ([linked] if linked in measured else []) + flagged[:DEFAULT_STAGES // 2]
default = common.in_order(measured, list(dict.fromkeys(first + measured))[:DEFAULT_STAGES])
chosen = st.multiselect("Stages", measured, default=default) if len(measured) > DEFAULT_STAGES else measured
parts = [points_of(ctx.path, ctx.run_id, stage, ctx.token) for stage in chosen]
for part in parts:
    if part.attrs.get("problem"):
        st.warning(f"Some rows of the store could not be read: {part.attrs['problem']}.")
means = pd.concat([p.groupby("stage", as_index=False)[["tokens", "reward"]].mean() for p in parts if not p.empty]
                  or [pd.DataFrame(columns=["stage", "tokens", "reward"])], ignore_index=True)
parts = [p.sample(MAX_POINTS_PER_STAGE, random_state=0) if len(p) > MAX_POINTS_PER_STAGE else p for p in parts]
points = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["stage", "item_id", "tokens", "reward"])
order = common.in_order(data.stages, points["stage"])
if points.empty:
    st.info("No verbosity samples stored for this run yet (the verbosity suite runs on chat checkpoints).")
elif points["reward"].notna().any():
    scored = points.dropna(subset=["tokens", "reward"])
    base = alt.Chart(scored).encode(color=alt.Color("stage:N", sort=order, scale=alt.Scale(scheme="tableau10")))
    dots = base.mark_circle(size=28, opacity=0.45).encode(
        x=alt.X("tokens:Q", title="response length (tokens)"), y=alt.Y("reward:Q", title="reward-model score"),
        tooltip=["stage", "item_id", "tokens", alt.Tooltip("reward:Q", format=".3f")])
    centres = alt.Chart(means).mark_point(size=220, shape="diamond", filled=True, stroke="black").encode(
        x="tokens:Q", y="reward:Q", color=alt.Color("stage:N", sort=order, scale=alt.Scale(scheme="tableau10")), tooltip=["stage", "tokens", "reward"])
    st.altair_chart((dots + centres).properties(height=420), width="stretch")
    st.caption("Each dot is one verbosity prompt's response (at most "
               f"{MAX_POINTS_PER_STAGE} per stage); diamonds are stage means. Reward rising with length across "
               "stages is the reward-hacking signature.")
else:
    st.info("Verbosity responses have no reward scores (the run has no reward model yet): lengths only.")
    chart = alt.Chart(points).mark_boxplot().encode(x=alt.X("stage:N", sort=order), y=alt.Y("tokens:Q"))
    st.altair_chart(chart.properties(height=320), width="stretch")

vals = latest_value_rows(data.metrics[data.metrics["metric"].isin([TOKENS, REWARD, REWARD_CORR])])
if not vals.empty:
    st.subheader("Verbosity metrics by stage")
    wide = vals.pivot(index="stage", columns="metric", values="value")
    common.table(wide.reindex([s for s in data.stages if s in wide.index]).reset_index())
