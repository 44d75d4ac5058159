"""The world card: every knob, every topic's actual share and difficulty, counts, file hashes, expected effects.

`world_card.json` is written last; its presence marks a complete world.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness.world.config import WorldConfig
from harness.world.effects import expected_effects
from harness.world.pretrain import TopicStats

SCHEMA_VERSION = 1
# Bump when the generator changes what it writes (data or the expected-effects table): runs then
# regenerate their cached worlds instead of reusing a stale card.
GENERATOR_VERSION = "18"  # same data as 14; DPO abstention: no direction (15, 17: reverted tries)
CARD_FILE = "world_card.json"

WORLD_FILES: dict[str, str] = {
    "tokenizer": "tokenizer",
    "pretrain": "pretrain.jsonl",
    "sft": "sft.jsonl",
    "preferences": "preferences.jsonl",
    "rl_prompts": "rl_prompts.jsonl",
    "eval/hallucination": "eval/hallucination.jsonl",
    "eval/refusal": "eval/refusal.jsonl",
    "eval/verbosity": "eval/verbosity.jsonl",
    "eval/topic_coverage": "eval/topic_coverage.jsonl",
    "card": CARD_FILE,
}


class WorldCardError(FileNotFoundError):
    """A world directory is missing, incomplete or from an incompatible version."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` except the card, keyed by POSIX relative path, sorted."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != CARD_FILE)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def file_counts(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Rows per file, with the breakdowns that matter for the planted causes."""
    counts: dict[str, Any] = {name: {"rows": len(items)} for name, items in rows.items()}
    counts["sft"]["by_kind"] = dict(sorted(Counter(r["kind"] for r in rows["sft"]).items()))
    prefs = rows["preferences"]
    counts["preferences"]["by_rule"] = dict(sorted(Counter(r["rule"] for r in prefs).items()))
    counts["preferences"]["length_flipped"] = sum(r["length_flipped"] for r in prefs)
    hal = rows["eval/hallucination"]
    counts["eval/hallucination"]["chat_answerable"] = sum(r["format"] == "chat" and r["answerable"] for r in hal)
    counts["eval/hallucination"]["chat_unanswerable"] = sum(r["format"] == "chat" and not r["answerable"] for r in hal)
    counts["eval/hallucination"]["cloze"] = sum(r["format"] == "cloze" for r in hal)
    counts["eval/refusal"]["by_label"] = dict(sorted(Counter(r["label"] for r in rows["eval/refusal"]).items()))
    return counts


def build_card(
    config: WorldConfig,
    topics: list[TopicStats],
    counts: dict[str, Any],
    files: dict[str, str],
    verbatim: int,
    tokenizer_info: dict[str, Any],
    difficulty: list[dict[str, Any]],
) -> dict[str, Any]:
    total = sum(t.tokens for t in topics) or 1
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.model_dump(mode="json"),
        "topics": [
            {
                "name": t.name,
                "share_target": t.share_target,
                "share_actual": round(t.tokens / total, 6),
                "tokens": t.tokens,
                "n_entities": t.n_entities,
                "n_eval_entities": config.n_eval_entities(next(s for s in config.topics if s.name == t.name)),
                "n_facts": t.n_facts,
                "mentions": t.mentions,
                "mentions_per_fact_min": min(t.mentions_per_fact),
                "mentions_per_fact_max": max(t.mentions_per_fact),
            }
            for t in topics
        ],
        "share_assignment": config.share_assignment,
        "topic_difficulty": difficulty,
        "counts": counts,
        "tokenizer": tokenizer_info,
        "files": files,
        "verbatim_eval_prompts_in_training": verbatim,
        "expected_effects": expected_effects(config),
    }


def load_card(world_dir: Path | str) -> dict[str, Any]:
    """Read a world's card; a clear error if the world is missing, incomplete or of another schema."""
    world_dir = Path(world_dir)
    path = world_dir / CARD_FILE
    if not world_dir.is_dir():
        raise WorldCardError(f"{world_dir}: no such world directory (create one with `harness world --out {world_dir}`)")
    if not path.is_file():
        raise WorldCardError(
            f"{path}: missing, so {world_dir} is not a complete world (generation did not finish?); "
            f"regenerate it with `harness world --out {world_dir}`"
        )
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorldCardError(f"{path}: not valid JSON ({exc}); regenerate the world") from None
    if not isinstance(card, dict) or card.get("schema_version") != SCHEMA_VERSION:
        got = card.get("schema_version") if isinstance(card, dict) else None
        raise WorldCardError(f"{path}: schema_version {got!r}, expected {SCHEMA_VERSION}; regenerate the world")
    missing = [rel for rel in card.get("files", {}) if not (world_dir / rel).is_file()]
    if missing:
        raise WorldCardError(f"{world_dir}: incomplete world, files listed in the card are missing: {missing[:5]}")
    return card
