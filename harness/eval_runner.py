"""Evaluate checkpoints of a run into the results store, skipping what the store already holds.

``harness.evaluate`` runs suites (no storage); this module decides *which* evaluations are
needed, keys them, and writes them. The key is known before anything is generated, so a
complete evaluation is linked to the run and skipped without loading the model.

An evaluation whose key is new only because its judge (or reward model) changed re-judges the
responses stored under its generation key (:func:`harness.evaluate.generation_key`): the suite runs
on a :class:`~harness.backends.replay.ReplayBackend` that answers from the stored answers, so the
model is not even loaded. Evaluations of suites that judge (or reward-score) responses keep their
backend answers for that (:func:`harness.evaluate.replayable`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, open_backend, resolve_backend
from harness.backends.replay import RecordingBackend, ReplayBackend, ReplayMissing
from harness.config import PipelineConfig, SuiteSpec
from harness.core import progress
from harness.core.artifacts import canonical_json, read_manifest, sha256_text
from harness.core.store import Store
from harness.evaluate import (
    REWARD_SUITES,
    EvalIdentity,
    eval_key,
    evaluate,
    generation_key,
    identify,
    replayable,
)
from suites import SUITES
from suites.items import select
from suites.suite import SuiteResult, counts_chat_template


def has_chat_template(ckpt_dir: Path) -> bool:
    """Whether a saved tokenizer carries a chat template (without loading it)."""
    if (ckpt_dir / "chat_template.jinja").is_file() or (ckpt_dir / "chat_template.json").is_file():
        return True
    config = ckpt_dir / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def world_items(world_dir: Path | None) -> dict[str, Path]:
    """Suite name -> the world's items file for it."""
    if world_dir is None:
        return {}
    from harness.world import WORLD_FILES

    items = {key.split("/", 1)[1]: world_dir / rel for key, rel in WORLD_FILES.items() if key.startswith("eval/")}
    items["capabilities"] = items["topic_coverage"]  # lm-eval tasks are written from the knowledge items
    return items


@dataclass(frozen=True)
class Target:
    """One checkpoint to evaluate (what the pipeline or `harness eval` knows of it)."""

    stage: str
    kind: str
    path: Path
    content_hash: str


@dataclass(frozen=True)
class EvalPlan:
    target: Target
    reward: Target | None  # the reward model that scores verbosity, if the run has one yet
    defer_reward: bool  # a reward model will exist later in this run: wait for it

    @classmethod
    def of(cls, ckpt: Any, reward: Any = None, defer_reward: bool = False) -> EvalPlan:
        as_target = lambda c: Target(c.stage, c.kind, Path(c.path), c.content_hash)  # noqa: E731
        return cls(as_target(ckpt), as_target(reward) if reward is not None else None, defer_reward)


class Evaluator:
    """Evaluates plans for one run; counts what it actually computed."""

    def __init__(
        self,
        cfg: PipelineConfig,
        store: Store,
        run_id: str,
        world_dir: Path | None,
        world_card: dict[str, Any] | None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.cfg, self.store, self.run_id, self.card, self.say = cfg, store, run_id, world_card, say
        self.items_paths = world_items(world_dir)
        self.backend_name = resolve_backend(cfg.backend.name)
        self.deferred: list[Target] = []
        self.computed = 0  # evaluations written (re-judged ones included)
        self.rejudged = 0  # of those, judged again from stored answers, nothing generated

    # ------------------------------------------------------------------ keys

    def _items_path(self, spec: SuiteSpec) -> Path:
        if spec.data:
            return Path(spec.data).expanduser().resolve()
        if spec.name not in self.items_paths:
            raise ValueError(f"suite {spec.name!r}: no `data:` file given and the world has no items for it")
        return self.items_paths[spec.name]

    def key(self, target: Target, spec: SuiteSpec, reward: Target | None) -> tuple[str, EvalIdentity]:
        """(eval key, identity): everything that decides the numbers, known before generating
        (:func:`harness.evaluate.identify`, the builder `harness eval` uses too)."""
        suite = SUITES.get(spec.name)
        items = select(suite.load_items(self._items_path(spec)), spec.max_items)
        reward_hash = reward.content_hash if (reward is not None and spec.name in REWARD_SUITES) else None
        ident = identify(spec, items, self.cfg.backend, reward_hash)
        return eval_key(target.content_hash, ident.fields), ident

    # ------------------------------------------------------------------ running

    def evaluate(self, plan: EvalPlan) -> None:
        target = plan.target
        chat_template = counts_chat_template(target.path, has_chat_template(target.path))
        todo: list[tuple[SuiteSpec, str, EvalIdentity]] = []
        for spec in self.cfg.suites:
            suite = SUITES.get(spec.name)
            if not suite.applies_to(target.kind, chat_template):
                continue
            if spec.name in REWARD_SUITES and plan.defer_reward:
                if target not in self.deferred:
                    self.deferred.append(target)
                continue
            key, info = self.key(target, spec, plan.reward)
            if self.store.is_evaluation_complete(key):
                self.store.link_evaluation(key, self.run_id, target.stage)
                continue
            todo.append((spec, key, info))
        if not todo:
            return
        start = time.perf_counter()
        opened: list[Backend] = []  # the model is loaded only when something is generated
        generated = []
        try:
            for spec, key, info in todo:
                reward_path = plan.reward.path if plan.reward is not None and info.fields["reward"] else None
                gen_key = generation_key(target.content_hash, info)
                done = self._rejudge(target, spec, info, gen_key, reward_path)
                if done is None:
                    if not opened:
                        with progress.loading(target.stage):
                            opened.append(open_backend(target.path, self.cfg.backend, self.cfg.model.trust_remote_code))
                    done = self._generate(target, spec, info, opened[0], reward_path)
                    generated.append(spec.label)
                result, answers = done
                self.store.begin_evaluation(
                    key, self.run_id, target.stage, spec.label, info.version, info.items_hash,
                    self.backend_name, info.decoding, info.fields["reward"], generation_key=gen_key,
                )
                self.store.write_evaluation(key, result.store_metrics(), result.store_samples(), answers)
                self.computed += 1
        finally:
            for backend in opened:
                backend.close()
        if generated:
            self.say(f"  evaluated {target.stage}: {', '.join(generated)} in {time.perf_counter() - start:.0f}s")

    def _run(self, target: Target, spec: SuiteSpec, runner: Backend, reward_path: Path | None) -> SuiteResult:
        (result,) = evaluate(
            target.path, target.kind, [spec], runner, self.items_paths, self.card, reward_path,
            decoding=self.cfg.backend.decoding, trust_remote_code=self.cfg.model.trust_remote_code,
            backend_spec=self.cfg.backend, where=target.stage,
        )
        return result

    def _generate(self, target: Target, spec: SuiteSpec, info: EvalIdentity, backend: Backend,
                  reward_path: Path | None) -> tuple[SuiteResult, dict[str, Any] | None]:
        """Ask the model; keep its answers when the suite's evaluations may be judged again."""
        if not replayable(spec.name):
            return self._run(target, spec, backend, reward_path), None
        recorder = RecordingBackend(backend)
        result = self._run(target, spec, recorder, reward_path)
        return result, {**recorder.answers(), "identity": info.fields}

    def _rejudge(self, target: Target, spec: SuiteSpec, info: EvalIdentity, gen_key: str,
                 reward_path: Path | None) -> tuple[SuiteResult, dict[str, Any]] | None:
        """The suite run again on the answers stored under ``gen_key`` (None when there are none)."""
        answers = self.store.stored_answers(gen_key) if replayable(spec.name) else None
        if answers is None:
            return None
        where = f"{spec.label} on {target.stage}"
        try:
            replay = ReplayBackend(answers, target.path, f"the stored answers of {where}")
            result = self._run(target, spec, replay, reward_path)
        except ReplayMissing as exc:
            self.say(f"  {where}: {exc}; generating instead")
            return None
        before = answers.get("identity") or {}
        changed = [what for what, fields in (("judge", ("judge", "suite_version")), ("reward model", ("reward",)))
                   if any(before.get(f) != info.fields[f] for f in fields)]
        verb = "re-judged" if "judge" in changed else "re-scored"
        scored = f" and {replay.scored} log-likelihoods" if replay.scored else ""
        self.say(f"  {where}: {verb} {replay.served} stored responses{scored} "
                 f"({' and '.join(changed) or 'nothing'} changed), no generation")
        self.rejudged += 1
        return result, {**answers, "identity": info.fields}

    def flush_deferred(self, reward: Any) -> None:
        """Run the reward-scored suites of checkpoints that were waiting for the reward model."""
        waiting, self.deferred = self.deferred, []
        for target in waiting:
            plan = EvalPlan(target, EvalPlan.of(reward).target if reward is not None else None, False)
            self.evaluate(plan)

    def record_reward_model(self, ckpt: Any) -> None:
        """The reward model's own held-out accuracy and reward-length correlation, stored as metrics."""
        metrics = read_manifest(Path(ckpt.path)).metrics
        rows = []
        for name, higher in (("heldout_accuracy", True), ("reward_length_corr", False)):
            if metrics.get(name) is not None:
                n = int(metrics.get("heldout_pairs") or 0)
                rows.append({"metric": f"reward_model.{name}", "value": float(metrics[name]), "ci_low": None,
                             "ci_high": None, "n": n, "higher_is_better": higher})
        if not rows:
            return
        key = sha256_text(canonical_json({"checkpoint": ckpt.content_hash, "suite": "reward_model"}))
        if self.store.is_evaluation_complete(key):
            self.store.link_evaluation(key, self.run_id, ckpt.stage)
            return
        self.store.begin_evaluation(key, self.run_id, ckpt.stage, "reward_model", "1", "", "training", {}, None)
        self.store.write_evaluation(key, rows, [])
