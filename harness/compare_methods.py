"""Which runs of a store hold which method, for ``harness compare`` (:mod:`harness.compare`).

A method is a stage name (``ppo``, ``dpo``, ``constitutional``, any kind) found in the store's complete
runs; each run contributes the seed in its config. Runs whose configs differ in what the stage depends
on (its own options, its ancestors' through ``from``/``reward``, model, world, suites, backend; not
:data:`NOT_VARIANT`) are different *variants* of the method, labelled by the keys that differ:
``dpo[dpo.beta=0.2]`` (what ``harness sweep --vary dpo.beta=0.1,0.2`` writes) — unless their results
are the same: two config variants whose stage has, at every seed both have, the same checkpoint (content
hash) evaluated by the same evaluations (keys) are one variant (a config that gained a field with its
default between two sweeps). A method named ``dpo`` means all its variants; a label names one. Per
variant and seed the latest complete run counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.core.artifacts import canonical_json
from harness.core.store import Store
from harness.lineage import Lineage

NOT_VARIANT = frozenset({"seed", "name", "output_dir", "attribution", "gate"})
Row = dict[str, Any]


class CompareError(ValueError):
    """Nothing to compare (no such method, no complete run): the message says what the store has."""


@dataclass
class Method:
    label: str
    stage: str
    kind: str = ""
    runs: dict[int, str] = field(default_factory=dict)  # seed -> run_id
    parents: dict[int, str | None] = field(default_factory=dict)  # seed -> parent stage in that run
    training: dict[int, Row] = field(default_factory=dict)  # seed -> the checkpoint's training metrics
    results: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # seed -> (content hash, eval keys)
    key: dict[str, Any] = field(default_factory=dict)  # the variant's config key (the latest run's)

    def add(self, other: Method) -> None:
        """Take ``other``'s runs (later ones win)."""
        for name in ("runs", "parents", "training", "results"):
            getattr(self, name).update(getattr(other, name))
        self.key = other.key


def variant_key(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """What a stage's results depend on in a run config: everything but :data:`NOT_VARIANT`, with the
    stages reduced to this one and its ancestors (``from`` and ``reward``)."""
    stages = {s.get("name"): s for s in config.get("stages", []) if isinstance(s, Mapping)}
    keep, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name in keep or name not in stages:
            continue
        keep.add(name)
        todo += [stages[name].get(k) for k in ("from", "from_", "reward") if stages[name].get(k)]
    rest = {k: v for k, v in config.items() if k not in NOT_VARIANT and k != "stages"}
    return {**rest, "stages": {n: stages[n] for n in sorted(keep)}}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested dicts (lists kept whole, as JSON)."""
    if not isinstance(obj, Mapping):
        return {prefix: canonical_json(obj) if isinstance(obj, list) else obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _labels(stage: str, keys: Sequence[dict[str, Any]]) -> list[str]:
    if len(keys) == 1:
        return [stage]
    flat = [flatten(k) for k in keys]
    paths = sorted({p for f in flat for p in f})
    differ = [p for p in paths if len({canonical_json(f.get(p)) for f in flat}) > 1]
    short = {p: p.removeprefix("stages.") for p in differ}
    return [f"{stage}[{', '.join(f'{short[p]}={f.get(p)}' for p in differ)}]" for f in flat]


def _same_results(a: Method, b: Method) -> bool:
    common = set(a.results) & set(b.results)
    return bool(common) and all(a.results[s] == b.results[s] for s in common)


def _merged(variants: list[Method]) -> list[Method]:
    kept: list[Method] = []
    for v in variants:  # in the order of their first run
        same = next((k for k in kept if _same_results(k, v)), None)
        if same is None:
            kept.append(v)
        else:
            same.add(v)
    return kept


def _complete_runs(store: Store) -> Iterator[tuple[str, int, Row, pd.DataFrame, pd.DataFrame, Lineage]]:
    """(run_id, seed, config, complete checkpoints, evaluations, lineage) of each complete run, oldest first."""
    runs = store.runs()
    runs = runs[runs["status"] == "complete"].sort_values("started_at") if not runs.empty else runs
    for run in runs.to_dict("records"):
        config, run_id = run["config"] or {}, str(run["run_id"])
        ckpts = store.checkpoints(run_id)
        complete = ckpts[ckpts["status"] == "complete"]
        evals = store.evaluations(run_id)
        yield run_id, int(config.get("seed", 0)), config, complete, evals, Lineage(complete, set(evals["stage"]))


def method_groups(store: Store) -> dict[str, list[str]]:
    """What ``wanted`` can name: evaluated parent -> the evaluated policy stages measured against it
    (``sft -> [ppo, dpo, …]``), over the store's complete runs, in the order they first appear."""
    groups: dict[str, list[str]] = {}
    for _run_id, _seed, _config, complete, _evals, lin in _complete_runs(store):
        for stage in complete["stage"]:
            parent = lin.evaluated_parent(stage) if stage in lin.evaluated and lin.is_policy(stage) else None
            if parent is not None and stage not in groups.setdefault(parent, []):
                groups[parent].append(stage)
    return groups


def find_methods(store: Store, wanted: Sequence[str]) -> list[Method]:
    """The methods (variants) ``wanted`` names, in that order, from the store's complete runs."""
    bases = {w.split("[", 1)[0] for w in wanted}
    found: dict[str, dict[str, Method]] = {}
    seen_stages: set[str] = set()
    any_run = False
    for run_id, seed, config, complete, evals, lin in _complete_runs(store):
        any_run = True
        seen_stages |= set(complete["stage"])
        for rec in (r for r in complete.to_dict("records") if r["stage"] in bases):
            base, key = rec["stage"], variant_key(config, rec["stage"])
            one = Method(label=base, stage=base, kind=rec["kind"], runs={seed: run_id},
                         parents={seed: lin.evaluated_parent(base)}, training={seed: rec["metrics"] or {}},
                         results={seed: (rec["content_hash"], tuple(sorted(evals[evals["stage"] == base]["eval_key"])))},
                         key=key)
            group = found.setdefault(base, {})
            if canonical_json(key) in group:
                group[canonical_json(key)].add(one)
            else:
                group[canonical_json(key)] = one
    if not any_run:
        raise CompareError(f"{store.path}: no complete run to compare (run `harness sweep` or `harness run`)")
    out: list[Method] = []
    for w in wanted:
        base = w.split("[", 1)[0]
        if base not in found:
            raise CompareError(f"no complete run in {store.path} has a stage {base!r} "
                               f"(stages: {', '.join(sorted(seen_stages)) or 'none'})")
        variants = _merged(list(found[base].values()))
        for label, m in zip(_labels(base, [m.key for m in variants]), variants, strict=True):
            m.label = label
        picked = [m for m in variants if w == base or m.label == w]
        if not picked:
            raise CompareError(f"no variant {w!r}; {base} has {', '.join(m.label for m in variants)}")
        out += [m for m in picked if m.label not in {o.label for o in out}]
    return out
