"""Stage kind ``pretrain``: causal language modelling on a raw text corpus (transformers ``Trainer``).

Reads JSONL/Parquet rows with a text column (the world's ``pretrain.jsonl``: ``{"text", "topic"}``).
Documents are tokenized as the tokenizer would at inference (its own BOS handling), each
followed by EOS, concatenated, and cut into fixed blocks of ``max_length`` tokens (the
remainder is dropped): no padding, every token trains. Works from the fresh ``init`` model
or as continued pretraining of any HF causal LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from training.runtime import TrainOptions
from training.stage import StageDef, StageInputs


class Config(TrainOptions):
    """Pretraining options (defaults: the default world's ~80k-token corpus on a ~1.6M-parameter model)."""

    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(24.0, gt=0, description="Passes over the corpus (facts need many; see the world README).")
    per_device_train_batch_size: int = Field(16, ge=1, description="Blocks per device per forward pass.")
    max_length: int = Field(128, ge=8, description="Tokens per packed training block (<= the model's max_position_embeddings).")
    text_field: str = Field("text", description="Column holding each document's text.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    save_steps: int = Field(200, ge=1, description="Save a resumable trainer checkpoint every N steps.")


def pack(docs: list[list[int]], eos_id: int, block_size: int) -> list[list[int]]:
    """Concatenate documents with EOS after each one and cut into full blocks (the remainder is dropped)."""
    stream: list[int] = []
    for ids in docs:
        stream.extend(ids)
        if not ids or ids[-1] != eos_id:
            stream.append(eos_id)
    return [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]


def build_trainer(config: Config, inputs: StageInputs, out: Path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from training.data import load_rows
    from training.runtime import load_causal_lm, load_tokenizer, train_args

    if inputs.data is None:
        raise ValueError("pretrain needs a text corpus (`data:`), e.g. the world's pretrain.jsonl")
    rows = load_rows(inputs.data, {config.text_field: str})
    tok = load_tokenizer(inputs.parent, inputs)
    model = load_causal_lm(inputs.parent, inputs)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and config.max_length > limit:
        raise ValueError(f"max_length {config.max_length} exceeds the model's max_position_embeddings {limit}")
    docs = tok([r[config.text_field] for r in rows])["input_ids"]
    blocks = pack(docs, tok.eos_token_id, config.max_length)
    if not blocks:
        raise ValueError(f"{inputs.data}: the corpus has fewer than max_length={config.max_length} tokens")
    dataset = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    args = TrainingArguments(**train_args(config, inputs))
    return Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=default_data_collator,
        processing_class=tok,
    )


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from training.runtime import run_trainer, save_checkpoint

    trainer = build_trainer(config, inputs, out)
    metrics = run_trainer(trainer, inputs)
    save_checkpoint(trainer.model, trainer.processing_class, out, trainer=trainer)
    metrics["blocks"] = len(trainer.train_dataset)
    metrics["corpus_tokens"] = len(trainer.train_dataset) * config.max_length
    return metrics


STAGE = StageDef(kind="pretrain", Config=Config, run=run, version="1", data_key="pretrain")
