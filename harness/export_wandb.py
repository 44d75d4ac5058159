"""``harness export --format wandb``: the run as offline Weights & Biases runs, synced later.

W&B has no nested runs, so a harness run becomes a group (``group=<run id>``): one W&B run for
the harness run (``job_type="run"``: the config, the effects table as a ``wandb.Table``, and
``report.md`` / ``effects.csv`` as files) and one per stage (``job_type="stage"``: the stage's
config, every metric with its CI as ``<metric>``, ``<metric>.ci_low``, ``<metric>.ci_high`` and
its training numbers as ``train.<key>`` in the summary). Everything is written offline under
``<out or store dir>/wandb/offline-run-*``; ``wandb sync`` on those folders uploads them. The W&B
run ids are ``<run id>`` and ``<run id>_<stage>``, so syncing a later export updates those runs.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.core.store import Store
from harness.export import ExportOptions
from harness.export_tracking import RunRecord, require_extra, run_record


def _run(wandb: Any, root: Path, project: str, record: RunRecord, name: str, job_type: str,
         config: Mapping[str, Any], summary: Mapping[str, Any], files: Mapping[str, str]) -> Path:
    settings = wandb.Settings(mode="offline", silent=True, console="off", save_code=False, disable_git=True,
                              disable_job_creation=True, x_save_requirements=False, x_disable_stats=True,
                              x_disable_meta=True, x_disable_machine_info=True)  # the run, not this machine
    run = wandb.init(project=project, dir=str(root), id=re.sub(r"[^\w\-.]", "_", name)[:64], name=name,
                     group=record.run_id, job_type=job_type,
                     config=dict(config), tags=[record.name], settings=settings, reinit="create_new")
    try:
        run.summary.update(dict(summary))
        for filename, text in files.items():  # written into the run's files/ folder: synced as they are
            (Path(run.dir) / filename).write_text(text, encoding="utf-8")
            run.save(str(Path(run.dir) / filename), base_path=run.dir, policy="now")
        if files.get("effects.csv"):
            run.log({"effects": wandb.Table(dataframe=pd.read_csv(io.StringIO(files["effects.csv"])))})
        return Path(run.dir).parent
    finally:
        run.finish()


def write_wandb(store: Store, run_id: str, options: ExportOptions) -> list[str]:
    wandb = require_extra("wandb", "wandb")
    record = run_record(store, run_id)
    root = (options.out or options.store_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    project = options.experiment or record.name
    dirs = [_run(wandb, root, project, record, record.run_id, "run", record.config,
                 {**record.metrics, **record.tags},
                 {"report.md": record.report_md, "effects.csv": record.effects_csv})]
    for stage in record.stages:
        config = {**stage.params, "stage": stage.stage, "run_id": record.run_id, "status": stage.status}
        dirs.append(_run(wandb, root, project, record, f"{record.run_id}/{stage.stage}", "stage", config,
                         stage.metrics, {"effects.csv": stage.effects_csv} if stage.effects_csv else {}))
    return [f"wrote {len(dirs)} offline W&B runs (harness run {run_id}: 1 + {len(record.stages)} stages, "
            f"group {run_id!r}, project {project!r}) under {root / 'wandb'}",
            f"upload them with: cd {root / 'wandb'} && wandb sync {' '.join(d.name for d in dirs)}"]
