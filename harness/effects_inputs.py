"""What a run's stored effects were computed from, so a rerun that changed nothing keeps them.

The stage effects are a function of the evaluations linked to the run, its checkpoints, the world
card, the attribution spec and the attribution code (with the numerical libraries' versions).
:func:`inputs_key` hashes all of that; ``harness.report.compute_and_store_effects`` writes it into
each stored effect's details (``inputs_key``), and :func:`effects_current` tells the pipeline that
the stored effects already answer a no-op rerun, without importing the statistics (scipy, seconds).
"""

from __future__ import annotations

from typing import Any

from harness.core.artifacts import canonical_json, sha256_text
from harness.core.fingerprint import code_fingerprint
from harness.core.spec import AttributionSpec
from harness.core.store import Store

ATTRIBUTION_CODE = ("harness.report",)  # its import closure computes the effects
NUMERICAL_LIBRARIES = ("numpy", "scipy", "pandas")
KEY = "inputs_key"  # the details field


def inputs_key(store: Store, run_id: str, spec: AttributionSpec) -> str:
    """sha256 of everything the run's effects are computed from (module docstring)."""
    evaluations = store.evaluations(run_id)
    checkpoints = store.checkpoints(run_id)
    return sha256_text(canonical_json({
        "evaluations": sorted(zip(evaluations["stage"], evaluations["eval_key"], evaluations["status"],
                                  strict=True)),
        "checkpoints": [[r["stage"], r["kind"], r["parent_stage"], r["content_hash"], r["status"], r["inputs"]]
                        for r in checkpoints.to_dict("records")],
        "world_card": store.get_run(run_id).get("world_card"),
        "spec": spec.model_dump(mode="json"),
        "code": code_fingerprint(ATTRIBUTION_CODE, NUMERICAL_LIBRARIES),
    }))


def effects_current(store: Store, run_id: str, spec: AttributionSpec) -> bool:
    """Whether the run has stored effects and every one was computed from what the run holds now."""
    stored = store.effects(run_id)
    if stored.empty:
        return False
    key = inputs_key(store, run_id, spec)
    return all((details or {}).get(KEY) == key for details in stored["details"])


def stamp(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """``rows`` with ``key`` in each one's details."""
    return [{**r, "details": {**(r.get("details") or {}), KEY: key}} for r in rows]
