"""Stage ``ppo``: RLHF policy optimisation with the project's own compact PPO (TRL removed its PPOTrainer).

Four models (``../shared/PPO.md``): the **policy** and a frozen **reference** both start from
the SFT parent; the frozen **reward model** is the ``reward`` stage's checkpoint; the **value
model** is initialised from the reward model's weights (``value_init: reward``, the
InstructGPT / TRL choice: its head already maps hidden states to the reward's scale, so early
advantages are not noise) and predicts V(s_t) at every response position through that head.
Dropout is off in all four.

One iteration (``step``):
1. **rollout** — left-padded prompts, responses sampled at temperature T (plain sampling),
   cut after the first end id (EOS, the generation config's, the chat template's end-of-turn:
   :func:`harness.backends.stops.end_token_ids`, as every backend stops); log-probs of the sampled tokens under policy and reference with
   logits / T; values at every response position.
2. **score** — the reward model reads prompt + response as it was trained (chat template,
   right-padded, last real token; the response decoded without special tokens); scores optionally normalised by the SFT policy's own
   score statistics (taken from the first rollout, which the untouched SFT policy produced);
   a response that never emits an end id gets the fixed score ``−missing_eos_penalty`` instead.
3. **rewards** ``r_t = −β·(logπ − logπ_ref)`` plus the score on the last token; β fixed or
   adaptive (target KL + horizon).
4. **GAE** (γ, λ) → advantages, whitened over all response tokens of all processes; returns.
5. **update** — ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss, clipped
   value loss, gradient clipping, one optimizer + scheduler per model.

Every step logs, over the rollouts of every process (``explained_variance``: rank 0's), returned
as ``log_history`` and written to ``ppo_log.jsonl``: ``score`` (mean raw reward-model score),
``score_used`` (after normalisation and the EOS penalty), ``kl`` (mean over responses of
Σ_t logπ − logπ_ref), ``non_score_reward`` (−β·kl), ``rlhf_reward``, ``kl_coef``,
``entropy``, ``clipfrac``, ``approxkl``, ``policy_loss``, ``value_loss``, ``value_clipfrac``,
``explained_variance``, ``mean_response_length`` (tokens, EOS included), ``mean_response_words``,
``no_eos_share``, ``lr`` and the seconds spent generating, scoring, in forward passes and updating. Every ``save_every`` steps the full training state is
saved to ``inputs.state_dir`` (safetensors + JSON, no pickle); a killed run continues from
the last save. A non-finite score or loss aborts the stage with a message saying which.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.backends.base import Prompt, encode_prompt
from harness.backends.stops import end_token_ids
from training.ppo_batches import batch_indices, global_positions, minibatch_rows
from training.stage import StageDef, StageInputs

LOG_FILE = "ppo_log.jsonl"
log = logging.getLogger(__name__)


class Config(BaseModel):
    """Options of a ``ppo`` stage (defaults sized for the embedded world's tiny models on CPU)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(30, ge=1, description="PPO iterations; each samples one rollout batch and updates on it.")
    total_episodes: int | None = Field(
        None, ge=1, description="If set, overrides `steps`: ceil(total_episodes / (rollout_batch_size × processes)).")
    rollout_batch_size: int = Field(32, ge=1, description="Prompts sampled per iteration, per process.")
    minibatch_size: int = Field(16, ge=1, description="Rollouts per gradient step (must divide rollout_batch_size).")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch (reshuffled into minibatches each time).")
    learning_rate: float = Field(1e-4, gt=0, description="Policy learning rate (AdamW).")
    value_learning_rate: float = Field(1e-4, gt=0, description="Value-model learning rate (AdamW).")
    lr_schedule: Literal["constant", "linear"] = Field("linear", description="`linear` decays both rates to 0 over `steps`.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay for both models.")
    adam_eps: float = Field(1e-5, gt=0, description="AdamW epsilon (1e-5 as in the PPO implementation details).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature; log-probs use logits / temperature too.")
    max_new_tokens: int = Field(64, ge=1, description="Longest response sampled; a response cut here has no EOS.")
    max_prompt_length: int = Field(256, ge=1, description="Prompts longer than this many tokens are skipped (logged).")
    kl_coef: float = Field(0.05, ge=0, description="β of the per-token KL penalty (initial value when adaptive).")
    kl_target: float | None = Field(
        None, gt=0, description="Adaptive β: target KL per response (summed over tokens); null keeps β fixed.")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive β: episodes over which β moves towards the target.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount in GAE (1: the end score counts fully at every token).")
    lam: float = Field(0.95, ge=0, le=1, description="λ of GAE (bias/variance trade-off of the advantages).")
    cliprange: float = Field(0.2, gt=0, description="ε of the clipped policy objective: ratio kept in [1−ε, 1+ε].")
    cliprange_value: float = Field(0.2, gt=0, description="ε_v of the clipped value loss around the rollout's values.")
    vf_coef: float = Field(0.1, gt=0, description="Weight of the value loss in the summed loss.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip, per model.")
    missing_eos_penalty: float | None = Field(
        3.0, description="A response that never emits EOS gets the fixed score −penalty (in normalised score "
        "units) instead of the reward model's score, so rambling to max_new_tokens never pays; null disables.")
    score_norm: Literal["none", "sft_mean", "sft_whiten"] = Field(
        "sft_whiten", description="Normalise reward-model scores with the SFT policy's own statistics (first "
        "rollout): `sft_mean` subtracts the mean, `sft_whiten` also divides by the std; `none` uses raw scores.")
    value_init: Literal["reward", "policy"] = Field(
        "reward", description="Value model from the reward model's weights (`reward`, needs the same tokenizer) "
        "or from the SFT policy with a fresh head (`policy`).")
    save_every: int = Field(10, ge=0, description="Save the full training state every N steps for resuming; 0 never.")
    seed: int | None = Field(None, description="Seed for sampling and shuffling; null uses the pipeline's seed.")

    def num_steps(self, num_processes: int = 1) -> int:
        if self.total_episodes is None:
            return self.steps
        return math.ceil(self.total_episodes / (self.rollout_batch_size * num_processes))


# --------------------------------------------------------------------------- data


def load_prompts(path: Path | str) -> list[Any]:
    """The ``prompt`` column of a JSONL/Parquet file or ``hf:`` dataset: chat messages (list of dicts) or text."""
    from training.data import load_rows

    prompts = []
    for n, row in enumerate(load_rows(path, {"prompt": (str, list)}), 1):
        prompt = row["prompt"]
        if isinstance(prompt, list) and not (
            prompt and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
        ):
            raise ValueError(f"{path}: row {n}: `prompt` should be text or a non-empty list of {{role, content}} messages")
        prompts.append(prompt)
    return prompts


def prompt_ids(tokenizer: Any, prompt: str | list[dict[str, str]]) -> list[int]:
    """A prompt row (text or messages) as the token ids every evaluation backend sends for it
    (:func:`harness.backends.base.encode_prompt`): rollouts see the prompts the suites ask."""
    as_prompt = Prompt.completion(prompt) if isinstance(prompt, str) else Prompt(messages=tuple(prompt))
    return encode_prompt(as_prompt, tokenizer)


# --------------------------------------------------------------------------- the stage


def run(config: Config, inputs: StageInputs, out_dir: Path) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator
    from transformers import set_seed

    from harness.core.artifacts import write_text_atomic
    from harness.core.reward import RewardScorer
    from training import ppo_core as core
    from training import ppo_models as pm
    from training import ppo_state as st
    from training import runtime

    if inputs.reward is None:
        raise ValueError("ppo: no reward model; name a `reward:` stage in the config")
    if inputs.data is None:
        raise ValueError("ppo: no RL prompts file (`data`)")
    if config.rollout_batch_size % config.minibatch_size:
        raise ValueError(f"ppo: minibatch_size {config.minibatch_size} must divide rollout_batch_size "
                         f"{config.rollout_batch_size}")
    out_dir = Path(out_dir)
    seed = inputs.seed if config.seed is None else config.seed
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # cpu=True on CPU-only machines: under a multi-process launcher that is accelerate's MULTI_CPU (gloo)
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")
    rank, world = acc.process_index, acc.num_processes
    if world != runtime.world_size():  # e.g. a state made before without cpu=True: each rank alone
        raise RuntimeError(f"ppo: launched on {runtime.world_size()} processes, but the accelerator sees {world}")
    steps = config.num_steps(world)
    trc = inputs.trust_remote_code

    def reduce_sum(t: torch.Tensor) -> torch.Tensor:
        return acc.reduce(t, "sum") if world > 1 else t

    def gather(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t) if world > 1 else t

    def abort_if(bad: bool, message: str) -> None:
        if reduce_sum(torch.tensor([float(bad)], device=acc.device)).item() > 0:
            raise RuntimeError(message)

    # ---- models
    tokenizer = runtime.load_tokenizer(inputs.parent, inputs)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError(f"{inputs.parent}: tokenizer has no EOS token; PPO needs one to know where responses end")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    if pad_id == eos_id:  # masks come from EOS positions, never from the pad id, so this stays correct
        log.info("ppo: pad token == EOS; response masks are built from the first EOS, so EOS is still trained")
    set_seed(seed)
    policy = runtime.load_causal_lm(inputs.parent, inputs).eval()  # eval: no dropout; autograd still works
    end_ids = end_token_ids(tokenizer, policy.generation_config.eos_token_id)  # where the suites' backends stop
    ref = runtime.load_causal_lm(inputs.parent, inputs).eval().requires_grad_(False)
    value_src = Path(inputs.reward) if config.value_init == "reward" else Path(inputs.parent)
    value = pm.ValueModel(value_src, trc)
    scorer = RewardScorer(inputs.reward, device=acc.device, batch_size=config.rollout_batch_size,
                          trust_remote_code=trc)
    if config.value_init == "reward" and scorer.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"ppo: the reward model {inputs.reward} uses another tokenizer than the policy; "
                         "set `value_init: policy`")
    ref.to(acc.device)

    def make_opt(model: torch.nn.Module, lr: float) -> tuple[Any, Any]:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, eps=config.adam_eps, weight_decay=config.weight_decay)
        decay = (lambda s: max(0.0, 1.0 - s / steps)) if config.lr_schedule == "linear" else (lambda s: 1.0)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, decay)

    opt_p, sched_p = make_opt(policy, config.learning_rate)
    opt_v, sched_v = make_opt(value, config.value_learning_rate)
    policy, value, opt_p, opt_v = acc.prepare(policy, value, opt_p, opt_v)
    gen_cfg = pm.sampling_config(config.max_new_tokens, end_ids, pad_id)

    # ---- data
    raw_prompts = load_prompts(inputs.data)
    encoded = [(p, prompt_ids(tokenizer, p)) for p in raw_prompts]
    kept = [(p, ids) for p, ids in encoded if len(ids) <= config.max_prompt_length]
    if len(kept) < len(encoded):
        log.warning("ppo: skipped %d prompts longer than %d tokens", len(encoded) - len(kept), config.max_prompt_length)
    if not kept:
        raise ValueError(f"{inputs.data}: every prompt is longer than max_prompt_length={config.max_prompt_length}")

    # ---- state (fresh or resumed)
    kl_ctl = core.KLController(config.kl_coef, config.kl_target, config.kl_horizon)
    norm: dict[str, float] | None = None
    log_history: list[dict[str, Any]] = []
    start = 0
    ckpt = Path(inputs.resume_from) if inputs.resume_from else st.latest_checkpoint(inputs.state_dir)
    if ckpt is not None:
        meta = st.load_checkpoint(ckpt, {"policy": acc.unwrap_model(policy), "value": acc.unwrap_model(value)})
        for name, obj in (("opt_policy", opt_p), ("opt_value", opt_v), ("sched_policy", sched_p), ("sched_value", sched_v)):
            obj.load_state_dict(st.load_tree(ckpt, name))
        kl_ctl.load_state_dict(meta["kl_controller"])
        norm, log_history, start = meta["score_norm"], meta["log_history"], int(meta["step"])
        if (ckpt / f"rng-{rank}.json").is_file():
            st.set_rng_state(st.load_tree(ckpt, f"rng-{rank}"))
        else:  # saved with fewer processes: this one starts a fresh, still seeded, stream
            set_seed(seed + rank + 1000 * start)
        log.info("ppo: resumed from %s at step %d", ckpt, start)
    else:
        set_seed(seed + rank)

    def save_state(step: int) -> None:
        tmp = st.begin_checkpoint(inputs.state_dir, step) if acc.is_main_process else None
        acc.wait_for_everyone()
        st.save_rng(st.checkpoint_tmp(inputs.state_dir, step), rank)
        acc.wait_for_everyone()
        if tmp is not None:
            st.finish_checkpoint(
                inputs.state_dir, step,
                {"policy": acc.unwrap_model(policy), "value": acc.unwrap_model(value)},
                {"opt_policy": opt_p.state_dict(), "opt_value": opt_v.state_dict(),
                 "sched_policy": sched_p.state_dict(), "sched_value": sched_v.state_dict()},
                {"kl_controller": kl_ctl.state_dict(), "score_norm": norm, "log_history": log_history},
            )
        acc.wait_for_everyone()

    def sync() -> float:
        if acc.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    t_run = time.perf_counter()
    mb = config.minibatch_size
    for step in range(start + 1, steps + 1):
        t0 = sync()
        idx = batch_indices(step, len(kept), config.rollout_batch_size, rank, world, seed)
        prompts = [kept[i][0] for i in idx]
        queries, qmask = pm.left_pad([kept[i][1] for i in idx], pad_id, acc.device)
        # ---- 1. rollout
        with acc.autocast():
            seeds = pm.rollout_seeds(seed, global_positions(step, config.rollout_batch_size, rank, world))
            responses, rmask, has_eos = pm.sample(acc.unwrap_model(policy), queries, qmask, gen_cfg, end_ids, pad_id,
                                                  seeds, config.temperature)
        t1 = sync()
        # ---- 2. score (text path: the reward model sees exactly what it was trained on)
        lengths = rmask.sum(1)
        texts = [tokenizer.decode(r[: int(n) - int(e)].tolist(), skip_special_tokens=True)
                 for r, n, e in zip(responses, lengths, has_eos, strict=True)]
        raw = torch.tensor(scorer.score(prompts, texts), device=acc.device, dtype=torch.float32)
        abort_if(not torch.isfinite(raw).all().item(),
                 f"ppo: step {step}: the reward model {inputs.reward} returned a non-finite (NaN/Inf) score for "
                 f"{int((~torch.isfinite(raw)).sum())} of {len(raw)} responses; aborting the stage")
        t2 = sync()
        with torch.no_grad(), acc.autocast():
            parts = [(pm.response_logprobs(policy, queries[s], qmask[s], responses[s], rmask[s], config.temperature)[0],
                      pm.response_logprobs(ref, queries[s], qmask[s], responses[s], rmask[s], config.temperature)[0],
                      pm.response_values(value, queries[s], qmask[s], responses[s], rmask[s]))
                     for s in (slice(i, i + mb) for i in range(0, len(idx), mb))]
        logprobs, ref_logprobs, values = (torch.cat(x).float() for x in zip(*parts, strict=True))
        if config.score_norm != "none" and norm is None:  # the first rollout is the SFT policy's own
            all_raw, all_eos = gather(raw), gather(has_eos)
            base = all_raw[all_eos] if all_eos.sum() > 1 else all_raw
            std = base.std().item() if config.score_norm == "sft_whiten" and len(base) > 1 else 1.0
            norm = {"mean": base.mean().item(), "std": max(std, 1e-6)}
        scores = (raw - norm["mean"]) / norm["std"] if norm else raw.clone()
        if config.missing_eos_penalty is not None:
            scores = torch.where(has_eos, scores, torch.full_like(scores, -config.missing_eos_penalty))
        # ---- 3-4. rewards, advantages
        beta = kl_ctl.value
        rewards, kl = core.kl_penalised_rewards(scores, logprobs, ref_logprobs, rmask, beta)
        advantages, returns = core.gae(rewards, values, rmask, config.gamma, config.lam)
        advantages = core.masked_whiten(advantages, rmask, reduce_sum=reduce_sum)
        t3 = sync()
        # ---- 5. update
        stats: dict[str, list[float]] = {k: [] for k in
                                         ("policy_loss", "value_loss", "clipfrac", "approxkl", "value_clipfrac", "entropy")}
        shuffle = torch.Generator().manual_seed(seed * 7919 + step)
        for _ in range(config.ppo_epochs):
            for sel in minibatch_rows(shuffle, len(idx), mb, rank, world):
                sel = sel.to(acc.device)
                width = int(lengths[sel].max())  # trim response padding shared by this minibatch
                q, qm, r, rm = queries[sel], qmask[sel], responses[sel, :width], rmask[sel, :width]
                with acc.autocast():
                    new_logprobs, entropy = pm.response_logprobs(policy, q, qm, r, rm, config.temperature, True)
                    new_values = pm.response_values(value, q, qm, r, rm)
                pg, pg_stats = core.policy_loss(new_logprobs.float(), logprobs[sel, :width], advantages[sel, :width],
                                                rm, config.cliprange)
                vf, vf_stats = core.value_loss(new_values.float(), values[sel, :width], returns[sel, :width], rm,
                                               config.cliprange_value)
                loss = pg + config.vf_coef * vf
                if world > 1:  # DDP averages the processes' token means; this makes it the minibatch's token mean
                    loss = loss * (rm.sum() * world / reduce_sum(rm.sum().float()))
                abort_if(not torch.isfinite(loss).item(),
                         f"ppo: step {step}: non-finite loss (policy {pg.item():.4g}, value {vf.item():.4g}); aborting")
                acc.backward(loss)
                acc.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                acc.clip_grad_norm_(value.parameters(), config.max_grad_norm)
                opt_p.step()
                opt_v.step()
                opt_p.zero_grad(set_to_none=True)
                opt_v.zero_grad(set_to_none=True)
                for k, v in {"policy_loss": pg, "value_loss": vf, **pg_stats, **vf_stats,
                             "entropy": core.masked_mean(entropy, rm)}.items():
                    stats[k].append(float(v.detach()))
        lr = sched_p.get_last_lr()[0]  # the rate this step's updates used
        sched_p.step()
        sched_v.step()
        t4 = sync()
        # ---- logs and KL controller
        seq_kl = gather(kl.sum(1))
        kl_ctl.update(seq_kl.mean().item(), len(idx) * world)
        g_raw, g_scores, g_len, g_eos = gather(raw), gather(scores), gather(lengths.float()), gather(has_eos.float())
        g_words = gather(torch.tensor([len(t.split()) for t in texts], device=acc.device, dtype=torch.float64))
        g_stats = reduce_sum(torch.tensor([sum(v) / len(v) for v in stats.values()], device=acc.device,
                                          dtype=torch.float64)) / world
        entry = {
            "step": step,
            "score": g_raw.mean().item(),
            "score_used": g_scores.mean().item(),
            "kl": seq_kl.mean().item(),
            "non_score_reward": -beta * seq_kl.mean().item(),
            "rlhf_reward": g_scores.mean().item() - beta * seq_kl.mean().item(),
            "kl_coef": beta,
            "explained_variance": core.explained_variance(values, returns, rmask).item(),
            "mean_response_length": g_len.mean().item(),
            "mean_response_words": g_words.mean().item(),
            "no_eos_share": 1.0 - g_eos.mean().item(),
            "lr": lr,
            **dict(zip(stats, g_stats.tolist(), strict=True)),  # means over the processes' minibatches
            "response_tokens": int(g_len.sum().item()),
            "time_generate_s": t1 - t0, "time_score_s": t2 - t1, "time_forward_s": t3 - t2,
            "time_update_s": t4 - t3, "time_step_s": t4 - t0,
        }
        log_history.append(entry)
        if acc.is_main_process:
            write_text_atomic(out_dir / LOG_FILE, "".join(json.dumps(e) + "\n" for e in log_history))
            log.info("ppo step %d/%d: score %+.3f kl %.3f len %.1f no_eos %.2f", step, steps, entry["score"],
                     entry["kl"], entry["mean_response_length"], entry["no_eos_share"])
        progress = SimpleNamespace(global_step=step, max_steps=steps)
        for callback in inputs.extra.get("callbacks", []):  # the pipeline's progress display (TrainerCallbacks)
            for hook, args in (("on_log", {"logs": entry}), ("on_step_end", {})):
                if callable(getattr(callback, hook, None)):
                    getattr(callback, hook)(None, progress, None, **args)
        if config.save_every and inputs.state_dir is not None and (step % config.save_every == 0 or step == steps):
            save_state(step)

    # ---- final checkpoint: the policy as an HF causal LM with tokenizer + chat template
    acc.wait_for_everyone()
    if acc.is_main_process:
        runtime.save_checkpoint(acc.unwrap_model(policy), tokenizer, out_dir)
        write_text_atomic(out_dir / LOG_FILE, "".join(json.dumps(e) + "\n" for e in log_history))
    return summarise(log_history, time.perf_counter() - t_run, steps)


def summarise(log_history: list[dict[str, Any]], wall_s: float, steps: int) -> dict[str, Any]:
    """Headline metrics (first and last step of the main quantities) plus the per-step log."""
    out: dict[str, Any] = {"steps": steps, "log_history": log_history}
    if log_history:
        first, last = log_history[0], log_history[-1]
        for key in ("score", "kl", "mean_response_length", "mean_response_words", "no_eos_share"):
            out[f"{key}_first"], out[f"{key}_last"] = first[key], last[key]
        tokens = sum(e["response_tokens"] for e in log_history)
        busy = sum(e["time_step_s"] for e in log_history)
        out["response_tokens_per_s"] = tokens / busy if busy else 0.0
        out["wall_s_this_run"] = wall_s
    return out


STAGE = StageDef(kind="ppo", Config=Config, run=run, version="1", data_key="rl_prompts", needs_reward=True,
                 shardable=False)
