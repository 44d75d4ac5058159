"""Which rollouts and minibatches each process holds in a PPO step, so that N processes with the same
global batch train on exactly what 1 process would: the step's global batch is a run of consecutive
positions in a seeded stream over the prompts, process r holds the r-th slice, and every minibatch is
dealt so that process r's k-th minibatch is its part of the single-process k-th minibatch.
"""

from __future__ import annotations

from typing import Any


def global_positions(step: int, batch: int, process: int, num_processes: int) -> range:
    """Positions in the stream of rollouts of ``step`` (1-based) on ``process``: the global batch of a step is
    ``batch * num_processes`` consecutive positions, process r holding the r-th slice."""
    start = (step - 1) * batch * num_processes + process * batch
    return range(start, start + batch)


def minibatch_rows(shuffle: Any, batch: int, minibatch: int, process: int, num_processes: int) -> list[Any]:
    """One PPO epoch's minibatches on ``process``: local row indices, one tensor per minibatch. The step's
    global batch (``batch * num_processes`` rollouts in global order) is cut into runs of
    ``n = batch // minibatch`` consecutive rollouts and ``shuffle`` deals each run's rollouts to the n
    minibatches, one each. Process r holds runs ``r * minibatch`` to ``(r + 1) * minibatch - 1`` whole,
    so its k-th minibatch is its part of the single-process k-th minibatch, for any number of processes."""
    import torch

    n = batch // minibatch
    deal = torch.rand(minibatch * num_processes, n, generator=shuffle).argsort(dim=1)
    mine = deal[process * minibatch:(process + 1) * minibatch]
    return [torch.arange(minibatch) * n + mine[:, k] for k in range(n)]


def batch_indices(step: int, n: int, batch: int, process: int, num_processes: int, seed: int) -> list[int]:
    """Prompt indices for ``step`` (1-based) on ``process``: a seeded reshuffle every epoch, deterministic for resume."""
    import torch

    out, perms = [], {}
    for p in global_positions(step, batch, process, num_processes):
        epoch = p // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
        out.append(perms[epoch][p % n])
    return out
