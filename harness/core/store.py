"""The results store: one SQLite file per `output_dir` holding runs, checkpoints,
evaluations with their metrics and per-item samples, and the attribution's effects.

Several processes may write one store at once: the file is in WAL mode, every write is
one ``BEGIN IMMEDIATE`` transaction, and a writer waits (``busy_timeout``) for another's
lock instead of failing. A process killed mid-write leaves the last committed state.
Readers (report, gate, dashboard) open it read-only and get pandas DataFrames.

An evaluation (``eval_key``, computed by the caller from checkpoint hash, suite items and
version, backend, decoding, reward model...) is the unit the pipeline skips when it is
complete. It is linked to every run (and stage) that uses it, so a later run in the same
store reuses it: readers called with a ``run_id`` return the data of every linked
evaluation under that run's id and stage. An evaluation also carries its generation key (its
key without judge and reward model); what the backend answered is kept once per generation key
(``generations``), so a new judge re-judges stored responses instead of generating them again
(``harness.eval_runner``). Payload JSON columns (``outcome``, ``details``,
``inputs``, ``config`` ...) come back parsed into dict columns; ``decoding_json`` stays a
canonical JSON string because it is part of a result's identity and must be groupable.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.core import store_schema as sch
from harness.core.artifacts import STORE_FILENAME
from harness.core.store_readers import StoreReaders
from harness.core.store_schema import (
    SCHEMA_VERSION,
    ReadOnlyStoreError,
    StoreError,
    StoreNotFoundError,
    dumps,
)

__all__ = [
    "SCHEMA_VERSION", "STORE_FILENAME", "ReadOnlyStoreError", "Store", "StoreError",
    "StoreNotFoundError", "dumps", "new_run_id",
]

RUN_STATUSES = ("running", "complete", "failed")
CHECKPOINT_STATUSES = ("started", "complete", "failed")
_STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def new_run_id() -> str:
    """A fresh run id that sorts by start time: ``YYYYmmdd-HHMMSS-<6 hex>`` (UTC)."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"



class Store(StoreReaders):
    """The results store at `path` (a ``results.sqlite`` file or the output_dir holding it).

    Read-write opening creates the file (and folders) when missing and migrates an older
    schema; ``readonly=True`` needs an existing, up-to-date store and refuses every write.
    Use as a context manager or call `close()`.
    """

    def __init__(self, path: Path | str, readonly: bool = False, timeout_s: float = 60.0) -> None:
        self.readonly = readonly
        self.path = self.resolve_path(path) if readonly else self._writable_path(path)
        self._lock = threading.RLock()
        self._conn = sch.connect(self.path, readonly, timeout_s)

    @staticmethod
    def resolve_path(p: Path | str) -> Path:
        """The existing store file for `p`: the file itself, or ``p/results.sqlite`` for an
        output_dir. Raises StoreNotFoundError naming the path when there is none."""
        path = Path(p).expanduser()
        if path.is_dir():
            if (path / STORE_FILENAME).is_file():
                return path / STORE_FILENAME
            raise StoreNotFoundError(
                f"no results store in directory {path}: expected {path / STORE_FILENAME} "
                "(the output_dir of a run holds it)")
        if path.is_file():
            return path
        raise StoreNotFoundError(
            f"no results store at {path}: expected a {STORE_FILENAME} file or an output_dir holding one")

    @staticmethod
    def _writable_path(p: Path | str) -> Path:
        path = Path(p).expanduser()
        if path.is_file() or (not path.exists() and path.suffix in _STORE_SUFFIXES):
            path.parent.mkdir(parents=True, exist_ok=True)
            return path
        path.mkdir(parents=True, exist_ok=True)
        return path / STORE_FILENAME

    # -- plumbing -------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, readonly={self.readonly})"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; bumps the write clock read by `last_change`."""
        if self.readonly:
            raise ReadOnlyStoreError(f"results store {self.path} is open read-only; writes are refused")
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                sch.bump_write_clock(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _require(self, conn: sqlite3.Connection, table: str, column: str, value: str) -> tuple[Any, ...]:
        row = conn.execute(f"SELECT * FROM {table} WHERE {column} = ?", (value,)).fetchone()
        if row is None:
            raise StoreError(f"no {column} {value!r} in results store {self.path} ({table})")
        return row

    # -- writers --------------------------------------------------------------------
    def create_run(self, name: str, config: Mapping[str, Any], world_card: Mapping[str, Any] | None = None,
                   run_id: str | None = None) -> str:
        """Record a run as running and return its id (new unless `run_id` is given; an
        existing run with that id is updated and set running again)."""
        run_id = run_id or new_run_id()
        card = None if world_card is None else dumps(world_card)
        with self._write() as conn:
            conn.execute(
                """INSERT INTO runs(run_id, name, config_json, world_card_json, started_at, status)
                VALUES (?, ?, ?, ?, ?, 'running') ON CONFLICT(run_id) DO UPDATE SET name = excluded.name,
                config_json = excluded.config_json, world_card_json = excluded.world_card_json,
                status = 'running', finished_at = NULL""",
                (run_id, name, dumps(config), card, sch.now_iso()))
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark a run 'complete' or 'failed' with its finish time."""
        if status not in RUN_STATUSES[1:]:
            raise StoreError(f"run status must be one of {RUN_STATUSES[1:]}, got {status!r}")
        with self._write() as conn:
            self._require(conn, "runs", "run_id", run_id)
            conn.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                         (status, sch.now_iso(), run_id))

    def upsert_checkpoint(self, run_id: str, stage: str, kind: str, parent_stage: str | None,
                          content_hash: str | None, path: Path | str | None, status: str,
                          metrics: Mapping[str, Any] | None = None,
                          inputs: Mapping[str, Any] | None = None) -> None:
        """Insert or update the checkpoint of `stage` in a run; `inputs` maps each role
        (parent, reward, judge) to the stage or hash it read; `metrics` are training metrics.
        A stage whose checkpoint changes (another content hash: retrained, or failed) loses its
        evaluation links: they describe the old checkpoint, and the run shows only the new one's."""
        if status not in CHECKPOINT_STATUSES:
            raise StoreError(f"checkpoint status must be one of {CHECKPOINT_STATUSES}, got {status!r}")
        now = sch.now_iso()
        with self._write() as conn:
            self._require(conn, "runs", "run_id", run_id)
            old = conn.execute("SELECT content_hash FROM checkpoints WHERE run_id = ? AND stage = ?",
                               (run_id, stage)).fetchone()
            if old is not None and old[0] != content_hash:
                conn.execute("DELETE FROM run_evaluations WHERE run_id = ? AND stage = ?", (run_id, stage))
            conn.execute(
                """INSERT INTO checkpoints(run_id, stage, kind, parent_stage, inputs_json, content_hash,
                path, status, metrics_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(run_id, stage) DO UPDATE SET kind = excluded.kind,
                parent_stage = excluded.parent_stage, inputs_json = excluded.inputs_json,
                content_hash = excluded.content_hash, path = excluded.path, status = excluded.status,
                metrics_json = excluded.metrics_json, updated_at = excluded.updated_at""",
                (run_id, stage, kind, parent_stage, dumps(inputs or {}), content_hash, _str(path),
                 status, dumps(metrics or {}), now, now))

    def begin_evaluation(self, eval_key: str, run_id: str, stage: str, suite: str,
                         suite_version: str | int | None, items_hash: str | None, backend: str,
                         decoding: Mapping[str, Any] | None, reward_hash: str | None = None,
                         generation_key: str | None = None) -> bool:
        """Register an evaluation as started (if new) and link it to (run_id, stage).

        Returns True when it is already complete: then it is only linked to this run,
        nothing else changes, and the caller can skip it. Raises StoreError when the key
        exists with different identity fields (the caller's key misses something).
        ``generation_key``: the key without judge and reward model (``harness.evaluate``), set once.
        """
        given = dict(zip(sch.EVAL_IDENTITY, (suite, _str(suite_version), items_hash, backend,
                                          dumps(decoding or {}), reward_hash), strict=True))
        with self._write() as conn:
            self._require(conn, "runs", "run_id", run_id)
            row = conn.execute(f"SELECT status, {', '.join(sch.EVAL_IDENTITY)} FROM evaluations "
                               "WHERE eval_key = ?", (eval_key,)).fetchone()
            if row is None:
                conn.execute(
                    f"""INSERT INTO evaluations(eval_key, run_id, stage, {', '.join(sch.EVAL_IDENTITY)},
                    generation_key, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'started', ?)""",
                    (eval_key, run_id, stage, *given.values(), generation_key, sch.now_iso()))
            else:
                for field, stored in zip(sch.EVAL_IDENTITY, row[1:], strict=True):
                    if stored != given[field]:
                        raise StoreError(f"eval_key {eval_key!r} already stored in {self.path} with "
                                         f"{field}={stored!r}, now given {given[field]!r}")
                if generation_key is not None:  # an evaluation begun before generation keys existed
                    conn.execute("UPDATE evaluations SET generation_key = ? WHERE eval_key = ? AND "
                                 "generation_key IS NULL", (generation_key, eval_key))
            self._link(conn, run_id, stage, eval_key)
        return row is not None and row[0] == "complete"

    def link_evaluation(self, eval_key: str, run_id: str, stage: str) -> None:
        """Make an existing evaluation part of (run_id, stage), e.g. one reused from an earlier run."""
        with self._write() as conn:
            self._require(conn, "runs", "run_id", run_id)
            self._require(conn, "evaluations", "eval_key", eval_key)
            self._link(conn, run_id, stage, eval_key)

    @staticmethod
    def _link(conn: sqlite3.Connection, run_id: str, stage: str, eval_key: str) -> None:
        """Link (run_id, stage) to `eval_key`, replacing the link to any other evaluation of the same
        suite there: a resumed run whose stage was retrained (new code, new data) reports the new
        evaluation only, never the old and the new side by side. The old evaluation stays stored."""
        conn.execute(
            """DELETE FROM run_evaluations WHERE run_id = ? AND stage = ? AND eval_key != ? AND eval_key IN
            (SELECT eval_key FROM evaluations WHERE suite = (SELECT suite FROM evaluations WHERE eval_key = ?))""",
            (run_id, stage, eval_key, eval_key))
        conn.execute("INSERT OR IGNORE INTO run_evaluations(run_id, stage, eval_key) VALUES (?, ?, ?)",
                     (run_id, stage, eval_key))

    def write_evaluation(self, eval_key: str, metrics: Iterable[Mapping[str, Any]],
                         samples: Iterable[Mapping[str, Any]], answers: Mapping[str, Any] | None = None) -> None:
        """Replace the metrics and samples of a begun evaluation and mark it complete, all in
        one transaction: a killed process leaves the previous state, never a partial one.

        Metric rows: metric, value, ci_low, ci_high, n, higher_is_better. Sample rows:
        item_id, item_hash, sample_index (default 0), prompt, response, outcome (a dict).
        ``answers``: what the backend answered (``harness.backends.replay``), kept per generation key of
        the evaluation (given to ``begin_evaluation``) for :meth:`stored_answers`; the latest replaces any
        earlier (same generation key, same answers, unless those were incomplete).
        """
        with self._write() as conn:
            self._require(conn, "evaluations", "eval_key", eval_key)
            if answers is not None:
                (generation_key,) = conn.execute("SELECT generation_key FROM evaluations WHERE eval_key = ?",
                                                 (eval_key,)).fetchone()
                if generation_key is None:
                    raise StoreError(f"evaluation {eval_key!r} in {self.path} has no generation key: "
                                     "give one to begin_evaluation to keep its answers")
                conn.execute("INSERT OR REPLACE INTO generations(generation_key, eval_key, answers_json, "
                             "created_at) VALUES (?, ?, ?, ?)", (generation_key, eval_key, dumps(answers),
                                                                  sch.now_iso()))
            conn.execute("DELETE FROM metrics WHERE eval_key = ?", (eval_key,))
            conn.execute("DELETE FROM samples WHERE eval_key = ?", (eval_key,))
            conn.executemany(sch.UPSERT_METRIC, (sch.metric_row(eval_key, r) for r in metrics))
            try:
                conn.executemany(sch.INSERT_SAMPLE, (sch.sample_row(eval_key, r) for r in samples))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"evaluation {eval_key!r}: duplicate (item_id, sample_index) "
                                 f"in samples ({exc})") from exc
            conn.execute("UPDATE evaluations SET status = 'complete', completed_at = ? WHERE eval_key = ?",
                         (sch.now_iso(), eval_key))

    def stored_answers(self, generation_key: str) -> dict[str, Any] | None:
        """The backend answers kept for ``generation_key`` (written with a complete evaluation), or None."""
        with self._lock:
            row = self._conn.execute("SELECT answers_json FROM generations WHERE generation_key = ?",
                                     (generation_key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def is_evaluation_complete(self, eval_key: str) -> bool:
        """True when `write_evaluation` committed for this key."""
        with self._lock:
            row = self._conn.execute("SELECT status FROM evaluations WHERE eval_key = ?", (eval_key,)).fetchone()
        return row is not None and row[0] == "complete"

    def add_metrics(self, eval_key: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert or update metric rows of an existing evaluation (rescoring, extra metrics)."""
        with self._write() as conn:
            self._require(conn, "evaluations", "eval_key", eval_key)
            conn.executemany(sch.UPSERT_METRIC, (sch.metric_row(eval_key, r) for r in rows))

    def update_sample_outcomes(self, eval_key: str,
                               updates: Mapping[tuple[str, int], Mapping[str, Any]]) -> int:
        """Merge each dict into the stored outcome of sample (item_id, sample_index) of an
        evaluation (e.g. reward scores of stored responses); returns the number updated.
        Raises StoreError, writing nothing, if any sample is missing."""
        with self._write() as conn:
            self._require(conn, "evaluations", "eval_key", eval_key)
            stored = {(item, index): outcome for item, index, outcome in conn.execute(
                "SELECT item_id, sample_index, outcome_json FROM samples WHERE eval_key = ?", (eval_key,))}
            rows = []
            for (item_id, index), patch in updates.items():
                key = (str(item_id), int(index))
                if key not in stored:
                    raise StoreError(f"evaluation {eval_key!r} in {self.path} has no sample {key}")
                merged = json.loads(stored[key]) | dict(patch)
                rows.append((dumps(merged), eval_key, *key))
            conn.executemany("UPDATE samples SET outcome_json = ? WHERE eval_key = ? AND item_id = ? "
                             "AND sample_index = ?", rows)
        return len(rows)

    def record_judge_validity(self, run_id: str, suite: str, judge: Mapping[str, Any],
                              validity: Mapping[str, Any]) -> None:
        """Store a judge's measured agreement with human labels (``harness.judge_check.Validity.to_dict()``)
        for the suite entry (its label) it judged in this run; replaces a record of the same file."""
        cols = ("n", "agreement", "kappa", "agreement_3class", "kappa_3class", "precision", "recall")
        detail = {k: validity[k] for k in ("confusion", "by_type") if k in validity}
        with self._write() as conn:
            self._require(conn, "runs", "run_id", run_id)
            conn.execute(
                "INSERT OR REPLACE INTO judge_validity(run_id, suite, judge_json, file, file_sha256, n, agreement, "
                "kappa, agreement_3class, kappa_3class, precision, recall, detail_json, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, suite, dumps(judge), str(validity["file"]), str(validity["sha256"]),
                 *(validity[c] for c in cols), dumps(detail), sch.now_iso()))

    def replace_effects(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace all effects of a run in one transaction. Row keys: stage, metric (required;
        a qualified name such as 'verbosity.mean_tokens'), parent_stage, effect, ci_low,
        ci_high, p_value, p_adjusted, n, test, attributed, expected_direction,
        family ('headline' | 'breakdown'), details (dict)."""
        with self._write() as conn:
            self._require(conn, "runs", "run_id", run_id)
            conn.execute("DELETE FROM effects WHERE run_id = ?", (run_id,))
            try:
                conn.executemany(sch.INSERT_EFFECT, (sch.effect_row(run_id, r) for r in rows))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"effects of run {run_id!r}: duplicate (stage, metric) ({exc})") from exc
