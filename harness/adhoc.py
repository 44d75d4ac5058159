"""`harness eval`: suites on one checkpoint outside a pipeline, optionally recorded in a store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.config import BackendSpec, SuiteSpec
from harness.core import artifacts
from harness.eval_runner import world_items
from harness.evaluate import evaluate, store_result


def checkpoint_identity(ckpt: Path, kind: str | None) -> tuple[str, str]:
    """(kind, content hash) from the manifest of a harness checkpoint, else a fingerprint of the folder."""
    if (ckpt / artifacts.MANIFEST).is_file():
        manifest = artifacts.require_complete(ckpt)
        return kind or manifest.kind, manifest.content_hash
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt}: not a checkpoint folder")
    return kind or "sft", artifacts.fingerprint_paths([ckpt])


def evaluate_checkpoint(
    ckpt: Path,
    suites: list[str],
    data: Path | None,
    world: Path | None,
    backend: str,
    reward: Path | None,
    kind: str | None,
    store_path: Path | None,
    max_items: int | None,
) -> pd.DataFrame:
    """Run ``suites`` on ``ckpt``; write them to the store when given; return the metrics table."""
    from suites import SUITES

    for name in suites:
        if name not in SUITES:
            raise KeyError(SUITES.unknown_message(name))
    kind, content_hash = checkpoint_identity(Path(ckpt), kind)
    card = None
    if world is not None:
        from harness.world import load_card

        card = load_card(world)
    items = world_items(world)
    specs = [SuiteSpec(name=n, data=str(data) if data else None, max_items=max_items) for n in suites]
    results = evaluate(ckpt, kind, specs, BackendSpec(name=backend), items, card, reward)
    if store_path is not None:
        from harness.core.store import Store

        target = store_path / artifacts.STORE_FILENAME if store_path.is_dir() else store_path
        with Store(target) as store:
            run_id = store.create_run(f"eval {Path(ckpt).name}", {"checkpoint": str(ckpt), "suites": suites}, card)
            store.upsert_checkpoint(run_id, kind, kind, None, content_hash, str(ckpt), "complete")
            for result in results:
                store_result(store, run_id, kind, content_hash, result)
            store.finish_run(run_id, "complete")
    rows = [{"suite": r.suite, **m.store_row()} for r in results for m in r.metrics]
    return pd.DataFrame(rows)
