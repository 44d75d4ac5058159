"""The alignment-harness dashboard (Streamlit, multipage).

    streamlit run dashboards/app.py -- --store PATH      # or: harness dashboard --store PATH

The store is a ``results.sqlite`` file or the output_dir holding one; without ``--store``
the path comes from ``$HARNESS_STORE`` or the sidebar. The dashboard only reads the store
(a read-only connection) and caches what it read until the store changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.common import RUN_WIDGET_KEY, SELECTION_KEY, STORE_WIDGET_KEY, Selection
from dashboards.data import StoreError, load_runs, resolve_store, store_path_from, store_token

PAGES_DIR = Path(__file__).resolve().parent / "views"
PAGES = (
    ("overview.py", "Overview", ":material/account_tree:"),
    ("attribution.py", "Attribution", ":material/waterfall_chart:"),
    ("compare.py", "Compare methods", ":material/compare_arrows:"),
    ("topics.py", "Topics", ":material/scatter_plot:"),
    ("reward_hacking.py", "Reward hacking", ":material/straighten:"),
    ("samples.py", "Samples", ":material/chat:"),
)


def _run_label(runs: pd.DataFrame, run_id: str) -> str:
    row = runs.set_index("run_id").loc[run_id]
    return f"{row['name']} · {row['status']} · {run_id}"


def select() -> Selection:
    """The sidebar: which store, which run. Never raises: problems become a message."""
    default = store_path_from(sys.argv[1:]) or ""
    if STORE_WIDGET_KEY not in st.session_state:
        st.session_state[STORE_WIDGET_KEY] = default
    raw = st.sidebar.text_input("Results store", key=STORE_WIDGET_KEY,
                                help="A results.sqlite file, or the output_dir of a run.").strip()
    if not raw:
        return Selection(None, message="No results store given.")
    try:
        path = resolve_store(raw)
        token = store_token(path)
        runs = load_runs(path, token)
    except StoreError as exc:
        return Selection(None, message=f"Cannot read the results store: {exc}")
    except Exception as exc:  # a file that is not a store, a schema from the future...
        return Selection(None, message=f"Cannot read the results store {raw}: {type(exc).__name__}: {exc}")
    if runs.empty:
        return Selection(path, token, runs, None)
    ids = list(runs["run_id"])
    if st.session_state.get(RUN_WIDGET_KEY) not in ids:
        st.session_state[RUN_WIDGET_KEY] = ids[0]
    run_id = st.sidebar.selectbox("Run", ids, key=RUN_WIDGET_KEY,
                                  format_func=lambda r: _run_label(runs, r))
    st.sidebar.button("Reload", help="Read the store again (a run in progress writes as it goes).")
    st.sidebar.caption(f"Store: `{path}`")
    return Selection(path, token, runs, run_id)


def main() -> None:
    st.set_page_config(page_title="alignment-harness", page_icon=":material/monitoring:", layout="wide")
    st.session_state[SELECTION_KEY] = select()
    pages = [st.Page(str(PAGES_DIR / name), title=title, icon=icon, default=i == 0)
             for i, (name, title, icon) in enumerate(PAGES)]
    page = st.navigation(pages)
    try:
        page.run()
    except Exception as exc:  # a malformed row we did not foresee: say so, no traceback
        st.error(f"This page could not be drawn from the store's data ({type(exc).__name__}: {exc}). "
                 "The other pages may still work; please report this with the store file.")


main()
