"""Stage kind ``reward``: a scalar reward model trained on preference pairs (TRL ``RewardTrainer``).

Data: JSONL/Parquet rows (or an ``hf:`` dataset) in TRL's preference format, ``{"prompt", "chosen",
"rejected"}`` (conversational message lists, as in the world's ``preferences.jsonl``, or plain
strings), or Anthropic HH transcripts, converted on load (:func:`training.data.load_preferences`);
other columns are ignored. The model is ``AutoModelForSequenceClassification`` with
``num_labels=1`` initialised from the parent (its score head is new, seeded).

A seeded ``heldout_fraction`` of the pairs is held out. After training, the saved checkpoint
is loaded back through ``harness.core.reward.RewardScorer`` (exactly how the pipeline scores) and
the metrics get:

- ``heldout_accuracy``: share of held-out pairs where chosen scores above rejected;
- ``reward_length_corr``: Pearson correlation between score and response length in tokens
  over all held-out chosen and rejected responses (the reward-hacking risk);
- ``heldout_longer_preferred``: share of held-out pairs (of unequal length) where the longer
  response scores higher.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pydantic import Field

from training.runtime import TrainOptions
from training.stage import StageDef, StageInputs

Prompt = str | list[dict[str, Any]]


class Config(TrainOptions):
    """Reward-model options (defaults: the default world's preference pairs)."""

    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(2.0, gt=0, description="Passes over the training pairs.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Pairs per device per forward pass.")
    max_length: int = Field(256, ge=8, description="Pairs with a longer chosen or rejected sequence are dropped.")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="Share of pairs held out for accuracy and length bias.")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Pushes scores towards mean zero (TRL's center_rewards_coefficient); null: off."
    )
    save_steps: int = Field(200, ge=1, description="Save a resumable trainer checkpoint every N steps.")


def split_pairs(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded shuffle, the first ``fraction`` held out (at least one pair when > 0)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_hold = 0 if fraction <= 0 else min(len(rows) - 1, max(1, round(fraction * len(rows))))
    held = sorted(order[:n_hold])
    train = sorted(order[n_hold:])
    return [rows[i] for i in train], [rows[i] for i in held]


def prompt_and_response(row: dict[str, Any], key: str) -> tuple[Prompt, str]:
    """The prompt and the response text of ``row[key]`` (explicit or implicit prompt, chat or text)."""
    answer = row[key]
    if isinstance(answer, str):
        return row.get("prompt", ""), answer
    if "prompt" in row:
        return row["prompt"], "".join(m["content"] for m in answer if m["role"] == "assistant")
    return answer[:-1], answer[-1]["content"]


def build_trainer(config: Config, inputs: StageInputs, out: Path, train_rows: list[dict[str, Any]]):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from training.runtime import load_tokenizer, train_args

    tok = load_tokenizer(inputs.parent, inputs)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(inputs.parent),
        num_labels=1,
        use_safetensors=True,
        trust_remote_code=inputs.trust_remote_code,
        dtype="float32",
    )
    model.config.pad_token_id = tok.pad_token_id
    keys = ["prompt", "chosen", "rejected"] if "prompt" in train_rows[0] else ["chosen", "rejected"]
    dataset = Dataset.from_list([{k: r[k] for k in keys} for r in train_rows])
    args = RewardConfig(
        **train_args(config, inputs),
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient,
        disable_dropout=True,
        trust_remote_code=inputs.trust_remote_code,
    )
    return RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)


def heldout_metrics(ckpt: Path, rows: list[dict[str, Any]], inputs: StageInputs) -> dict[str, Any]:
    """Score held-out pairs with the saved checkpoint: accuracy and score-vs-length correlation."""
    import numpy as np

    from harness.core.reward import RewardScorer

    if not rows:
        return {"heldout_pairs": 0, "heldout_accuracy": None, "reward_length_corr": None}
    scorer = RewardScorer(ckpt, batch_size=64, trust_remote_code=inputs.trust_remote_code)
    chosen = [prompt_and_response(r, "chosen") for r in rows]
    rejected = [prompt_and_response(r, "rejected") for r in rows]
    s_c = np.array(scorer.score([p for p, _ in chosen], [t for _, t in chosen]))
    s_r = np.array(scorer.score([p for p, _ in rejected], [t for _, t in rejected]))

    def n_tokens(text: str) -> int:
        return len(scorer.tokenizer(text, add_special_tokens=False)["input_ids"])

    len_c = np.array([n_tokens(t) for _, t in chosen])
    len_r = np.array([n_tokens(t) for _, t in rejected])
    scores, lengths = np.concatenate([s_c, s_r]), np.concatenate([len_c, len_r])
    corr = float(np.corrcoef(scores, lengths)[0, 1]) if scores.std() > 0 and lengths.std() > 0 else None
    unequal = len_c != len_r
    longer_wins = np.where(len_c > len_r, s_c > s_r, s_r > s_c)[unequal]
    return {
        "heldout_pairs": len(rows),
        "heldout_accuracy": float((s_c > s_r).mean()),
        "reward_length_corr": corr,
        "heldout_longer_preferred": float(longer_wins.mean()) if longer_wins.size else None,
        "heldout_margin_mean": float((s_c - s_r).mean()),
        "heldout_score_mean": float(scores.mean()),
        "heldout_score_std": float(scores.std()),
    }


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from training.data import load_preferences
    from training.process import is_main_process
    from training.runtime import run_trainer, save_checkpoint

    if inputs.data is None:
        raise ValueError("reward needs preference pairs (`data:`), e.g. the world's preferences.jsonl")
    rows = load_preferences(inputs.data)
    if len(rows) < 2:
        raise ValueError(f"{inputs.data}: need at least 2 preference pairs, got {len(rows)}")
    train_rows, held = split_pairs(rows, config.heldout_fraction, inputs.seed)
    trainer = build_trainer(config, inputs, out, train_rows)
    metrics = run_trainer(trainer, inputs)
    save_checkpoint(trainer.model, trainer.processing_class, out, trainer=trainer)
    metrics["train_pairs"] = len(trainer.train_dataset)
    if is_main_process():  # the scorer reads the saved checkpoint
        metrics.update(heldout_metrics(out, held, inputs))
    return metrics


STAGE = StageDef(kind="reward", Config=Config, run=run, version="1", data_key="preferences")
