"""Training stages across processes and machines, on accelerate: ``harness run CONFIG --launch ENGINE``.

The orchestrating process (``harness run``) keeps the world, evaluation, attribution and the
store. Each training stage whose checkpoint is not complete is handed to ``accelerate launch
--config_file configs/accelerate/<engine>.yaml ... -m harness.launch --config <the resolved
config> --stage <name>``; every process of that launch trains the one stage through
:meth:`harness.pipeline.Pipeline.train_one` (rank 0 alone writes the checkpoint and its
manifest, :mod:`training.runtime`), and the orchestrator reads the completed checkpoint back.
A launch that exits non-zero (a rank raised or died) fails the stage: the checkpoint is marked
failed unless it is complete, and the run fails as any failed stage does.

Engines: ``single`` (one process), ``ddp``, ``fsdp``, ``zero2``, ``zero3`` (DeepSpeed), or an
accelerate config file of your own. A stage whose own loop cannot be sharded
(``StageDef.shardable`` false: PPO trains two models and samples inside its loop) runs under
``ddp`` with the same processes when the engine shards, and the run says so.

Several machines: every machine runs the same ``harness run`` with its ``--machine-rank``; machine
0 orchestrates, the others (:func:`follow`) only join each stage's launch, in the same order, on a
shared ``output_dir``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from training.process import LAUNCH_ENV

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs" / "accelerate"
ENGINES = ("single", "ddp", "fsdp", "zero2", "zero3")
RENDEZVOUS_TIMEOUT_S = 7200  # several machines: how long the others wait at a stage while machine 0 evaluates
SHARDING = ("FSDP", "DEEPSPEED")


class LaunchError(ValueError):
    """A launch that can not work as asked (a usage error, found before anything trains)."""


def config_file(engine: str) -> Path:
    """The shipped accelerate config of ``engine``, or ``engine`` itself when it is a YAML file."""
    if engine in ENGINES:
        return CONFIG_DIR / f"{engine}.yaml"
    path = Path(engine)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise LaunchError(f"--launch {engine!r}: expected one of {', '.join(ENGINES)} or an accelerate config YAML file")


def accelerate_config(path: Path) -> dict[str, Any]:
    """The accelerate config as accelerate reads it (unknown keys are its error), checked for what the
    harness relies on: mixed precision left to the stages, full state dicts saved, 16-bit ZeRO-3 weights."""
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        cluster = load_config_from_file(str(path)).to_dict()
    except (ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        raise LaunchError(f"{path}: not an accelerate config ({exc})") from None
    kind = str(cluster.get("distributed_type"))
    problems = []
    if kind not in ("NO", "MULTI_GPU", *SHARDING):
        problems.append(f"distributed_type {kind}: expected NO, MULTI_GPU, FSDP or DEEPSPEED")
    if cluster.get("mixed_precision") not in ("no", None):
        problems.append("mixed_precision: keep 'no' (the stages choose bf16 on CUDA that supports it)")
    fsdp = cluster.get("fsdp_config") or {}
    if kind == "FSDP" and fsdp.get("fsdp_state_dict_type") != "FULL_STATE_DICT":
        problems.append("fsdp_config.fsdp_state_dict_type: FULL_STATE_DICT is needed to save an HF checkpoint")
    ds = cluster.get("deepspeed_config") or {}
    if kind == "DEEPSPEED" and int(ds.get("zero_stage", 0)) == 3 and not ds.get("zero3_save_16bit_model"):
        problems.append("deepspeed_config.zero3_save_16bit_model: true is needed to save an HF checkpoint")
    if problems:
        raise LaunchError(f"{path}: " + "; ".join(problems))
    return cluster


@dataclass(frozen=True)
class Launch:
    """How every training stage of a run is launched (``harness run --launch``)."""

    engine: str  # a shipped engine name, or the path of the user's accelerate config
    config_file: Path
    distributed_type: str  # NO, MULTI_GPU, FSDP, DEEPSPEED
    num_processes: int  # over all machines
    num_machines: int = 1
    machine_rank: int = 0
    main_address: str | None = None
    main_port: int | None = None

    @classmethod
    def plan(cls, engine: str, num_processes: int | None = None, num_machines: int = 1, machine_rank: int = 0,
             main_address: str | None = None, main_port: int | None = None) -> Launch:
        """Check the request against the accelerate config and this machine; :class:`LaunchError` if it can not work."""
        path = config_file(engine)
        cluster = accelerate_config(path)
        kind = str(cluster["distributed_type"])
        n = num_processes if num_processes is not None else int(cluster.get("num_processes", -1))
        if n < 1:
            raise LaunchError(f"{path} sets no num_processes; give --num-processes N")
        if kind == "NO" and n > 1:
            raise LaunchError(f"--launch {engine} runs one process; for {n} use --launch ddp (or fsdp, zero2, zero3)")
        if kind == "MULTI_GPU" and n < 2:
            raise LaunchError(f"--launch {engine} (DDP) needs at least 2 processes; for one use --launch single")
        if num_machines < 1 or not 0 <= machine_rank < num_machines:
            raise LaunchError(f"--machine-rank {machine_rank}: expected 0 <= rank < --num-machines {num_machines}")
        if n % num_machines:
            raise LaunchError(f"--num-processes {n} (over all machines) must be a multiple of --num-machines {num_machines}")
        if num_machines > 1 and not main_address:
            raise LaunchError("several machines need --main-address: machine 0's address, reachable from the others")
        if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
            raise LaunchError(f"--launch {engine} needs DeepSpeed, which needs CUDA: pip install deepspeed on a GPU machine")
        if kind == "FSDP" and not _cuda():
            raise LaunchError(f"--launch {engine}: FSDP needs CUDA GPUs (on CPU processes accelerate leaves it out "
                              "and trains plain DDP); on CPU use --launch ddp (gloo)")
        return cls(engine, path, kind, n, num_machines, machine_rank, main_address, main_port)

    def for_stage(self, shardable: bool) -> Launch:
        """The launch of one stage: DDP with the same processes for a stage that can not be sharded."""
        if shardable or self.distributed_type not in SHARDING:
            return self
        engine = "ddp" if self.num_processes > 1 else "single"
        return replace(self, engine=engine, config_file=config_file(engine),
                       distributed_type="MULTI_GPU" if self.num_processes > 1 else "NO")

    def command(self, pipeline_config: Path, stage: str) -> list[str]:
        """The ``accelerate launch`` command line that trains ``stage`` of the config file on every process
        (one machine without ``--main-port``: a free port, so that runs side by side do not collide)."""
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(self.config_file),
               "--num_processes", str(self.num_processes), "--num_machines", str(self.num_machines),
               "--machine_rank", str(self.machine_rank)]
        if self.main_address:
            cmd += ["--main_process_ip", self.main_address]
        port = self.main_port if self.main_port is not None else (0 if self.num_machines == 1 else None)
        if port is not None:
            cmd += ["--main_process_port", str(port)]
        if self.num_machines > 1:
            cmd += ["--rdzv_conf", f"timeout={RENDEZVOUS_TIMEOUT_S}"]
        return [*cmd, "-m", "harness.launch", "--config", str(pipeline_config), "--stage", stage]

    def describe(self) -> str:
        machines = f" on {self.num_machines} machines" if self.num_machines > 1 else ""
        return f"{self.engine}, {self.num_processes} process{'es' if self.num_processes > 1 else ''}{machines}"

    # ------------------------------------------------------------------ the orchestrator's side

    def train(self, cfg: Any, layout: Any, kind: str, name: str, config: Any, inputs: Any,
              say: Callable[[str], None]) -> Any:
        """Train one stage across the launch's processes (or find it complete); a ``StageResult``.
        Called by :class:`harness.pipeline.Pipeline` for every stage but ``init``."""
        from harness.config import dump
        from harness.core import artifacts
        from training import STAGES
        from training.runtime import StageFailed, StageResult, stage_identity

        ident = stage_identity(kind, name, config, inputs, layout, processes=self.num_processes)
        if artifacts.is_complete(ident.path, ident.content_hash):
            return StageResult(ident.path, artifacts.read_manifest(ident.path), True)
        launch = self.for_stage(STAGES.get(kind).shardable)
        if launch is not self:
            say(f"  {name}: launched with {launch.engine} (its loop does not run under {self.engine}; docs/multi-gpu.md)")
        text = yaml.safe_dump(dump(cfg), sort_keys=False)
        resolved = layout.output_dir / "launch" / f"{cfg.name}-{artifacts.sha256_text(text)[:12]}.yaml"
        resolved.parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_text_atomic(resolved, text)
        env = {**os.environ, LAUNCH_ENV: launch.engine}
        code = subprocess.run(launch.command(resolved, name), env=env, check=False).returncode
        if code == 0 and artifacts.is_complete(ident.path, ident.content_hash):
            return StageResult(ident.path, artifacts.read_manifest(ident.path), False)
        manifest = _fail(ident.path, f"`accelerate launch` ({launch.describe()}) exited with code {code}")
        raise StageFailed(f"stage {name!r} (kind {kind!r}) failed under {launch.describe()}: exit code {code}"
                          + (f"; {manifest.error}" if manifest is not None and manifest.error else "")
                          + (f"\n  checkpoint {ident.path} is marked failed" if manifest is not None else ""),
                          ident.path if manifest is not None else None, manifest)


def _fail(path: Path, error: str) -> Any:
    """The failed manifest of an unfinished launched stage: rank 0 marked it failed when it raised; when a
    process died instead, it is marked here (under the checkpoint's lock; never a complete checkpoint)."""
    from harness.core import artifacts

    if not (path / artifacts.MANIFEST).is_file():
        return None
    with artifacts.exclusive(path):
        manifest = artifacts.read_manifest(path)
        if manifest.status == "started" and not artifacts.is_complete(path):
            artifacts.mark_failed(path, manifest, error)
    return artifacts.read_manifest(path)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def follow(cfg: Any, launch: Launch, console: Any, poll_s: float = 5.0, timeout_s: float = 86400.0) -> list[str]:
    """Machine ranks > 0: join every stage launch machine 0 makes, in the same order, and nothing else (no
    world generation, no evaluation, no store). Returns the stages trained with this machine."""
    from harness.config import topological_order
    from harness.pipeline import Pipeline, world_path
    from harness.world import load_card

    pipeline = Pipeline(cfg, console, launch=launch)
    world_dir = world_path(cfg, pipeline.layout)
    deadline = time.monotonic() + timeout_s
    while world_dir is not None:  # machine 0 generates it
        try:
            load_card(world_dir)
            break
        except Exception:  # not there yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_dir}: machine 0 has not generated the world (is output_dir shared?)") from None
            time.sleep(poll_s)
    pipeline.checkpoints["init"] = pipeline._init(world_dir)
    for spec in topological_order(cfg):
        pipeline.checkpoints[spec.name] = pipeline._stage(spec, world_dir)
    return pipeline.trained


def plan_or_follow(cfg: Any, console: Any, engine: str | None, num_processes: int | None = None, num_machines: int = 1,
                   machine_rank: int = 0, main_address: str | None = None, main_port: int | None = None) -> Launch | None:
    """``harness run``'s launch options: None without ``--launch``; on machine 0 the plan; on the other
    machines the plan after :func:`follow` has trained every stage with machine 0 (nothing more to do)."""
    if engine is None:
        if (num_processes, num_machines, machine_rank, main_address, main_port) != (None, 1, 0, None, None):
            raise LaunchError("--num-processes, --num-machines, --machine-rank, --main-address and --main-port "
                              "go with --launch (e.g. --launch ddp)")
        return None
    plan = Launch.plan(engine, num_processes, num_machines, machine_rank, main_address, main_port)
    if plan.machine_rank > 0:
        trained = follow(cfg, plan, console)
        console.print(f"machine {plan.machine_rank}: trained {', '.join(trained) or 'nothing (all cached)'} "
                      f"with machine 0 ({plan.describe()}); machine 0 evaluates and stores", highlight=False)
    return plan


def main(argv: list[str] | None = None) -> int:
    """Every process of a launch: train one stage of the config (``Pipeline.train_one``); rank 0 prints."""
    from rich.console import Console

    from harness.config import ConfigError, load_config
    from harness.pipeline import Pipeline
    from training.process import is_main_process
    from training.runtime import StageFailed

    parser = argparse.ArgumentParser(prog="python -m harness.launch", description=main.__doc__)
    parser.add_argument("--config", required=True, help="the resolved pipeline config (YAML)")
    parser.add_argument("--stage", required=True, help="the stage to train")
    args = parser.parse_args(argv)
    console = Console(quiet=not is_main_process())
    try:
        Pipeline(load_config(args.config), console).train_one(args.stage)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StageFailed, RuntimeError) as exc:  # the whole chain: which rank failed where
        traceback.print_exception(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
