"""Stage kind ``dpo``: direct preference optimisation from the SFT parent (TRL ``DPOTrainer``).

Data: TRL preference rows ``{"prompt", "chosen", "rejected"}`` (the world's
``preferences.jsonl``; extra columns are ignored), a file or an ``hf:`` dataset; Anthropic HH
transcripts are converted on load (:func:`training.data.load_preferences`). The policy and the frozen reference model
are both loaded from the parent checkpoint (safetensors). Losses combine through TRL 1.16's
``loss_type`` list and ``loss_weights`` (there is no ``rpo_alpha``): the default
``["sigmoid", "sft"]`` is DPO plus an NLL term on the chosen answers (RPO), which kept the
world's ~1.6M-parameter model from degenerating where plain sigmoid did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from training.runtime import TrainOptions
from training.stage import StageDef, StageInputs


class Config(TrainOptions):
    """DPO options (defaults: the default world's preference pairs on the SFT model)."""

    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(4.0, gt=0, description="Passes over the preference pairs.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Pairs per device per forward pass.")
    max_length: int = Field(256, ge=8, description="Longest prompt + response in tokens; longer ones are truncated.")
    beta: float = Field(0.1, gt=0, description="KL strength: higher keeps the policy closer to the reference.")
    loss_type: list[str] = Field(
        default_factory=lambda: ["sigmoid", "sft"],
        min_length=1,
        description="TRL DPO loss types, combined: sigmoid, hinge, ipo, robust, apo_zero, sft (NLL on chosen), ...",
    )
    loss_weights: list[float] | None = Field(
        None, description="One weight per loss_type entry; null: 1.0 each."
    )
    save_steps: int = Field(200, ge=1, description="Save a resumable trainer checkpoint every N steps.")

    @model_validator(mode="after")
    def _weights_match(self) -> Config:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} entries but loss_type has {len(self.loss_type)}; "
                "give one weight per loss type"
            )
        return self


def build_trainer(config: Config, inputs: StageInputs, out: Path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from training.data import load_preferences
    from training.runtime import load_causal_lm, load_tokenizer, train_args

    if inputs.data is None:
        raise ValueError("dpo needs preference pairs (`data:`), e.g. the world's preferences.jsonl")
    rows = load_preferences(inputs.data)
    keys = ["prompt", "chosen", "rejected"] if "prompt" in rows[0] else ["chosen", "rejected"]
    dataset = Dataset.from_list([{k: r[k] for k in keys} for r in rows])
    tok = load_tokenizer(inputs.parent, inputs)
    model = load_causal_lm(inputs.parent, inputs)
    ref_model = load_causal_lm(inputs.parent, inputs).eval().requires_grad_(False)
    args = DPOConfig(
        **train_args(config, inputs),
        max_length=config.max_length,
        beta=config.beta,
        loss_type=list(config.loss_type),
        loss_weights=list(config.loss_weights) if config.loss_weights is not None else None,
        disable_dropout=True,
        trust_remote_code=inputs.trust_remote_code,
    )
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tok)


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from training.runtime import run_trainer, save_checkpoint

    trainer = build_trainer(config, inputs, out)
    metrics = run_trainer(trainer, inputs)
    save_checkpoint(trainer.model, trainer.processing_class, out, trainer=trainer)
    last = next((e for e in reversed(metrics["log_history"]) if "rewards/accuracies" in e), {})
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
        if key in last:
            metrics["final_" + key.replace("/", "_")] = last[key]
    metrics["pairs"] = len(trainer.train_dataset)
    return metrics


STAGE = StageDef(kind="dpo", Config=Config, run=run, version="1", data_key="preferences")
