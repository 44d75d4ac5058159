"""What a stage is, to the rest of the harness: a tiny protocol, no base class.

Each ``training/<kind>.py`` exposes ``STAGE = StageDef(...)`` and keeps its heavy imports
(torch, transformers, TRL) inside ``run`` so that validating a config stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class StageInputs:
    """Everything a stage reads. Paths point at *complete* checkpoints only."""

    parent: Path  # the checkpoint this stage starts from (init, pretrain, sft, ...)
    data: Path | str | None  # training data file (JSONL/Parquet), an `hf:` dataset (training.data), or None
    reward: Path | None = None  # the reward-model checkpoint (RL stages)
    seed: int = 0
    trust_remote_code: bool = False
    resume_from: Path | None = None  # an intermediate trainer checkpoint to continue from
    state_dir: Path | None = None  # where the stage may save intermediate trainer checkpoints
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageDef:
    """A registered stage kind."""

    kind: str
    Config: type[BaseModel]  # the stage's own options, `extra="forbid"`, help text on every field
    run: Callable[[Any, StageInputs, Path], dict[str, Any]]  # (config, inputs, out_dir) -> training metrics
    version: str  # bump when the stage's code changes what it produces (part of the content hash)
    data_key: str | None = None  # the world file it reads by default: pretrain, sft, preferences, rl_prompts
    needs_reward: bool = False  # RL stages name a `reward` stage
    shardable: bool = True  # False: its own loop can not run under FSDP/DeepSpeed (`harness run --launch` uses DDP)
