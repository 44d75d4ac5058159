"""What every page shares: the selected store and run (chosen in the sidebar by `app.py`),
the messages for an unusable store, an empty store, a run in progress or failed stages,
selectboxes whose choice lives in the URL (deep links), and table display helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from dashboards.data import RunData, load_run, load_samples

SELECTION_KEY = "harness_selection"
RUN_WIDGET_KEY = "run_id"
STORE_WIDGET_KEY = "store_label"


@dataclass(frozen=True)
class Selection:
    """The sidebar's choice, set by `app.py` before the page runs."""

    path: str | None  # the resolved store file, None when unusable
    label: str = ""  # its name for visitors (never the server's path)
    token: str = ""
    runs: pd.DataFrame | None = None
    run_id: str | None = None
    message: str | None = None  # why there is no usable store


@dataclass(frozen=True)
class PageContext:
    path: str
    token: str
    run_id: str
    data: RunData

    @property
    def run_name(self) -> str:
        return str(self.data.run.get("name") or self.run_id)

    def samples(self, suite: str, stage: str | None = None) -> pd.DataFrame:
        """Samples of a suite (at one stage or all); a warning when the store could not read them."""
        frame = load_samples(self.path, self.run_id, stage, suite, self.token)
        if frame.attrs.get("problem"):
            st.warning(f"Some rows of the store could not be read: {frame.attrs['problem']}.")
        return frame


def selection() -> Selection:
    sel = st.session_state.get(SELECTION_KEY)
    return sel if isinstance(sel, Selection) else Selection(None, message="No results store selected.")


def store_message(sel: Selection) -> None:
    """Explain why no store is shown, and how to get one."""
    st.info(f"{sel.message}\n\nThe stores are chosen when the dashboard starts: `harness dashboard --store PATH` "
            "(a `results.sqlite` file or the output_dir of a run; repeat `--store` for several). "
            "`harness run` creates a store.")


def require_store() -> Selection:
    """The selection with a usable store, or a message and `st.stop()`."""
    sel = selection()
    if sel.path is None:
        store_message(sel)
        st.stop()
    return sel


def require_run() -> PageContext:
    """The selected run's data; a helpful message and `st.stop()` when there is none."""
    sel = require_store()
    if sel.run_id is None:
        st.info(f"The results store `{sel.label}` has no runs yet. Start one with "
                "`harness run CONFIG` (it writes results here as each stage finishes), then reload.")
        st.stop()
    data = load_run(sel.path, sel.run_id, sel.token)
    ctx = PageContext(str(sel.path), sel.token, sel.run_id, data)
    run_banners(ctx)
    return ctx


def run_banners(ctx: PageContext) -> None:
    """Run in progress, failed run or stages, rows that could not be read."""
    status = str(ctx.data.run.get("status") or "unknown")
    cps = ctx.data.checkpoints
    if status == "running":
        busy = list(cps.loc[cps["status"] == "started", "stage"])
        now = f" (stage in progress: {', '.join(busy)})" if busy else ""
        st.info(f"Run **{ctx.run_name}** is still in progress{now}: showing the results stored so far. "
                "Rerun the page (R) to see new results.")
    elif status == "failed":
        st.warning(f"Run **{ctx.run_name}** failed: results of the stages it finished are shown.")
    failed = list(cps.loc[cps["status"] == "failed", "stage"])
    if failed:
        st.warning(f"Failed stage(s): {', '.join(failed)} — no evaluations after them; see the run's log.")
    for problem in ctx.data.problems:
        st.warning(f"Some rows of the store could not be read: {problem}.")


def url_select(where: Any, label: str, options: Sequence[Any], param: str, default: int = 0, *, key: str,
               encode: Callable[[Any], str] = str, pick: Callable[[str, Sequence[Any]], Any] | None = None,
               write: bool = True, **kwargs: Any) -> Any:
    """A selectbox whose choice lives in the URL as ``?param=…``: when the widget has no valid
    state yet (a link was opened, the options changed) it starts at the URL's value when that
    names an option (`pick`, default: the option whose `encode` equals it), else at
    ``options[default]``; every run writes the choice back to the URL (unless `write` is False)."""
    options = list(options)
    if st.session_state.get(key) not in options:
        wanted = st.query_params.get(param)
        found = None
        if wanted is not None:
            found = pick(wanted, options) if pick else next((o for o in options if encode(o) == wanted), None)
        st.session_state[key] = found if found is not None else options[min(default, len(options) - 1)]
    value = where.selectbox(label, options, key=key, **kwargs)
    if write:
        st.query_params[param] = encode(value)
    return value


def in_order(stages: list[str], present: Iterable[Any]) -> list[str]:
    """The stages of `present`, in the run's stage order."""
    have = set(present)
    return [s for s in stages if s in have]


def display(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A copy fit for `st.dataframe`: floats rounded, dict/list cells as short text."""
    out = df.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, dict | list)).any():
            out[column] = out[column].map(_short)
        elif pd.api.types.is_float_dtype(out[column]) and not _is_p(str(column)):
            out[column] = out[column].round(digits)
    return out


def _is_p(column: str) -> bool:
    return column.startswith(("p_", "p ", "p-"))


def _short(value: Any, limit: int = 200) -> str:
    text = ", ".join(f"{k}={_num(v)}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for prose ('n/a' when missing)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(df: pd.DataFrame, **kwargs: Any) -> None:
    """A DataFrame as a table: rounded numbers, p-values in scientific notation."""
    config = {c: st.column_config.NumberColumn(format="%.1e") for c in df.columns if _is_p(str(c))}
    st.dataframe(display(df), hide_index=True, column_config=config or None, **kwargs)
