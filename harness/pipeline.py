"""The whole pipeline in one place: world -> init -> every stage in DAG order, evaluating each new checkpoint.

This is the only module that knows stage order. Everything it does is cached by content:

- the world lives under ``worlds/<hash of its config>`` and is generated once;
- a stage is skipped when a complete checkpoint with the same content hash exists
  (``training.runtime.execute``), and resumes from its last trainer checkpoint otherwise;
- an evaluation is skipped when the store holds a complete evaluation with the same key
  (checkpoint hash, suite + version + items hash, judge, backend + decoding, reward hash).

So a rerun after a crash (or with one knob changed) redoes only what is missing or changed,
and a no-op rerun does no training and no generation.

Verbosity is scored by the run's reward model. Policy checkpoints trained before the reward
model exists (``sft``) have their verbosity evaluation deferred until it does; when an
evaluation of the same responses exists under another reward model, its stored responses are
rescored instead of generated again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.config import (
    INIT,
    PipelineConfig,
    StageSpec,
    dump,
    stage_config,
    topological_order,
    world_config,
)
from harness.core import artifacts, progress
from harness.core.artifacts import Layout
from harness.core.config_errors import format_errors
from harness.core.store import Store
from harness.eval_runner import EvalPlan, Evaluator
from harness.judge_check import validate_judges
from harness.progress_display import TrainingProgress, progress_display


@dataclass
class Checkpoint:
    """A complete checkpoint of this run."""

    stage: str
    kind: str
    path: Path
    content_hash: str
    parent: str | None
    inputs: dict[str, str] = field(default_factory=dict)  # role -> stage
    skipped: bool = False
    wall_s: float = 0.0


@dataclass
class RunResult:
    run_id: str
    checkpoints: dict[str, Checkpoint]
    trained: list[str]  # stages actually trained in this invocation
    evaluated: int  # evaluations actually computed (not found in the store)
    wall_s: float
    summary_path: Path


def world_path(cfg: PipelineConfig, layout: Layout) -> Path | None:
    """Where the configured world lives (a hash of its config and the generator version), if any."""
    if cfg.world is None:
        return None
    from harness.world.card import GENERATOR_VERSION

    world_cfg = world_config(cfg.world)
    return layout.world_dir(artifacts.sha256_text(
        artifacts.canonical_json({"config": world_cfg.model_dump(mode="json"), "generator": GENERATOR_VERSION})
    ))


def ensure_world(cfg: PipelineConfig, layout: Layout, say: Callable[[str], None]) -> tuple[Path | None, dict | None]:
    """Generate the configured world once per distinct world config; return (dir, card)."""
    world_dir = world_path(cfg, layout)
    if cfg.world is None or world_dir is None:
        return None, None
    from harness.world import generate, load_card

    world_cfg = world_config(cfg.world)
    try:
        return world_dir, load_card(world_dir)
    except Exception:  # missing or incomplete: (re)generate; generate() writes the card last
        start = time.perf_counter()
        card = generate(world_cfg, world_dir)
        say(f"world: generated {world_dir.name} in {time.perf_counter() - start:.1f}s")
        return world_dir, card


def stage_data(spec: StageSpec, world_dir: Path | None) -> Path | str | None:
    """A stage's training data: its own `data:` (a file, or an `hf:` dataset reference kept as
    written), else the world's file for its kind."""
    from training import STAGES
    from training.data import is_hf

    if spec.data:
        return spec.data.strip() if is_hf(spec.data) else Path(spec.data).expanduser().resolve()
    key = STAGES.get(spec.kind).data_key
    if key is None:
        return None
    if world_dir is None:
        raise ValueError(f"stage {spec.name!r}: no `data:` given and the config has no world to take {key!r} from")
    from harness.world import WORLD_FILES

    return world_dir / WORLD_FILES[key]


def check_datasets(cfg: PipelineConfig, world_dir: Path | None) -> None:
    """Open every `hf:` dataset a stage names before anything trains: one that can not be loaded (offline
    and not cached, a wrong name or split) is a ``ConfigError`` naming the stage and the dataset."""
    from training.data import hf_ref, load_hf_dataset

    errors = []
    for i, spec in enumerate(cfg.stages):
        source = stage_data(spec, world_dir)
        ref = hf_ref(source) if isinstance(source, str) else None
        if ref is not None:
            try:
                load_hf_dataset(ref)
            except ValueError as exc:
                errors.append((f"stages[{i}].data", str(exc)))
    if errors:
        raise format_errors(cfg.name, errors)


def _existing_run(store: Store, cfg: PipelineConfig, card: dict | None) -> str | None:
    """Reuse the latest run with an identical config and world: a rerun resumes (or re-confirms)
    it. Another world under the same config (a new generator version) is another run."""
    wanted = artifacts.canonical_json(dump(cfg)), artifacts.canonical_json(card)
    runs = store.runs()
    for _, row in runs.sort_values("started_at", ascending=False).iterrows():
        if (artifacts.canonical_json(row["config"]), artifacts.canonical_json(row["world_card"])) == wanted:
            return str(row["run_id"])
    return None


class Pipeline:
    """Walks the stage DAG for one config. ``run()`` is the product's main job."""

    def __init__(self, cfg: PipelineConfig, console: Console | None = None, new_run: bool = False,
                 launch: Any = None, wide: bool = False) -> None:
        self.cfg = cfg
        self.launch = launch  # a harness.launch.Launch: training stages run under `accelerate launch`
        self.layout = Layout.of(cfg.output_dir)
        self.console = console or Console()
        self.new_run = new_run
        self.wide = wide  # the run summary as one wide table (`harness run --wide`)
        self.checkpoints: dict[str, Checkpoint] = {}
        self.trained: list[str] = []

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    # ------------------------------------------------------------------ training

    def _train(self, kind: str, name: str, config: Any, inputs: Any, lineage: dict[str, str]) -> Checkpoint:
        """Train (or find cached) one stage. ``lineage``: role -> stage name *in this config*: a
        checkpoint reused from the cache may have been trained under other stage names."""
        from training.runtime import execute

        start = time.perf_counter()
        if self.launch is not None and kind != INIT:  # its processes print their own progress
            result = self.launch.train(self.cfg, self.layout, kind, name, config, inputs, self.say)
        else:
            with progress.task(name, report=False, milestones=True) as meter:  # steps, loss and ETA while it trains
                result = execute(kind, name, config, inputs, self.layout, callbacks=[TrainingProgress(meter)])
        ckpt = Checkpoint(
            stage=name,
            kind=kind,
            path=result.path,
            content_hash=result.manifest.content_hash,
            parent=lineage.get("parent"),
            inputs=lineage,
            skipped=result.skipped,
            wall_s=time.perf_counter() - start,
        )
        if not result.skipped:
            self.trained.append(name)
        verb = "cached" if result.skipped else f"trained in {ckpt.wall_s:.0f}s"
        if self.launch is not None and kind != INIT and not result.skipped:
            verb += f" ({self.launch.describe()})"
        self.say(f"[bold]{name}[/] ({kind}): {verb} -> {result.path.name}")
        return ckpt

    def _init(self, world_dir: Path | None) -> Checkpoint:
        from training import StageInputs

        model = self.cfg.model
        if model.path:
            source = Path(model.path).expanduser()
        elif world_dir is not None:
            from harness.world import WORLD_FILES

            source = world_dir / WORLD_FILES["tokenizer"]
        else:
            raise ValueError("model.fresh needs a tokenizer: configure `world:` or give `model.path`")
        inputs = StageInputs(parent=source, data=None, seed=self.cfg.seed, trust_remote_code=model.trust_remote_code)
        return self._train("init", INIT, model, inputs, {})

    def _stage(self, spec: StageSpec, world_dir: Path | None) -> Checkpoint:
        from training import StageInputs

        inputs = StageInputs(
            parent=self.checkpoints[spec.from_].path,
            data=stage_data(spec, world_dir),
            reward=self.checkpoints[spec.reward].path if spec.reward else None,
            seed=self.cfg.seed,
            trust_remote_code=self.cfg.model.trust_remote_code,
        )
        lineage = {"parent": spec.from_, **({"reward": spec.reward} if spec.reward else {})}
        return self._train(spec.kind, spec.name, stage_config(spec), inputs, lineage)

    def _record(self, store: Store, run_id: str, ckpt: Checkpoint, status: str = "complete") -> None:
        manifest = artifacts.read_manifest(ckpt.path)
        store.upsert_checkpoint(
            run_id, ckpt.stage, ckpt.kind, ckpt.parent, ckpt.content_hash, str(ckpt.path), status,
            metrics=manifest.metrics, inputs=ckpt.inputs,
        )

    # ------------------------------------------------------------------ main

    def run(self) -> RunResult:
        with progress_display(self.console):  # bars in a terminal, a line per finished task in CI
            return self._run()

    def _run(self) -> RunResult:
        start = time.perf_counter()
        cfg = self.cfg
        self.layout.output_dir.mkdir(parents=True, exist_ok=True)
        world_dir, card = ensure_world(cfg, self.layout, self.say)
        check_datasets(cfg, world_dir)
        with Store(self.layout.store_path) as store:
            run_id = None if self.new_run else _existing_run(store, cfg, card)
            run_id = store.create_run(cfg.name, dump(cfg), card, run_id=run_id)
            self.say(f"run [bold]{run_id}[/] ({cfg.name}) -> {self.layout.output_dir}")
            validate_judges(cfg.suites, store, run_id, self.say, cfg.model.trust_remote_code)
            evaluator = Evaluator(cfg, store, run_id, world_dir, card, self.say)
            order = topological_order(cfg)
            reward_stage = next((s.name for s in order if s.kind == "reward"), None)
            current: StageSpec | None = None
            try:
                self.checkpoints[INIT] = ckpt = self._init(world_dir)
                self._record(store, run_id, ckpt)
                evaluator.evaluate(EvalPlan.of(ckpt, reward=None, defer_reward=reward_stage is not None))
                for current in order:
                    ckpt = self._stage(current, world_dir)
                    self.checkpoints[current.name] = ckpt
                    self._record(store, run_id, ckpt)
                    if current.kind == "reward":
                        evaluator.record_reward_model(ckpt)
                        evaluator.flush_deferred(ckpt)
                        continue
                    reward = self.checkpoints.get(reward_stage) if reward_stage else None
                    evaluator.evaluate(
                        EvalPlan.of(ckpt, reward=reward, defer_reward=reward_stage is not None and reward is None)
                    )
                evaluator.flush_deferred(None)  # a run whose reward stage never came: score without it
            except BaseException as exc:
                failed = current.name if current is not None else INIT
                path = getattr(exc, "path", None)
                if path is not None:  # training.runtime.StageFailed: record the failed checkpoint
                    kind = current.kind if current is not None else INIT
                    parent = current.from_ if current is not None else None
                    manifest = getattr(exc, "manifest", None)
                    store.upsert_checkpoint(run_id, failed, kind, parent, getattr(manifest, "content_hash", None),
                                            str(path), "failed", metrics={"error": getattr(manifest, "error", None)})
                store.finish_run(run_id, "failed")
                self.say(f"[red]run {run_id} failed at stage {failed!r}[/]" + (f" ({path})" if path else ""))
                self._effects_after_failure(store, run_id)
                raise
            try:
                self._after_run(store, run_id)
            except BaseException:
                store.finish_run(run_id, "failed")
                store.replace_effects(run_id, [])
                self.say(f"[red]run {run_id} failed: the stage attribution could not be computed[/]")
                raise
            store.finish_run(run_id, "complete")
            summary_path = self.layout.summary_path(run_id)
            from harness.summary import write_summary

            write_summary(store, run_id, summary_path, self.console, self.wide)
        return RunResult(run_id, self.checkpoints, self.trained, evaluator.computed, time.perf_counter() - start,
                         summary_path)

    def train_one(self, stage_name: str) -> Checkpoint:
        """Train (or confirm cached) one stage whose inputs already exist complete; no evaluation."""
        with progress_display(self.console):
            return self._train_one(stage_name)

    def _train_one(self, stage_name: str) -> Checkpoint:
        from training import StageInputs
        from training.runtime import stage_identity

        world_dir, _ = ensure_world(self.cfg, self.layout, self.say)
        check_datasets(self.cfg, world_dir)
        needed, frontier = set(), [self.cfg.stage(stage_name)]
        while frontier:  # the target's ancestors (parents and reward models)
            spec = frontier.pop()
            for dep in (spec.from_, spec.reward):
                if dep and dep != INIT and dep not in needed:
                    needed.add(dep)
                    frontier.append(self.cfg.stage(dep))
        self.checkpoints[INIT] = self._init(world_dir)
        for spec in topological_order(self.cfg):
            if spec.name == stage_name:
                return self._stage(spec, world_dir)
            if spec.name not in needed:
                continue
            inputs = StageInputs(
                parent=self.checkpoints[spec.from_].path, data=stage_data(spec, world_dir),
                reward=self.checkpoints[spec.reward].path if spec.reward else None, seed=self.cfg.seed,
                trust_remote_code=self.cfg.model.trust_remote_code,
            )
            ident = stage_identity(spec.kind, spec.name, stage_config(spec), inputs, self.layout)
            if not artifacts.is_complete(ident.path, ident.content_hash):
                raise RuntimeError(
                    f"stage {stage_name!r} needs {spec.name!r}, which has no complete checkpoint "
                    f"({ident.path}); train it first (`harness train {spec.name}`) or run the pipeline"
                )
            self.checkpoints[spec.name] = Checkpoint(spec.name, spec.kind, ident.path, ident.content_hash, spec.from_)
        raise KeyError(stage_name)

    def _after_run(self, store: Store, run_id: str) -> None:
        """Stage attribution, computed from the evaluations linked to the run and stored (report, gate
        and dashboard read it). Called after a failed run too: a rerun has already replaced links, and
        effects from before it would describe evaluations the run no longer shows."""
        from harness.effects_inputs import effects_current

        if effects_current(store, run_id, self.cfg.attribution):  # a rerun that changed nothing
            return
        from harness.report import compute_and_store_effects

        compute_and_store_effects(store, run_id, self.cfg.attribution)

    def _effects_after_failure(self, store: Store, run_id: str) -> None:
        """After a failure: effects of what is evaluated now, or none (never the previous run's)."""
        try:
            self._after_run(store, run_id)
        except Exception as exc:  # the run's own failure is what is raised; no stale effects stay
            store.replace_effects(run_id, [])
            self.say(f"[red]attribution of the partial run failed too ({type(exc).__name__}: {exc}); "
                     "its effects are cleared[/]")

