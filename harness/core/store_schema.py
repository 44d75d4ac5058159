"""Schema of the results store: DDL, ordered migrations, the schema-version table, and
the shape of the rows the store writes (validation, JSON, numpy scalars -> float/int).

The store's schema only ever grows by appending a `Migration` to `MIGRATIONS`; a file
written by an older harness is upgraded in place when it is opened read-write. Each
migration runs in its own ``BEGIN IMMEDIATE`` transaction and re-reads the version
inside it, so several processes opening the same new file at once apply it exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class StoreError(Exception):
    """A problem with the results store a user can act on; the message names the file."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No results store at the given path."""


class ReadOnlyStoreError(StoreError, PermissionError):
    """A write was attempted on a store opened read-only."""


@dataclass(frozen=True)
class Migration:
    """One schema step: `version` is what the file is at after `apply` ran."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


def _statements(*sql: str) -> Callable[[sqlite3.Connection], None]:
    """A migration that executes the given statements in order (no executescript:
    it would commit the surrounding transaction)."""

    def apply(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return apply


# Version 1: the initial schema. `CREATE ... IF NOT EXISTS` so that a pre-versioning
# file (version 0: tables but no schema_version row) is adopted rather than rejected.
_V1 = _statements(
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('write_count', '0')",
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('last_write', '')",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id          TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        config_json     TEXT NOT NULL,
        world_card_json TEXT,
        started_at      TEXT NOT NULL,
        finished_at     TEXT,
        status          TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id       TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        stage        TEXT NOT NULL,
        kind         TEXT NOT NULL,
        parent_stage TEXT,
        inputs_json  TEXT NOT NULL DEFAULT '{}',
        content_hash TEXT,
        path         TEXT,
        status       TEXT NOT NULL,
        metrics_json TEXT NOT NULL DEFAULT '{}',
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (run_id, stage)
    )""",
    # One row per evaluation (checkpoint x suite x backend/decoding x ...); run_id and
    # stage are where it was first computed. `run_evaluations` links it to every run
    # that uses it, so a later run in the same store can reuse a complete evaluation.
    """CREATE TABLE IF NOT EXISTS evaluations (
        eval_key      TEXT PRIMARY KEY,
        run_id        TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        stage         TEXT NOT NULL,
        suite         TEXT NOT NULL,
        suite_version TEXT,
        items_hash    TEXT,
        backend       TEXT NOT NULL,
        decoding_json TEXT NOT NULL DEFAULT '{}',
        reward_hash   TEXT,
        status        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        completed_at  TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS run_evaluations (
        run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        stage    TEXT NOT NULL,
        eval_key TEXT NOT NULL REFERENCES evaluations(eval_key) ON DELETE CASCADE,
        PRIMARY KEY (run_id, stage, eval_key)
    )""",
    # suite / backend / decoding / run / stage live on the evaluation; readers join.
    """CREATE TABLE IF NOT EXISTS metrics (
        eval_key         TEXT NOT NULL REFERENCES evaluations(eval_key) ON DELETE CASCADE,
        metric           TEXT NOT NULL,
        value            REAL,
        ci_low           REAL,
        ci_high          REAL,
        n                INTEGER,
        higher_is_better INTEGER,
        UNIQUE (eval_key, metric)
    )""",
    """CREATE TABLE IF NOT EXISTS samples (
        eval_key     TEXT NOT NULL REFERENCES evaluations(eval_key) ON DELETE CASCADE,
        item_id      TEXT NOT NULL,
        sample_index INTEGER NOT NULL DEFAULT 0,
        item_hash    TEXT,
        prompt       TEXT,
        response     TEXT,
        outcome_json TEXT NOT NULL DEFAULT '{}',
        UNIQUE (eval_key, item_id, sample_index)
    )""",
    # expected_direction is deliberately untyped: it keeps whatever the attribution
    # stores ('increase' / 'decrease', or +1 / -1) without affinity conversion.
    """CREATE TABLE IF NOT EXISTS effects (
        run_id             TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        stage              TEXT NOT NULL,
        parent_stage       TEXT,
        metric             TEXT NOT NULL,
        effect             REAL,
        ci_low             REAL,
        ci_high            REAL,
        p_value            REAL,
        p_adjusted         REAL,
        n                  INTEGER,
        test               TEXT,
        attributed         INTEGER NOT NULL DEFAULT 0,
        expected_direction,
        family             TEXT NOT NULL DEFAULT 'headline',
        details_json       TEXT NOT NULL DEFAULT '{}',
        UNIQUE (run_id, stage, metric)
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_at)",
    "CREATE INDEX IF NOT EXISTS evaluations_by_run ON evaluations(run_id, stage, suite)",
    "CREATE INDEX IF NOT EXISTS run_evaluations_by_key ON run_evaluations(eval_key)",
)

# Version 2: re-judging without regenerating. An evaluation's `generation_key` is its key without
# the judge and the reward model (harness.evaluate.generation_key): evaluations sharing it asked
# the model the same things. `generations` keeps what the backend answered (completions with their
# token ids, log-likelihoods) once per generation key, so a judge change replays them.
_V2 = _statements(
    "ALTER TABLE evaluations ADD COLUMN generation_key TEXT",
    """CREATE TABLE IF NOT EXISTS generations (
        generation_key TEXT PRIMARY KEY,
        eval_key       TEXT NOT NULL,
        answers_json   TEXT NOT NULL,
        created_at     TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS evaluations_by_generation ON evaluations(generation_key)",
)

# Version 3: a judge's measured validity (agreement with human labels, `harness judge check`) stored with
# the run, per suite entry the judge judged, so report and dashboard show it next to that suite's metrics.
_V3 = _statements(
    """CREATE TABLE IF NOT EXISTS judge_validity (
        run_id         TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        suite          TEXT NOT NULL,
        judge_json     TEXT NOT NULL,
        file           TEXT NOT NULL,
        file_sha256    TEXT NOT NULL,
        n              INTEGER NOT NULL,
        agreement      REAL,
        kappa          REAL,
        agreement_3class REAL,
        kappa_3class   REAL,
        precision      REAL,
        recall         REAL,
        detail_json    TEXT NOT NULL DEFAULT '{}',
        created_at     TEXT NOT NULL,
        PRIMARY KEY (run_id, suite, file_sha256)
    )""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "evaluations.generation_key, generations (re-judging stored responses)", _V2),
    Migration(3, "judge_validity (a judge's agreement with human labels, per run and suite)", _V3),
)
SCHEMA_VERSION: int = MIGRATIONS[-1].version

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)"""


def connect(path: Path, readonly: bool, timeout_s: float) -> sqlite3.Connection:
    """Open the store file: read-only through a ``mode=ro`` URI (schema must be current),
    or read-write in WAL mode with foreign keys and migrations applied. Raises StoreError."""
    target = f"{path.resolve().as_uri()}?mode=ro" if readonly else str(path)
    try:
        conn = sqlite3.connect(target, timeout=timeout_s, isolation_level=None,
                               check_same_thread=False, uri=readonly)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open results store {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            version = current_version(conn)
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"results store {path} has schema version {version}, this harness reads version "
                    f"{SCHEMA_VERSION}; open it read-write once (e.g. `harness run`) to migrate it")
            return conn
        deadline = time.monotonic() + timeout_s
        while True:  # switching to WAL can report "locked" without waiting on busy_timeout
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: a crash never corrupts the file
        apply_migrations(conn)
        return conn
    except (sqlite3.DatabaseError, RuntimeError, StoreError) as exc:
        conn.close()
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot open results store {path}: {exc}") from exc


def bump_write_clock(conn: sqlite3.Connection) -> None:
    """Advance the write counter and time that `Store.last_change` reports (inside a write)."""
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'write_count'")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'last_write'", (now_iso(),))


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open store; 0 for a file without a version table."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Bring the file behind `conn` (opened with isolation_level=None) up to the last
    of `migrations`; returns the versions applied (empty when already up to date).

    Raises RuntimeError when the file is newer than the code knows.
    """
    target = migrations[-1].version if migrations else 0
    version = current_version(conn)
    if version > target:
        raise RuntimeError(f"schema version {version} is newer than this harness supports ({target})")
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            if current_version(conn) >= migration.version:
                conn.execute("COMMIT")
                continue
            conn.execute(_VERSION_TABLE)
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_version(version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, now_iso()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
        version = migration.version
    return applied


# -- row shapes ------------------------------------------------------------------------
EFFECT_FAMILIES = ("headline", "breakdown")
_METRIC_KEYS = {"metric", "value", "ci_low", "ci_high", "n", "higher_is_better"}
_SAMPLE_KEYS = {"item_id", "item_hash", "sample_index", "prompt", "response", "outcome"}
_EFFECT_KEYS = {
    "stage", "parent_stage", "metric", "effect", "ci_low", "ci_high", "p_value", "p_adjusted",
    "n", "test", "attributed", "expected_direction", "family", "details",
}


def _builtin(value: Any) -> Any:
    """JSON fallback: numpy scalars and arrays, paths and sets become plain values."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys) as stored in every ``*_json`` column; never pickle."""
    return json.dumps(obj, sort_keys=True, default=_builtin)


def _real(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _check_keys(row: Mapping[str, Any], allowed: set[str], required: set[str], what: str) -> None:
    unknown, missing = set(row) - allowed, required - set(row)
    if unknown or missing:
        raise StoreError(
            f"bad {what} row {dict(row)!r}: unknown keys {sorted(unknown)}, missing keys "
            f"{sorted(missing)}; expected keys {sorted(allowed)} (required {sorted(required)})"
        )


def metric_row(eval_key: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Parameters of `UPSERT_METRIC` for one metric dict (numpy scalars become float/int)."""
    _check_keys(row, _METRIC_KEYS, {"metric", "value"}, "metric")
    hib = row.get("higher_is_better")
    return (eval_key, str(row["metric"]), _real(row["value"]), _real(row.get("ci_low")),
            _real(row.get("ci_high")), _int(row.get("n")), None if hib is None else int(bool(hib)))


def sample_row(eval_key: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Parameters of `INSERT_SAMPLE` for one sample dict (outcome dict -> JSON)."""
    _check_keys(row, _SAMPLE_KEYS, {"item_id"}, "sample")
    return (eval_key, str(row["item_id"]), int(row.get("sample_index") or 0), _str(row.get("item_hash")),
            _str(row.get("prompt")), _str(row.get("response")), dumps(row.get("outcome") or {}))


def effect_row(run_id: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Parameters of `INSERT_EFFECT` for one effect dict (details dict -> JSON)."""
    _check_keys(row, _EFFECT_KEYS, {"stage", "metric"}, "effect")
    family = row.get("family") or "headline"
    if family not in EFFECT_FAMILIES:
        raise StoreError(f"bad effect row {dict(row)!r}: family must be one of {EFFECT_FAMILIES}")
    direction = row.get("expected_direction")
    return (run_id, str(row["stage"]), _str(row.get("parent_stage")), str(row["metric"]),
            _real(row.get("effect")), _real(row.get("ci_low")), _real(row.get("ci_high")),
            _real(row.get("p_value")), _real(row.get("p_adjusted")), _int(row.get("n")),
            _str(row.get("test")), int(bool(row.get("attributed"))),
            direction.item() if hasattr(direction, "item") else direction, family,
            dumps(row.get("details") or {}))


UPSERT_METRIC = """INSERT INTO metrics(eval_key, metric, value, ci_low, ci_high, n, higher_is_better)
    VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(eval_key, metric) DO UPDATE SET value = excluded.value,
    ci_low = excluded.ci_low, ci_high = excluded.ci_high, n = excluded.n,
    higher_is_better = excluded.higher_is_better"""
INSERT_SAMPLE = """INSERT INTO samples(eval_key, item_id, sample_index, item_hash, prompt, response,
    outcome_json) VALUES (?, ?, ?, ?, ?, ?, ?)"""
INSERT_EFFECT = """INSERT INTO effects(run_id, stage, parent_stage, metric, effect, ci_low, ci_high,
    p_value, p_adjusted, n, test, attributed, expected_direction, family, details_json)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
EVAL_IDENTITY = ("suite", "suite_version", "items_hash", "backend", "decoding_json", "reward_hash")
