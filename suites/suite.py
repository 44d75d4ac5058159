"""The contract every suite follows, and the result types it returns.

A suite is an object (registered in ``suites/__init__.py`` as ``"suites.<name>:SUITE"``) with

- ``name``, ``version`` (bump when items, prompts or scoring change: part of every result key),
- ``uses_judge``: whether it asks :mod:`suites.judges` (then the judge is part of its result key),
- ``metrics``: the :class:`MetricDef` of each metric it may report (direction, outcome kind),
- ``applies_to(kind, has_chat_template=False)``: whether it runs on a checkpoint of that stage kind,
- ``load_items(path)``: its items, validated (errors name file and line),
- ``run(backend, items, spec, ctx) -> SuiteResult``: ask the backend, score, aggregate.

Generation and scoring are separate inside a suite: ``run`` produces :class:`Sample` rows
(prompt, response, per-item outcomes), and metrics are computed from those rows only, so
stored responses can be scored again later (``verbosity`` rescoring with a reward model).

Per-item outcomes (``Sample.outcome``) are keyed by metric name, e.g.
``{"refusal.harmful_refusal_rate": 1.0, "refusal.harmful_refusal_rate[weapons]": 1.0}``: the
attribution pairs a parent's and a child's samples item by item on that key, with McNemar
for ``binary`` metrics and a permutation test for ``continuous`` ones. Keys without a suite
prefix are diagnostics (the judge's label, choice log-probs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from harness.backends.base import Backend, Completion, Prompt, Sampling
from harness.core import stats
from harness.core.artifacts import MANIFEST, read_manifest

Family = Literal["headline", "breakdown"]
OutcomeKind = Literal["binary", "continuous"]

CHAT_KINDS = frozenset({"sft", "ppo", "dpo", "rloo", "grpo", "kto", "orpo", "simpo"})  # instruction-tuned
NON_LM_KINDS = frozenset({"reward"})  # sequence classifiers: no suite applies


def is_chat_checkpoint(kind: str, has_chat_template: bool = False) -> bool:
    """Whether chat items (behaviour) run on a checkpoint of this kind.

    Chat stage kinds always; reward models never; any other kind, ``init`` and ``pretrain``
    included, when its tokenizer carries a chat template. A user's model given as ``init``
    (``model.path``) with a template is the baseline every behaviour suite measures the first
    stage against; asking a base model through the template gives the baseline (it never
    refuses or abstains on purpose) against which SFT's effect is measured item by item. A
    checkpoint without a template is measured by cloze only, and so is a freshly initialised
    random model, whose template is only the tokenizer's (:func:`counts_chat_template`).
    """
    if kind in CHAT_KINDS:
        return True
    if kind in NON_LM_KINDS:
        return False
    return has_chat_template


def counts_chat_template(ckpt_dir: Path | str, has_chat_template: bool) -> bool:
    """``has_chat_template``, except for a freshly initialised random model (an ``init`` checkpoint
    whose manifest says ``mode: fresh``, the synthetic world's): it carries the world tokenizer's
    template, but its weights never learnt it, so it is measured as a base model (cloze only)."""
    if not has_chat_template:
        return False
    if not (Path(ckpt_dir) / MANIFEST).is_file():
        return True
    manifest = read_manifest(Path(ckpt_dir))
    return not (manifest.kind == "init" and (manifest.metrics or {}).get("mode") == "fresh")


@dataclass(frozen=True)
class MetricDef:
    """A metric a suite may report. ``outcome`` is None for aggregates without per-item values
    (correlations, medians); breakdown metrics ``name[group]`` share their base's definition."""

    name: str
    higher_is_better: bool
    outcome: OutcomeKind | None
    description: str


@dataclass(frozen=True)
class Metric:
    name: str  # "suite.metric" or "suite.metric[group]"
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    family: Family = "headline"
    outcome: OutcomeKind | None = "binary"

    def store_row(self) -> dict[str, Any]:
        """The row ``Store.write_evaluation`` takes (NaN bounds become None)."""

        def f(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {"metric": self.name, "value": f(self.value), "ci_low": f(self.ci_low), "ci_high": f(self.ci_high),
                "n": int(self.n), "higher_is_better": bool(self.higher_is_better)}


@dataclass
class Sample:
    item_id: str
    item_hash: str
    sample_index: int
    prompt: str
    response: str
    outcome: dict[str, Any] = field(default_factory=dict)

    def store_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Any) -> Sample:
        """From a store row (dict or pandas row with the same field names)."""
        get = row.get if hasattr(row, "get") else row.__getitem__
        return cls(str(get("item_id")), str(get("item_hash") or ""), int(get("sample_index") or 0),
                   str(get("prompt") or ""), str(get("response") or ""), dict(get("outcome") or {}))


@dataclass
class SuiteResult:
    """What one suite produced on one checkpoint, plus everything that identifies it."""

    suite: str
    version: str
    metrics: list[Metric]
    samples: list[Sample]
    items_hash: str = ""
    decoding: dict[str, Any] = field(default_factory=dict)  # harness.backends.base.decoding_key(...)
    judge: dict[str, Any] = field(default_factory=dict)
    reward_hash: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. a metric left out and why
    identity: dict[str, Any] = field(default_factory=dict)  # harness.evaluate.identify(...).fields

    def relabel(self, label: str) -> None:
        """Store under ``label`` (a config entry's alias): ``suite.metric`` names and outcome keys become
        ``label.metric``, so two entries of one suite never collide."""
        if label == self.suite:
            return
        old, new = f"{self.suite}.", f"{label}."
        swap = lambda key: new + key[len(old):] if key.startswith(old) else key  # noqa: E731
        self.metrics = [replace(m, name=swap(m.name)) for m in self.metrics]
        self.samples = [replace(s, outcome={swap(k): v for k, v in s.outcome.items()}) for s in self.samples]
        self.suite = label

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.suite}: no metric {name!r} (have: {', '.join(m.name for m in self.metrics)})")

    def store_metrics(self) -> list[dict[str, Any]]:
        return [m.store_row() for m in self.metrics]

    def store_samples(self) -> list[dict[str, Any]]:
        return [s.store_row() for s in self.samples]


@dataclass(frozen=True)
class SuiteContext:
    """What a suite needs beyond its items: the checkpoint's nature, decoding, judge, reward, world."""

    kind: str
    chat: bool  # chat items run (see is_chat_checkpoint)
    sampling: Sampling  # decoding for this suite (samples_per_item -> n; temperature override applied)
    judge: Any  # suites.judges.Judge
    reward: Any = None  # harness.core.reward.RewardScorer or None
    world_card: dict[str, Any] | None = None


class Suite(Protocol):
    name: str
    version: str
    uses_judge: bool
    metrics: tuple[MetricDef, ...]

    def applies_to(self, kind: str, has_chat_template: bool = False) -> bool: ...

    def load_items(self, path: Path | str) -> list[dict[str, Any]]: ...

    def run(self, backend: Backend, items: list[dict[str, Any]], spec: Any, ctx: SuiteContext) -> SuiteResult: ...


# --------------------------------------------------------------------------- aggregation helpers


def metric_def(defs: Sequence[MetricDef], name: str) -> MetricDef:
    base = name.split("[", 1)[0]
    for d in defs:
        if d.name == base:
            return d
    raise KeyError(f"metric {base!r} is not declared by its suite")


def per_item(samples: Sequence[Sample], key: str) -> dict[str, list[float]]:
    """Outcome ``key`` of every sample that has it, grouped by item (in first-seen order)."""
    out: dict[str, list[float]] = {}
    for s in samples:
        if key in s.outcome and s.outcome[key] is not None:
            out.setdefault(s.item_id, []).append(float(s.outcome[key]))
    return out


def aggregate(
    defs: Sequence[MetricDef],
    samples: Sequence[Sample],
    key: str,
    statistic: Callable[..., float] = np.mean,
    outcome_key: str | None = None,
) -> Metric | None:
    """A metric from per-sample outcomes: samples of one item are averaged first, then the statistic
    is taken over items (``n`` = items). A binary mean gets a Wilson interval over items (with
    several samples per item, on the summed per-item shares); anything else a bootstrap over
    items. None when no sample has the outcome."""
    d = metric_def(defs, key)
    grouped = per_item(samples, outcome_key or key)
    if not grouped:
        return None
    values = np.array([np.mean(v) for v in grouped.values()])
    value = float(statistic(values))
    single = all(len(v) == 1 for v in grouped.values())
    if d.outcome == "binary" and statistic is np.mean:
        # per-item shares of k samples vary at most like 0/1 outcomes: Wilson over items is conservative
        low, high = stats.wilson(float(values.sum()), len(values))
    else:
        low, high = stats.bootstrap_ci(values, statistic)
    family: Family = "breakdown" if "[" in key else "headline"
    outcome = d.outcome if statistic is np.mean else None
    if outcome == "binary" and not single:  # several samples per item: per-item shares, not 0/1
        outcome = "continuous"
    return Metric(key, value, low, high, len(values), d.higher_is_better, family, outcome)


def consistency(samples: Sequence[Sample], label: Callable[[Sample], Any], name: str) -> dict[str, float]:
    """Per-item agreement across the samples of an item: the share of samples giving the item's most
    common label. Writes it into every sample's outcome under ``name``; returns item -> agreement."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.item_id, []).append(s)
    agreement: dict[str, float] = {}
    for item_id, group in groups.items():
        labels = [label(s) for s in group]
        top = max(labels.count(x) for x in labels)
        agreement[item_id] = top / len(labels)
        for s in group:
            s.outcome[name] = agreement[item_id]
    return agreement


def consistency_def(suite: str) -> MetricDef:
    return MetricDef(f"{suite}.consistency", True, "continuous",
                     "Per-item agreement across samples_per_item samples (share giving the modal label).")


# --------------------------------------------------------------------------- asking the backend


def generate(
    backend: Backend, items: Sequence[dict[str, Any]], sampling: Sampling, prompt_of: Callable[[dict], Prompt]
) -> list[tuple[dict[str, Any], int, Completion]]:
    """One backend call for all items: ``(item, sample_index, completion)`` for each of the n samples."""
    if not items:
        return []
    outs = backend.generate([prompt_of(item) for item in items], sampling)
    k = sampling.n
    return [(item, j, outs[i * k + j]) for i, item in enumerate(items) for j in range(k)]


@dataclass(frozen=True)
class Choice:
    """A log-likelihood multiple-choice answer: the argmax choice and every choice's log-prob."""

    pred: int
    logprobs: list[float]
    num_tokens: list[int]


def multiple_choice(backend: Backend, items: Sequence[dict[str, Any]], normalize: str = "none") -> list[Choice]:
    """Score every choice of every cloze item in one ``loglikelihood`` call and pick the best.

    ``normalize``: ``none`` (summed log-prob, lm-eval's ``acc``) or ``tokens`` (per-token mean).
    """
    requests = [(item["prompt"], choice) for item in items for choice in item["choices"]]
    results = iter(backend.loglikelihood(requests))
    out = []
    for item in items:
        lls = [next(results) for _ in item["choices"]]
        scores = [ll.logprob / max(ll.num_tokens, 1) if normalize == "tokens" else ll.logprob for ll in lls]
        pred = int(np.argmax(scores))
        out.append(Choice(pred, [round(ll.logprob, 6) for ll in lls], [ll.num_tokens for ll in lls]))
    return out


def suite_options(spec: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """``spec.options`` over ``defaults``; an unknown option is an error naming the suite and the known ones."""
    given = dict(getattr(spec, "options", None) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"suite {spec.name!r}: unknown option(s) {', '.join(unknown)}; "
                         f"expected {', '.join(sorted(defaults)) or 'none'}")
    return {**defaults, **given}
