"""What an experiment tracker (MLflow, W&B) receives from one run of the results store.

A :class:`RunRecord` is the run as trackers see it: the run's parameters (its config,
flattened to dotted keys), one :class:`StageRecord` per evaluated or trained stage (the stage's
own config, its checkpoint, every metric with its confidence interval as ``<metric>``,
``<metric>.ci_low``, ``<metric>.ci_high`` (a breakdown ``suite.metric[group]`` as
``suite.metric.group``), and its training numbers as ``train.<key>``), the
effects table as CSV and the Markdown report. The writers (``harness.export_mlflow``,
``harness.export_wandb``) only translate this record into their tracker's calls.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

import pandas as pd

from harness.core.artifacts import git_revision
from harness.core.store import Store
from harness.export import ExportError
from harness.report import render_report

# harness run / checkpoint status -> the tracker's terminal status
STATUS = {"complete": "FINISHED", "failed": "FAILED"}


@dataclass(frozen=True)
class StageRecord:
    stage: str
    kind: str
    parent: str | None
    status: str
    started_ms: int | None
    ended_ms: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    effects_csv: str


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    name: str
    status: str
    started_ms: int | None
    ended_ms: int | None
    config: dict[str, Any]
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    stages: list[StageRecord] = field(default_factory=list)
    effects_csv: str = ""
    report_md: str = ""


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` or fail naming the optional dependency group that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"--format {extra} needs the optional {extra!r} dependencies, which are not installed "
                          f"({exc}); install them with: pip install 'alignment-harness[{extra}]'") from exc


def metric_key(name: str) -> str:
    """A metric name every tracker and MLflow's file store accept: ``suite.metric[group]`` ->
    ``suite.metric.group`` (not ``/``: the file store keeps ``suite.metric`` as a file, so it cannot
    also be a folder); any character outside letters, digits, ``_-. `` becomes ``_``."""
    if name.endswith("]") and "[" in name:
        base, group = name[:-1].split("[", 1)
        name = f"{base}.{group}"
    return re.sub(r"[^\w\-. ]", "_", name)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}``; a list of named mappings (stages, suites) is keyed
    by name, any other list is one JSON value."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) and "name" in v for v in value):
        return flatten({str(v["name"]): {k: x for k, x in v.items() if k != "name"} for v in value}, prefix)
    if isinstance(value, list | tuple):
        return {metric_key(prefix): json.dumps(value, default=str)}
    return {metric_key(prefix): str(value)}


def _ms(stamp: Any) -> int | None:
    if not stamp or (isinstance(stamp, float) and math.isnan(stamp)):
        return None
    return int(datetime.fromisoformat(str(stamp)).timestamp() * 1000)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _stage_metrics(rows: pd.DataFrame, training: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows.itertuples():
        key = metric_key(str(row.metric))
        for suffix, value in (("", row.value), (".ci_low", row.ci_low), (".ci_high", row.ci_high)):
            if (number := _finite(value)) is not None:
                out[key + suffix] = number
    for key, value in (training or {}).items():
        if (number := _finite(value)) is not None:
            out[metric_key(f"train.{key}")] = number
    return out


def _effects_csv(effects: pd.DataFrame) -> str:
    table = effects.drop(columns=["run_id"], errors="ignore").copy()
    if "details" in table:
        table["details"] = [json.dumps(d, sort_keys=True, default=str) for d in table["details"]]
    return table.to_csv(index=False)


def run_record(store: Store, run_id: str) -> RunRecord:
    """Everything a tracker logs for ``run_id``, read from ``store``."""
    run = store.get_run(run_id)
    config = dict(run.get("config") or {})
    metrics, checkpoints, effects = store.metrics(run_id), store.checkpoints(run_id), store.effects(run_id)
    stage_configs = {str(s.get("name")): s for s in config.get("stages") or [] if isinstance(s, Mapping)}
    ckpts = {str(c["stage"]): c for c in checkpoints.to_dict("records")}
    order = list(dict.fromkeys([*ckpts, *metrics["stage"].astype(str)]))
    stages = []
    for stage in order:
        ckpt, rows = ckpts.get(stage, {}), metrics[metrics["stage"] == stage]
        params = flatten({k: v for k, v in stage_configs.get(stage, {}).items() if k != "name"})
        params.update({k: str(v) for k, v in {
            "kind": ckpt.get("kind"), "parent_stage": ckpt.get("parent_stage"),
            "content_hash": ckpt.get("content_hash"), "checkpoint_path": ckpt.get("path"),
            "backend": rows["backend"].iloc[0] if not rows.empty else None,
            "decoding": rows["decoding_json"].iloc[0] if not rows.empty else None}.items() if _present(v)})
        stages.append(StageRecord(
            stage=stage, kind=str(ckpt.get("kind") or "evaluation"),
            parent=ckpt.get("parent_stage") if _present(ckpt.get("parent_stage")) else None,
            status=STATUS.get(str(ckpt.get("status", "complete")), "KILLED"),
            started_ms=_ms(ckpt.get("created_at")), ended_ms=_ms(ckpt.get("updated_at")), params=params,
            metrics=_stage_metrics(rows, ckpt.get("metrics") or {}),
            effects_csv=_effects_csv(effects[effects["stage"] == stage]) if not effects.empty else ""))
    headline = effects[effects["family"] == "headline"] if not effects.empty else effects
    return RunRecord(
        run_id=run_id, name=str(run.get("name") or run_id), status=STATUS.get(str(run.get("status")), "KILLED"),
        started_ms=_ms(run.get("started_at")), ended_ms=_ms(run.get("finished_at")), config=config,
        params=flatten(config),
        tags={"harness.run_id": run_id, "harness.run_name": str(run.get("name")),
              "harness.status": str(run.get("status")), "harness.store": str(store.path),
              "harness.exported_by_git_revision": str(git_revision() or "")},  # the exporting checkout, not the run's code
        metrics={"stages": float(len(stages)), "effects.headline": float(len(headline)),
                 "effects.attributed": float(headline["attributed"].fillna(0).astype(bool).sum())
                 if not headline.empty else 0.0},
        stages=stages, effects_csv=_effects_csv(effects), report_md=render_report(store, run_id))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""
