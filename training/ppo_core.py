"""The math of PPO-RLHF as pure functions on tensors (no models, no I/O), one per step of the loop.

Shapes: ``[batch, T]`` over the *response* tokens of a rollout; ``mask`` is 1 on real response
tokens (up to and including the first end id: EOS or the chat template's end-of-turn) and 0 after. Every mean over tokens is a masked mean.
References: Ziegler et al. 2019; Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

ReduceSum = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor across processes (identity on one)


# --------------------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    reduce_sum: ReduceSum | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``(x - mean) / std`` over the masked entries; with ``reduce_sum`` the statistics are global across processes.

    ``shift_mean=False`` rescales without centring (keeps the sign of every entry).
    """
    m = mask.to(x.dtype)
    stats = torch.stack([(x * m).sum(), (x * x * m).sum(), m.sum()])
    if reduce_sum is not None:
        stats = reduce_sum(stats)
    total, total_sq, n = stats[0], stats[1], stats[2].clamp(min=1)
    mean = total / n
    var = (total_sq / n - mean**2).clamp(min=0)
    if n > 1:
        var = var * n / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(returns − values) / Var(returns): 1 is a perfect value model, ≤ 0 predicts nothing."""
    var_r = masked_var(returns, mask)
    return 1 - masked_var(returns - values, mask) / var_r.clamp(min=1e-8)


# --------------------------------------------------------------------------- log-probs


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(token) under ``softmax(logits / T)``: the distribution the tokens were sampled from."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_of(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / T)`` at every position."""
    logits = logits.float() / temperature
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def truncate_after_eos(
    responses: torch.Tensor, eos_id: int | Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response after its first end id (``eos_id``: one id or several, e.g. EOS and the chat
    template's end-of-turn token; the end token itself is kept and trained on).

    Returns ``(responses with pad after the end, mask, has_eos)``, ``has_eos`` true where any end id
    came; the mask is built from the end position, never from the pad id, so ``pad_id == eos_id``
    cannot mask the end away.
    """
    ends = torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id), device=responses.device)
    is_eos = torch.isin(responses, ends)
    has_eos = is_eos.any(dim=1)
    width = responses.shape[1]
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, width - 1, dtype=torch.long))
    mask = torch.arange(width, device=responses.device)[None, :] <= first[:, None]
    return responses.masked_fill(~mask, pad_id), mask.long(), has_eos


# --------------------------------------------------------------------------- rewards and advantages


def kl_penalised_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``−β·(logπ − logπ_ref)``, plus the score on each response's last real token.

    Returns ``(rewards, kl)`` with ``kl = (logπ − logπ_ref)·mask`` per token; a policy equal to the
    reference gets zero KL reward.
    """
    m = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * m
    rewards = -beta * kl
    last = (m.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response.

    ``δ_t = r_t + γ·V_{t+1} − V_t`` (``V`` past the last real token is 0), ``A_t = δ_t + γλ·A_{t+1}``,
    returns ``R_t = A_t + V_t``. Returns ``(advantages, returns)``, zero outside the mask.
    """
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    width = rewards.shape[1]
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * m


# --------------------------------------------------------------------------- losses


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate: masked mean of ``max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε))``.

    Also returns ``clipfrac`` (share of tokens where the clipped term is active) and
    ``approxkl = mean((ratio − 1) − log ratio)``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": masked_mean((ratio - 1) - log_ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``0.5 · masked mean of max((V − R)², (clip(V, V_old ± ε_v) − R)²)``."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((clipped_err > unclipped_err).float(), mask)}
    return loss, stats


# --------------------------------------------------------------------------- KL controller


@dataclass
class KLController:
    """The KL coefficient β: fixed, or adaptive (Ziegler et al. 2019) when ``target`` is set.

    Adaptive: ``e = clip(KL / target − 1, −0.2, 0.2)``; ``β ← β · (1 + e · n / horizon)`` after a
    batch of ``n`` episodes, so β rises when KL overshoots the target and falls below it.
    """

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, current_kl: float, n_episodes: int) -> float:
        if self.target is not None:
            error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        self.value = float(state["value"])  # type: ignore[arg-type]
        self.target = None if state.get("target") is None else float(state["target"])  # type: ignore[arg-type]
        self.horizon = int(state.get("horizon") or self.horizon)  # type: ignore[arg-type]
