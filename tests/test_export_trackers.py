"""`harness export --format mlflow|wandb` against the real libraries: a local MLflow file store read
back through MLflow's own client (`mlflow.search_runs`, artifacts), and W&B offline run folders
read back from their transaction log. Both libraries are the optional `mlflow` / `wandb` extras
(in `.[dev]`); without them these tests skip, and the missing-extra errors are tested anyway."""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dashboard_fixtures import DEMO_STAGES, make_demo_store
from typer.testing import CliRunner

from harness.cli import app
from harness.core.store import Store
from harness.export import EXPORTERS, ExportError, ExportOptions
from harness.export_tracking import flatten, metric_key


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A synthetic run (six stages, four suites, stored effects) in its own output_dir."""
    out = tmp_path_factory.mktemp("demo-out")
    return out, make_demo_store(out / "results.sqlite")


def _export(*args: str) -> Any:
    result = CliRunner().invoke(app, ["export", *args])
    assert result.exit_code == 0, result.output
    return result


def _stored(out: Path, run_id: str) -> tuple[Any, Any]:
    with Store(out / "results.sqlite", readonly=True) as st:
        return st.metrics(run_id), st.effects(run_id)


def test_metric_names_and_params() -> None:
    assert metric_key("refusal.harmful_refusal_rate[boats]") == "refusal.harmful_refusal_rate.boats"
    assert metric_key("a.b (x)+y") == "a.b _x__y"
    got = flatten({"seed": 0, "stages": [{"name": "sft", "max_steps": 20, "data": None}],
                   "suites": ["refusal"], "backend": {"decoding": {"top_p": 1.0}}})
    assert got == {"seed": "0", "stages.sft.max_steps": "20", "stages.sft.data": "None",
                   "suites": '["refusal"]', "backend.decoding.top_p": "1.0"}


@pytest.mark.parametrize(("fmt", "extra"), [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_missing_extra_is_named(demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch,
                                fmt: str, extra: str) -> None:
    for module in ("mlflow", "mlflow.tracking", "mlflow.entities", "mlflow.exceptions", "wandb"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    result = CliRunner().invoke(app, ["export", "--store", str(demo[0]), "--format", fmt])
    assert result.exit_code == 2
    assert f"alignment-harness[{extra}]" in result.output


def test_unknown_format_and_lm_eval_needs_out(demo: tuple[Path, str]) -> None:
    result = CliRunner().invoke(app, ["export", "--store", str(demo[0]), "--format", "mlfow"])
    assert result.exit_code == 2 and "did you mean 'mlflow'" in result.output
    with Store(demo[0] / "results.sqlite", readonly=True) as st, pytest.raises(ExportError, match="--out"):
        EXPORTERS.get("lm-eval")(st, demo[1], ExportOptions(demo[0]))


def test_mlflow_parent_with_a_child_per_stage(demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow.tracking", reason="the 'mlflow' extra (mlflow-skinny) is not installed")
    import mlflow

    out, run_id = demo
    store_uri = (out / "mlruns").resolve().as_uri()  # the default: <output_dir>/mlruns
    result = _export("--store", str(out), "--format", "mlflow")
    assert store_uri in result.output
    _export("--store", str(out), "--format", "mlflow")  # a second export replaces the first

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(store_uri)
    try:
        runs = mlflow.search_runs(experiment_names=["demo-world"])
    finally:
        mlflow.set_tracking_uri(None)
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 1 and len(runs) == 1 + len(DEMO_STAGES)
    parent = parents.iloc[0]
    assert parent["tags.mlflow.runName"] == run_id and parent["tags.harness.run_id"] == run_id
    assert parent["status"] == "FINISHED" and parent["params.seed"] == "0" and parent["params.backend.name"] == "hf"
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]].set_index("tags.mlflow.runName")
    assert sorted(children.index) == sorted(s for s, _, _ in DEMO_STAGES)
    assert children.loc["ppo", "params.kind"] == "ppo" and children.loc["ppo", "params.parent_stage"] == "sft"

    metrics, effects = _stored(out, run_id)
    for row in metrics[metrics["stage"].isin(["sft", "ppo"])].itertuples():
        key = f"metrics.{metric_key(row.metric)}"
        for suffix, want in (("", row.value), (".ci_low", row.ci_low), (".ci_high", row.ci_high)):
            if not math.isnan(want):
                assert children.loc[row.stage, key + suffix] == pytest.approx(want), (row.stage, key + suffix)
    assert children.loc["ppo", "metrics.refusal.harmful_refusal_rate.ci_high"] > 0

    client = mlflow.MlflowClient(tracking_uri=store_uri)
    names = {a.path for a in client.list_artifacts(parent["run_id"])}
    assert {"report.md", "effects.csv", "config.json"} <= names
    root = Path(client.download_artifacts(parent["run_id"], "", str(out / "artifacts")))
    assert (root / "report.md").read_text().startswith("# Attribution report — demo-world")
    assert len((root / "effects.csv").read_text().strip().splitlines()) - 1 == len(effects)


def _wandb_records(path: Path) -> list[Any]:
    """The records of a W&B transaction log (`run-<id>.wandb`): a 7-byte `:W&B` header, then
    LevelDB-log records in 32 KiB blocks (7-byte header: crc32, length, type; FULL=1, FIRST=2,
    MIDDLE=3, LAST=4), each record a protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunk, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero-filled rest of a block
            pos += block - pos % block
            continue
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def test_wandb_offline_runs(demo: tuple[Path, str], tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="the 'wandb' extra is not installed")
    out, run_id = demo
    result = _export("--store", str(out), "--format", "wandb", "--out", str(tmp_path))
    assert "wandb sync" in result.output
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 + len(DEMO_STAGES)
    runs: dict[str, tuple[Any, dict[str, float]]] = {}
    for folder in folders:
        log = next(folder.glob("run-*.wandb"))
        for _ in range(60):  # wandb's service may still be flushing the log when finish() returns
            records = _wandb_records(log)
            kinds = [r.WhichOneof("record_type") for r in records]
            if "exit" in kinds:
                break
            time.sleep(0.5)
        assert "run" in kinds and "exit" in kinds, (folder.name, kinds)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        summary = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "summary"
                   for u in r.summary.update if u.key}
        runs[run.display_name] = (run, summary)
    assert {r.run_group for r, _ in runs.values()} == {run_id}
    assert runs[run_id][0].job_type == "run"
    head = next(f for f in folders if f.name.endswith(run_id))
    assert (head / "files" / "report.md").read_text().startswith("# Attribution report")
    assert (head / "files" / "effects.csv").is_file() and not (head / "files" / "report.md").is_symlink()

    metrics, _ = _stored(out, run_id)
    run, summary = runs[f"{run_id}/ppo"]
    assert run.job_type == "stage" and run.run_id == f"{run_id}_ppo"
    for row in metrics[metrics["stage"] == "ppo"].dropna(subset=["value", "ci_low"]).itertuples():
        key = metric_key(row.metric)
        assert summary[key] == pytest.approx(row.value) and summary[f"{key}.ci_low"] == pytest.approx(row.ci_low)
    assert summary["refusal.harmful_refusal_rate.ci_high"] > 0
