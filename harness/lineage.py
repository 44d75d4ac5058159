"""The stage lineage of a run and the world card's expectations, as the attribution, the
planted-cause check, the flags and the dashboard read them. Pure functions over the store's
DataFrames (``Store.checkpoints``, effect rows) and the world card."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from harness.core import paired as pt

NON_POLICY_KINDS = frozenset({"reward"})
Row = dict[str, Any]


def is_breakdown(metric: str) -> bool:
    """``metric[group]``: a per-topic / per-family breakdown of a headline metric."""
    return "[" in metric


def as_rows(effects: pd.DataFrame | Iterable[Row]) -> list[Row]:
    """Effect rows as plain dicts (stored frames: NaN -> None, details kept as they are)."""
    if isinstance(effects, pd.DataFrame):
        return [{k: pt.plain(v) if k != "details" else v for k, v in r.items()} for r in effects.to_dict("records")]
    return list(effects)


class Lineage:
    """Stage order, kinds, parents and reward inputs from ``Store.checkpoints``."""

    def __init__(self, checkpoints: pd.DataFrame, evaluated: Iterable[str] = ()) -> None:
        recs = checkpoints.to_dict("records") if checkpoints is not None else []
        self.order = [r["stage"] for r in recs]
        self.order += sorted(set(evaluated) - set(self.order))
        self.parent = {r["stage"]: pt.plain(r.get("parent_stage")) for r in recs}
        self.kind = {r["stage"]: r.get("kind") or r["stage"] for r in recs}
        self.inputs = {r["stage"]: dict(r["inputs"]) if isinstance(r.get("inputs"), dict) else {} for r in recs}
        self.by_hash = {r.get("content_hash"): r["stage"] for r in recs if pt.plain(r.get("content_hash"))}
        self.evaluated = set(evaluated)

    def kind_of(self, stage: str) -> str:
        return self.kind.get(stage, stage)

    def is_policy(self, stage: str) -> bool:
        return self.kind_of(stage) not in NON_POLICY_KINDS

    def evaluated_parent(self, stage: str) -> str | None:
        """Nearest ancestor policy stage that has evaluations."""
        seen, p = {stage}, self.parent.get(stage)
        while p is not None and p not in seen:
            if p in self.evaluated and self.is_policy(p):
                return p
            seen.add(p)
            p = self.parent.get(p)
        return None

    def reward_stage(self, stage: str) -> str | None:
        """The stage of the reward model this stage read (``inputs['reward']``: stage or hash)."""
        ref = self.inputs.get(stage, {}).get("reward")
        return ref if ref in self.kind else self.by_hash.get(ref)


def lineage_paths(checkpoints: pd.DataFrame) -> list[list[str]]:
    """Every root-to-leaf path of policy stages, e.g. ``[init, pretrain, sft, ppo]``."""
    lin = Lineage(checkpoints)
    stages = [s for s in lin.order if lin.is_policy(s)]
    children = {s: [c for c in stages if lin.parent.get(c) == s] for s in stages}
    paths: list[list[str]] = []

    def walk(path: list[str]) -> None:
        kids = [c for c in children[path[-1]] if c not in path]
        if not kids:
            paths.append(path)
        for c in kids:
            walk(path + [c])

    for root in (s for s in stages if lin.parent.get(s) not in stages):
        walk([root])
    return paths


def expected_for(card: Mapping[str, Any] | None, stage: str, kind: str, metric: str) -> Mapping[str, Any] | None:
    """The world card's expected effect for (stage, metric): by stage name, else by stage kind."""
    entries = [e for e in (card or {}).get("expected_effects", []) if e.get("metric") == metric]
    return next((e for e in entries if e.get("stage") == stage), None) or next(
        (e for e in entries if e.get("stage") == kind), None)
