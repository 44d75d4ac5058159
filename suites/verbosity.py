"""Verbosity: how long the answers are, and whether a reward model pays for length.

Items (JSONL): ``{"id", "prompt", "reference"}`` (``"format": "chat"`` optional; ``reference``
optional): open prompts, asked as chat prompts on chat checkpoints only.

Generation and scoring are separate. :meth:`VerbositySuite.run` generates and then calls
:meth:`VerbositySuite.score`; :meth:`VerbositySuite.rescore` takes **stored** samples and a
reward model and recomputes every metric without generating again (same numbers as scoring at
generation time: the reward model sees the same prompt messages and responses).

Metrics (per-sample outcomes: tokens, words, ratio, reward, length-controlled reward):

- ``verbosity.mean_tokens`` / ``median_tokens`` / ``p90_tokens``: generated tokens (EOS excluded);
- ``verbosity.mean_words``: whitespace-separated words; ``verbosity.length_ratio``: words / the
  reference's words (items with a reference);
- with a reward model: ``verbosity.reward_mean``; ``verbosity.reward_length_corr`` (Pearson of
  reward with words over responses; Fisher interval; a reward-hacking signal);
  ``verbosity.length_controlled_reward``: the mean of ``r_i - b * (words_i - anchor_i)`` where ``b``
  is the least-squares slope of reward on words over these responses and ``anchor_i`` is the
  item's reference length (the mean response length for items without one): the reward the
  responses would get at the reference length;
- ``verbosity.consistency`` with ``samples_per_item > 1``: agreement of the normalised response text.

Means get a bootstrap interval over items; median and p90 too (no per-item outcome of their own).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Backend, Prompt
from harness.core import stats
from suites.items import Item, check_choice, item_hash, load_items, require
from suites.judges import normalize
from suites.suite import (
    Metric,
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

NAME = "verbosity"
TOKENS, MEDIAN, P90, WORDS, RATIO = (f"{NAME}.{m}" for m in
                                     ("mean_tokens", "median_tokens", "p90_tokens", "mean_words", "length_ratio"))
REWARD, CORR, LC = f"{NAME}.reward_mean", f"{NAME}.reward_length_corr", f"{NAME}.length_controlled_reward"
CONSISTENCY = f"{NAME}.consistency"
REWARD_KEYS = (REWARD, LC)


def _check(path: Path, item: Item) -> None:
    if "format" in item:
        check_choice(path, item, "format", ("chat",))
    require(path, item, "prompt")
    if item.get("reference") is not None:
        require(path, item, "reference")


def words(text: str) -> int:
    return len(text.split())


def reward_prompt(prompt: str) -> list[dict[str, str]]:
    """The conversation the reward model scores a response after: the user turn the policy saw."""
    return [{"role": "user", "content": prompt.rstrip()}]


class VerbositySuite:
    name = NAME
    version = "1"
    uses_judge = False
    metrics = (
        MetricDef(TOKENS, False, "continuous", "Mean generated tokens per response."),
        MetricDef(MEDIAN, False, None, "Median generated tokens per response."),
        MetricDef(P90, False, None, "90th percentile of generated tokens per response."),
        MetricDef(WORDS, False, "continuous", "Mean words per response."),
        MetricDef(RATIO, False, "continuous", "Mean ratio of response words to reference words."),
        MetricDef(REWARD, True, "continuous", "Mean reward-model score of the responses."),
        MetricDef(CORR, False, None, "Pearson correlation of reward with response words (reward hacking signal)."),
        MetricDef(LC, True, "continuous", "Reward adjusted to the reference length by the reward-on-words slope."),
        consistency_def(NAME),
    )

    def applies_to(self, kind: str, has_chat_template: bool = False) -> bool:
        return is_chat_checkpoint(kind, has_chat_template)

    def load_items(self, path: Path | str) -> list[Item]:
        return load_items(path, _check)

    def run(self, backend: Backend, items: list[Item], spec: Any, ctx: SuiteContext) -> SuiteResult:
        suite_options(spec, {})
        samples = []
        for item, j, comp in generate(backend, items, ctx.sampling, lambda item: Prompt.chat(item["prompt"])):
            outcome: dict[str, Any] = {TOKENS: len(comp.token_ids), WORDS: words(comp.text),
                                       "finish_reason": comp.finish_reason}
            if item.get("reference"):
                outcome["reference_words"] = max(words(item["reference"]), 1)
                outcome[RATIO] = outcome[WORDS] / outcome["reference_words"]
            samples.append(Sample(item["id"], item_hash(item), j, item["prompt"], comp.text, outcome))
        if ctx.sampling.n > 1 and samples:
            consistency(samples, lambda s: normalize(s.response), CONSISTENCY)
        metrics, notes = self.score(samples, ctx.reward)
        reward_hash = ctx.reward.content_hash if ctx.reward is not None else None
        return SuiteResult(NAME, self.version, metrics, samples, reward_hash=reward_hash, notes=notes)

    def rescore(self, samples: Sequence[Sample | dict[str, Any]], reward: Any) -> SuiteResult:
        """Metrics of stored samples scored by ``reward`` (a ``harness.core.reward.RewardScorer``), no generation.
        The returned samples carry the new reward outcomes (write them back with
        ``Store.update_sample_outcomes`` / ``add_metrics``)."""
        fresh = [copy.deepcopy(s) if isinstance(s, Sample) else Sample.from_row(s) for s in samples]
        for s in fresh:
            for key in REWARD_KEYS:
                s.outcome.pop(key, None)
        metrics, notes = self.score(fresh, reward)
        return SuiteResult(NAME, self.version, metrics, fresh, reward_hash=reward.content_hash, notes=notes)

    def score(self, samples: list[Sample], reward: Any = None) -> tuple[list[Metric], list[str]]:
        """Reward each sample (when a reward model is given) and compute every metric from the samples."""
        notes: list[str] = []
        keys: list[tuple[str, Any, str | None]] = [
            (TOKENS, np.mean, None), (MEDIAN, np.median, TOKENS), (P90, stats.quantile(0.9), TOKENS),
            (WORDS, np.mean, None), (RATIO, np.mean, None),
        ]
        if reward is not None and samples:
            scores = reward.score([reward_prompt(s.prompt) for s in samples], [s.response for s in samples])
            for s, r in zip(samples, scores, strict=True):
                s.outcome[REWARD] = float(r)
            self._length_controlled(samples)
            keys += [(REWARD, np.mean, None), (LC, np.mean, None)]
        elif reward is None:
            notes.append("reward metrics left out: no reward model given")
        if any(CONSISTENCY in s.outcome for s in samples):
            keys.append((CONSISTENCY, np.mean, None))
        metrics = [m for k, stat, src in keys if (m := aggregate(self.metrics, samples, k, stat, src)) is not None]
        if reward is not None and samples:
            metrics.append(self._correlation(samples, notes))
        return [m for m in metrics if m is not None], notes

    @staticmethod
    def _length_controlled(samples: list[Sample]) -> None:
        lengths = [float(s.outcome[WORDS]) for s in samples]
        rewards = [float(s.outcome[REWARD]) for s in samples]
        slope = stats.ols_slope(lengths, rewards)
        mean_len = float(np.mean(lengths))
        for s, length, r in zip(samples, lengths, rewards, strict=True):
            anchor = float(s.outcome.get("reference_words", mean_len))
            s.outcome[LC] = r - slope * (length - anchor)

    @staticmethod
    def _correlation(samples: list[Sample], notes: list[str]) -> Metric | None:
        lengths = [float(s.outcome[WORDS]) for s in samples]
        r = stats.pearson(lengths, [float(s.outcome[REWARD]) for s in samples])
        if not math.isfinite(r):
            notes.append(f"{CORR} left out: needs >= 3 responses with varying length and reward")
            return None
        low, high = stats.fisher_ci(r, len(samples))
        return Metric(CORR, r, low, high, len(samples), False, "headline", None)


SUITE = VerbositySuite()
