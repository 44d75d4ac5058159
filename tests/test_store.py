"""The SQLite results store: concurrency, crash safety, idempotent writes, readers,
read-only mode, migrations and clear errors."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core.store import (
    SCHEMA_VERSION,
    STORE_FILENAME,
    ReadOnlyStoreError,
    Store,
    StoreError,
    StoreNotFoundError,
)
from harness.core.store_schema import MIGRATIONS, Migration, apply_migrations, current_version

ROOT = Path(__file__).resolve().parents[1]
DECODING = {"max_new_tokens": 64, "temperature": 0.0}


def _child(code: str, *args: object) -> subprocess.Popen[bytes]:
    """A separate Python process running `code` with the project importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


def _begin(store: Store, key: str, run_id: str, stage: str = "sft", suite: str = "refusal") -> bool:
    return store.begin_evaluation(key, run_id, stage, suite, "1", "items-h", "hf", DECODING, None)


def _metrics(k: int = 2) -> list[dict]:
    return [{"metric": f"m{i}", "value": i / 10, "ci_low": 0.0, "ci_high": 1.0, "n": 10,
             "higher_is_better": True} for i in range(k)]


def _samples(k: int = 3) -> list[dict]:
    return [{"item_id": f"item{i}", "item_hash": f"h{i}", "prompt": f"p{i}", "response": f"r{i}",
             "outcome": {"refused": i % 2 == 0}} for i in range(k)]


@pytest.fixture()
def store(tmp_path: Path):
    with Store(tmp_path / "out") as s:
        yield s


@pytest.fixture()
def run_id(store: Store) -> str:
    rid = store.create_run("smoke", {"seed": 0}, {"expected_effects": []})
    store.upsert_checkpoint(rid, "init", "init", None, "h-init", "/ckpt/init", "complete", {}, {})
    store.upsert_checkpoint(rid, "sft", "sft", "init", "h-sft", "/ckpt/sft", "complete",
                            {"train_loss": 1.25}, {"parent": "h-init"})
    return rid


# -- done-means: concurrent writers ------------------------------------------------------
_WRITER = """
import sys, time
from pathlib import Path
from harness.core.store import Store
path, run_id, key, tag, ready, go, out = sys.argv[1:]
with Store(path) as store:
    store.begin_evaluation(key, run_id, "sft", "refusal", "1", "items-h", "hf",
                           {"max_new_tokens": 64, "temperature": 0.0}, None)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.001)
    start = time.time()
    for i in range(500):  # 500 separate transactions, with a little work between them
        store.add_metrics(key, [{"metric": f"{tag}.m{i:03d}", "value": i, "n": 1}])
        time.sleep(0.001)
    Path(out).write_text(f"{start} {time.time()}")
"""


def test_two_processes_write_500_metric_rows_each_concurrently(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILENAME
    with Store(path) as store:
        rid = store.create_run("concurrent", {})
    go = tmp_path / "go"
    procs = [_child(_WRITER, path, rid, "shared-key", tag, tmp_path / f"ready{tag}", go, tmp_path / f"out{tag}")
             for tag in ("a", "b")]
    for tag in ("a", "b"):
        _wait_for(tmp_path / f"ready{tag}")
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()

    with Store(path, readonly=True) as reader:
        df = reader.metrics(rid)
    assert len(df) == 1000
    assert sorted(df["metric"]) == sorted(f"{t}.m{i:03d}" for t in "ab" for i in range(500))
    # Truly concurrent: the two writing periods overlap and the commits interleave.
    (a0, a1), (b0, b1) = ((float(x) for x in (tmp_path / f"out{t}").read_text().split()) for t in "ab")
    assert max(a0, b0) < min(a1, b1)
    with sqlite3.connect(path) as conn:
        order = [m[0] for (m,) in conn.execute("SELECT metric FROM metrics ORDER BY rowid")]
    switches = sum(x != y for x, y in zip(order, order[1:], strict=False))
    assert switches >= 20, f"writers took turns only {switches} times"


# -- crash safety ------------------------------------------------------------------------
_KILLED_WRITER = """
import sys, time
from pathlib import Path
from harness.core.store import Store
path, key, halfway = sys.argv[1:]

def samples():
    for i in range(200_000):
        if i == 100_000:  # half the rows are inserted in the open transaction: stop here
            Path(halfway).touch()
            time.sleep(600)
        yield {"item_id": f"item{i}", "item_hash": f"h{i}", "prompt": "p" * 100,
               "response": "r" * 200, "outcome": {"score": i}}

store = Store(path)
store.write_evaluation(key, [{"metric": "acc", "value": 0.5}], samples())
"""


@pytest.mark.parametrize("previous", ["none", "complete"])
def test_sigkill_during_write_evaluation_leaves_all_or_nothing(tmp_path: Path, previous: str) -> None:
    path = tmp_path / STORE_FILENAME
    with Store(path) as store:
        rid = store.create_run("crash", {})
        _begin(store, "k", rid)
        if previous == "complete":
            store.write_evaluation("k", _metrics(2), _samples(3))
    halfway = tmp_path / "halfway"
    proc = _child(_KILLED_WRITER, path, "k", halfway)
    try:
        _wait_for(halfway)
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > 1_000_000  # uncommitted pages really reached the file
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    with Store(path) as store:
        expected = (2, 3) if previous == "complete" else (0, 0)
        assert (len(store.metrics(rid)), len(store.samples(rid))) == expected
        assert store.is_evaluation_complete("k") is (previous == "complete")
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.write_evaluation("k", _metrics(1), _samples(5))  # the lock was released
        assert store.is_evaluation_complete("k") and len(store.samples(rid)) == 5


def test_failed_write_evaluation_keeps_previous_state(store: Store, run_id: str) -> None:
    _begin(store, "k", run_id)
    store.write_evaluation("k", _metrics(2), _samples(3))
    with pytest.raises(StoreError, match="duplicate"):
        store.write_evaluation("k", _metrics(4), _samples(2) + _samples(1))
    with pytest.raises(StoreError, match="unknown keys \\['suite'\\]"):
        store.write_evaluation("k", [{"metric": "x", "value": 1, "suite": "refusal"}], [])
    assert (len(store.metrics(run_id)), len(store.samples(run_id))) == (2, 3)
    assert store.is_evaluation_complete("k")


# -- idempotent writes -------------------------------------------------------------------
def test_rerunning_writes_does_not_duplicate_rows(store: Store) -> None:
    for attempt in range(2):
        rid = store.create_run("again", {"seed": 1}, None, run_id="20260101-000000-abcdef")
        store.upsert_checkpoint(rid, "sft", "sft", None, "h", Path("/c"), "complete", {}, {})
        assert _begin(store, "k", rid) is (attempt == 1)
        store.write_evaluation("k", _metrics(2), _samples(3))
        store.add_metrics("k", [{"metric": "extra", "value": np.float32(0.25), "n": np.int64(3)}])
        store.link_evaluation("k", rid, "sft")
        store.replace_effects(rid, [{"stage": "sft", "metric": "refusal.m0", "effect": 0.1}])
    assert _begin(store, "k", rid) is True
    assert len(store.runs()) == 1 and len(store.checkpoints(rid)) == 1
    assert len(store.evaluations(rid)) == 1 and len(store.samples(rid)) == 3
    metrics = store.metrics(rid).set_index("metric")
    assert len(metrics) == 3 and metrics.loc["extra", "value"] == 0.25 and metrics.loc["extra", "n"] == 3
    store.add_metrics("k", [{"metric": "extra", "value": 0.5}])
    assert store.metrics(rid).set_index("metric").loc["extra", "value"] == 0.5
    assert len(store.effects(rid)) == 1


def test_numpy_scalars_are_stored_as_plain_numbers(store: Store, run_id: str) -> None:
    _begin(store, "k", run_id)
    store.write_evaluation(
        "k", [{"metric": "acc", "value": np.float64(0.75), "n": np.int64(8), "higher_is_better": np.bool_(True)}],
        [{"item_id": "a", "outcome": {"correct": np.bool_(True), "score": np.float32(0.5), "v": np.arange(2)}}])
    row = store._conn.execute("SELECT typeof(value), typeof(n), typeof(higher_is_better) FROM metrics").fetchone()
    assert row == ("real", "integer", "integer")
    assert store.samples(run_id)["outcome"][0] == {"correct": True, "score": 0.5, "v": [0, 1]}


def test_update_sample_outcomes_merges_and_is_atomic(store: Store, run_id: str) -> None:
    _begin(store, "k", run_id)
    store.write_evaluation("k", [], _samples(3))
    assert store.update_sample_outcomes("k", {("item0", 0): {"reward": 1.5}, ("item1", 0): {"reward": -1}}) == 2
    outcomes = store.samples(run_id, eval_key="k").set_index("item_id")["outcome"]
    assert outcomes["item0"] == {"refused": True, "reward": 1.5} and outcomes["item2"] == {"refused": True}
    with pytest.raises(StoreError, match="no sample \\('nope', 0\\)"):
        store.update_sample_outcomes("k", {("item2", 0): {"reward": 9}, ("nope", 0): {"reward": 0}})
    assert "reward" not in store.samples(run_id, eval_key="k").set_index("item_id")["outcome"]["item2"]


def test_evaluation_reused_by_a_later_run(store: Store, run_id: str) -> None:
    _begin(store, "k", run_id)
    store.write_evaluation("k", _metrics(2), _samples(3))
    later = store.create_run("later", {"seed": 0})
    assert _begin(store, "k", later) is True  # complete: only linked, nothing recomputed
    assert set(store.metrics(later)["run_id"]) == {later}
    assert len(store.samples(later, stage="sft", suite="refusal")) == 3
    assert store.evaluations(later)["computed_in_run"].tolist() == [run_id]
    assert len(store.metrics(None)) == 2  # across runs: each evaluation once
    with pytest.raises(StoreError, match="backend='hf', now given 'vllm'"):
        store.begin_evaluation("k", later, "sft", "refusal", "1", "items-h", "vllm", DECODING, None)


def test_a_retrained_stage_replaces_its_evaluation_in_the_run(store: Store, run_id: str) -> None:
    """A resumed run whose stage was retrained (new checkpoint, new eval key) reports only the new
    evaluation of each suite there; the old one stays stored, and other suites keep their links."""
    for key, suite in (("old", "refusal"), ("other", "verbosity")):
        _begin(store, key, run_id, suite=suite)
        store.write_evaluation(key, _metrics(2), _samples(3))
    _begin(store, "new", run_id)
    store.write_evaluation("new", _metrics(2), _samples(3))
    linked = store.evaluations(run_id)
    assert sorted(linked["eval_key"]) == ["new", "other"]
    assert len(store.metrics(run_id, stage="sft", suite="refusal")) == 2  # not 4: no old rows beside new ones
    assert store.is_evaluation_complete("old")  # nothing stored is lost
    store.link_evaluation("old", run_id, "sft")  # linking back swaps again
    assert sorted(store.evaluations(run_id)["eval_key"]) == ["old", "other"]

# -- readers ------------------------------------------------------------------------------
EXPECTED_COLUMNS = {
    "runs": ["run_id", "name", "status", "started_at", "finished_at", "config", "world_card"],
    "checkpoints": ["run_id", "stage", "kind", "parent_stage", "inputs", "content_hash", "path", "status",
                    "metrics", "created_at", "updated_at"],
    "evaluations": ["run_id", "stage", "eval_key", "suite", "suite_version", "items_hash", "backend",
                    "decoding_json", "reward_hash", "status", "created_at", "completed_at", "computed_in_run"],
    "metrics": ["run_id", "stage", "suite", "suite_version", "metric", "value", "ci_low", "ci_high", "n",
                "higher_is_better", "backend", "decoding_json", "reward_hash", "eval_key"],
    "samples": ["run_id", "stage", "suite", "suite_version", "backend", "decoding_json", "eval_key", "item_id",
                "sample_index", "item_hash", "prompt", "response", "outcome"],
    "effects": ["run_id", "stage", "parent_stage", "metric", "effect", "ci_low", "ci_high", "p_value",
                "p_adjusted", "n", "test", "attributed", "expected_direction", "family", "details"],
}


def _read_all(store: Store, rid: str) -> dict[str, pd.DataFrame]:
    return {"runs": store.runs(), "checkpoints": store.checkpoints(rid), "evaluations": store.evaluations(rid),
            "metrics": store.metrics(rid), "samples": store.samples(rid), "effects": store.effects(rid)}


def test_readers_on_an_empty_store_return_typed_empty_frames(store: Store) -> None:
    for name, df in _read_all(store, "none").items():
        assert isinstance(df, pd.DataFrame) and df.empty and list(df.columns) == EXPECTED_COLUMNS[name], name
    assert store.metrics("none")["value"].dtype == "float64"
    assert store.latest_run_id() is None
    with pytest.raises(StoreError, match="has no runs yet"):
        store.require_run()


def test_readers_return_expected_columns_and_values(store: Store, run_id: str) -> None:
    _begin(store, "k", run_id)
    store.write_evaluation("k", _metrics(2), _samples(3))
    store.replace_effects(run_id, [
        {"stage": "sft", "parent_stage": "init", "metric": "refusal.m1", "effect": 0.3, "ci_low": 0.1,
         "ci_high": 0.5, "p_value": 0.001, "p_adjusted": 0.002, "n": 3, "test": "mcnemar",
         "attributed": True, "expected_direction": "increase", "family": "headline", "details": {"flips": [2, 0]}},
        {"stage": "sft", "metric": "refusal.m1[topic=a]", "effect": None, "family": "breakdown"}])
    store.finish_run(run_id, "complete")
    frames = _read_all(store, run_id)
    for name, df in frames.items():
        assert list(df.columns) == EXPECTED_COLUMNS[name], name
    run = frames["runs"].iloc[0]
    assert run["status"] == "complete" and run["config"] == {"seed": 0} and run["finished_at"]
    assert frames["checkpoints"]["stage"].tolist() == ["init", "sft"]  # creation order = lineage order
    assert frames["checkpoints"]["inputs"][1] == {"parent": "h-init"}
    metric = frames["metrics"].set_index("metric").loc["m1"]
    assert (metric["value"], metric["n"], metric["higher_is_better"], metric["suite"]) == (0.1, 10, 1, "refusal")
    assert metric["decoding_json"] == '{"max_new_tokens": 64, "temperature": 0.0}'
    assert frames["samples"]["outcome"].tolist() == [{"refused": True}, {"refused": False}, {"refused": True}]
    effects = frames["effects"]
    assert effects["details"][0] == {"flips": [2, 0]} and effects["attributed"].tolist() == [1, 0]
    assert effects["family"].tolist() == ["headline", "breakdown"] and np.isnan(effects["effect"][1])
    assert store.get_run(run_id)["world_card"] == {"expected_effects": []}
    assert len(store.metrics(run_id, stage="init")) == 0 and len(store.samples(run_id, suite="other")) == 0


def test_run_ids_sort_by_time_and_latest_run(store: Store) -> None:
    first = store.create_run("a", {})
    second = store.create_run("b", {})
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", first)
    assert store.latest_run_id() == second and store.require_run() == second
    assert store.require_run(first) == first
    with pytest.raises(StoreError, match="no run 'zzz'"):
        store.require_run("zzz")


def test_last_change_moves_on_every_write(store: Store, run_id: str) -> None:
    before = store.last_change()
    store.finish_run(run_id, "failed")
    after = store.last_change()
    assert after != before
    store.runs()
    assert store.last_change() == after


# -- read-only mode -----------------------------------------------------------------------
def test_readonly_store_refuses_writes_and_sees_new_data(tmp_path: Path) -> None:
    writer = Store(tmp_path)
    rid = writer.create_run("r", {})
    reader = Store(tmp_path, readonly=True)
    clock = reader.last_change()
    for write in (lambda: reader.create_run("x", {}), lambda: reader.finish_run(rid, "complete"),
                  lambda: reader.replace_effects(rid, []), lambda: reader.add_metrics("k", [])):
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            write()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._conn.execute("DELETE FROM runs")
    writer.finish_run(rid, "complete")
    assert reader.last_change() != clock and reader.runs()["status"].tolist() == ["complete"]
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(reader.latest_run_id()))
    thread.start()
    thread.join()
    assert result == [rid]  # usable from another thread (Streamlit reruns)
    reader.close()
    writer.close()


# -- migrations ---------------------------------------------------------------------------
def test_version_0_file_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # a store written before the schema was versioned
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT NOT NULL, config_json TEXT NOT NULL, "
                     "world_card_json TEXT, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL)")
        conn.execute("INSERT INTO runs VALUES ('old-run', 'legacy', '{}', NULL, '2025-01-01', NULL, 'complete')")
    conn.close()
    with pytest.raises(StoreError, match="schema version 0.*read-write once"):
        Store(path, readonly=True)
    with Store(path) as store:
        assert current_version(store._conn) == SCHEMA_VERSION
        assert store.runs()["run_id"].tolist() == ["old-run"]
        assert store.metrics("old-run").empty


def test_reopening_an_up_to_date_store_is_a_no_op(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.create_run("r", {})
        versions = store._conn.execute("SELECT * FROM schema_version").fetchall()
        clock = store.last_change()
    with Store(tmp_path) as store:
        assert store._conn.execute("SELECT * FROM schema_version").fetchall() == versions
        assert store.last_change() == clock
        assert apply_migrations(store._conn) == []


def test_an_added_migration_upgrades_an_existing_file(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        rid = store.create_run("r", {})
        added = Migration(SCHEMA_VERSION + 1, "runs.notes",
                          lambda conn: conn.execute("ALTER TABLE runs ADD COLUMN notes TEXT"))
        assert apply_migrations(store._conn, [*MIGRATIONS, added]) == [SCHEMA_VERSION + 1]
        assert apply_migrations(store._conn, [*MIGRATIONS, added]) == []
        assert store._conn.execute("SELECT run_id, notes FROM runs").fetchall() == [(rid, None)]
    with pytest.raises(StoreError, match="newer than this harness supports"):
        Store(tmp_path)  # the code only knows SCHEMA_VERSION: refuse rather than misread


def test_a_failing_migration_is_rolled_back(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise ValueError("boom")

    with Store(tmp_path) as store:
        with pytest.raises(ValueError, match="boom"):
            apply_migrations(store._conn, [*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "broken", broken)])
        assert current_version(store._conn) == SCHEMA_VERSION
        assert not store._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone()


# -- paths and errors -----------------------------------------------------------------------
def test_resolve_path_accepts_the_file_or_its_output_dir(tmp_path: Path) -> None:
    Store(tmp_path / "out").close()
    assert Store.resolve_path(tmp_path / "out") == tmp_path / "out" / STORE_FILENAME
    assert Store.resolve_path(tmp_path / "out" / STORE_FILENAME) == tmp_path / "out" / STORE_FILENAME
    Store(tmp_path / "nested" / "x.sqlite").close()
    assert (tmp_path / "nested" / "x.sqlite").is_file()


def test_bad_paths_give_clear_errors_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(StoreNotFoundError, match=re.escape(str(missing))):
        Store(missing, readonly=True)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / STORE_FILENAME))):
        Store.resolve_path(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("this is not a database " * 100)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=f"cannot open results store {re.escape(str(junk))}"):
            Store(junk, readonly=readonly)


def test_writes_name_what_is_missing_or_wrong(store: Store, run_id: str) -> None:
    with pytest.raises(StoreError, match="no run_id 'ghost'"):
        store.upsert_checkpoint("ghost", "sft", "sft", None, "h", "/p", "complete")
    with pytest.raises(StoreError, match="no eval_key 'never-begun'"):
        store.write_evaluation("never-begun", [], [])
    with pytest.raises(StoreError, match="checkpoint status must be one of"):
        store.upsert_checkpoint(run_id, "sft", "sft", None, "h", "/p", "done")
    with pytest.raises(StoreError, match="run status must be one of"):
        store.finish_run(run_id, "running")
    _begin(store, "k", run_id)
    with pytest.raises(StoreError, match="missing keys \\['metric'\\]"):
        store.add_metrics("k", [{"value": 1.0}])
    with pytest.raises(StoreError, match="family must be one of"):
        store.replace_effects(run_id, [{"stage": "sft", "metric": "x", "family": "other"}])
    with pytest.raises(StoreError, match="duplicate \\(stage, metric\\)"):
        store.replace_effects(run_id, [{"stage": "sft", "metric": "x"}] * 2)
