"""The results store's readers: every query a report, gate or dashboard makes returns a pandas
DataFrame (JSON payload columns parsed). Mixed into :class:`harness.core.store.Store`."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.core.store_schema import StoreError

_FLOAT_COLUMNS = {"value", "ci_low", "ci_high", "effect", "p_value", "p_adjusted"}


class StoreReaders:
    """Read queries over an open store connection (``_conn``, guarded by ``_lock``)."""

    path: Path
    _conn: sqlite3.Connection
    _lock: threading.Lock

    def _query(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        with self._lock:
            df = pd.read_sql_query(sql, self._conn, params=list(params))
        for column in _FLOAT_COLUMNS.intersection(df.columns):
            df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")  # NULL or malformed -> NaN
        return df

    def runs(self) -> pd.DataFrame:
        """All runs, oldest first: run_id, name, status, started_at, finished_at, config, world_card."""
        df = self._query("SELECT run_id, name, status, started_at, finished_at, config_json, world_card_json "
                         "FROM runs ORDER BY started_at, rowid")
        df["config"] = [json.loads(s) for s in df.pop("config_json")]
        df["world_card"] = [None if s is None else json.loads(s) for s in df.pop("world_card_json")]
        return df

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run as a dict with parsed config and world_card; StoreError if unknown."""
        runs = self.runs()
        match = runs[runs["run_id"] == run_id]
        if match.empty:
            raise StoreError(f"no run {run_id!r} in results store {self.path}")
        return match.iloc[0].to_dict()

    def latest_run_id(self) -> str | None:
        """The most recently started run's id, or None for an empty store."""
        with self._lock:
            row = self._conn.execute("SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
        return None if row is None else row[0]

    def require_run(self, run_id: str | None = None) -> str:
        """`run_id` if the store has it, else (when None) the latest run; StoreError otherwise."""
        if run_id is None:
            latest = self.latest_run_id()
            if latest is None:
                raise StoreError(f"results store {self.path} has no runs yet; run `harness run` first")
            return latest
        with self._lock:
            known = [r[0] for r in self._conn.execute("SELECT run_id FROM runs ORDER BY started_at DESC")]
        if run_id not in known:
            raise StoreError(f"no run {run_id!r} in results store {self.path}; latest runs: {known[:5]}")
        return run_id

    def checkpoints(self, run_id: str) -> pd.DataFrame:
        """Checkpoints of a run in creation order: run_id, stage, kind, parent_stage, inputs,
        content_hash, path, status, metrics, created_at, updated_at."""
        df = self._query("""SELECT run_id, stage, kind, parent_stage, inputs_json, content_hash, path, status,
            metrics_json, created_at, updated_at FROM checkpoints WHERE run_id = ? ORDER BY created_at, rowid""",
                         (run_id,))
        df.insert(4, "inputs", [json.loads(s) for s in df.pop("inputs_json")])
        df.insert(8, "metrics", [json.loads(s) for s in df.pop("metrics_json")])
        return df

    def _scoped(self, columns: str, table: str, run_id: str | None, stage: str | None,
                filters: dict[str, Any], order: str) -> pd.DataFrame:
        """Rows of `table` (joined on eval_key) for a run's linked evaluations, or for every
        evaluation under the run/stage that computed it when run_id is None."""
        if run_id is None:
            source, scope = "evaluations e", "e"
        else:
            source, scope = "run_evaluations l JOIN evaluations e USING (eval_key)", "l"
            filters = {"l.run_id": run_id, **filters}
        if table:
            source += f" JOIN {table} t USING (eval_key)"
        filters = {k: v for k, v in {f"{scope}.stage": stage, **filters}.items() if v is not None}
        where = " AND ".join(f"{column} = ?" for column in filters) or "1"
        return self._query(f"SELECT {scope}.run_id, {scope}.stage, {columns} FROM {source} WHERE {where} "
                           f"ORDER BY {scope}.stage, e.suite, {order}", filters.values())

    def evaluations(self, run_id: str | None = None) -> pd.DataFrame:
        """Evaluations linked to a run (all when None): run_id, stage, eval_key, suite,
        suite_version, items_hash, backend, decoding_json, reward_hash, status, created_at,
        completed_at, computed_in_run."""
        return self._scoped("e.eval_key, e.suite, e.suite_version, e.items_hash, e.backend, e.decoding_json, "
                            "e.reward_hash, e.status, e.created_at, e.completed_at, "
                            "e.run_id AS computed_in_run", "", run_id, None, {}, "e.created_at")

    def metrics(self, run_id: str | None, stage: str | None = None, suite: str | None = None) -> pd.DataFrame:
        """Metrics of a run: run_id, stage, suite, suite_version, metric, value, ci_low,
        ci_high, n, higher_is_better, backend, decoding_json, reward_hash, eval_key."""
        return self._scoped("e.suite, e.suite_version, t.metric, t.value, t.ci_low, t.ci_high, t.n, "
                            "t.higher_is_better, e.backend, e.decoding_json, e.reward_hash, e.eval_key",
                            "metrics", run_id, stage, {"e.suite": suite}, "t.metric")

    def samples(self, run_id: str | None, stage: str | None = None, suite: str | None = None,
                eval_key: str | None = None) -> pd.DataFrame:
        """Samples of a run: run_id, stage, suite, suite_version, backend, decoding_json,
        eval_key, item_id, sample_index, item_hash, prompt, response, outcome (a dict)."""
        df = self._scoped("e.suite, e.suite_version, e.backend, e.decoding_json, e.eval_key, t.item_id, "
                          "t.sample_index, t.item_hash, t.prompt, t.response, t.outcome_json", "samples",
                          run_id, stage, {"e.suite": suite, "e.eval_key": eval_key},
                          "e.eval_key, t.rowid")
        df["outcome"] = [json.loads(s) for s in df.pop("outcome_json")]
        return df

    def effects(self, run_id: str) -> pd.DataFrame:
        """Effects of a run as written: run_id, stage, parent_stage, metric, effect, ci_low,
        ci_high, p_value, p_adjusted, n, test, attributed, expected_direction, family, details."""
        df = self._query("""SELECT run_id, stage, parent_stage, metric, effect, ci_low, ci_high, p_value,
            p_adjusted, n, test, attributed, expected_direction, family, details_json FROM effects
            WHERE run_id = ? ORDER BY rowid""", (run_id,))
        df["details"] = [json.loads(s) for s in df.pop("details_json")]
        return df

    def judge_validity(self, run_id: str) -> pd.DataFrame:
        """The judges' measured agreement with human labels stored with a run, one row per suite and file."""
        return self._query("SELECT suite, file, file_sha256, n, agreement, kappa, agreement_3class, kappa_3class, "
                           "precision, recall, judge_json FROM judge_validity WHERE run_id = ? ORDER BY suite, file",
                           (run_id,))

    def last_change(self) -> str:
        """A token that changes on every committed write (``"<count>@<utc time>"``), cheap
        enough to key a dashboard cache on."""
        with self._lock:
            values = dict(self._conn.execute("SELECT key, value FROM meta WHERE key IN "
                                             "('write_count', 'last_write')").fetchall())
        return f"{values.get('write_count', '0')}@{values.get('last_write', '')}"
