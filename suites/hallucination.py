"""Hallucination: does the model know, say so when it does not, and avoid confident wrong answers?

Items (JSONL), two formats in one file:

- ``{"id", "format": "cloze", "prompt", "choices": [" A", " B", ...], "answer_index"}``: knowledge
  asked by log-likelihood multiple choice (the gold value vs distractors of the same relation).
  Runs on **every** checkpoint, including ``init`` and ``pretrain``: a base model cannot follow
  a question, but it can prefer the true continuation.
- ``{"id", "format": "chat", "prompt", "answerable": bool, "gold", "aliases": [...]}``: a chat
  question, answered by generation on chat checkpoints only. Unanswerable questions ask about
  fictitious entities (no gold).

Metrics (per-item outcomes in every sample, keyed by metric name):

- ``hallucination.mc_accuracy``: cloze items answered correctly (binary);
- ``hallucination.accuracy``: answerable chat questions whose answer contains the gold or an alias;
- ``hallucination.confident_wrong_rate``: chat questions (answerable or not) answered wrongly with
  no hedge and no abstention: the hallucination itself;
- ``hallucination.abstention_rate``: unanswerable questions where the model says it does not know
  (or denies that what the question asks about exists);
- ``hallucination.hedging_rate``: chat answers that signal uncertainty;
- ``hallucination.consistency`` with ``samples_per_item > 1``: agreement of the answer category;
- ``hallucination.conflicting_answers_dropped``, ``hallucination.questions_dropped``: only for a
  TruthfulQA-style CSV from which loading dropped answers (see :mod:`suites.loaders`).

Judging lives in :mod:`suites.judges`. Options: ``mc_normalize``: ``none`` (summed log-prob) or
``tokens`` (mean per token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.backends.base import Backend, Prompt
from suites.items import Item, check_choice, check_cloze, fail, item_hash, require
from suites.judges import answer_label, is_correct
from suites.loaders import dropped_metric_defs, dropped_metrics, load_suite_items
from suites.suite import (
    NON_LM_KINDS,
    MetricDef,
    Sample,
    SuiteContext,
    SuiteResult,
    aggregate,
    consistency,
    consistency_def,
    generate,
    multiple_choice,
    suite_options,
)

NAME = "hallucination"
MC, ACCURACY = f"{NAME}.mc_accuracy", f"{NAME}.accuracy"
CONFIDENT_WRONG, ABSTENTION, HEDGING = f"{NAME}.confident_wrong_rate", f"{NAME}.abstention_rate", f"{NAME}.hedging_rate"


def _check(path: Path, item: Item) -> None:
    fmt = check_choice(path, item, "format", ("chat", "cloze"))
    if fmt == "cloze":
        check_cloze(path, item)
        return
    require(path, item, "prompt")
    if require(path, item, "answerable", bool):
        require(path, item, "gold")
    aliases = item.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise fail(path, item, "field 'aliases': expected a list of strings")


class HallucinationSuite:
    name = NAME
    version = "1"
    uses_judge = True
    metrics = (
        MetricDef(MC, True, "binary", "Cloze multiple-choice accuracy (log-likelihood), every checkpoint."),
        MetricDef(ACCURACY, True, "binary", "Answerable chat questions answered with the gold or an alias."),
        MetricDef(CONFIDENT_WRONG, False, "binary", "Chat questions answered wrongly, without hedge or abstention."),
        MetricDef(ABSTENTION, True, "binary", "Unanswerable (fictitious) questions where the model abstains."),
        MetricDef(HEDGING, False, "binary", "Chat answers that signal uncertainty."),
        consistency_def(NAME),
        *dropped_metric_defs(NAME),
    )

    def applies_to(self, kind: str, has_chat_template: bool = False) -> bool:
        """Every language-model checkpoint (cloze items); chat items only on chat checkpoints."""
        return kind not in NON_LM_KINDS

    def load_items(self, path: Path | str) -> list[Item]:
        return load_suite_items(path, NAME, _check)

    def run(self, backend: Backend, items: list[Item], spec: Any, ctx: SuiteContext) -> SuiteResult:
        opts = suite_options(spec, {"mc_normalize": "none"})
        if opts["mc_normalize"] not in ("none", "tokens"):
            raise ValueError(f"suite {NAME!r}: option mc_normalize must be 'none' or 'tokens'")
        cloze = [i for i in items if i["format"] == "cloze"]
        chat = [i for i in items if i["format"] == "chat"]
        notes = [] if ctx.chat or not chat else [f"{len(chat)} chat items skipped: not a chat checkpoint"]
        samples = [
            Sample(item["id"], item_hash(item), 0, item["prompt"], item["choices"][choice.pred],
                   {MC: float(choice.pred == item["answer_index"]), "pred": choice.pred, "logprobs": choice.logprobs})
            for item, choice in zip(cloze, multiple_choice(backend, cloze, opts["mc_normalize"]), strict=True)
        ]
        generated = self.answer(backend, chat, ctx) if ctx.chat else []
        samples += generated
        keys = [MC, ACCURACY, CONFIDENT_WRONG, ABSTENTION, HEDGING]
        if ctx.sampling.n > 1 and generated:
            consistency(generated, lambda s: s.outcome["label"], f"{NAME}.consistency")
            keys.append(f"{NAME}.consistency")
        metrics = [m for k in keys if (m := aggregate(self.metrics, samples, k)) is not None]
        metrics += dropped_metrics(NAME, items)
        return SuiteResult(NAME, self.version, metrics, samples, notes=notes)

    def answer(self, backend: Backend, chat: list[Item], ctx: SuiteContext) -> list[Sample]:
        """Generate answers to the chat questions and judge them."""
        gens = generate(backend, chat, ctx.sampling, lambda item: Prompt.chat(item["prompt"]))
        verdicts = ctx.judge.verdicts([i["prompt"] for i, _, _ in gens], [c.text for _, _, c in gens])
        samples = []
        for (item, j, comp), verdict in zip(gens, verdicts, strict=True):
            answerable = bool(item["answerable"])
            answers = [item.get("gold"), *(item.get("aliases") or [])] if answerable else []
            label = answer_label(comp.text, verdict, is_correct(comp.text, answers), answerable)
            outcome: dict[str, Any] = {"label": label, CONFIDENT_WRONG: float(label == "confident_wrong"),
                                       HEDGING: float(verdict.hedge)}
            if answerable:
                outcome[ACCURACY] = float(label == "correct")
            else:
                outcome[ABSTENTION] = float(label == "abstained")
            samples.append(Sample(item["id"], item_hash(item), j, item["prompt"], comp.text, outcome))
        return samples


SUITE = HallucinationSuite()
