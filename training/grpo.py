"""Stage kind ``grpo``: Group Relative Policy Optimization against the run's reward model (TRL ``GRPOTrainer``).

For each prompt the policy samples ``num_generations`` completions; a completion's advantage is
its reward minus the group's mean reward, divided by the group's standard deviation
(``scale_rewards: group``, Shao et al. 2024), so no value model is trained. Unlike ``rloo`` the
KL against the frozen SFT reference (``beta``) is a term of the loss, not of the reward. Sampling,
scoring with the reward model, the missing-EOS penalty and the logged keys are shared with
``rloo``: ``training/online_rl.py``.

Data: the world's ``rl_prompts.jsonl`` (a ``prompt`` column of chat messages or text), a file or an ``hf:``
dataset. Metrics: first/last logged ``score`` (raw reward-model score), ``reward``, ``kl``,
``mean_length`` (completion tokens), ``clipped_ratio``, ``no_eos_share``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from training.online_rl import RLOptions
from training.stage import StageDef, StageInputs


class Config(RLOptions):
    """GRPO options (defaults: the default world's RL prompts on the SFT model)."""

    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the std of the prompt's group (`group`, GRPO), of the whole "
        "batch (`batch`) or not at all (`none`, Dr. GRPO).")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="How token losses are averaged: `grpo` per sequence (favours short positive answers), "
        "`dapo` over the batch's tokens (TRL's default), `dr_grpo` by a constant, `bnpo` over the local batch.")


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from trl import GRPOConfig

    from training.online_rl import train, trl_args

    args = GRPOConfig(**trl_args(config, inputs), scale_rewards=config.scale_rewards, loss_type=config.loss_type)
    return train("grpo", config, inputs, out, args)


STAGE = StageDef(kind="grpo", Config=Config, run=run, version="1", data_key="rl_prompts", needs_reward=True)
