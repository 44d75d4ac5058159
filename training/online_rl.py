"""What the ``rloo`` and ``grpo`` stages share: TRL's online RL trainers against the run's reward model.

Each step samples ``num_generations`` completions for each of ``per_device_train_batch_size /
num_generations`` prompts from the policy (plain sampling at ``temperature``), stopping at every
end id the evaluation backends stop on (EOS, the generation config's, the chat template's
end-of-turn: :func:`harness.backends.stops.end_token_ids`). Each completion is scored by the
``reward`` stage's checkpoint through :class:`harness.core.reward.RewardScorer`, the scorer PPO and
the verbosity suite use (chat template, last real token, no special tokens in the response), so
the score the policy is trained on is the one the evaluation reports. A completion that never
emits an end id (cut at ``max_completion_length``) loses ``missing_eos_penalty`` from its score,
as in TRL's earlier RLOO and Online DPO, so padding until cut off never pays by itself.
The frozen reference is the SFT parent (KL coefficient ``beta``); the two stages differ only in
the advantage (see ``training/rloo.py`` and ``training/grpo.py``).

Logged per step besides TRL's own keys: ``score`` (mean raw reward-model score), ``no_eos_share``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from training.runtime import TrainOptions
from training.stage import StageInputs

REWARD_NAME = "reward_model"  # TRL logs rewards/<name>/mean under this name
SUMMARY_KEYS = {  # manifest metric -> TRL log key: first and last logged values
    "score": "score", "reward": "reward", "kl": "kl", "mean_length": "completions/mean_length",
    "clipped_ratio": "completions/clipped_ratio", "no_eos_share": "no_eos_share",
}


class RLOptions(TrainOptions):
    """Options both online RL stages have (defaults sized for the world's tiny models on CPU)."""

    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    max_steps: int | None = Field(60, ge=1, description="Optimizer steps; each samples one generation batch.")
    per_device_train_batch_size: int = Field(
        32, ge=2, description="Completions per device per step (prompts × num_generations).")
    lr_scheduler_type: str = Field("linear", description="transformers scheduler name: linear, cosine, constant, ...")
    max_length: int = Field(256, ge=8, description="Prompts longer than this many tokens are skipped (logged).")
    num_generations: int = Field(
        4, ge=2, description="Completions sampled per prompt; the group the advantage is taken within.")
    max_completion_length: int = Field(64, ge=1, description="Longest completion sampled; one cut here has no EOS.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    beta: float = Field(0.05, ge=0, description="KL coefficient against the frozen SFT reference (0: no reference).")
    num_iterations: int = Field(1, ge=1, description="Updates per generation batch (μ); >1 reuses samples with clipping.")
    epsilon: float = Field(0.2, gt=0, description="Clip range of the importance ratio (used when num_iterations > 1).")
    missing_eos_penalty: float | None = Field(
        1.0, ge=0, description="Subtracted from the reward-model score of a completion that never emits an end id; "
        "null: none.")
    mask_truncated_completions: bool = Field(
        False, description="Leave completions cut at max_completion_length out of the loss (DAPO).")
    save_steps: int = Field(20, ge=1, description="Save a resumable trainer checkpoint every N steps.")

    @model_validator(mode="after")
    def _groups_fit(self) -> RLOptions:
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(f"per_device_train_batch_size × gradient_accumulation_steps ({batch}) must be a multiple "
                             f"of num_generations ({self.num_generations})")
        return self


def trl_args(config: RLOptions, inputs: StageInputs) -> dict[str, Any]:
    """Keyword arguments RLOOConfig and GRPOConfig share."""
    from training.runtime import train_args

    return {  # TRL counts prompt + completion tokens itself (the Trainer's counter finds no `input_ids`)
        **train_args(config, inputs, include_num_input_tokens_seen="no"), "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length, "temperature": config.temperature,
        "beta": config.beta, "num_iterations": config.num_iterations, "epsilon": config.epsilon,
        "mask_truncated_completions": config.mask_truncated_completions, "disable_dropout": True,
        "shuffle_dataset": True, "trust_remote_code": inputs.trust_remote_code,
    }


def prompt_dataset(config: RLOptions, inputs: StageInputs, tokenizer: Any) -> Any:
    """The ``prompt`` column of the RL prompts (text or chat messages) as a ``datasets.Dataset``, prompts longer
    than ``max_length`` tokens (as the evaluation backends encode them) left out."""
    import logging

    from datasets import Dataset

    from harness.backends.base import Prompt, encode_prompt
    from training.data import check_messages, load_rows

    if inputs.data is None:
        raise ValueError("no RL prompts file (`data:`), e.g. the world's rl_prompts.jsonl")
    rows = load_rows(inputs.data, {"prompt": (str, list)})
    chat = [r for r in rows if isinstance(r["prompt"], list)]
    check_messages(inputs.data, chat, ("prompt",))

    def n_tokens(p: Any) -> int:
        return len(encode_prompt(Prompt.completion(p) if isinstance(p, str) else Prompt(messages=tuple(p)), tokenizer))

    kept = [{"prompt": r["prompt"]} for r in rows if n_tokens(r["prompt"]) <= config.max_length]
    if len(kept) < len(rows):
        logging.getLogger(__name__).warning("skipped %d prompts longer than %d tokens", len(rows) - len(kept),
                                            config.max_length)
    if not kept:
        raise ValueError(f"{inputs.data}: every prompt is longer than max_length={config.max_length}")
    return Dataset.from_list(kept)


def reward_function(config: RLOptions, inputs: StageInputs, end_ids: tuple[int, ...]) -> Any:
    """TRL's reward-function protocol over the run's reward model; logs ``score`` and ``no_eos_share``."""
    from harness.core.reward import RewardScorer

    if inputs.reward is None:
        raise ValueError("no reward model; name a `reward:` stage in the config")
    scorer = RewardScorer(inputs.reward, batch_size=64, trust_remote_code=inputs.trust_remote_code)
    penalty, ends = config.missing_eos_penalty or 0.0, set(end_ids)

    def reward_model(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], log_metric=None,
                     **_: Any) -> list[float]:
        texts = [c if isinstance(c, str) else "".join(m["content"] for m in c if m["role"] == "assistant")
                 for c in completions]
        scores = scorer.score(list(prompts), texts)
        cut = [not ids or ids[-1] not in ends for ids in completion_ids]
        if log_metric is not None:
            log_metric("score", sum(scores) / len(scores))
            log_metric("no_eos_share", sum(cut) / len(cut))
        return [s - penalty * c for s, c in zip(scores, cut, strict=True)]

    return reward_model


def train(kind: str, config: RLOptions, inputs: StageInputs, out: Path, trl_config: Any) -> dict[str, Any]:
    """Build ``kind``'s TRL trainer (``RLOOTrainer`` or ``GRPOTrainer``) with ``trl_config``, train, save the policy."""
    import trl

    from harness.backends.stops import end_token_ids
    from training.runtime import load_causal_lm, load_tokenizer, run_trainer, save_checkpoint

    tokenizer = load_tokenizer(inputs.parent, inputs)
    policy = load_causal_lm(inputs.parent, inputs)
    saved_eos = policy.generation_config.eos_token_id
    end_ids = end_token_ids(tokenizer, saved_eos)
    policy.generation_config.eos_token_id = list(end_ids)  # rollouts stop where the suites' backends stop
    trainer_cls = {"rloo": trl.RLOOTrainer, "grpo": trl.GRPOTrainer}[kind]
    trainer = trainer_cls(model=policy, reward_funcs=reward_function(config, inputs, end_ids), args=trl_config,
                          train_dataset=prompt_dataset(config, inputs, tokenizer), processing_class=tokenizer)
    metrics = run_trainer(trainer, inputs)
    trainer.model.generation_config.eos_token_id = saved_eos  # the checkpoint keeps the parent's generation config
    save_checkpoint(trainer.model, tokenizer, out, trainer=trainer)
    logged = [e for e in metrics["log_history"] if "score" in e]
    for name, key in SUMMARY_KEYS.items():
        values = [e[key] for e in logged if key in e]
        if values:
            metrics[f"{name}_first"], metrics[f"{name}_last"] = values[0], values[-1]
    metrics["prompts"] = len(trainer.train_dataset)
    return metrics
