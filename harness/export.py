"""Export a run's results: the formats (:data:`EXPORTERS`, one writer each: ``lm-eval`` here,
``mlflow`` in :mod:`harness.export_mlflow`, ``wandb`` in :mod:`harness.export_wandb`), and the
lm-evaluation-harness-shaped output.

One folder per checkpoint (stage) with ``results.json`` laid out like lm-eval's results file:
``results`` (one entry per suite with its headline metrics, and one per breakdown group,
``<suite>[<group>]``, listed under ``group_subtasks`` so lm-eval's table prints them indented
under the suite, as it prints mmlu's subjects), ``groups``, ``group_subtasks``, ``configs``,
``versions``, ``n-shot``, ``n-samples``, ``higher_is_better``, ``config``, ``task_hashes``, the
run's provenance (``date``, ``git_hash``, ``transformers_version``, ...), plus a ``harness``
block: stage, parent, backend, decoding, CIs. And one ``samples_<suite>.jsonl`` per suite
(lm-eval's per-sample log fields: ``doc_id``, ``doc_hash``, ``arguments``, ``resps``,
``filtered_resps``, and the per-item metric values).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from harness.core.artifacts import git_revision, sha256_text, write_json_atomic, write_text_atomic
from harness.core.registry import Registry
from harness.core.store import Store

Z95 = 1.959963984540054


def _stderr(row: Any) -> float | str:
    lo, hi = row["ci_low"], row["ci_high"]
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or (isinstance(hi, float) and math.isnan(hi)):
        return "N/A"  # lm-eval's marker for "no stderr"
    return float(hi - lo) / (2 * Z95)


def _split(full: str) -> tuple[str, str | None]:
    """`suite.metric[group]` -> (`metric`, `group`); no group -> None."""
    name = full.split(".", 1)[1]
    if name.endswith("]") and "[" in name:
        base, group = name[:-1].split("[", 1)
        return base, group
    return name, None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def export_lm_eval(store: Store, run_id: str, out: Path) -> list[Path]:
    """Write results + samples for every checkpoint of ``run_id`` under ``out/<stage>/``; returns the files."""
    run = store.get_run(run_id)
    metrics = store.metrics(run_id)
    checkpoints = store.checkpoints(run_id).set_index("stage")
    written: list[Path] = []
    for stage, rows in metrics.groupby("stage", sort=False):
        results: dict[str, dict[str, Any]] = {}
        subtasks: dict[str, list[str]] = {}
        versions, n_samples, higher, ci = {}, {}, {}, {}
        for _, row in rows.iterrows():
            suite = row["suite"]
            metric, group = _split(row["metric"])
            task = suite if group is None else f"{suite}[{group}]"
            if group is not None and task not in subtasks.setdefault(suite, []):
                subtasks[suite].append(task)
            entry = results.setdefault(task, {"alias": suite if group is None else group, "name": task})
            key = f"{metric},none"
            entry[key] = None if row["value"] is None or math.isnan(row["value"]) else float(row["value"])
            entry[f"{metric}_stderr,none"] = _stderr(row)
            n = int(row["n"] or 0)
            entry["sample_len"] = max(int(entry.get("sample_len", 0)), n)
            versions[task] = row["suite_version"]
            higher.setdefault(task, {})[metric] = bool(row["higher_is_better"])
            ci.setdefault(suite, {})[row["metric"].split(".", 1)[1]] = [row["ci_low"], row["ci_high"]]
        for task, entry in results.items():
            if task not in subtasks:  # leaves: lm-eval gives n-samples for tasks, not for groups
                n_samples[task] = {"original": entry["sample_len"], "effective": entry["sample_len"]}
        for suite in subtasks:
            results.setdefault(suite, {"alias": suite, "name": suite, "sample_len": 0})
            versions.setdefault(suite, rows[rows["suite"] == suite]["suite_version"].iloc[0])
        # lm-eval lists a group before its subtasks
        order = [t for s in dict.fromkeys(rows["suite"]) for t in [s, *subtasks.get(s, [])] if t in results]
        results = {t: results[t] for t in order}
        ckpt = checkpoints.loc[stage] if stage in checkpoints.index else None
        first = rows.iloc[0]
        samples = store.samples(run_id, stage=stage)
        task_hashes = {suite: sha256_text("".join(str(h) for h in srows["item_hash"]))
                       for suite, srows in samples.groupby("suite", sort=False)}
        model_name = str(ckpt["path"]) if ckpt is not None else str(stage)
        doc = {
            "results": results,
            "groups": {s: results[s] for s in subtasks},
            "group_subtasks": {s: list(t) for s, t in subtasks.items()},
            "configs": {s: {"task": s, "num_fewshot": 0, "metadata": {"version": versions[s]}}
                        for s in dict.fromkeys(rows["suite"])},
            "versions": versions,
            "n-shot": {task: 0 for task in results},
            "higher_is_better": higher,
            "n-samples": n_samples,
            "config": {"model": "harness", "model_args": str(ckpt["path"]) if ckpt is not None else None,
                       "batch_size": None, "batch_sizes": [], "device": None, "use_cache": None, "limit": None,
                       "bootstrap_iters": 0, "gen_kwargs": json.loads(first["decoding_json"] or "{}"),
                       "random_seed": None, "numpy_seed": None, "torch_seed": None, "fewshot_seed": None},
            "git_hash": git_revision(),
            "date": datetime.fromisoformat(str(run["started_at"])).timestamp() if run.get("started_at") else None,
            "task_hashes": task_hashes,
            "model_source": "harness",
            "model_name": model_name,
            "model_name_sanitized": re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model_name),
            "system_instruction": None,
            "system_instruction_sha": None,
            "fewshot_as_multiturn": False,
            "chat_template": None,
            "chat_template_sha": None,
            "transformers_version": _version("transformers"),
            "lm_eval_version": _version("lm_eval"),
            "harness": {
                "run_id": run_id, "run_name": run["name"], "stage": stage,
                "kind": ckpt["kind"] if ckpt is not None else None,
                "parent": ckpt["parent_stage"] if ckpt is not None else None,
                "content_hash": ckpt["content_hash"] if ckpt is not None else None,
                "backend": first["backend"], "decoding": json.loads(first["decoding_json"] or "{}"), "ci95": ci,
            },
        }
        folder = out / str(stage)
        write_json_atomic(folder / "results.json", doc)
        written.append(folder / "results.json")
        for suite, srows in samples.groupby("suite", sort=False):
            lines = []
            for doc_id, (_, s) in enumerate(srows.iterrows()):
                outcome = {k: v for k, v in (s["outcome"] or {}).items()}
                lines.append(json.dumps({
                    "doc_id": doc_id, "item_id": s["item_id"], "sample_index": int(s["sample_index"]),
                    "doc_hash": s["item_hash"], "prompt_hash": sha256_text(s["prompt"] or ""),
                    "target_hash": sha256_text(""), "filter": "none",
                    "metrics": sorted(k.split(".", 1)[1] for k in outcome if k.startswith(f"{suite}.")),
                    "doc": {"id": s["item_id"], "prompt": s["prompt"]},
                    "arguments": [[s["prompt"]]], "resps": [[s["response"]]], "filtered_resps": [s["response"]],
                    **outcome,
                    # lm-eval's bare per-sample metric values (`acc`), from the headline outcomes
                    **{k.split(".", 1)[1]: v for k, v in outcome.items() if k.startswith(f"{suite}.") and "[" not in k},
                }, sort_keys=True, default=str))
            path = folder / f"samples_{suite}.jsonl"
            write_text_atomic(path, "\n".join(lines) + "\n")
            written.append(path)
    return written


# --------------------------------------------------------------------------- formats


class ExportError(Exception):
    """An export that cannot be made as asked (a missing optional dependency, a bad target)."""


@dataclass(frozen=True)
class ExportOptions:
    """Where an export goes. ``out``: the format's local folder (lm-eval: required; mlflow: the
    file store, default ``<store dir>/mlruns``; wandb: the folder holding ``wandb/``, default the
    store's folder). ``store_dir``: the results store's folder (its run's output_dir)."""

    store_dir: Path
    out: Path | None = None
    tracking_uri: str | None = None
    experiment: str | None = None


class Exporter(Protocol):
    """One export format: writes ``run_id`` of ``store`` and returns the lines to print."""

    def __call__(self, store: Store, run_id: str, options: ExportOptions) -> list[str]: ...


def write_lm_eval(store: Store, run_id: str, options: ExportOptions) -> list[str]:
    if options.out is None:
        raise ExportError("--format lm-eval needs --out DIR")
    written = export_lm_eval(store, run_id, options.out)
    return [f"wrote {len(written)} files to {options.out}"]


EXPORTERS: Registry[Exporter] = Registry("export format", {
    "lm-eval": "harness.export:write_lm_eval",
    "mlflow": "harness.export_mlflow:write_mlflow",
    "wandb": "harness.export_wandb:write_wandb",
})
