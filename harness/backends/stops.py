"""Where a response ends: every token id that closes an assistant turn, in one place.

A checkpoint can end a turn with more than its tokenizer's EOS: the generation config may list
several ``eos_token_id`` values, and a chat template usually closes each assistant message with
its own end-of-turn token (Llama 3's ``<|eot_id|>``, ChatML's ``<|im_end|>``, Gemma's
``<end_of_turn>``) that differs from the tokenizer's EOS. A model tuned on that template emits
the end-of-turn token and never EOS, so generation that stops at EOS alone runs on to
``max_new_tokens``. :func:`end_token_ids` is the set every generation path stops on: the hf and
vLLM backends (``stop_token_ids``) and PPO's rollouts (``training/ppo.py``), whose "has it ended"
is the same question.

The template's end-of-turn token is found by rendering a one-exchange conversation and reading
the first token the template writes after the assistant's content: when that is a special
token, it closes the turn. A template that writes plain text (or nothing) there has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SENTINEL = "Zqx sentinel reply"  # assistant content to find in the rendered text


def _special_ids(tokenizer: Any) -> set[int]:
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return ids | {int(i) for i, token in added.items() if getattr(token, "special", False)}


def template_end_of_turn(tokenizer: Any) -> int | None:
    """The special token the chat template writes right after an assistant message's content, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    chat = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": SENTINEL}]
    try:
        text = str(tokenizer.apply_chat_template(chat, tokenize=False))
    except Exception:  # noqa: BLE001 - a template that cannot render this exchange has no findable end
        return None
    at = text.rfind(SENTINEL)
    if at < 0:
        return None
    special = _special_ids(tokenizer)
    for token in tokenizer(text[at + len(SENTINEL):], add_special_tokens=False)["input_ids"]:
        if int(token) in special:
            return int(token)
        if tokenizer.decode([token]).strip():  # text before any special token: the template has no end marker
            return None
    return None


def end_token_ids(tokenizer: Any, generation_eos: int | list[int] | None = None) -> tuple[int, ...]:
    """Every id that ends a response, sorted: the tokenizer's EOS, the generation config's
    ``eos_token_id`` (one id or a list) and the chat template's end-of-turn token."""
    given = generation_eos if isinstance(generation_eos, list | tuple) else [generation_eos]
    ids = {tokenizer.eos_token_id, *given, template_end_of_turn(tokenizer)}
    return tuple(sorted(int(i) for i in ids if i is not None))


def generation_eos(checkpoint: Path | str, default: Any = None) -> int | list[int] | None:
    """``eos_token_id`` of a checkpoint's ``generation_config.json`` (what transformers' ``generate``
    reads), else ``default`` (the model config's, as transformers derives it)."""
    path = Path(checkpoint) / "generation_config.json"
    if path.is_file():
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        if value is not None:
            return value
    return default
