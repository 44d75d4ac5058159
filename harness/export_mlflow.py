"""``harness export --format mlflow``: one MLflow run per harness run, a nested run per stage.

The parent run (named by the harness run id, in the experiment named by the run's config name
unless ``--experiment`` says otherwise) holds the config as params, the effects table
(``effects.csv``), the Markdown report (``report.md``) and the config (``config.json``) as
artifacts. Each stage is a child run (``mlflow.parentRunId``) with the stage's own config and
checkpoint as params, every metric with its CI (``<metric>``, ``<metric>.ci_low``,
``<metric>.ci_high``) and its training numbers (``train.<key>``), and the stage's rows of the
effects table. Exporting the same harness run again replaces its earlier export.

The default target is a local file store, ``<output_dir>/mlruns``. MLflow 3 keeps file stores in
maintenance mode and opens them only with ``MLFLOW_ALLOW_FILE_STORE=true``, which this sets
for itself (and which a reader of the store needs too); ``--tracking-uri`` takes any other
store (``sqlite:///...``, ``http://...``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from typing import Any

from harness.core.store import Store
from harness.export import ExportError, ExportOptions
from harness.export_tracking import RunRecord, require_extra, run_record

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH_PARAMS, BATCH_METRICS = 100, 1000  # MLflow's limits per log_batch call


def tracking_uri(options: ExportOptions) -> str:
    """``--tracking-uri``, else the file store at ``--out`` or ``<store dir>/mlruns``."""
    if options.tracking_uri:
        return options.tracking_uri
    return (options.out or options.store_dir / "mlruns").resolve().as_uri()


def _log(client: Any, entities: Any, run: str, params: Mapping[str, str], metrics: Mapping[str, float],
         timestamp: int) -> None:
    ps = [entities.Param(k, v if len(v) <= MAX_PARAM_CHARS else v[:MAX_PARAM_CHARS - 1] + "…")
          for k, v in params.items()]
    ms = [entities.Metric(k, v, timestamp, 0) for k, v in metrics.items()]
    for i in range(0, len(ps), BATCH_PARAMS):
        client.log_batch(run, params=ps[i:i + BATCH_PARAMS])
    for i in range(0, len(ms), BATCH_METRICS):
        client.log_batch(run, metrics=ms[i:i + BATCH_METRICS])


def _write(client: Any, entities: Any, experiment_id: str, record: RunRecord) -> str:
    stamp = record.ended_ms or record.started_ms or 0
    parent = client.create_run(experiment_id, start_time=record.started_ms, tags=record.tags,
                               run_name=record.run_id).info.run_id
    try:
        _log(client, entities, parent, record.params, record.metrics, stamp)
        client.log_text(parent, record.report_md, "report.md")
        client.log_text(parent, record.effects_csv, "effects.csv")
        client.log_text(parent, json.dumps(record.config, indent=2, sort_keys=True, default=str), "config.json")
        for stage in record.stages:
            tags = {**record.tags, "mlflow.parentRunId": parent, "harness.stage": stage.stage,
                    "harness.kind": stage.kind, "harness.parent_stage": stage.parent or ""}
            child = client.create_run(experiment_id, start_time=stage.started_ms, tags=tags,
                                      run_name=stage.stage).info.run_id
            _log(client, entities, child, stage.params, stage.metrics, stage.ended_ms or stamp)
            if stage.effects_csv:
                client.log_text(child, stage.effects_csv, "effects.csv")
            client.set_terminated(child, stage.status, end_time=stage.ended_ms)
    except Exception:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent, record.status, end_time=record.ended_ms)
    return parent


def _sql_hint(uri: str) -> str:
    """mlflow-skinny opens sqlite:// and other SQL stores only with SQLAlchemy and Alembic installed."""
    sql = uri.split(":", 1)[0].split("+", 1)[0] in {"sqlite", "postgresql", "mysql", "mssql"}
    if sql and importlib.util.find_spec("sqlalchemy") is None:
        return " (a SQL tracking store needs: pip install sqlalchemy alembic, or the full mlflow package)"
    return ""


def write_mlflow(store: Store, run_id: str, options: ExportOptions) -> list[str]:
    uri = tracking_uri(options)
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking = require_extra("mlflow.tracking", "mlflow")
    entities = require_extra("mlflow.entities", "mlflow")
    failure = require_extra("mlflow.exceptions", "mlflow").MlflowException
    record = run_record(store, run_id)
    name = options.experiment or record.name
    try:
        client = tracking.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        earlier = client.search_runs([experiment_id], filter_string=f"tags.`harness.run_id` = '{run_id}'",
                                     max_results=10000)
        for old in earlier:
            client.delete_run(old.info.run_id)
        parent = _write(client, entities, experiment_id, record)
    except (failure, ImportError) as exc:
        raise ExportError(f"MLflow tracking store {uri}: {getattr(exc, 'message', exc)}{_sql_hint(uri)}") from exc
    lines = [f"logged MLflow run {parent} (harness run {run_id}) with {len(record.stages)} nested stage runs "
             f"to experiment {name!r} at {uri}"]
    if earlier:
        lines.append(f"replaced this run's earlier export ({len(earlier)} MLflow runs marked deleted)")
    env = "MLFLOW_ALLOW_FILE_STORE=true " if uri.startswith("file:") else ""
    lines.append(f"read it back: {env}python -c \"import mlflow; mlflow.set_tracking_uri('{uri}'); "
                 f"print(mlflow.search_runs(experiment_names=['{name}']))\"")
    return lines
