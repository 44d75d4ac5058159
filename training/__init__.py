"""Training stages, one file each. Add a stage: write ``training/<kind>.py`` with ``STAGE``, add one line here."""

from harness.core.registry import Registry
from training.stage import StageDef, StageInputs

STAGES: Registry[StageDef] = Registry(
    "stage kind",
    {
        "init": "training.init:STAGE",
        "pretrain": "training.pretrain:STAGE",
        "sft": "training.sft:STAGE",
        "reward": "training.reward:STAGE",
        "dpo": "training.dpo:STAGE",
        "ppo": "training.ppo:STAGE",
        "constitutional": "training.constitutional:STAGE",
        "rloo": "training.rloo:STAGE",
        "grpo": "training.grpo:STAGE",
        "kto": "training.kto:STAGE",
        "simpo": "training.simpo:STAGE",
    },
)

__all__ = ["STAGES", "StageDef", "StageInputs"]
