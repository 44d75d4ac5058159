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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends import BACKENDS
from harness.backends.base import (
    Backend,
    Sampling,
    cuda_available,
    decoding_key,
    open_backend,
    resolve_backend,
)
from harness.backends.metered import MeteredBackend
from harness.backends.replay import ReplayBackend
from harness.config import BackendSpec, DecodingSpec, SuiteSpec
from harness.core import fingerprint, progress
from harness.core.artifacts import canonical_json, sha256_file, sha256_text
from harness.core.fingerprint import EVAL_LIBRARIES, code_fingerprint
from suites import SUITES
from suites.items import items_hash, select
from suites.judges import Judge, RulesJudge, judge_identity, make_judge
from suites.suite import Sample, SuiteContext, SuiteResult, counts_chat_template, is_chat_checkpoint

log = logging.getLogger(__name__)
REWARD_SUITES = frozenset({"verbosity"})  # suites that score responses with the run's reward model
# The judging code: it labels responses and never shapes what the model is asked or answers; with
# what only it imports (its rule sets) it is left out of an evaluation's generation key.
JUDGING_MODULES = ("suites.judges", "suites.refusal_rules")


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
    backend_spec: BackendSpec | None = None,
    where: str | None = None,
) -> list[SuiteResult]:
    """Results of every suite in ``suites`` that applies to a ``kind`` checkpoint (others are skipped).

    ``backend``: an open backend (left open), or a ``BackendSpec`` / None to open one here (closed
    at the end). ``decoding``: defaults to the spec's decoding (or ``DecodingSpec()``). ``reward``:
    a reward checkpoint folder (or a ``RewardScorer``) for the verbosity suite's reward metrics.
    ``backend_spec``: what an open ``backend`` was opened from (it identifies the results; default: the
    backend's name with ``decoding``). ``where``: what the progress display calls the checkpoint (default:
    its folder's name); each suite is a task there, its backend calls metered.
    """
    spec_given = isinstance(backend, BackendSpec) or backend is None
    if isinstance(backend, BackendSpec):
        backend_spec = backend
    elif backend_spec is None:
        backend_spec = BackendSpec(name=backend.name if backend is not None else "auto")
    decoding = decoding or backend_spec.decoding
    backend_spec = backend_spec.model_copy(update={"decoding": decoding})
    runner: Backend = backend  # type: ignore[assignment]
    if spec_given:
        with progress.loading(where or Path(ckpt_dir).name):
            runner = open_backend(ckpt_dir, backend_spec, trust_remote_code)
    judges: dict[str, Judge] = {}  # one judge per distinct judge spec, closed at the end
    try:
        template = counts_chat_template(ckpt_dir, runner.has_chat_template)  # a fresh random init's does not
        chat = is_chat_checkpoint(kind, template)
        if chat and not runner.has_chat_template:
            raise ValueError(f"{ckpt_dir}: a {kind!r} checkpoint without a chat template; chat suites need one "
                             "(save the tokenizer with its chat template)")
        scorer = _reward_scorer(reward, suites)
        results = []
        for spec in suites:
            suite = SUITES.get(spec.name)
            if not suite.applies_to(kind, template):
                log.info("suite %s does not apply to a %s checkpoint; skipped", spec.name, kind)
                continue
            items = select(suite.load_items(items_path(spec, items_paths)), spec.max_items)
            sampling = suite_sampling(decoding, spec)
            judge = _judge(judges, spec, trust_remote_code) if suite.uses_judge else RulesJudge()
            ctx = SuiteContext(kind=kind, chat=chat, sampling=sampling, judge=judge, reward=scorer,
                               world_card=world_card)
            log.info("suite %s: %d items on %s (%s)", spec.name, len(items), ckpt_dir, runner.name)
            with progress.task(f"{spec.label} · {where or Path(ckpt_dir).name}") as meter:
                # stored answers replay at once: nothing to watch
                asked = runner if isinstance(runner, ReplayBackend) else MeteredBackend(runner, meter)
                result = suite.run(asked, items, spec, ctx)
            reward_hash = result.reward_hash if spec.name in REWARD_SUITES else None
            ident = identify(spec, items, backend_spec, reward_hash)
            result.relabel(spec.label)
            result.items_hash, result.decoding, result.version = ident.items_hash, ident.decoding, ident.version
            result.judge, result.identity = ident.fields["judge"], ident.fields
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


@dataclass(frozen=True)
class EvalIdentity:
    """Everything that decides an evaluation's numbers, known before anything is generated."""

    fields: dict[str, Any]  # all of it, without the checkpoint (see :func:`eval_key`)
    version: str  # the suite's version + its code fingerprint, as stored
    items_hash: str
    decoding: dict[str, Any]
    generation: dict[str, Any]  # what decides the responses alone (see :func:`generation_key`)


def planned_decoding(backend: BackendSpec, sampling: Sampling) -> dict[str, Any]:
    """The decoding key of a suite run through the backend ``backend`` describes (resolved name, the
    configured dtype, batch size, device): the same whether the runner or `harness eval` asks."""
    name = resolve_backend(backend.name)
    extra: dict[str, Any] = {"device": "cuda" if cuda_available() else "cpu"}
    if name == "vllm" and backend.tensor_parallel_size > 1:  # sharded matmuls sum in another order
        extra["tensor_parallel_size"] = backend.tensor_parallel_size
    return decoding_key(name, sampling, backend.dtype, extra, batch_size=backend.decoding.batch_size)


def identify(spec: SuiteSpec, items: Sequence[Mapping[str, Any]], backend: BackendSpec,
             reward_hash: str | None) -> EvalIdentity:
    """The one builder of an evaluation's identity (pipeline and `harness eval` both use it): suite and
    the label it is stored under, version + fingerprint of the suite's and backend's code and of the
    evaluation libraries, items, judge (rules source or judge model hash), decoding, reward model,
    options."""
    suite = SUITES.get(spec.name)
    decoding = planned_decoding(backend, suite_sampling(backend.decoding, spec))
    code = code_fingerprint([SUITES.module_of(spec.name), BACKENDS.module_of(decoding["backend"])], EVAL_LIBRARIES)
    version = f"{suite.version}+{code[:12]}"
    fields = {
        "suite": spec.name, "label": spec.label, "suite_version": version, "items": items_hash(items),
        "judge": judge_identity(spec.judge) if suite.uses_judge else {}, "decoding": decoding,
        "reward": reward_hash, "options": {"options": spec.options, "samples_per_item": spec.samples_per_item},
    }
    asked = _asking_code([SUITES.module_of(spec.name), BACKENDS.module_of(decoding["backend"])])
    generation = {k: v for k, v in fields.items() if k not in ("judge", "reward")}
    generation["suite_version"] = f"{suite.version}+{asked[:12]}"
    return EvalIdentity(fields, version, fields["items"], decoding, generation)


def _asking_code(modules: list[str]) -> str:
    """sha256 over the suite's and backend's code closure without :data:`JUDGING_MODULES`, and the
    evaluation libraries: the code that decides what is asked and answered."""
    root, closure = fingerprint.ROOT, fingerprint.module_closure(modules, leave_out=JUDGING_MODULES)
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in closure}
    return sha256_text(canonical_json({"files": files, "libraries": fingerprint.library_versions(EVAL_LIBRARIES)}))


def replayable(suite: str) -> bool:
    """Whether the suite's evaluations keep their backend answers, to be judged (or reward-scored) again."""
    return SUITES.get(suite).uses_judge or suite in REWARD_SUITES


def eval_key(checkpoint_hash: str, fields: Mapping[str, Any]) -> str:
    """The key of one evaluation: sha256 of the checkpoint's content hash and :func:`identify`'s fields."""
    return sha256_text(canonical_json({"checkpoint": checkpoint_hash, **fields}))


def generation_key(checkpoint_hash: str, ident: EvalIdentity) -> str:
    """The key of an evaluation's responses: its :func:`eval_key` without the judge, the reward model
    and the judging code. Two evaluations sharing it asked the same model the same things the same
    way; the later one re-judges the earlier one's stored answers (``harness.eval_runner``)."""
    return eval_key(checkpoint_hash, ident.generation)


def result_key(checkpoint_hash: str, result: SuiteResult) -> str:
    """:func:`eval_key` of a result returned by :func:`evaluate`."""
    return eval_key(checkpoint_hash, result.identity)


def store_result(store: Any, run_id: str, stage: str, checkpoint_hash: str, result: SuiteResult) -> str:
    """Write one result into a results store (``harness.core.store.Store``); returns its eval key.
    An evaluation already complete under the same key is linked to the run, not rewritten."""
    if not result.identity:
        raise ValueError(f"{result.suite}: the result carries no identity; store results that "
                         "harness.evaluate.evaluate returned (or set identity from identify())")
    key = result_key(checkpoint_hash, result)
    done = store.begin_evaluation(key, run_id, stage, result.suite, result.version, result.items_hash,
                                  str(result.decoding.get("backend")), result.decoding, result.identity["reward"])
    if not done:
        store.write_evaluation(key, result.store_metrics(), result.store_samples())
    return key


def rescore_verbosity(samples: Sequence[Sample | Mapping[str, Any]], reward: Path | str | Any) -> SuiteResult:
    """Verbosity metrics of stored samples (``Sample`` objects or store rows) scored by a reward model
    (a checkpoint folder or a ``RewardScorer``), without generating again."""
    scorer = _reward_scorer(reward, [SuiteSpec(name="verbosity")])
    return SUITES.get("verbosity").rescore(list(samples), scorer)
