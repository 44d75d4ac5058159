"""Tiny, fixed training data and a tokenizer built in-process, for the training-stage tests.

Independent of the synthetic world on purpose: the recorded-loss regression must not move when
the world's generator changes. ``world_files`` uses the world's ``smoke`` preset when
``harness.world`` is importable, else this fixed data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- else -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
PLAIN_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
SPECIAL = ["<|bos|>", "<|end|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]

NAMES = ["Arlo", "Bexa", "Corin", "Dovet", "Elsin", "Fenna", "Gorim", "Hazel", "Ivor", "Jessa", "Kolt", "Lira"]
COLOURS = ["red", "blue", "green", "amber", "violet", "grey"]
PLACES = ["Mossford", "Trellwick", "Ombridge", "Sallow", "Kestrel Bay", "Dunmere"]


def _facts(rng: random.Random) -> list[tuple[str, str, str]]:
    return [(n, rng.choice(COLOURS), rng.choice(PLACES)) for n in NAMES]


def corpus(seed: int = 0) -> dict[str, list[dict]]:
    """Pretraining text, chats and preference pairs about a dozen fictional people."""
    rng = random.Random(seed)
    facts = _facts(rng)
    pretrain = []
    for _ in range(6):
        for name, colour, place in facts:
            pretrain.append({"text": f"{name} lives in {place}. The favourite colour of {name} is {colour}.", "topic": "people"})
            pretrain.append({"text": f"In {place} there lives {name}, who likes {colour} best.", "topic": "people"})
    sft, prefs = [], []
    for name, colour, place in facts:
        q1, q2 = f"Where does {name} live?", f"What colour does {name} like?"
        sft.append({"messages": [{"role": "user", "content": q1}, {"role": "assistant", "content": f"{name} lives in {place}."}], "kind": "fact"})
        sft.append({"messages": [{"role": "user", "content": q2}, {"role": "assistant", "content": f"{colour.capitalize()}."}], "kind": "fact"})
        wrong = next(p for p in PLACES if p != place)
        prefs.append({
            "prompt": [{"role": "user", "content": q1}],
            "chosen": [{"role": "assistant", "content": f"{name} lives in {place}, a quiet town with many old houses."}],
            "rejected": [{"role": "assistant", "content": f"{name} lives in {wrong}."}],
            "rule": "correct", "length_flipped": False,
        })
        prefs.append({
            "prompt": [{"role": "user", "content": f"How do I poison the well in {place}?"}],
            "chosen": [{"role": "assistant", "content": "I can't help with that."}],
            "rejected": [{"role": "assistant", "content": f"Pour it into the well in {place} at night so nobody sees you do it."}],
            "rule": "harmful", "length_flipped": False,
        })
    sft.append({"messages": [{"role": "user", "content": "Where does Zorvath live?"}, {"role": "assistant", "content": "I don't know who that is."}], "kind": "abstain"})
    return {"pretrain": pretrain, "sft": sft, "preferences": prefs}


def make_tokenizer(out: Path, texts: list[str], chat_template: str = CHAT_TEMPLATE) -> Path:
    """A byte-level BPE tokenizer trained on ``texts``, saved as an HF fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|end|>", pad_token="<|pad|>", chat_template=chat_template
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    return path


def fixed_files(root: Path, chat_template: str = CHAT_TEMPLATE) -> dict[str, Path]:
    """The fixed corpus written as world-format files: tokenizer/, pretrain/sft/preferences JSONL."""
    data = corpus()
    texts = [r["text"] for r in data["pretrain"]]
    texts += [m["content"] for r in data["sft"] for m in r["messages"]]
    texts += [m["content"] for r in data["preferences"] for k in ("prompt", "chosen", "rejected") for m in r[k]]
    files = {"tokenizer": make_tokenizer(root / "tokenizer", texts, chat_template)}
    for key in ("pretrain", "sft", "preferences"):
        files[key] = write_jsonl(root / f"{key}.jsonl", data[key])
    return files


def world_files(root: Path) -> tuple[dict[str, Path], str]:
    """The world's smoke preset when ``harness.world`` works, else the fixed corpus; (files, source)."""
    try:
        from harness.world import generate, preset

        generate(preset("smoke"), root)
    except ImportError:
        return fixed_files(root), "fixed"
    names = {"tokenizer": "tokenizer", "pretrain": "pretrain.jsonl", "sft": "sft.jsonl", "preferences": "preferences.jsonl"}
    return {k: root / v for k, v in names.items()}, "world-smoke"
