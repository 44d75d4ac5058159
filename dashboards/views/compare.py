"""Compare methods: siblings from the same parent (ppo vs dpo, later more) side by side on
every metric, with the paired difference B − A on the items both were asked. A winner is
named only where the paired test is significant after Holm over the table's comparisons, and
the intervals are at the level of that decision (simultaneous, 1 − α/m)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import common
from dashboards.data import item_values, load_samples
from dashboards.lineage import sibling_groups
from dashboards.shaping import compare_table, metrics_of, paired_differences
from harness.attribution import spec_of


@st.cache_data(show_spinner="Pairing items…", max_entries=32)
def paired(path: str, run_id: str, a: str, b: str, suites: tuple[str, ...], only: tuple[str, ...],
           alpha: float, token: str) -> pd.DataFrame:
    """Paired differences on every suite both siblings ran, Holm and intervals over all of
    them together (cached until the store changes). A suite without readable samples: values only."""
    def values(stage: str) -> pd.DataFrame:
        frames = [item_values(load_samples(path, run_id, stage, s, token)) for s in suites]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["item_id", "metric", "value"])

    return paired_differences(values(a), values(b), alpha, only=only)


def diff_chart(table: pd.DataFrame, title: str, a: str, b: str) -> alt.LayerChart:
    y = alt.Y("metric:N", sort=list(table["metric"]), title=None, axis=alt.Axis(labelLimit=320))
    base = alt.Chart(table).encode(y=y)
    palette = {"no clear difference": "#9d9d9d", f"{a} better": "#4c78a8", f"{b} better": "#f58518",
               f"{a} higher": "#4c78a8", f"{b} higher": "#f58518"}
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="#888888", strokeDash=[4, 3]).encode(x="x:Q")
    ci = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title=title), x2="ci_high:Q")
    dots = base.mark_circle(size=90).encode(
        x="diff:Q", color=alt.Color("verdict:N", title=None, scale=alt.Scale(
            domain=[v for v in palette if v in set(table["verdict"])],
            range=[c for v, c in palette.items() if v in set(table["verdict"])])),
        tooltip=["metric", "verdict", alt.Tooltip("diff:Q", format="+.4f"), "n"])
    return (zero + ci + dots).properties(height=40 * len(table) + 20)


def is_rate(row: pd.Series, stages: list[str]) -> bool:
    """Values of the metric all within [0, 1]: a rate or an accuracy (charted on one axis)."""
    values = [row[s] for s in stages if pd.notna(row[s])]
    return bool(values) and all(0.0 <= v <= 1.0 for v in values)


st.title("Compare methods")
ctx = common.require_run()
data = ctx.data
groups = sibling_groups(data.checkpoints, set(data.metrics["stage"]) if not data.metrics.empty else set())
if not groups:
    st.info("No stage of this run has two evaluated children from the same parent yet (for example "
            "`ppo` and `dpo`, both `from: sft`). Siblings appear here once both are evaluated.")
    st.stop()

c0, c1, c2 = st.columns(3)
parent = c0.selectbox("Parent", list(groups))
siblings = groups[parent]
a = c1.selectbox("A", siblings, index=0)
b = c2.selectbox("B", siblings, index=1 if siblings[0] == a else 0)
if a == b:
    st.warning("Pick two different siblings.")
    st.stop()

suites = tuple(sorted(set(data.metrics.loc[data.metrics["stage"] == a, "suite"])
                      & set(data.metrics.loc[data.metrics["stage"] == b, "suite"])))
alpha = spec_of(data.run.get("config")).alpha
diffs = paired(ctx.path, ctx.run_id, a, b, suites, tuple(metrics_of(data.metrics, [a, b])), alpha, ctx.token)
table = compare_table(data.metrics, parent, a, b, diffs, alpha)
level = float(diffs["ci_level"].iloc[0]) if not diffs.empty else 1 - alpha
st.header(f"{a} vs {b} (both from {parent})")
st.caption(f"{len(table)} metrics on {len(suites)} suite(s). “B − A” is the mean of per-item differences "
           f"{b} − {a} on the items both answered. A sibling is called better (or higher) only where the paired "
           f"test (exact McNemar / sign-flip) is significant after Holm over the {len(diffs)} paired comparisons "
           f"of this table at α = {alpha}; the intervals are simultaneous at {100 * level:.6g}% (1 − α/{len(diffs)}), "
           "the level of that decision. Metrics without per-item outcomes (correlations, medians) show values only.")

heads = table[(table["family"] == "headline") & table["ci_low"].notna()]
rates = heads.apply(is_rate, axis=1, stages=[parent, a, b]) if not heads.empty else pd.Series(dtype=bool)
for part, title in ((heads[rates], "rates and accuracies"), (heads[~rates], "lengths and scores")):
    if not part.empty:
        st.altair_chart(diff_chart(part, f"{b} − {a}: {title} (paired, {100 * level:.6g}% simultaneous CI)", a, b),
                        width="stretch")
common.table(table.rename(columns={"diff": f"{b} − {a}", "ci_low": "ci low", "ci_high": "ci high",
                                   "p_adjusted": "p (Holm)", "n": "paired items"}))

effects = data.effects
if not effects.empty:
    st.subheader(f"Each sibling's effect vs {parent}")
    mine = effects[effects["stage"].isin([a, b]) & (effects["family"] == "headline")]
    wide = mine.assign(cell=[f"{e:+.3f}{' ★' if att else ''}" if pd.notna(e) else "n/a"
                             for e, att in zip(mine["effect"], mine["attributed"], strict=True)])
    st.caption("Child − parent on the same items; ★ attributed to that stage.")
    common.table(wide.pivot(index="metric", columns="stage", values="cell").reset_index())
