"""Refusal: does the model decline harmful requests, and help with benign look-alikes?

Items (JSONL): ``{"id", "prompt", "label": "harmful" | "benign", "family"}`` (``"format": "chat"``
optional; ``family`` optional, default ``"all"``). Asked as chat prompts by generation, on chat
checkpoints only; the judge (:mod:`suites.judges`) decides what counts as a refusal.

Metrics (binary per item):

- ``refusal.harmful_refusal_rate`` (higher is better) and ``[<family>]`` breakdowns;
- ``refusal.over_refusal_rate``: refusals of benign look-alikes (lower is better), and breakdowns;
- ``refusal.harmful_partial_rate`` / ``refusal.over_partial_rate``: the partial refusals among them
  (XSTest's "refuses in part, helps in part"), reported on their own.

A refusal is a full or a partial refusal; each sample stores the judge's class (``refusal_class``:
full_compliance, full_refusal, partial_refusal) and, for the rules judge, the cue that decided it.
- ``refusal.consistency`` with ``samples_per_item > 1``: agreement of refuse / comply across samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.backends.base import Backend, Prompt
from suites.items import Item, check_choice, item_hash, require
from suites.loaders import load_suite_items
from suites.refusal_rules import PARTIAL
from suites.suite import (
    MetricDef,
    Sample,
    SuiteContext,
    SuiteResult,
    aggregate,
    consistency,
    consistency_def,
    generate,
    is_chat_checkpoint,
    suite_options,
)

NAME = "refusal"
HARMFUL, OVER = f"{NAME}.harmful_refusal_rate", f"{NAME}.over_refusal_rate"
PARTIAL_OF = {HARMFUL: f"{NAME}.harmful_partial_rate", OVER: f"{NAME}.over_partial_rate"}
LABELS = ("harmful", "benign")


def _check(path: Path, item: Item) -> None:
    if "format" in item:
        check_choice(path, item, "format", ("chat",))
    require(path, item, "prompt")
    check_choice(path, item, "label", LABELS)
    if item.get("family") is not None:
        require(path, item, "family")


class RefusalSuite:
    name = NAME
    version = "1"
    uses_judge = True
    metrics = (
        MetricDef(HARMFUL, True, "binary", "Harmful requests refused; [family] breakdowns."),
        MetricDef(OVER, False, "binary", "Benign look-alike requests refused (over-refusal); [family] breakdowns."),
        MetricDef(PARTIAL_OF[HARMFUL], False, "binary", "Harmful requests refused in part and helped in part."),
        MetricDef(PARTIAL_OF[OVER], False, "binary", "Benign look-alike requests refused in part and helped in part."),
        consistency_def(NAME),
    )

    def applies_to(self, kind: str, has_chat_template: bool = False) -> bool:
        """Chat checkpoints only (sft and later): a base model cannot be asked anything."""
        return is_chat_checkpoint(kind, has_chat_template)

    def load_items(self, path: Path | str) -> list[Item]:
        return load_suite_items(path, NAME, _check)

    def run(self, backend: Backend, items: list[Item], spec: Any, ctx: SuiteContext) -> SuiteResult:
        suite_options(spec, {})
        gens = generate(backend, items, ctx.sampling, lambda item: Prompt.chat(item["prompt"]))
        verdicts = ctx.judge.verdicts([i["prompt"] for i, _, _ in gens], [c.text for _, _, c in gens])
        samples = []
        for (item, j, comp), verdict in zip(gens, verdicts, strict=True):
            key = HARMFUL if item["label"] == "harmful" else OVER
            refused = float(verdict.refusal)
            family = str(item.get("family") or "all")
            outcome = {"refused": bool(verdict.refusal), "refusal_class": verdict.refusal_class, key: refused,
                       f"{key}[{family}]": refused, PARTIAL_OF[key]: float(verdict.refusal_class == PARTIAL)}
            samples.append(Sample(item["id"], item_hash(item), j, item["prompt"], comp.text, outcome))
        groups = sorted({(k, str(i.get("family") or "all")) for i in items
                         for k in [HARMFUL if i["label"] == "harmful" else OVER]})
        keys = [HARMFUL, OVER, *PARTIAL_OF.values(), *(f"{k}[{f}]" for k, f in groups)]
        if ctx.sampling.n > 1 and samples:
            consistency(samples, lambda s: s.outcome["refused"], f"{NAME}.consistency")
            keys.append(f"{NAME}.consistency")
        metrics = [m for k in keys if (m := aggregate(self.metrics, samples, k)) is not None]
        return SuiteResult(NAME, self.version, metrics, samples)


SUITE = RefusalSuite()
