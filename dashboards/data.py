"""Loading the results store for the dashboard: read-only, cached on the store's last change.

Every loader takes the store path and the store's `last_change()` token, so a cached frame
is reused until something is written to the store, and a write (a run still in progress)
shows up on the next rerun. Loaders return cleaned frames: numeric columns are numeric,
payload columns are dicts, unusable rows (no stage, no metric name, no value) are dropped,
so the pages never trip over a malformed row. The cleaning functions are pure and are
tested without Streamlit.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from harness.core.paired import outcome_index, outcome_number
from harness.core.store import Store, StoreError

STORE_ENV = "HARNESS_STORE"
# Outcome keys some writers store without the suite prefix (verbosity rescoring, older rows).
SHORT_OUTCOME_KEYS = frozenset({"mean_tokens", "mean_words", "reward_mean", "length_ratio",
                                "length_controlled_reward"})
HARMFUL_PREFIX = "refusal.harmful_"  # refusal.harmful_refusal_rate, refusal.harmful_partial_rate
_NUMERIC = ("value", "ci_low", "ci_high", "effect", "p_value", "p_adjusted", "n")


@dataclass(frozen=True)
class RunData:
    """Everything about one run except its samples (those are loaded per stage and suite)."""

    run: dict[str, Any]
    checkpoints: pd.DataFrame
    metrics: pd.DataFrame
    effects: pd.DataFrame
    evaluations: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    judges: pd.DataFrame = field(default_factory=pd.DataFrame)  # judge validity: agreement with human labels

    @property
    def stages(self) -> list[str]:
        """Stages in checkpoint order, then any stage that only has metrics."""
        order = list(self.checkpoints["stage"]) if not self.checkpoints.empty else []
        extra = [s for s in dict.fromkeys(self.metrics.get("stage", [])) if s not in order]
        return order + extra

    @property
    def known_metrics(self) -> set[str]:
        return set(self.metrics["metric"]) if not self.metrics.empty else set()


# -- store paths ------------------------------------------------------------------------
def store_paths_from(argv: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """The stores the dashboard was started with: every ``--store PATH`` / ``--store=PATH`` in
    `argv`, else $HARNESS_STORE (os.pathsep-separated). A visitor can never add one."""
    args, out = list(argv), []
    for i, arg in enumerate(args):
        if arg == "--store" and i + 1 < len(args):
            out.append(args[i + 1])
        elif arg.startswith("--store="):
            out.append(arg.split("=", 1)[1])
    if not out:
        env = os.environ if environ is None else environ
        out = [p for p in (env.get(STORE_ENV) or "").split(os.pathsep) if p]
    return list(dict.fromkeys(out))


def store_labels(paths: list[str]) -> dict[str, str]:
    """A short name per store for the sidebar and the URL (its output_dir's name, or the file's),
    made unique with a number; the server's full paths are not shown to visitors."""
    labels: dict[str, str] = {}
    for path in paths:
        p = Path(path)
        name = p.parent.name if p.name == "results.sqlite" and p.parent.name else p.name
        label, k = name or "store", 2
        while label in labels:
            label, k = f"{name} ({k})", k + 1
        labels[label] = path
    return labels


def default_run(runs: pd.DataFrame) -> str | None:
    """The newest complete run (`runs` newest first); the newest run when none is complete."""
    if runs.empty:
        return None
    done = runs[runs["status"] == "complete"]
    return str((done if not done.empty else runs)["run_id"].iloc[0])


def resolve_store(path: str) -> str:
    """The store file for a path (the file, or ``results.sqlite`` in an output_dir); the path
    as given when there is none (reading it then says why)."""
    try:
        return str(Store.resolve_path(path))
    except (StoreError, OSError):
        return path


def store_token(path: str) -> str:
    """The store's change token (cheap: one small query); the key of every cached loader."""
    with Store(path, readonly=True) as store:
        return store.last_change()


# -- cached loaders -------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=8)
def load_runs(path: str, token: str) -> pd.DataFrame:
    """All runs, newest first (`token` only keys the cache)."""
    with Store(path, readonly=True) as store:
        runs = store.runs()
    return runs.iloc[::-1].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=8)
def load_run(path: str, run_id: str, token: str) -> RunData:
    """Checkpoints, metrics, effects and evaluations of one run, cleaned. A table the store
    cannot read (a malformed value) is replaced by an empty one and named in `problems`."""
    problems: list[str] = []
    with Store(path, readonly=True) as store:
        run = store.get_run(run_id)
        raw = [_read(lambda: store.checkpoints(run_id), "checkpoints", _CHECKPOINT_COLUMNS, problems),
               _read(lambda: store.metrics(run_id), "metrics", _METRIC_COLUMNS, problems),
               _read(lambda: store.effects(run_id), "effects", _EFFECT_COLUMNS, problems),
               _read(lambda: store.evaluations(run_id), "evaluations", ["stage", "suite", "eval_key"], problems),
               _read(lambda: store.judge_validity(run_id), "judge validity", _JUDGE_COLUMNS, problems)]
    checkpoints = clean_checkpoints(raw[0], problems)
    metrics = clean_metrics(raw[1], problems)
    effects = clean_effects(raw[2], problems)
    run["config"] = run.get("config") if isinstance(run.get("config"), dict) else {}
    run["world_card"] = run.get("world_card") if isinstance(run.get("world_card"), dict) else None
    return RunData(run, checkpoints, metrics, effects, raw[3], problems, _numeric(raw[4], _JUDGE_COLUMNS[2:-1]))


_CHECKPOINT_COLUMNS = ["stage", "kind", "parent_stage", "inputs", "content_hash", "path", "status", "metrics",
                       "created_at", "updated_at"]
_METRIC_COLUMNS = ["stage", "suite", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better", "backend"]
_JUDGE_COLUMNS = ["suite", "file", "n", "agreement", "kappa", "precision", "recall", "judge_json"]
_EFFECT_COLUMNS = ["stage", "parent_stage", "metric", "effect", "ci_low", "ci_high", "p_value", "p_adjusted", "n",
                   "test", "attributed", "expected_direction", "family", "details"]


def _read(reader: Callable[[], pd.DataFrame], what: str, columns: list[str], problems: list[str]) -> pd.DataFrame:
    """A store reader's frame, or an empty frame and a problem when a row breaks the reader."""
    try:
        return reader()
    except (StoreError, ValueError, TypeError, KeyError, sqlite3.DatabaseError) as exc:
        problems.append(f"the {what} table could not be read ({type(exc).__name__}: {exc}); it is shown empty")
        return pd.DataFrame(columns=columns)


@st.cache_data(show_spinner=False, max_entries=64)
def load_samples(path: str, run_id: str, stage: str | None, suite: str, token: str) -> pd.DataFrame:
    """Samples of one suite (at one stage, or every stage when `stage` is None) with each
    outcome normalised to a dict keyed by full metric names. When the store cannot read
    them, an empty frame whose ``attrs["problem"]`` says why."""
    try:
        with Store(path, readonly=True) as store:
            samples = store.samples(run_id, stage=stage, suite=suite)
            known = set(store.metrics(run_id, stage=stage, suite=suite)["metric"])
    except (StoreError, ValueError, TypeError, KeyError, sqlite3.DatabaseError) as exc:
        empty = clean_samples(pd.DataFrame(columns=_SAMPLE_COLUMNS))
        empty.attrs["problem"] = f"the {suite} samples could not be read ({type(exc).__name__}: {exc})"
        return empty
    return clean_samples(samples, known)


_SAMPLE_COLUMNS = ["stage", "suite", "item_id", "sample_index", "prompt", "response", "outcome"]


# -- cleaning (pure) ------------------------------------------------------------------
def _numeric(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for column in columns:
        if column in df.columns:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    return df


def _text(value: Any) -> str | None:
    """A usable name: None for NULL, NaN and blank strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _texts(column: pd.Series) -> pd.Series:
    """`_text` of every cell, as an object column (also when empty)."""
    return pd.Series([_text(v) for v in column], index=column.index, dtype=object)


def clean_checkpoints(df: pd.DataFrame, problems: list[str] | None = None) -> pd.DataFrame:
    """Checkpoints with a stage name; parent_stage None when missing; dict payloads."""
    df = df.copy()
    df["stage"] = _texts(df["stage"])
    bad = df["stage"].isna()
    if bad.any() and problems is not None:
        problems.append(f"{int(bad.sum())} checkpoint row(s) without a stage name were skipped")
    df = df[~bad].reset_index(drop=True)
    df["parent_stage"] = _texts(df["parent_stage"])
    df["kind"] = [_text(k) or "?" for k in df["kind"]]
    df["status"] = [_text(s) or "unknown" for s in df["status"]]
    for column in ("inputs", "metrics"):
        df[column] = [v if isinstance(v, dict) else {} for v in df[column]]
    return df


def clean_metrics(df: pd.DataFrame, problems: list[str] | None = None) -> pd.DataFrame:
    """Metric rows with a name and a finite value; adds ``base`` (name without the
    ``[group]``), ``group`` and ``family`` ('headline' | 'breakdown')."""
    df = _numeric(df.copy(), _NUMERIC)
    df["metric"] = _texts(df["metric"])
    bad = df["metric"].isna() | df["value"].isna() | df["stage"].isna()
    if bad.any() and problems is not None:
        problems.append(f"{int(bad.sum())} metric row(s) without a name or a value were skipped")
    df = df[~bad].reset_index(drop=True)
    split = df["metric"].str.extract(r"^(?P<base>[^\[]+)(?:\[(?P<group>.*)\])?$")
    df["base"] = split["base"].fillna(df["metric"])
    df["group"] = split["group"]
    df["family"] = ["breakdown" if isinstance(g, str) else "headline" for g in df["group"]]
    hib = df.get("higher_is_better")
    df["higher_is_better"] = [None if pd.isna(h) else bool(h) for h in hib] if hib is not None else None
    return df


def clean_effects(df: pd.DataFrame, problems: list[str] | None = None) -> pd.DataFrame:
    """Effect rows with a stage and a metric; numeric columns numeric; attributed a bool."""
    df = _numeric(df.copy(), _NUMERIC)
    df["stage"] = _texts(df["stage"])
    df["metric"] = _texts(df["metric"])
    bad = df["stage"].isna() | df["metric"].isna()
    if bad.any() and problems is not None:
        problems.append(f"{int(bad.sum())} effect row(s) without a stage or metric were skipped")
    df = df[~bad].reset_index(drop=True)
    df["parent_stage"] = _texts(df["parent_stage"])
    df["attributed"] = [bool(a) if not pd.isna(a) else False for a in df["attributed"]]
    df["family"] = [_text(f) or "headline" for f in df["family"]]
    df["details"] = [d if isinstance(d, dict) else {} for d in df["details"]]
    return df


def normalise_outcome(outcome: Any, suite: str, known: set[str] | None = None) -> dict[str, Any]:
    """An outcome dict keyed by full metric names: a key without a suite prefix becomes
    ``suite.key`` when that is a known metric or a known short key (e.g. ``mean_tokens``);
    other unprefixed keys (diagnostics such as the judge's label) are kept as they are.
    Anything that is not a dict becomes ``{}``."""
    if not isinstance(outcome, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in outcome.items():
        key = str(key)
        if "." not in key.split("[", 1)[0]:
            full = f"{suite}.{key}"
            if (known and full in known) or key.split("[", 1)[0] in SHORT_OUTCOME_KEYS:
                key = full
        out[key] = value
    return out


def clean_samples(df: pd.DataFrame, known: set[str] | None = None) -> pd.DataFrame:
    """Samples with normalised outcome dicts, text columns as strings (never None)."""
    df = df.copy()
    df["outcome"] = [normalise_outcome(o, str(s), known) for o, s in zip(df["outcome"], df["suite"], strict=True)]
    for column in ("prompt", "response"):
        df[column] = df[column].fillna("").astype(str)
    df["item_id"] = df["item_id"].astype(str)
    df["sample_index"] = pd.to_numeric(df["sample_index"], errors="coerce").fillna(0).astype(int)
    return df


def item_values(samples: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-item values (mean over an item's samples) of every numeric outcome, keyed by full
    metric name: columns item_id, metric, value. `metrics` restricts the names. The same rule
    as the attribution and the gate (`harness.core.paired.outcome_index`)."""
    index = outcome_index(samples, by=(), metrics=metrics)
    rows = [(item, metric, value) for (metric,), items in index.items() for item, value in items.items()]
    return pd.DataFrame(rows, columns=["item_id", "metric", "value"])


def is_harmful(outcome: Any) -> bool:
    """A refusal item labelled harmful (AdvBench, XSTest unsafe, the world's harmful requests):
    its outcome is scored as a harmful-request refusal."""
    return isinstance(outcome, dict) and any(str(k).startswith(HARMFUL_PREFIX) for k in outcome)


def latest_value_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, metric): where several backends or decodings measured the same
    metric, the first row wins (the pages say which backend they show)."""
    return metrics.drop_duplicates(["stage", "metric"], keep="first")


__all__ = [
    "STORE_ENV", "RunData", "StoreError", "clean_checkpoints", "clean_effects", "clean_metrics",
    "clean_samples", "item_values", "latest_value_rows", "load_run", "load_runs", "load_samples",
    "default_run", "is_harmful", "normalise_outcome", "outcome_number", "resolve_store",
    "store_labels", "store_paths_from", "store_token",
]
