"""PPO's models and the forward passes it runs on them: policy / reference log-probs, per-token
values, and sampling a rollout.

Every forward sees the same layout as the rollout: a left-padded prompt followed by the
response (padded after its first end id), ``position_ids = cumsum(mask) - 1``, and logits
divided by the sampling temperature — so the log-probs used in the PPO ratio are those of
exactly the tokens that were sampled, from exactly the distribution they were sampled from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from harness.core.reward import require_safetensors, token_scores
from training.ppo_core import entropy_of, logprobs_of, truncate_after_eos


class ValueModel(torch.nn.Module):
    """V(s_t) at every position: a sequence-classification model's backbone + score head, per token.

    Initialised from the reward model (its head already maps hidden states to the reward scale,
    so early value estimates are sensible) or, with ``value_init: policy``, from the SFT policy
    with a fresh one-output head.
    """

    def __init__(self, path: Path, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        require_safetensors(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype
        ).eval()  # eval mode: dropout off (autograd still works)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return token_scores(self.model, input_ids, attention_mask, position_ids).float()


def position_ids_of(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def left_pad(rows: list[list[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def sampling_config(max_new_tokens: int, eos_id: int | Sequence[int], pad_id: int) -> GenerationConfig:
    """``generate``'s settings for a rollout: argmax over the logits :class:`RowSampler` perturbs (so
    nothing else warps them: no top-k, top-p or repetition penalty), stopping at any end id and
    padding after it. ``eos_id``: every end id (:func:`harness.backends.stops.end_token_ids`)."""
    return GenerationConfig(
        do_sample=False, top_k=None, top_p=None, temperature=None, min_new_tokens=0, max_new_tokens=max_new_tokens,
        eos_token_id=eos_id if isinstance(eos_id, int) else list(eos_id), pad_token_id=pad_id, repetition_penalty=1.0,
    )


class RowSampler(LogitsProcessor):
    """Sampling at temperature T by the Gumbel-max trick with one generator per row: the argmax of
    ``logits / T + G`` (G i.i.d. Gumbel) is a draw from ``softmax(logits / T)``, and row i's noise comes
    from its own seed only. A prompt's response therefore depends on its seed, never on which other
    prompts share its batch or process: 1 process and N processes with the same global batch draw the
    same rollouts, and a resumed run needs no random state for them."""

    def __init__(self, seeds: Sequence[int], temperature: float) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u))  # u in [0, 1): u = 0 gives -inf, never chosen
        return (scores.double() / self.temperature + gumbel.to(scores.device)).to(scores.dtype)


def rollout_seeds(seed: int, positions: Sequence[int]) -> list[int]:
    """One sampling seed per rollout, from the run's seed and the rollout's global position (step and
    index in the global batch: :func:`training.ppo_batches.batch_indices`' ``p``)."""
    return [(seed * 1_000_003 + p) % 2**63 for p in positions]


@torch.no_grad()
def sample(
    policy: Any, queries: torch.Tensor, query_mask: torch.Tensor, gen: GenerationConfig, eos_id: int | Sequence[int],
    pad_id: int, seeds: Sequence[int], temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample responses (one seed per row, :class:`RowSampler`); returns ``(responses cut after the
    first end id, response mask, has_eos)``."""
    out = policy.generate(input_ids=queries, attention_mask=query_mask, generation_config=gen,
                          logits_processor=LogitsProcessorList([RowSampler(seeds, temperature)]))
    return truncate_after_eos(out[:, queries.shape[1]:], eos_id, pad_id)


def response_logits(
    model: Any, queries: torch.Tensor, query_mask: torch.Tensor, responses: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Logits predicting each response token, ``[batch, R, vocab]``."""
    width = responses.shape[1]
    ids = torch.cat([queries, responses], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_of(mask), logits_to_keep=width + 1,
                use_cache=False)
    return out.logits[:, :-1]


def response_logprobs(
    model: Any, queries: torch.Tensor, query_mask: torch.Tensor, responses: torch.Tensor, response_mask: torch.Tensor,
    temperature: float, with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(a_t | s_t) at temperature T for each response token (and optionally the entropy)."""
    logits = response_logits(model, queries, query_mask, responses, response_mask)
    logprobs = logprobs_of(logits, responses, temperature)
    entropy = entropy_of(logits.detach(), temperature) if with_entropy else None
    return logprobs, entropy


def response_values(
    value_model: Any, queries: torch.Tensor, query_mask: torch.Tensor, responses: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """V(s_t) for the state before each response token, ``[batch, R]``."""
    ids = torch.cat([queries, responses], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    values = value_model(ids, mask, position_ids_of(mask))
    return values[:, queries.shape[1] - 1 : -1]
