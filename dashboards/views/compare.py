"""Compare methods across seeds: what `harness compare` computes and prints, from the same functions
(`harness.compare.compare`, the rows of `harness.compare_render`), over every complete run of the
store (a sweep's runs are its seeds). Per method × metric the mean over seeds with a seed-level
interval and each seed's value, the paired effect against the shared parent per seed and pooled,
each pair of methods per seed and pooled, one Holm family over the table; a difference is called
only where Holm says so and it reaches the metric's minimum effect."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import common
from harness.compare import CompareError, compare
from harness.compare_methods import method_groups
from harness.compare_render import explanation, seed_rows, tables
from harness.core.store import Store

METHODS_KEY = "compare.methods"

@st.cache_data(show_spinner="Reading the store's methods…", max_entries=8)
def groups_of(path: str, token: str) -> dict[str, list[str]]:
    with Store(path, readonly=True) as store:
        return method_groups(store)


@st.cache_data(show_spinner="Comparing methods over seeds…", max_entries=16)
def comparison(path: str, methods: tuple[str, ...], token: str) -> tuple[dict[str, Any] | None, str]:
    """`harness compare --store PATH --methods …` as its JSON dict (cached until the store changes), or
    None and why there is nothing to compare."""
    with Store(path, readonly=True) as store:
        try:
            return compare(store, list(methods)), ""
        except CompareError as exc:
            return None, str(exc)
        except ValueError as exc:  # a row the store cannot parse (the other pages drop such rows)
            return None, f"Some rows of the store could not be read, so the methods cannot be compared: {exc}."


def seed_chart(effects: pd.DataFrame, means: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Each method's value per seed (dots) and its mean over seeds with the seed-level interval."""
    y = alt.Y("method:N", sort=list(means["method"]), title=None)
    ci = alt.Chart(means).mark_rule(strokeWidth=2, color="#4c78a8").encode(
        y=y, x=alt.X("ci_low:Q", title=metric, scale=alt.Scale(zero=False)), x2="ci_high:Q")
    mean = alt.Chart(means).mark_tick(thickness=3, size=22, color="#4c78a8").encode(
        y=y, x="mean:Q", tooltip=["method", alt.Tooltip("mean:Q", format=".4f"), "seeds"])
    dots = alt.Chart(effects).mark_circle(size=80, opacity=0.85).encode(
        y=y, x="value:Q", color=alt.Color("seed:N", title="seed"),
        tooltip=["method", "seed", "run", alt.Tooltip("value:Q", format=".4f"), "parent",
                 alt.Tooltip("parent value:Q", format=".4f"), alt.Tooltip("effect:Q", format="+.4f")])
    return (ci + mean + dots).properties(height=36 * len(means) + 30)


def show_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    st.subheader(title)
    st.dataframe(pd.DataFrame(rows, columns=headers), hide_index=True)


st.title("Compare methods")
ctx = common.require_run()  # the run banners; the comparison itself reads every complete run
groups = groups_of(ctx.path, ctx.token)
if not groups:
    st.info("No complete run of this store has an evaluated stage with an evaluated parent yet (for example "
            "`ppo` and `dpo`, both `from: sft`). `harness sweep CONFIG --seeds 0,1` writes one run per seed; "
            "the methods appear here once their runs are complete.")
    st.stop()

options = list(dict.fromkeys(s for stages in groups.values() for s in stages))
largest = max(groups.values(), key=len)  # siblings of one parent (sft -> ppo, dpo, …) by default
chosen = st.session_state.get(METHODS_KEY)
st.session_state[METHODS_KEY] = largest if chosen is None else [m for m in chosen if m in options]  # another store
methods = st.multiselect("Methods", options, key=METHODS_KEY,
                         help="Stage names of the store's complete runs (every variant); the same as "
                         "`harness compare --methods`.")
if not methods:
    st.info("Pick at least one method.")
    st.stop()
result, problem = comparison(ctx.path, tuple(methods), ctx.token)
if result is None:
    st.warning(problem)
    st.stop()

seeds = ", ".join(map(str, result["seeds"]))
st.header(f"{', '.join(m['label'] for m in result['methods'])} over seeds {seeds}")
st.caption("Every complete run of this store (a run per seed; the sidebar's run is not used here), "
           "computed by the same functions as `harness compare --store … --methods "
           f"{','.join(methods)}`. {explanation(result)}")

effects, pairs = (pd.DataFrame(rows) for rows in seed_rows(result))
if result["metrics"] and not effects.empty:
    metric = common.url_select(st, "Metric", result["metrics"], "metric", key="compare.metric")
    means = pd.DataFrame([{"method": e["method"], "mean": e["mean"], "ci_low": e["seed_ci"][0],
                           "ci_high": e["seed_ci"][1], "seeds": e["n_seeds"]}
                          for e in result["effects"] if e["metric"] == metric])
    st.altair_chart(seed_chart(effects[effects["metric"] == metric], means, metric), width="stretch")
    st.caption(f"{metric}: each seed's value (dots, coloured by seed) and the mean over seeds with its "
               f"{100 * result['seed_ci_level']:.4g}% seed-level t interval (none with one seed).")

for title, headers, rows in tables(result):
    show_table(title, headers, rows)

st.subheader("Per seed")
st.caption("Each method's value and its paired effect against the parent in the same run, per seed; the "
           "tests here are per seed (raw p, 95% interval), outside the Holm family of the tables above.")
common.table(effects)
if not pairs.empty:
    with st.expander(f"Pairs of methods per seed ({len(pairs)} rows)"):
        common.table(pairs)
