"""The process a stage trains in: its rank under ``accelerate launch``, the barrier, seeds, torch
threads on CPU and peak memory."""

from __future__ import annotations

import os
import random
import resource
import sys
from typing import Any

THREADS_ENV = "HARNESS_TORCH_THREADS"  # overrides the torch thread count chosen on CPU
LAUNCH_ENV = "HARNESS_LAUNCH"  # the engine `harness run --launch` chose (ddp, fsdp, ...), recorded in manifests


def is_main_process() -> bool:
    """True on the process that writes manifests (rank 0 under ``accelerate launch``; always in one process)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def world_size() -> int:
    """Processes training this stage together (``WORLD_SIZE`` under ``accelerate launch``; else 1)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def wait_for_everyone() -> None:
    """A barrier across the processes of ``accelerate launch``; nothing in a single process. Without CUDA
    the state is made with ``cpu=True`` (gloo, MULTI_CPU): a plain ``PartialState()`` there is a single
    process on every rank, no barrier at all, and every accelerator made later inherits it."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def distributed_metrics(config: Any) -> dict[str, Any]:
    """What the manifest records about the processes: their number, the engine, and the global batch
    (per device x processes x accumulation; PPO: rollouts and minibatch per process x processes)."""
    n = world_size()
    out: dict[str, Any] = {"num_processes": n, "launch": os.environ.get(LAUNCH_ENV) or ("none" if n == 1 else "accelerate")}
    if getattr(config, "per_device_train_batch_size", None) is not None:
        accumulation = getattr(config, "gradient_accumulation_steps", 1)
        out["global_batch_size"] = config.per_device_train_batch_size * n * accumulation
    elif getattr(config, "rollout_batch_size", None) is not None:
        out["global_batch_size"] = config.rollout_batch_size * n
        out["global_minibatch_size"] = getattr(config, "minibatch_size", config.rollout_batch_size) * n
    return out


def cpu_threads() -> tuple[int, str]:
    """Torch threads on CPU and why: ``$HARNESS_TORCH_THREADS``, else ``$OMP_NUM_THREADS`` (the Makefile
    exports 1), else usable cores / local processes; at least 1.

    Never the machine's load: 1 and 2 threads sum floats in another order, and the difference grows over
    a run (the default pretraining's final loss 0.1954 with 2 threads, 0.1925 with 1), so a choice made
    from the load average gave one config and seed different weights on an idle and a busy machine
    (docs/calibration.md). On shared cores set one of the variables: measured on 2 cores with one
    other busy process, 2 threads ran 18x slower than 1 (260 vs 4,700 tokens/s).
    """
    for var in (THREADS_ENV, "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip():
            return max(1, int(os.environ[var])), f"${var}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, cores // local), f"{cores} usable cores / {local} local process(es)"


def prepare_process(seed: int) -> dict[str, Any]:
    """Seed python/numpy/torch, choose torch threads on CPU; returns what was set (for the manifest)."""
    import datasets
    import torch
    import transformers

    transformers.set_seed(seed)
    random.seed(seed)
    cuda = torch.cuda.is_available()
    reason = "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        threads, reason = cpu_threads()
        torch.set_num_threads(threads)
    datasets.disable_progress_bars()  # no bars or per-step prints: the pipeline shows progress
    transformers.logging.disable_progress_bar()
    cuda_bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    return {"device": "cuda" if cuda else "cpu", "torch_threads": torch.get_num_threads(),
            "torch_threads_reason": reason, "bf16": cuda_bf16, "seed": seed}


def peak_memory_mb() -> float:
    """CUDA: peak allocated by torch in this stage. CPU: the process's peak RSS (a lifetime high-water mark)."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (2**20 if sys.platform == "darwin" else 2**10), 1)
