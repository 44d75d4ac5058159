"""Stage kind ``kto``: Kahneman-Tversky Optimisation from the SFT parent (TRL ``KTOTrainer``).

KTO learns from *unpaired* signal: single answers labelled desirable or undesirable. It is
derived here from the preference file, as the KTO paper does for paired data: every pair
becomes two rows, its ``chosen`` answer desirable and its ``rejected`` answer undesirable, for
the same prompt (rows in TRL's preference formats, or Anthropic HH transcripts, converted on load:
:func:`training.data.load_preferences`; an implicit prompt is split off as TRL does). The
rows are shuffled once with the stage's seed: TRL reads them in order (its KL estimate pairs each
prompt with the previous row's answer in the same batch), so the shuffle is what mixes desirable
and undesirable rows, and the answers of one pair, across batches.

Policy and frozen reference both load from the parent. Metrics: ``pairs``, ``desirable``,
``undesirable`` (row counts) and the last logged ``rewards/chosen``, ``rewards/rejected``, ``kl``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from training.runtime import TrainOptions
from training.stage import StageDef, StageInputs


class Config(TrainOptions):
    """KTO options (defaults: the default world's preference pairs on the SFT model)."""

    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(4.0, gt=0, description="Passes over the unpaired rows (twice the pairs).")
    per_device_train_batch_size: int = Field(
        16, ge=2, description="Rows per device per forward pass (>= 2: the KL estimate pairs rows within a batch).")
    max_length: int = Field(256, ge=8, description="Longest prompt + answer in tokens; longer ones are truncated.")
    beta: float = Field(0.1, gt=0, description="KL strength: higher keeps the policy closer to the reference.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto", description="`kto` (the KTO paper's loss) or `apo_zero_unpaired` (APO-zero without a KL estimate).")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of the desirable (chosen) rows' loss.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of the undesirable (rejected) rows' loss.")
    save_steps: int = Field(200, ge=1, description="Save a resumable trainer checkpoint every N steps.")


def unpaired_rows(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Each pair as a desirable (chosen) and an undesirable (rejected) row, in one seeded shuffle."""
    from trl.data_utils import extract_prompt

    out = []
    for row in rows:
        row = row if "prompt" in row else {**row, **extract_prompt(row)}
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    random.Random(seed).shuffle(out)
    return out


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from training.data import load_preferences
    from training.runtime import load_causal_lm, load_tokenizer, run_trainer, save_checkpoint, train_args

    if inputs.data is None:
        raise ValueError("kto needs preference pairs (`data:`), e.g. the world's preferences.jsonl")
    rows = unpaired_rows(load_preferences(inputs.data), inputs.seed)
    tok = load_tokenizer(inputs.parent, inputs)
    model = load_causal_lm(inputs.parent, inputs)
    ref_model = load_causal_lm(inputs.parent, inputs).eval().requires_grad_(False)
    args = KTOConfig(
        **train_args(config, inputs), max_length=config.max_length, beta=config.beta, loss_type=config.loss_type,
        desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight,
        disable_dropout=True, trust_remote_code=inputs.trust_remote_code,
    )
    trainer = KTOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    metrics = run_trainer(trainer, inputs)
    save_checkpoint(trainer.model, tok, out, trainer=trainer)
    last = next((e for e in reversed(metrics["log_history"]) if "kl" in e), {})  # the last training log
    metrics.update({"final_" + k.replace("/", "_"): last[k] for k in ("rewards/chosen", "rewards/rejected", "kl") if k in last})
    desirable = sum(r["label"] for r in rows)
    metrics.update(pairs=len(rows) // 2, desirable=desirable, undesirable=len(rows) - desirable)
    return metrics


STAGE = StageDef(kind="kto", Config=Config, run=run, version="1", data_key="preferences")
