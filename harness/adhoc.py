"""`harness eval`: suites on one checkpoint outside a pipeline, optionally recorded in a store.

Items: ``--data`` (one suite), else ``--world``'s, else those of the world a harness checkpoint was
trained on (:func:`trained_world`). With a store, evaluations go through the pipeline's
:class:`~harness.eval_runner.Evaluator`: a complete evaluation is reused, one whose judge changed
re-judges the stored responses, anything else is generated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.config import BackendSpec, PipelineConfig, SuiteSpec
from harness.core import artifacts
from harness.eval_runner import EvalPlan, Evaluator, Target, world_items
from harness.evaluate import evaluate

TABLE_COLUMNS = ["suite", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better"]


def checkpoint_identity(ckpt: Path, kind: str | None) -> tuple[str, str]:
    """(kind, content hash) from the manifest of a harness checkpoint, else a fingerprint of the folder."""
    if (ckpt / artifacts.MANIFEST).is_file():
        manifest = artifacts.require_complete(ckpt)
        return kind or manifest.kind, manifest.content_hash
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt}: not a checkpoint folder")
    return kind or "sft", artifacts.fingerprint_paths([ckpt])


def trained_world(ckpt: Path) -> Path | None:
    """The world a harness checkpoint was trained on, from its lineage: the manifests' inputs lead to its
    ``init`` checkpoint, built from ``<world>/tokenizer`` when the run started from the world's
    tokenizer. None when the lineage names no world (a foreign checkpoint, a run from ``model.path``);
    FileNotFoundError when the world, or a checkpoint on the way to it, no longer exists."""
    from harness.world import WORLD_FILES
    from harness.world.card import CARD_FILE

    todo, seen = [Path(ckpt)], set()
    while todo:
        path = todo.pop()
        if path in seen or not (path / artifacts.MANIFEST).is_file():
            continue
        seen.add(path)
        for role, ref in artifacts.read_manifest(path).inputs.items():
            source = Path(ref.path)
            if ref.stage != "external":
                if not source.is_dir():
                    raise FileNotFoundError(f"{ckpt}: its lineage goes through {source} ({role} of {path.name}), "
                                            "which no longer exists, so its world is unknown; give --world or --data")
                todo.append(source)
            elif source.name == WORLD_FILES["tokenizer"]:
                if not source.parent.is_dir():
                    raise FileNotFoundError(f"{ckpt} was trained on the world {source.parent}, which no longer "
                                            "exists; give --world (regenerate it with `harness world`) or --data")
                if (source.parent / CARD_FILE).is_file():
                    return source.parent
    return None


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
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run ``suites`` on ``ckpt``; write them to the store when given; return the metrics table."""
    from suites import SUITES

    for name in suites:
        if name not in SUITES:
            raise KeyError(SUITES.unknown_message(name))
    ckpt = Path(ckpt)
    kind, content_hash = checkpoint_identity(ckpt, kind)
    if world is None and data is None and (world := trained_world(ckpt)) is not None:
        say(f"items: the world {ckpt.name} was trained on, {world}")
    card = None
    if world is not None:
        from harness.world import load_card

        card = load_card(world)
    specs = [SuiteSpec(name=n, data=str(data) if data else None, max_items=max_items) for n in suites]
    if store_path is None:
        results = evaluate(ckpt, kind, specs, BackendSpec(name=backend), world_items(world), card, reward)
        return pd.DataFrame([{"suite": r.suite, **m.store_row()} for r in results for m in r.metrics],
                            columns=TABLE_COLUMNS)
    from harness.core.store import Store

    target = store_path / artifacts.STORE_FILENAME if store_path.is_dir() else store_path
    cfg = PipelineConfig(name=f"eval {ckpt.name}", output_dir=str(target.parent), world=None, suites=specs,
                         backend=BackendSpec(name=backend))
    scorer = None
    if reward is not None:
        reward_kind, reward_hash = checkpoint_identity(Path(reward), "reward")
        scorer = Target("reward", reward_kind, Path(reward), reward_hash)
    plan = EvalPlan(Target(kind, kind, ckpt, content_hash), scorer, defer_reward=False)
    with Store(target) as store:
        run_id = store.create_run(cfg.name, {"checkpoint": str(ckpt), "suites": suites}, card)
        store.upsert_checkpoint(run_id, kind, kind, None, content_hash, str(ckpt), "complete")
        Evaluator(cfg, store, run_id, world, card, say).evaluate(plan)
        store.finish_run(run_id, "complete")
        table = store.metrics(run_id)[TABLE_COLUMNS]
    return table.astype(object).where(table.notna(), None)
