"""Generate a world directory: tokenizer, training data for every stage, eval items, world card.

Everything is built in memory from the config, written into a temporary sibling directory
(the card last), and the directory is then renamed into place, so `out_dir` is either
absent, the previous world, or the complete new one. Same config => byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from harness.world.card import CARD_FILE, WORLD_FILES, build_card, file_counts, file_hashes
from harness.world.chats import build_preferences, build_rl_prompts, build_sft
from harness.world.config import WorldConfig
from harness.world.difficulty import topic_difficulty
from harness.world.entities import World, build_world, render
from harness.world.evalsets import build_eval
from harness.world.phrasing import abstention, refusal, request_answer
from harness.world.pretrain import build_pretrain, calibration_sentences
from harness.world.requests import DESCRIBE_TEMPLATES, FAMILIES_BY_NAME, FILLER, REQUEST_TEMPLATES
from harness.world.tokenizer import BOS, EOS, PAD, save_tokenizer, train_tokenizer

Row = dict[str, Any]


def tokenizer_corpus(world: World) -> list[str]:
    """Training text the tokenizer learns from: every fact in every paraphrase, and every chat
    template rendered once on every training entity (questions, descriptions, requests and their
    answers), plus the canned refusal, abstention and filler sentences.

    It depends on the entities and templates only, never on the mix knobs (refusal fraction,
    length bias, ...), so counterfactual worlds share the tokenizer and the pretraining corpus
    and hence the same pretrained checkpoint: they differ only in the planted cause. Nor does it
    depend on the topics' shares (`share_assignment`): those worlds share the tokenizer and every
    file but the corpus. Fictitious entities are left out, so their names split into pieces the
    same way everywhere.
    """
    texts = calibration_sentences(world)
    for entity in world.group("train"):
        texts.extend(render(q, E=entity.phrase) for rel in entity.kind.relations for q in rel.questions)
        texts.extend(render(t, E=entity.phrase) for t in DESCRIBE_TEMPLATES)
        for family in world.config.families:
            fam = FAMILIES_BY_NAME[family]
            for action in (fam.harmful, fam.benign):
                texts.extend(render(t, A=action, L=entity.locative) for t in REQUEST_TEMPLATES)
            texts.extend(request_answer(family, entity, harmful) for harmful in (True, False))
        texts.append(abstention(entity))
    texts.extend([refusal(), *FILLER])
    return texts


def training_prompts(rows: dict[str, list[Row]]) -> set[str]:
    """Every user turn in the SFT, preference and RL files."""
    out = {m["content"] for r in rows["sft"] for m in r["messages"] if m["role"] == "user"}
    out |= {m["content"] for r in rows["preferences"] for m in r["prompt"]}
    out |= {m["content"] for r in rows["rl_prompts"] for m in r["prompt"]}
    return out


def count_verbatim(rows: dict[str, list[Row]]) -> int:
    """Chat eval prompts equal to a training prompt or contained in the pretraining corpus."""
    prompts = training_prompts(rows)
    corpus = "\n".join(r["text"] for r in rows["pretrain"])
    chat = [r["prompt"] for name, items in rows.items() if name.startswith("eval/") for r in items
            if r["format"] == "chat"]
    return sum(p in prompts or p in corpus for p in chat)


def _write_jsonl(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / CARD_FILE).exists()):
            shutil.rmtree(tmp)
            raise FileExistsError(f"{out_dir}: exists and is not a world directory (no {CARD_FILE}); not overwriting it")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out_dir)


def generate(config: WorldConfig, out_dir: Path | str) -> dict[str, Any]:
    """Write the world for `config` into `out_dir` (replacing an older world there); return its card."""
    out_dir = Path(out_dir)
    world = build_world(config)
    rows: dict[str, list[Row]] = {
        "sft": build_sft(world),
        "preferences": build_preferences(world),
        "rl_prompts": build_rl_prompts(world),
        **build_eval(world),
    }
    tokenizer = train_tokenizer(tokenizer_corpus(world), config.tokenizer_vocab_size)
    rows["pretrain"], topic_stats = build_pretrain(world, tokenizer)
    verbatim = count_verbatim(rows)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_tokenizer(tokenizer, tmp / WORLD_FILES["tokenizer"])
    for name, rel in WORLD_FILES.items():
        if rel.endswith(".jsonl"):
            _write_jsonl(tmp / rel, rows[name])
    counts = file_counts({name: rows[name] for name in WORLD_FILES if name in rows})
    counts["pretrain"]["tokens"] = sum(t.tokens for t in topic_stats)
    counts["pretrain"]["mentions"] = sum(t.mentions for t in topic_stats)
    counts["entities"] = {role: len(world.group(role)) for role in ("train", "eval", "train_fiction", "eval_fiction")}
    info = {"vocab_size": len(tokenizer), "bos": BOS, "eos": EOS, "pad": PAD, "adds_bos": True}
    difficulty = topic_difficulty(world, tokenizer, rows["eval/topic_coverage"])
    card = build_card(config, topic_stats, counts, file_hashes(tmp), verbatim, info, difficulty)
    (tmp / CARD_FILE).write_text(json.dumps(card, sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _swap_into_place(tmp, out_dir)
    return card
