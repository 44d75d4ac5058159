"""The alignment-harness dashboard (Streamlit, multipage).

    harness dashboard --store PATH [--store PATH ...]     # or: streamlit run dashboards/app.py -- --store PATH

The stores it may open are fixed when it starts (``--store``, repeatable, else
``$HARNESS_STORE``): a visitor picks among them and can name no other file. It only reads
them (read-only connections) and caches what it read until a store changes.

Its state lives in the URL, so a view can be linked: ``?run=…&page=…&metric=…&stage=…``
(`harness.dashboard_links` builds such links; ``store=`` picks among several stores by name).
Without ``run`` it opens the newest complete run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.common import RUN_WIDGET_KEY, SELECTION_KEY, STORE_WIDGET_KEY, Selection, url_select
from dashboards.data import (
    StoreError,
    default_run,
    load_runs,
    resolve_store,
    store_labels,
    store_paths_from,
    store_token,
)
from harness.dashboard_links import PAGES as SLUGS

PAGES_DIR = Path(__file__).resolve().parent / "views"
PAGES = {
    "overview": ("Overview", ":material/account_tree:"),
    "attribution": ("Attribution", ":material/waterfall_chart:"),
    "compare": ("Compare methods", ":material/compare_arrows:"),
    "topics": ("Topics", ":material/scatter_plot:"),
    "reward_hacking": ("Reward hacking", ":material/straighten:"),
    "samples": ("Samples", ":material/chat:"),
}
assert tuple(PAGES) == SLUGS, "dashboards/app.py and harness/dashboard_links.py name the same pages"
LINK_FOLLOWED = "harness_link_followed"
REFUSED = ("The link names a results store this dashboard does not serve. It opens only the stores it was "
           "started with (`harness dashboard --store …`); showing one of those instead.")


def _run_label(runs: pd.DataFrame, run_id: str) -> str:
    row = runs.set_index("run_id").loc[run_id]
    return f"{row['name']} · {row['status']} · {run_id}"


def _runs(path: str) -> pd.DataFrame | None:
    """The store's runs, None when it cannot be read."""
    try:
        return load_runs(path, store_token(path))
    except Exception:  # noqa: BLE001 - said by select() when the store is picked
        return None


def _store_of_run(stores: dict[str, str], run_id: str | None) -> str | None:
    """The label of the first allowed store holding `run_id` (a link names the run only)."""
    for label, path in stores.items():
        runs = _runs(path) if run_id else None
        if runs is not None and run_id in set(runs["run_id"]):
            return label
    return None


def _pick_store(stores: dict[str, str]) -> str:
    """The store to show: the URL's (by name, or the one holding the URL's run) when it is one
    of the allowed stores, else the first. Any other name is refused without looking at the disk."""
    labels = list(stores)
    wanted = st.query_params.get("store")
    if wanted is not None and wanted not in labels:
        st.sidebar.warning(REFUSED)
        del st.query_params["store"]
    if len(labels) == 1:
        st.sidebar.caption(f"Results store: `{labels[0]}`")
        return labels[0]
    first = 0
    if st.session_state.get(STORE_WIDGET_KEY) not in labels:
        by_run = _store_of_run(stores, st.query_params.get("run"))
        first = labels.index(by_run) if by_run else 0
    return url_select(st.sidebar, "Results store", labels, "store", first, key=STORE_WIDGET_KEY,
                      help="The stores this dashboard was started with.")


def select() -> Selection:
    """The sidebar: which of the allowed stores, which run. Never raises: problems become a message."""
    stores = store_labels([resolve_store(p) for p in store_paths_from(sys.argv[1:])])
    if not stores:
        return Selection(None, message="This dashboard was started without a results store.")
    label = _pick_store(stores)
    path = stores[label]
    try:
        token = store_token(path)
        runs = load_runs(path, token)
    except StoreError as exc:
        return Selection(None, label, message=f"Cannot read the results store `{label}`: {exc}")
    except Exception as exc:  # a file that is not a store, a schema from the future...
        return Selection(None, label, message=f"Cannot read the results store `{label}`: {type(exc).__name__}: {exc}")
    if runs.empty:
        return Selection(path, label, token, runs, None)
    ids = list(runs["run_id"])
    wanted = st.query_params.get("run")
    if wanted and wanted not in ids and st.session_state.get(RUN_WIDGET_KEY) not in ids:
        st.sidebar.warning(f"The link's run is not in `{label}`: showing the newest complete run instead.")
    run_id = url_select(st.sidebar, "Run", ids, "run", ids.index(default_run(runs) or ids[0]), key=RUN_WIDGET_KEY,
                        format_func=lambda r: _run_label(runs, r),
                        help="Opens on the newest complete run; a run in progress is marked 'running'.")
    st.sidebar.button("Reload", help="Read the store again (a run in progress writes as it goes).")
    return Selection(path, label, token, runs, run_id)


def follow_link(pages: dict[str, st.Page], current: st.Page) -> None:
    """Open the page a link names (``?page=…``) once per session; afterwards the navigation decides."""
    if st.session_state.get(LINK_FOLLOWED):
        return
    st.session_state[LINK_FOLLOWED] = True
    target = pages.get(str(st.query_params.get("page")))
    if target is not None and target.url_path != current.url_path:
        st.switch_page(target, query_params=st.query_params.to_dict())


def main() -> None:
    st.set_page_config(page_title="alignment-harness", page_icon=":material/monitoring:", layout="wide")
    pages = {slug: st.Page(str(PAGES_DIR / f"{slug}.py"), title=title, icon=icon, default=slug == SLUGS[0])
             for slug, (title, icon) in PAGES.items()}
    page = st.navigation(list(pages.values()))
    follow_link(pages, page)
    st.session_state[SELECTION_KEY] = select()
    st.query_params["page"] = next((s for s, p in pages.items() if p.url_path == page.url_path), SLUGS[0])
    try:
        page.run()
    except Exception as exc:  # a malformed row we did not foresee: say so, no traceback
        st.error(f"This page could not be drawn from the store's data ({type(exc).__name__}: {exc}). "
                 "The other pages may still work; please report this with the store file.")


main()
