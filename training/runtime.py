"""What every training stage shares, in one place: identity, caching, resuming, seeding, metrics.

The pipeline (or ``harness train``) calls, per stage::

    path, manifest, skipped = execute("dpo", "dpo", config, StageInputs(parent=sft_dir, data=prefs), layout)

``execute`` hashes the stage (``artifacts.content_hash`` over kind + seed + config, every input
checkpoint's content hash, the data fingerprint, ``StageDef.version`` and a fingerprint of the code
the stage runs and of the training libraries, :func:`stage_code_version`); a *complete* checkpoint
with that hash means ``skipped=True`` and no training. Otherwise, holding a lock on the folder
(two runs sharing an output_dir train it once), it trains into
``layout.checkpoint_dir(kind, hash)``: ``started`` manifest, the stage's ``run`` (resuming
from the newest trainer checkpoint in the state dir), metrics + loss curve into the manifest,
completion marker last; an exception marks it ``failed`` and raises :class:`StageFailed`.
Inputs must be complete checkpoints, except the ``init`` stage's parent: an external folder
(the world tokenizer or a user's HF model) identified by a fingerprint of its files.

Stage helpers, so that stages behave alike: :func:`train_args`, :func:`run_trainer` (NaN guard,
``resume_from_checkpoint``), :func:`load_tokenizer`, :func:`load_causal_lm` (safetensors only),
:func:`save_checkpoint`; data files are read by :mod:`training.data`. Torch/transformers are imported
inside functions.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from harness.core import artifacts
from harness.core.artifacts import InputRef, Layout, Manifest
from harness.core.fingerprint import TRAINING_LIBRARIES, code_fingerprint
from harness.core.spec import INIT
from training.data import data_fingerprint
from training.process import (
    distributed_metrics,
    is_main_process,
    peak_memory_mb,
    prepare_process,
    wait_for_everyone,
    world_size,
)
from training.stage import StageInputs

# options that change how a stage runs, not what it produces: left out of the content hash
NOT_HASHED = frozenset({"logging_steps", "save_steps", "save_total_limit", "keep_trainer_state"})


class StageFailed(RuntimeError):
    """A stage raised; its checkpoint (``.path``, ``.manifest``: status failed) is marked failed."""

    def __init__(self, message: str, path: Path | None = None, manifest: Manifest | None = None) -> None:
        super().__init__(message)
        self.path, self.manifest = path, manifest


class NonFiniteLoss(RuntimeError):
    """The training loss (or gradient norm) became NaN/Inf."""


class StageResult(NamedTuple):
    path: Path  # the checkpoint directory
    manifest: Manifest
    skipped: bool  # a complete checkpoint with the same content hash existed; nothing was trained


class StageIdentity(NamedTuple):
    content_hash: str
    path: Path
    inputs: dict[str, InputRef]
    data_fingerprint: str
    config: dict[str, Any]
    code_version: str


class TrainOptions(BaseModel):
    """Trainer options every stage shares (each stage's ``Config`` extends this with its own fields)."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    per_device_train_batch_size: int = Field(16, ge=1, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name: linear, cosine, constant, ...")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of the steps spent warming the learning rate up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    max_length: int = Field(256, ge=8, description="Longest training sequence in tokens (longer ones are truncated or dropped).")
    logging_steps: int = Field(
        1, ge=1, le=10, description="Log (and check the loss for NaN/Inf) every N steps; <= 10 so a NaN aborts within 10 steps."
    )
    save_steps: int = Field(100, ge=1, description="Save a resumable trainer checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Trainer checkpoints kept for resuming (older ones are deleted).")
    keep_trainer_state: bool = Field(False, description="Keep the resumable trainer checkpoints after the stage completes.")


def _input_refs(kind: str, inputs: StageInputs) -> dict[str, InputRef]:
    refs: dict[str, InputRef] = {}
    checkpoints = {"parent": inputs.parent, "reward": inputs.reward, **inputs.extra.get("checkpoints", {})}
    for role, path in checkpoints.items():
        if path is None:
            continue
        path = Path(path)
        if kind == INIT and role == "parent":  # an external folder: tokenizer or a user's HF model
            if not path.exists():
                raise FileNotFoundError(f"{path}: the init stage's source folder does not exist")
            refs[role] = InputRef(stage="external", content_hash=artifacts.fingerprint_paths([path]), path=str(path.resolve()))
        else:
            manifest = artifacts.require_complete(path)
            refs[role] = InputRef(stage=manifest.stage, content_hash=manifest.content_hash, path=str(path.resolve()))
    return refs


def stage_identity(kind: str, stage_name: str, config: BaseModel, inputs: StageInputs, layout: Layout,
                   processes: int | None = None) -> StageIdentity:
    """The content hash and checkpoint directory this stage would produce (reads input manifests only).
    ``processes`` (default: this launch's world size) enters the hash when > 1: it multiplies the global
    batch and splits the data, so a 2-process checkpoint is another checkpoint (``init`` only copies)."""
    refs = _input_refs(kind, inputs)
    data_fp = data_fingerprint(inputs.data, stage_name) if inputs.data is not None else ""
    dumped = config.model_dump(mode="json")
    keyed = {"kind": kind, "seed": inputs.seed, "options": {k: v for k, v in dumped.items() if k not in NOT_HASHED}}
    processes = world_size() if processes is None else processes
    if processes > 1 and kind != INIT:
        keyed["processes"] = processes
    code = stage_code_version(kind)
    digest = artifacts.content_hash(keyed, {r: ref.content_hash for r, ref in refs.items()}, data_fp, code)
    # content-addressed by kind, not name: renaming a stage in a config reuses its checkpoint
    return StageIdentity(digest, layout.checkpoint_dir(kind, digest), refs, data_fp, dumped, code)


def stage_code_version(kind: str) -> str:
    """``StageDef.version`` + a fingerprint of the stage module's source and every project module it
    imports (runtime, PPO core, reward scorer ...) + the training libraries' versions."""
    from training import STAGES

    return f"{STAGES.get(kind).version}+{code_fingerprint([STAGES.module_of(kind)], TRAINING_LIBRARIES)[:16]}"


def execute(
    kind: str,
    stage_name: str,
    config: BaseModel | dict[str, Any],
    inputs: StageInputs,
    layout: Layout,
    *,
    callbacks: list[Any] | None = None,
) -> StageResult:
    """Run one stage unless an identical complete checkpoint exists (module docstring). ``config``: the kind's
    ``Config`` or a dict; ``callbacks``: extra ``TrainerCallback`` objects (e.g. progress) for the trainer."""
    from training import STAGES

    stage = STAGES.get(kind)
    if not isinstance(config, stage.Config):
        config = stage.Config.model_validate(config if isinstance(config, dict) else config.model_dump())
    ident = stage_identity(kind, stage_name, config, inputs, layout)
    if world_size() == 1 and artifacts.is_complete(ident.path, ident.content_hash):
        return StageResult(ident.path, artifacts.read_manifest(ident.path), True)
    # Two runs sharing an output_dir: the second waits here, then finds the checkpoint complete.
    # Only rank 0 locks under `accelerate launch`; the others decide after a barrier it passes holding
    # the lock, so every rank sees the same state (complete, or about to be trained by rank 0).
    with artifacts.exclusive(ident.path) if is_main_process() else nullcontext():
        wait_for_everyone()
        if artifacts.is_complete(ident.path, ident.content_hash):
            return StageResult(ident.path, artifacts.read_manifest(ident.path), True)
        return _train(kind, stage_name, config, inputs, layout, ident, callbacks)


def _train(kind: str, stage_name: str, config: BaseModel, inputs: StageInputs, layout: Layout,
           ident: StageIdentity, callbacks: list[Any] | None) -> StageResult:
    from training import STAGES

    stage, out = STAGES.get(kind), ident.path
    main = is_main_process()
    manifest = Manifest(
        stage=stage_name, kind=kind, content_hash=ident.content_hash, inputs=ident.inputs, config=ident.config,
        data_fingerprint=ident.data_fingerprint, code_version=ident.code_version,
        package_version=artifacts.package_version(), git_revision=artifacts.git_revision(),
    )
    state_dir = layout.trainer_state_dir(out)
    resume = latest_trainer_checkpoint(state_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / artifacts.COMPLETE_MARKER).unlink(missing_ok=True)
        artifacts.write_manifest(out, manifest)
    env = prepare_process(inputs.seed)
    extra = {**inputs.extra, "callbacks": list(callbacks or [])}
    run_inputs = replace(inputs, resume_from=resume, state_dir=state_dir, extra=extra)
    start = time.perf_counter()
    try:
        metrics = dict(stage.run(config, run_inputs, out) or {})
    except BaseException as exc:
        if main:
            artifacts.mark_failed(out, manifest, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, Exception):
            raise StageFailed(
                f"stage {stage_name!r} (kind {kind!r}) failed: {type(exc).__name__}: {exc}\n"
                f"  checkpoint {out} is marked failed; a rerun resumes from its last trainer checkpoint, if any",
                out, manifest,
            ) from exc
        raise
    manifest.log_history = _json_safe(metrics.pop("log_history", []))
    metrics.update(env, wall_s=round(time.perf_counter() - start, 3), peak_memory_mb=peak_memory_mb())
    metrics.update(distributed_metrics(config))
    metrics["resumed_from"] = str(resume) if resume else None
    manifest.metrics = _json_safe(metrics)
    if main:
        artifacts.mark_complete(out, manifest)
        if not getattr(config, "keep_trainer_state", False):
            shutil.rmtree(state_dir, ignore_errors=True)
    wait_for_everyone()  # under `accelerate launch`, no rank moves on before the checkpoint is complete
    return StageResult(out, manifest, False)


def _json_safe(obj: Any) -> Any:
    """NaN/Inf become strings so the manifest stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def latest_trainer_checkpoint(state_dir: Path) -> Path | None:
    """The newest *fully written* ``checkpoint-N`` under ``state_dir`` (its trainer_state.json parses), if any."""
    found = []
    for ckpt in Path(state_dir).glob("checkpoint-*") if Path(state_dir).is_dir() else []:
        step, state = ckpt.name.rpartition("-")[2], ckpt / "trainer_state.json"
        if step.isdigit() and state.is_file() and any(ckpt.glob("*.safetensors")):
            try:
                json.loads(state.read_text(encoding="utf-8"))
                found.append((int(step), ckpt))
            except (OSError, ValueError):
                continue  # killed while writing it: the previous one is used
    return max(found)[1] if found else None


def train_args(config: TrainOptions, inputs: StageInputs, **overrides: Any) -> dict[str, Any]:
    """Kwargs shared by every stage's ``TrainingArguments`` / TRL config: CPU without CUDA, bf16 on CUDA when
    supported, no reporting, no gradient checkpointing (TRL's default is on), resumable trainer checkpoints
    in the state dir, NaN losses logged as NaN (the Trainer's default filter hides them)."""
    import torch

    cuda = torch.cuda.is_available()
    if inputs.state_dir is None:
        raise ValueError("inputs.state_dir is unset; stages are run through training.runtime.execute")
    options = config.model_dump(include={
        "learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
        "lr_scheduler_type", "weight_decay", "max_grad_norm", "logging_steps", "save_steps", "save_total_limit",
    })
    return {
        **options, "output_dir": str(inputs.state_dir), "seed": inputs.seed, "data_seed": inputs.seed,
        "max_steps": config.max_steps or -1, "warmup_steps": config.warmup_ratio,  # a float < 1 is a ratio
        "logging_strategy": "steps", "logging_nan_inf_filter": False, "save_strategy": "steps", "report_to": [],
        "use_cpu": not cuda, "bf16": bool(cuda and torch.cuda.is_bf16_supported()), "fp16": False,
        "gradient_checkpointing": False, "disable_tqdm": True, "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,  # every parameter trains; True costs a graph walk per step
        "include_num_input_tokens_seen": "non_padding", **overrides,
    }


def _non_finite_guard():
    from transformers import TrainerCallback

    class NonFiniteGuard(TrainerCallback):
        """Aborts training at the first logged NaN/Inf loss or gradient norm (logging_steps <= 10)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if isinstance(value, int | float) and not math.isfinite(value):
                    raise NonFiniteLoss(
                        f"non-finite {key} ({value}) at step {state.global_step}; training aborted "
                        f"(learning rate {args.learning_rate:g}). Lower the learning rate or check the data."
                    )

    return NonFiniteGuard()


def run_trainer(trainer: Any, inputs: StageInputs) -> dict[str, Any]:
    """``trainer.train(resume_from_checkpoint=inputs.resume_from)`` with the NaN guard. Returns metrics: losses,
    steps, non-padding tokens, tokens/s of this process's part, ``log_history`` (moved to the manifest)."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_non_finite_guard())
    for callback in inputs.extra.get("callbacks", []):
        trainer.add_callback(callback)
    resume = inputs.resume_from
    tokens_before = 0
    if resume is not None:
        state = json.loads((Path(resume) / "trainer_state.json").read_text(encoding="utf-8"))
        tokens_before = int(state.get("num_input_tokens_seen", 0) or 0)
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    state = trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    runtime = float(output.metrics.get("train_runtime", 0.0)) or 1e-9
    tokens = int(state.num_input_tokens_seen or 0)
    return {
        "train_loss": float(output.training_loss), "final_loss": losses[-1] if losses else None,
        "first_losses": losses[:5], "global_step": int(state.global_step), "train_runtime_s": round(runtime, 3),
        "train_tokens": tokens, "tokens_per_s": round((tokens - tokens_before) / runtime, 1),
        "log_history": list(state.log_history),
    }


def load_tokenizer(path: Path, inputs: StageInputs):
    """The checkpoint's tokenizer; a missing pad token becomes EOS (batching needs one)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=inputs.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: Path, inputs: StageInputs):
    """A causal LM from safetensors only (pickled weights are refused), on CPU in float32."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path), use_safetensors=True, trust_remote_code=inputs.trust_remote_code, dtype="float32"
    )


def save_checkpoint(model: Any, tokenizer: Any, out: Path, trainer: Any = None) -> None:
    """Model (safetensors), config, generation config, tokenizer and chat template into ``out`` (main process).

    With ``trainer``, ``trainer.save_model`` saves (distributed-aware, the tokenizer included).
    """
    if trainer is None:
        if is_main_process():
            model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
        return
    trainer.save_model(str(out))
    (Path(out) / "training_args.bin").unlink(missing_ok=True)  # a pickle; never needed, never loaded
    trainer.accelerator.wait_for_everyone()
