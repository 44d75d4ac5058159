"""Stage kind ``rloo``: REINFORCE Leave-One-Out against the run's reward model (TRL ``RLOOTrainer``).

For each prompt the policy samples ``num_generations`` completions; a completion's advantage is
its reward minus the mean reward of the *other* completions of the same prompt (Ahmadian et al.
2024), so no value model is trained. The KL penalty against the frozen SFT reference
(``beta``) is part of the reward, as in TRL. Sampling, scoring with the reward model, the
missing-EOS penalty and the logged keys are shared with ``grpo``: ``training/online_rl.py``.

Data: the world's ``rl_prompts.jsonl`` (a ``prompt`` column of chat messages or text), a file or an ``hf:``
dataset. Metrics: first/last logged ``score`` (raw reward-model score), ``reward``, ``kl``,
``mean_length`` (completion tokens), ``clipped_ratio``, ``no_eos_share``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from training.online_rl import RLOptions
from training.stage import StageDef, StageInputs


class Config(RLOptions):
    """RLOO options (defaults: the default world's RL prompts on the SFT model)."""

    normalize_advantages: bool = Field(
        False, description="Whiten the leave-one-out advantages over each generation batch (mean 0, std 1).")


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from trl import RLOOConfig

    from training.online_rl import train, trl_args

    args = RLOOConfig(**trl_args(config, inputs), normalize_advantages=config.normalize_advantages)
    return train("rloo", config, inputs, out, args)


STAGE = StageDef(kind="rloo", Config=Config, run=run, version="1", data_key="rl_prompts", needs_reward=True)
