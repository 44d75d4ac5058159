"""Stage kind ``sft``: supervised fine-tuning on chats (TRL ``SFTTrainer``), loss on the assistant only.

Data: JSONL/Parquet rows (or an ``hf:`` dataset, :mod:`training.data`) in TRL's formats, either conversational ``{"messages": [...]}`` (the
world's ``sft.jsonl``) or prompt-completion ``{"prompt": ..., "completion": ...}``.

Conversational data trains with ``assistant_only_loss=True``, which needs ``{% generation %}``
markers in the chat template (the world's template has them). A user's model whose template
lacks them (Llama, Qwen, ...) falls back automatically, with one log line, to prompt-completion
data: each chat becomes ``prompt`` = the messages before its last assistant turn and
``completion`` = that turn, trained with completion-only loss (only the last assistant turn of
a multi-turn chat is then trained).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from training.runtime import TrainOptions
from training.stage import StageDef, StageInputs

log = logging.getLogger(__name__)


class Config(TrainOptions):
    """SFT options (defaults: the default world's ~480 chats on a ~1.6M-parameter model)."""

    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    num_train_epochs: float = Field(30.0, gt=0, description="Passes over the chats.")
    per_device_train_batch_size: int = Field(16, ge=1, description="Chats per device per forward pass.")
    max_length: int = Field(256, ge=8, description="Longest chat in tokens; longer ones are truncated.")
    assistant_only_loss: bool = Field(
        True,
        description="Loss on assistant tokens only (needs {% generation %} in the chat template, else the "
        "prompt-completion fallback is used). False trains on every token of the chat.",
    )
    save_steps: int = Field(200, ge=1, description="Save a resumable trainer checkpoint every N steps.")


def has_generation_markers(tokenizer: Any) -> bool:
    from trl.chat_template_utils import has_generation_markers as _has

    template = getattr(tokenizer, "chat_template", None)
    return bool(template) and _has(template)


def to_prompt_completion(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chats -> conversational prompt-completion pairs split at the last assistant turn."""
    pairs = []
    for n, row in enumerate(rows, 1):
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if not last:  # None (no assistant turn) or 0 (nothing before it)
            raise ValueError(f"{path}: row {n}: a chat needs an assistant message after at least one other message")
        pairs.append({"prompt": msgs[:last], "completion": [msgs[last]]})
    return pairs


def prepare_data(config: Config, path: Path, tokenizer: Any) -> tuple[list[dict[str, Any]], str]:
    """The rows the trainer sees and the loss mode: ``assistant_only``, ``completion_only``, ``full``."""
    from training.data import check_messages, check_rows, load_rows

    rows = load_rows(path, {})
    if "messages" not in rows[0]:
        check_rows(path, rows, {"prompt": (str, list), "completion": (str, list)})
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows], "completion_only"
    check_rows(path, rows, {"messages": list})
    check_messages(path, rows, ("messages",))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{path}: chat data, but the parent's tokenizer has no chat template; SFT needs one")
    if not config.assistant_only_loss:
        return [{"messages": r["messages"]} for r in rows], "full"
    if has_generation_markers(tokenizer):
        return [{"messages": r["messages"]} for r in rows], "assistant_only"
    log.warning(
        "sft: the chat template has no {% generation %} markers; falling back to prompt-completion data "
        "with completion-only loss (the last assistant turn of each chat)"
    )
    return to_prompt_completion(path, rows), "completion_only_fallback"


def build_trainer(config: Config, inputs: StageInputs, out: Path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.runtime import load_causal_lm, load_tokenizer, train_args

    if inputs.data is None:
        raise ValueError("sft needs chat data (`data:`), e.g. the world's sft.jsonl")
    tok = load_tokenizer(inputs.parent, inputs)
    rows, mode = prepare_data(config, inputs.data, tok)
    model = load_causal_lm(inputs.parent, inputs)
    args = SFTConfig(
        **train_args(config, inputs),
        max_length=config.max_length,
        packing=False,
        assistant_only_loss=mode == "assistant_only",
        completion_only_loss=mode.startswith("completion_only"),
        trust_remote_code=inputs.trust_remote_code,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.loss_mode = mode
    return trainer


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from training.runtime import run_trainer, save_checkpoint

    trainer = build_trainer(config, inputs, out)
    metrics = run_trainer(trainer, inputs)
    save_checkpoint(trainer.model, trainer.processing_class, out, trainer=trainer)
    metrics["loss_mode"] = trainer.loss_mode
    metrics["examples"] = len(trainer.train_dataset)
    return metrics


STAGE = StageDef(kind="sft", Config=Config, run=run, version="1", data_key="sft")
