"""Training data files: JSONL or Parquet rows, checked before any training starts.

Every problem is one ``ValueError`` naming the file, the row number and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_rows(path: Path, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Rows of a JSONL or Parquet file with the ``required`` keys and types; else one ``ValueError`` naming
    the file, the row number and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: row {n}: not valid JSON ({exc.msg})") from None
    if not rows:
        raise ValueError(f"{path}: no rows; expected JSONL objects with keys {sorted(required)}")
    check_rows(path, rows, required)
    return rows


def check_rows(path: Path, rows: list[Any], required: dict[str, type | tuple[type, ...]]) -> None:
    """Every row is an object with the ``required`` keys of the given types; else one clear ``ValueError``."""
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {n}: expected a JSON object, got {type(row).__name__}")
        for key, types in required.items():
            if key not in row:
                raise ValueError(f"{path}: row {n}: missing key {key!r} (expected keys: {sorted(required)})")
            if not isinstance(row[key], types):
                want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
                raise ValueError(f"{path}: row {n}: {key!r} should be {want}, got {type(row[key]).__name__}")


def check_messages(path: Path, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Each ``keys`` column holds a list of ``{"role", "content"}`` messages (TRL's conversational format)."""
    for n, row in enumerate(rows, 1):
        for key in keys:
            msgs = row[key]
            if not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise ValueError(f"{path}: row {n}: {key!r} should be a non-empty list of {{'role', 'content'}} messages")

