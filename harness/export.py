"""Export a run's results shaped like lm-evaluation-harness output.

One folder per checkpoint (stage) with ``results.json`` (``results``, ``versions``,
``n-samples``, ``higher_is_better``, ``config``, plus a ``harness`` block: stage, parent,
backend, decoding, CIs) and one ``samples_<suite>.jsonl`` per suite (lm-eval's per-sample
log fields: ``doc_id``, ``doc_hash``, ``arguments``, ``resps``, ``filtered_resps``, and the
per-item metric values).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.artifacts import sha256_text, write_json_atomic, write_text_atomic
from harness.store import Store

Z95 = 1.959963984540054


def _stderr(row: Any) -> float | str:
    lo, hi = row["ci_low"], row["ci_high"]
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or (isinstance(hi, float) and math.isnan(hi)):
        return "N/A"  # lm-eval's marker for "no stderr"
    return float(hi - lo) / (2 * Z95)


def _metric_key(full: str) -> str:
    """`suite.metric[group]` -> lm-eval's `metric[group],none` (filter `none`)."""
    return f"{full.split('.', 1)[1]},none"


def export_lm_eval(store: Store, run_id: str, out: Path) -> list[Path]:
    """Write results + samples for every checkpoint of ``run_id`` under ``out/<stage>/``; returns the files."""
    run = store.get_run(run_id)
    metrics = store.metrics(run_id)
    checkpoints = store.checkpoints(run_id).set_index("stage")
    written: list[Path] = []
    for stage, rows in metrics.groupby("stage", sort=False):
        results: dict[str, dict[str, Any]] = {}
        versions, n_samples, higher, ci = {}, {}, {}, {}
        for _, row in rows.iterrows():
            suite = row["suite"]
            key = _metric_key(row["metric"])
            task = results.setdefault(suite, {"alias": suite})
            task[key] = None if row["value"] is None or math.isnan(row["value"]) else float(row["value"])
            task[key.replace(",", "_stderr,", 1)] = _stderr(row)
            versions[suite] = row["suite_version"]
            n = int(row["n"] or 0)
            n_samples.setdefault(suite, {"original": n, "effective": n})
            n_samples[suite]["original"] = max(n_samples[suite]["original"], n)
            n_samples[suite]["effective"] = n_samples[suite]["original"]
            higher.setdefault(suite, {})[key.split(",")[0]] = bool(row["higher_is_better"])
            ci.setdefault(suite, {})[key.split(",")[0]] = [row["ci_low"], row["ci_high"]]
        ckpt = checkpoints.loc[stage] if stage in checkpoints.index else None
        first = rows.iloc[0]
        doc = {
            "results": results,
            "versions": versions,
            "n-shot": {suite: 0 for suite in results},
            "n-samples": n_samples,
            "higher_is_better": higher,
            "config": {"model": "harness", "model_args": str(ckpt["path"]) if ckpt is not None else None,
                       "batch_size": None, "device": None},
            "model_name": str(ckpt["path"]) if ckpt is not None else stage,
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
        samples = store.samples(run_id, stage=stage)
        for suite, srows in samples.groupby("suite", sort=False):
            lines = []
            for doc_id, (_, s) in enumerate(srows.iterrows()):
                outcome = {k: v for k, v in (s["outcome"] or {}).items()}
                lines.append(json.dumps({
                    "doc_id": doc_id, "item_id": s["item_id"], "sample_index": int(s["sample_index"]),
                    "doc_hash": s["item_hash"], "prompt_hash": sha256_text(s["prompt"] or ""),
                    "arguments": [[s["prompt"]]], "resps": [[s["response"]]], "filtered_resps": [s["response"]],
                    **outcome,
                }, sort_keys=True, default=str))
            path = folder / f"samples_{suite}.jsonl"
            write_text_atomic(path, "\n".join(lines) + "\n")
            written.append(path)
    return written
