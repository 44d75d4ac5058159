"""Run the configured suites on one checkpoint with one backend. No training, no storage.

``evaluate(...)`` returns one :class:`~suites.suite.SuiteResult` per suite that applies to the
checkpoint's stage kind, each carrying what identifies it (items hash, decoding key, judge,
reward hash). Storing is the caller's: :func:`eval_key` gives the key, :func:`store_result`
writes a result through any object with the results store's ``begin_evaluation`` /
``write_evaluation`` methods::

    results = evaluate(ckpt, "sft", cfg.suites, backend, items_paths, world_card, reward)
    for r in results:
        store_result(store, run_id, "sft", checkpoint_hash, r)

:func:`rescore_verbosity` scores stored verbosity responses with a reward model that did not
exist when they were generated (no generation).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.core.artifacts import canonical_json, sha256_text
from harness.backends.base import Backend, Sampling, decoding_key, open_backend
from harness.config import BackendSpec, DecodingSpec, SuiteSpec
from suites import SUITES
from suites.items import items_hash, select
from suites.judges import Judge, RulesJudge, make_judge
from suites.suite import Sample, SuiteContext, SuiteResult, is_chat_checkpoint

log = logging.getLogger(__name__)


def suite_sampling(decoding: DecodingSpec, spec: SuiteSpec) -> Sampling:
    """The decoding of one suite: the backend's, with the suite's temperature and samples_per_item."""
    temperature = decoding.temperature if spec.temperature is None else spec.temperature
    if spec.samples_per_item > 1 and temperature == 0:
        raise ValueError(f"suite {spec.name!r}: samples_per_item={spec.samples_per_item} needs a temperature > 0 "
                         "(set suites[].temperature or backend.decoding.temperature)")
    return Sampling(max_new_tokens=decoding.max_new_tokens, temperature=temperature, top_p=decoding.top_p,
                    seed=decoding.seed, n=spec.samples_per_item)


def items_path(spec: SuiteSpec, items_paths: Mapping[str, Path | str]) -> Path:
    """The suite's items file: its own ``data`` when set, else the one given for its name."""
    if spec.data:
        return Path(spec.data)
    if spec.name not in items_paths:
        raise ValueError(f"suite {spec.name!r}: no items file (set suites[].data, or generate the world); "
                         f"items known for: {', '.join(sorted(items_paths)) or 'none'}")
    return Path(items_paths[spec.name])


def evaluate(
    ckpt_dir: Path | str,
    kind: str,
    suites: Sequence[SuiteSpec],
    backend: Backend | BackendSpec | None,
    items_paths: Mapping[str, Path | str],
    world_card: dict[str, Any] | None = None,
    reward: Path | str | Any | None = None,
    *,
    decoding: DecodingSpec | None = None,
    trust_remote_code: bool = False,
) -> list[SuiteResult]:
    """Results of every suite in ``suites`` that applies to a ``kind`` checkpoint (others are skipped).

    ``backend``: an open backend (left open), or a ``BackendSpec`` / None to open one here (closed
    at the end). ``decoding``: defaults to the spec's decoding (or ``DecodingSpec()``). ``reward``:
    a reward checkpoint folder (or a ``RewardScorer``) for the verbosity suite's reward metrics.
    """
    spec_given = isinstance(backend, BackendSpec) or backend is None
    backend_spec = backend if isinstance(backend, BackendSpec) else BackendSpec()
    decoding = decoding or backend_spec.decoding
    runner: Backend = open_backend(ckpt_dir, backend_spec, trust_remote_code) if spec_given else backend  # type: ignore[assignment]
    judges: dict[str, Judge] = {}  # one judge per distinct judge spec, closed at the end
    try:
        chat = is_chat_checkpoint(kind, runner.has_chat_template)
        if chat and not runner.has_chat_template:
            raise ValueError(f"{ckpt_dir}: a {kind!r} checkpoint without a chat template; chat suites need one "
                             "(save the tokenizer with its chat template)")
        scorer = _reward_scorer(reward, suites)
        results = []
        for spec in suites:
            suite = SUITES.get(spec.name)
            if not suite.applies_to(kind, runner.has_chat_template):
                log.info("suite %s does not apply to a %s checkpoint; skipped", spec.name, kind)
                continue
            items = select(suite.load_items(items_path(spec, items_paths)), spec.max_items)
            sampling = suite_sampling(decoding, spec)
            judge = _judge(judges, spec, trust_remote_code) if suite.uses_judge else RulesJudge()
            ctx = SuiteContext(kind=kind, chat=chat, sampling=sampling, judge=judge, reward=scorer,
                               world_card=world_card)
            log.info("suite %s: %d items on %s (%s)", spec.name, len(items), ckpt_dir, runner.name)
            result = suite.run(runner, items, spec, ctx)
            result.items_hash = items_hash(items)
            result.decoding = decoding_key(runner.name, sampling, runner.dtype_name)
            result.judge = judge.key() if suite.uses_judge else {}
            results.append(result)
        return results
    finally:
        for judge in judges.values():
            judge.close()
        if spec_given:
            runner.close()


def _judge(cache: dict[str, Judge], spec: SuiteSpec, trust_remote_code: bool) -> Judge:
    key = spec.judge.model_dump_json()
    if key not in cache:
        cache[key] = make_judge(spec.judge, lambda path: open_backend(path, BackendSpec(name="hf"), trust_remote_code))
    return cache[key]


def _reward_scorer(reward: Path | str | Any | None, suites: Sequence[SuiteSpec]) -> Any:
    if reward is None or not any(s.name == "verbosity" for s in suites):
        return None
    if hasattr(reward, "score"):
        return reward
    from harness.core.reward import RewardScorer

    return RewardScorer(Path(reward))


def eval_key(
    checkpoint_hash: str,
    suite_name: str,
    suite_version: str,
    items_hash: str,
    judge: Mapping[str, Any],
    backend: str,
    decoding: Mapping[str, Any],
    reward_hash: str | None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The identity of one evaluation: sha256 of the canonical JSON of everything that decides its numbers
    (``options``: the suite's own options and samples per item, when the caller has them)."""
    key = {
        "checkpoint": checkpoint_hash, "suite": suite_name, "suite_version": str(suite_version),
        "items": items_hash, "judge": dict(judge), "backend": backend, "decoding": dict(decoding),
        "reward": reward_hash,
    }
    if options:
        key["options"] = dict(options)
    return sha256_text(canonical_json(key))


def result_key(checkpoint_hash: str, result: SuiteResult) -> str:
    """:func:`eval_key` of a result returned by :func:`evaluate`."""
    return eval_key(checkpoint_hash, result.suite, result.version, result.items_hash, result.judge,
                    str(result.decoding.get("backend")), result.decoding, result.reward_hash)


def store_result(store: Any, run_id: str, stage: str, checkpoint_hash: str, result: SuiteResult) -> str:
    """Write one result into a results store (``harness.core.store.Store``); returns its eval key.
    An evaluation already complete under the same key is linked to the run, not rewritten."""
    key = result_key(checkpoint_hash, result)
    done = store.begin_evaluation(key, run_id, stage, result.suite, result.version, result.items_hash,
                                  str(result.decoding.get("backend")), result.decoding, result.reward_hash)
    if not done:
        store.write_evaluation(key, result.store_metrics(), result.store_samples())
    return key


def rescore_verbosity(samples: Sequence[Sample | Mapping[str, Any]], reward: Path | str | Any) -> SuiteResult:
    """Verbosity metrics of stored samples (``Sample`` objects or store rows) scored by a reward model
    (a checkpoint folder or a ``RewardScorer``), without generating again."""
    scorer = _reward_scorer(reward, [SuiteSpec(name="verbosity")])
    return SUITES.get("verbosity").rescore(list(samples), scorer)
