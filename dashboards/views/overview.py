"""Overview: the store's runs, the selected run's lineage DAG with attributed shifts on its
edges, headline metrics per stage, checkpoints, and the run's config and world card."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.data import latest_value_rows
from dashboards.lineage import gate_status, lineage_dot

st.title("Overview")
sel = common.require_store()
if sel.runs is not None and not sel.runs.empty:
    with st.expander(f"Runs in this store ({len(sel.runs)})", expanded=len(sel.runs) > 1):
        common.table(sel.runs[["name", "run_id", "status", "started_at", "finished_at"]])

ctx = common.require_run()
data = ctx.data
run = data.run
st.header(f"Run: {ctx.run_name}")
st.caption(f"id `{ctx.run_id}` · status **{run.get('status')}** · started {run.get('started_at')}"
           + (f" · finished {run.get('finished_at')}" if run.get("finished_at") else ""))

cps, effects = data.checkpoints, data.effects
cols = st.columns(4)
cols[0].metric("Stages", len(cps))
cols[1].metric("Complete", int((cps["status"] == "complete").sum()) if not cps.empty else 0)
cols[2].metric("Evaluations", len(data.evaluations))
cols[3].metric("Attributed effects", int(effects["attributed"].sum()) if not effects.empty else 0)

st.subheader("Lineage")
if cps.empty:
    st.info("No checkpoint recorded for this run yet: stages appear here as the pipeline starts them.")
else:
    st.graphviz_chart(lineage_dot(cps, effects), width="stretch")
    st.caption("Nodes are stages (green complete, yellow in progress, red failed); solid edges go from "
               "parent to child, labelled with the effects attributed to the child stage (child − parent "
               "on the same items) and its gate verdict when one was recorded; dashed edges are other "
               "inputs such as the reward model.")
    if effects.empty:
        st.info("No stage effects stored for this run yet: they are computed once every stage is "
                "evaluated (`harness report`). Edges carry no labels until then.")

st.subheader("Headline metrics by stage")
heads = data.metrics[data.metrics["family"] == "headline"] if not data.metrics.empty else data.metrics
if heads.empty:
    st.info("No metrics stored for this run yet.")
else:
    wide = latest_value_rows(heads).pivot(index="stage", columns="metric", values="value")
    wide = wide.reindex([s for s in data.stages if s in wide.index])
    common.table(wide.reset_index())
for j in data.judges.itertuples():
    st.caption(f"Judge of **{j.suite}** checked against human labels ({Path(str(j.file)).name}, n={j.n}): "
               f"agreement {common.fmt(j.agreement)}, Cohen's kappa {common.fmt(j.kappa)}, refusal precision "
               f"{common.fmt(j.precision)}, recall {common.fmt(j.recall)}.")

st.subheader("Checkpoints")
if not cps.empty:
    view = pd.DataFrame({
        "stage": cps["stage"], "kind": cps["kind"], "parent": cps["parent_stage"], "status": cps["status"],
        "inputs": cps["inputs"], "gate": [gate_status(m) or "" for m in cps["metrics"]],
        "training metrics": cps["metrics"], "content hash": cps["content_hash"].fillna("").str[:12],
        "updated": cps["updated_at"],
    })
    common.table(view)

with st.expander("Run config"):
    if run.get("config"):
        st.json(run["config"], expanded=2)
    else:
        st.info("This run stored no config.")
with st.expander("World card"):
    card = run.get("world_card")
    if card:
        topics = card.get("topics") if isinstance(card.get("topics"), list) else []
        expected = card.get("expected_effects") if isinstance(card.get("expected_effects"), list) else []
        if expected:
            st.markdown("**Expected effects** (planted causes)")
            common.table(pd.DataFrame([e for e in expected if isinstance(e, dict)]))
        if topics:
            st.markdown("**Topics** (share of the pretraining corpus)")
            common.table(pd.DataFrame([t for t in topics if isinstance(t, dict)]))
        st.json(card, expanded=1)
    else:
        st.info("This run has no world card (it did not use the embedded synthetic world).")
