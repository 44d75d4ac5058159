"""Loading and checking suite items (JSONL, one JSON object per line).

Every problem a user can cause names the file and the 1-based line: unreadable file, Git LFS
pointer instead of data, invalid JSON, a row that is not an object, a missing or empty field,
a wrong type, an unknown label, a duplicated id. Items are hashed canonically (sorted keys,
compact separators) so stored samples can be matched item by item across checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.core.artifacts import canonical_json, sha256_text

Item = dict[str, Any]
LFS_POINTER = "version https://git-lfs.github.com/spec/"


class ItemList(list):
    """Items, plus what loading dropped from the file: ``dropped`` counts by kind (for a TruthfulQA
    file ``{"conflicting_answers", "questions", "read"}``; empty when nothing was dropped). The
    counts travel with the items: :func:`select` keeps them and :func:`items_hash` covers them."""

    def __init__(self, items: Iterable[Item] = (), dropped: dict[str, int] | None = None) -> None:
        super().__init__(items)
        self.dropped: dict[str, int] = dict(dropped or {})


def dropped_of(items: Iterable[Item]) -> dict[str, int]:
    """What loading dropped from the file ``items`` came from (empty: nothing, or not an ItemList)."""
    return dict(getattr(items, "dropped", None) or {})


class ItemsError(ValueError):
    """A bad items file or row; the message names the file and line."""


def load_jsonl(path: Path | str) -> list[Item]:
    """All rows of a JSONL file as dicts (blank lines skipped); every row gets ``_line`` removed later."""
    path = Path(path)
    if not path.is_file():
        raise ItemsError(f"{path}: items file not found")
    text = path.read_text(encoding="utf-8-sig")
    if text.startswith(LFS_POINTER):
        raise ItemsError(f"{path}: this is a Git LFS pointer, not the data; run `git lfs pull`")
    rows: list[Item] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ItemsError(f"{path}:{line_no}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise ItemsError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        rows.append({**row, "_line": line_no})
    if not rows:
        raise ItemsError(f"{path}: no items (the file is empty)")
    return rows


def fail(path: Path | str, item: Item, message: str) -> ItemsError:
    """An error for one row: ``FILE:LINE (id X): message``."""
    where = f"{path}:{item.get('_line', '?')}"
    ident = f" (id {item['id']!r})" if "id" in item else ""
    return ItemsError(f"{where}{ident}: {message}")


def require(path: Path | str, item: Item, field: str, kind: type | tuple[type, ...] = str, empty_ok: bool = False) -> Any:
    """The value of ``field``, checked for presence, type and (for strings and lists) non-emptiness."""
    if field not in item or item[field] is None:
        raise fail(path, item, f"missing field {field!r}")
    value = item[field]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise fail(path, item, f"field {field!r}: expected a number, got a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise fail(path, item, f"field {field!r}: expected {names}, got {type(value).__name__} {value!r}")
    if not empty_ok and isinstance(value, str | list) and not (value.strip() if isinstance(value, str) else value):
        raise fail(path, item, f"field {field!r} is empty")
    return value


def check_choice(path: Path | str, item: Item, field: str, allowed: Iterable[str]) -> str:
    value = require(path, item, field)
    allowed = tuple(allowed)
    if value not in allowed:
        raise fail(path, item, f"field {field!r}: unknown value {value!r}; expected one of {', '.join(allowed)}")
    return value


def check_cloze(path: Path | str, item: Item) -> None:
    """A log-likelihood multiple-choice item: ``prompt``, ``choices`` (>= 2 strings), ``answer_index``."""
    require(path, item, "prompt")
    choices = require(path, item, "choices", list)
    if len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise fail(path, item, "field 'choices': expected a list of at least 2 non-empty strings")
    index = require(path, item, "answer_index", int)
    if not 0 <= index < len(choices):
        raise fail(path, item, f"field 'answer_index': {index} is outside 0..{len(choices) - 1}")


def load_items(path: Path | str, check: Callable[[Path, Item], None]) -> list[Item]:
    """Load a JSONL items file, give rows without ``id`` their line number as id, run ``check`` on
    every row (it raises :func:`fail` errors), and reject duplicated ids."""
    path = Path(path)
    items = load_jsonl(path)
    seen: dict[str, int] = {}
    for item in items:
        if "id" not in item or item["id"] in (None, ""):
            item["id"] = f"line{item['_line']}"
        item["id"] = str(item["id"])
        if item["id"] in seen:
            raise fail(path, item, f"duplicated id (first on line {seen[item['id']]})")
        seen[item["id"]] = item["_line"]
        check(path, item)
    for item in items:
        item.pop("_line")
    return items


def item_hash(item: Item) -> str:
    """sha256 of the item's canonical JSON."""
    return sha256_text(canonical_json(item))


def items_hash(items: list[Item]) -> str:
    """sha256 over the ordered item hashes: identifies exactly which items were evaluated (and what
    loading dropped from their file, when it dropped anything: it is reported with the results)."""
    dropped = dropped_of(items)
    return sha256_text("\n".join(item_hash(i) for i in items) + (f"\n{canonical_json(dropped)}" if dropped else ""))


def select(items: list[Item], max_items: int | None) -> list[Item]:
    """All items, or ``max_items`` of them chosen by a stable order (sha256 of the id), kept in
    file order. Hashing the id gives a subset that mixes formats and topics and does not
    change when the file is reordered."""
    if max_items is None or max_items >= len(items):
        return ItemList(items, dropped_of(items))
    rank = sorted(range(len(items)), key=lambda i: hashlib.sha256(str(items[i]["id"]).encode()).hexdigest())
    keep = set(rank[:max_items])
    return ItemList((item for i, item in enumerate(items) if i in keep), dropped_of(items))
