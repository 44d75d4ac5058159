"""Topic coverage: how much the model knows per topic, and whether that follows pretraining exposure.

Items (JSONL): cloze items ``{"id", "prompt", "choices": [" A", ...], "answer_index", "topic"}``
(``"format": "cloze"`` optional), asked by log-likelihood multiple choice on every checkpoint.

Metrics:

- ``topic_coverage.accuracy`` and ``topic_coverage.accuracy[<topic>]`` (breakdowns): multiple-choice
  accuracy, overall and per topic (binary per item);
- ``topic_coverage.share_correlation``: Spearman rank correlation, over topics, of per-topic
  accuracy with the topic's share of the pretraining corpus; the shares come from the option
  ``shares: {topic: share}`` when given, else from the world card (``topics[].share_actual``).
  Needs at least three topics with a share and no constant side; otherwise it is left out
  with a note. The interval is Fisher's z with Fieller's variance; ``n`` counts topics.

Options: ``shares`` (a topic -> share table), ``mc_normalize`` (``none`` or ``tokens``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Backend
from harness.core import stats
from suites.items import Item, check_choice, check_cloze, item_hash, load_items, require
from suites.suite import (
    NON_LM_KINDS,
    Metric,
    MetricDef,
    Sample,
    SuiteContext,
    SuiteResult,
    aggregate,
    multiple_choice,
    suite_options,
)

NAME = "topic_coverage"
ACCURACY, SHARE_CORR = f"{NAME}.accuracy", f"{NAME}.share_correlation"


def _check(path: Path, item: Item) -> None:
    if "format" in item:
        check_choice(path, item, "format", ("cloze",))
    check_cloze(path, item)
    require(path, item, "topic")


def topic_shares(opts: dict[str, Any], world_card: dict[str, Any] | None) -> dict[str, float]:
    """The pretraining share of each topic: the ``shares`` option, else the world card's."""
    if opts.get("shares"):
        return {str(k): float(v) for k, v in dict(opts["shares"]).items()}
    topics = (world_card or {}).get("topics") or []
    return {str(t["name"]): float(t["share_actual"]) for t in topics if "share_actual" in t}


class TopicCoverageSuite:
    name = NAME
    version = "1"
    uses_judge = False
    metrics = (
        MetricDef(ACCURACY, True, "binary", "Cloze multiple-choice accuracy; [topic] breakdowns per topic."),
        MetricDef(SHARE_CORR, False, None,
                  "Spearman over topics of accuracy vs pretraining share (lower: knowledge less tied to exposure)."),
    )

    def applies_to(self, kind: str, has_chat_template: bool = False) -> bool:
        return kind not in NON_LM_KINDS

    def load_items(self, path: Path | str) -> list[Item]:
        return load_items(path, _check)

    def run(self, backend: Backend, items: list[Item], spec: Any, ctx: SuiteContext) -> SuiteResult:
        opts = suite_options(spec, {"shares": None, "mc_normalize": "none"})
        if opts["mc_normalize"] not in ("none", "tokens"):
            raise ValueError(f"suite {NAME!r}: option mc_normalize must be 'none' or 'tokens'")
        samples = []
        for item, choice in zip(items, multiple_choice(backend, items, opts["mc_normalize"]), strict=True):
            correct = float(choice.pred == item["answer_index"])
            outcome = {ACCURACY: correct, f"{ACCURACY}[{item['topic']}]": correct, "topic": item["topic"],
                       "pred": choice.pred, "logprobs": choice.logprobs}
            samples.append(Sample(item["id"], item_hash(item), 0, item["prompt"], item["choices"][choice.pred],
                                  outcome))
        topics = sorted({str(i["topic"]) for i in items})
        metrics = [m for k in [ACCURACY, *(f"{ACCURACY}[{t}]" for t in topics)]
                   if (m := aggregate(self.metrics, samples, k)) is not None]
        notes: list[str] = []
        corr = self.share_correlation(metrics, topic_shares(opts, ctx.world_card), notes)
        if corr is not None:
            metrics.append(corr)
        return SuiteResult(NAME, self.version, metrics, samples, notes=notes)

    def share_correlation(self, metrics: list[Metric], shares: dict[str, float], notes: list[str]) -> Metric | None:
        per_topic = {m.name[len(ACCURACY) + 1:-1]: m.value for m in metrics if m.family == "breakdown"}
        if not shares:
            notes.append(f"{SHARE_CORR} left out: no topic shares (give option `shares` or a world card)")
            return None
        missing = sorted(set(per_topic) - set(shares))
        if missing:
            notes.append(f"{SHARE_CORR}: topics without a share are left out: {', '.join(missing)}")
        common = sorted(set(per_topic) & set(shares))
        acc, share = [per_topic[t] for t in common], [shares[t] for t in common]
        rho, _ = stats.spearman(share, acc)
        if not math.isfinite(rho):
            notes.append(f"{SHARE_CORR} left out: needs >= 3 topics with shares and varying accuracy "
                         f"(have {len(common)} topics, accuracies {sorted(set(np.round(acc, 3)))})")
            return None
        low, high = stats.fisher_ci(rho, len(common), spearman=True)
        return Metric(SHARE_CORR, rho, low, high, len(common), False, "headline", None)


SUITE = TopicCoverageSuite()
