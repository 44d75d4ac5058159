"""Training data: JSONL or Parquet files, or Hugging Face datasets, checked before any training starts.

A stage's ``data:`` is a file path, or ``hf:NAME[:CONFIG][@SPLIT]`` for a dataset that
``datasets.load_dataset`` opens (:func:`hf_ref`): a hub id (``hf:Anthropic/hh-rlhf@train``; a path
below the repository is its ``data_dir``: ``hf:Anthropic/hh-rlhf/harmless-base@test``), or a local
folder of data files or one written by ``save_to_disk`` (``hf:./my_prefs@train``). ``SPLIT`` defaults
to ``train`` and takes the datasets slicing syntax (``train[:2000]``). Hub datasets load online, or
offline (``HF_HUB_OFFLINE=1``) from the local Hugging Face cache; one that is neither is one
``ValueError`` naming it (the pipeline asks before training anything).

Preference rows (:func:`load_preferences`) are TRL's standard or conversational formats, or
Anthropic HH transcripts (``chosen``/``rejected`` texts of ``\n\nHuman:`` / ``\n\nAssistant:``
turns), converted on load to conversational ``prompt`` (the turns both share) / ``chosen`` /
``rejected`` (the assistant turns that differ).

Every problem is one ``ValueError`` naming the file (or dataset), the row number and what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.artifacts import canonical_json, fingerprint_paths, sha256_text

HF_PREFIX = "hf:"
DataSource = Path | str  # a file, or an `hf:` dataset reference


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


def check_rows(path: DataSource, rows: list[Any], required: dict[str, type | tuple[type, ...]]) -> None:
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


def check_messages(path: DataSource, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Each ``keys`` column holds a list of ``{"role", "content"}`` messages (TRL's conversational format)."""
    for n, row in enumerate(rows, 1):
        for key in keys:
            msgs = row[key]
            if not msgs or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise ValueError(f"{path}: row {n}: {key!r} should be a non-empty list of {{'role', 'content'}} messages")



# --------------------------------------------------------------------------- any source


def load_rows(source: DataSource, required: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """Rows of a data file (:func:`read_rows`) or of an ``hf:`` dataset, with the ``required`` keys and types."""
    ref = hf_ref(source)
    if ref is None:
        return read_rows(Path(source), required)
    rows = load_hf_dataset(ref).to_list()
    if not rows:
        raise ValueError(f"{ref.text}: the dataset split has no rows")
    check_rows(ref.text, rows, required)
    return rows


def data_fingerprint(source: DataSource, stage_name: str) -> str:
    """What identifies the data in a stage's content hash: a file's (or folder's) contents; for a hub
    dataset its cache fingerprint (``datasets`` derives it from the resolved revision), for a local
    folder its files; with the config, data_dir and split. Loads an ``hf:`` dataset, so a missing one fails here."""
    ref = hf_ref(source)
    if ref is None:
        if not Path(source).exists():
            raise FileNotFoundError(f"{source}: training data for stage {stage_name!r} does not exist")
        return fingerprint_paths([Path(source)])
    dataset = load_hf_dataset(ref)
    what = fingerprint_paths([Path(ref.path)]) if ref.local else dataset._fingerprint
    return sha256_text(canonical_json({"hf": [ref.path, ref.config, ref.data_dir, ref.split], "data": what}))


# --------------------------------------------------------------------------- Hugging Face datasets


@dataclass(frozen=True)
class HFData:
    """A parsed ``hf:`` reference (see the module docs)."""

    text: str  # as written
    path: str  # hub id, or a local folder (absolute)
    config: str | None
    data_dir: str | None
    split: str
    local: bool


def is_hf(source: DataSource | None) -> bool:
    return isinstance(source, str) and source.strip().startswith(HF_PREFIX)


def hf_ref(source: DataSource) -> HFData | None:
    """The parsed ``hf:NAME[:CONFIG][@SPLIT]`` reference, None for a file; ``ValueError`` when malformed."""
    if not is_hf(source):
        return None
    text = str(source).strip()
    body = text[len(HF_PREFIX):].strip()
    name, at, split = body.rpartition("@") if "@" in body else (body, "", "train")
    name, colon, config = name.partition(":") if not name.startswith(("/", ".", "~")) else (name, "", "")
    expected = "expected hf:NAME[:CONFIG][@SPLIT], e.g. hf:Anthropic/hh-rlhf@train"
    if not name.strip() or (at and not split.strip()) or (colon and not config.strip()):
        raise ValueError(f"{text}: incomplete dataset reference; {expected}")
    name = name.strip()
    local = name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()
    data_dir = None
    if not local and name.count("/") > 1:  # hub ids are owner/name; deeper is a folder of the repository
        owner, repo, data_dir = name.split("/", 2)
        name = f"{owner}/{repo}"
    path = str(Path(name).expanduser().resolve()) if local else name
    return HFData(text, path, config.strip() or None, data_dir, split.strip(), local)


def load_hf_dataset(ref: HFData) -> Any:
    """The ``datasets.Dataset`` of one split; ``ValueError`` naming the dataset when it cannot be opened."""
    import datasets

    folder = Path(ref.path)
    try:
        if ref.local and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(folder))  # written by save_to_disk
            if isinstance(loaded, datasets.DatasetDict):
                if ref.split not in loaded:
                    raise ValueError(f"no split {ref.split!r} (splits: {', '.join(loaded)})")
                loaded = loaded[ref.split]
            return loaded
        return datasets.load_dataset(ref.path, ref.config, data_dir=ref.data_dir, split=ref.split)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one message naming the dataset
        offline = datasets.config.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE
        hint = (f"Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) only datasets already in the local cache "
                f"({datasets.config.HF_DATASETS_CACHE}) load: load it once online, or save it as JSONL/Parquet "
                "and give that file as `data:`." if offline and not ref.local else
                "Check the name, config and split.")
        what = ", ".join(f"{k} {v!r}" for k, v in (("config", ref.config), ("data_dir", ref.data_dir),
                                                    ("split", ref.split)) if v)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{ref.text}: cannot load the Hugging Face dataset {ref.path!r} ({what}): "
                         f"{type(exc).__name__}: {reason}. {hint}") from None


# --------------------------------------------------------------------------- preference pairs, Anthropic HH

HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_EXPECTED = "expected '\\n\\nHuman: ...\\n\\nAssistant: ...' turns ending with the Assistant's answer"


def load_preferences(source: DataSource) -> list[dict[str, Any]]:
    """Preference rows with ``chosen`` and ``rejected`` (and ``prompt``) in a TRL format; Anthropic HH
    transcripts are converted to conversational pairs; message lists are checked."""
    rows = load_rows(source, {"chosen": (str, list), "rejected": (str, list)})
    where = hf_ref(source).text if is_hf(source) else source
    if is_hh(rows[0]):
        out = []
        for n, row in enumerate(rows, 1):
            try:
                pair = hh_pair(row["chosen"], row["rejected"])
            except ValueError as exc:
                raise ValueError(f"{where}: row {n}: cannot read it as an Anthropic HH transcript: {exc}; "
                                 f"{HH_EXPECTED}") from None
            out.append({**{k: v for k, v in row.items() if k not in pair}, **pair})
        return out
    if isinstance(rows[0]["chosen"], list):
        check_messages(where, rows, ("chosen", "rejected"))
    return rows


def is_hh(row: dict[str, Any]) -> bool:
    """An implicit-prompt row whose ``chosen`` is an HH transcript (``Human:`` first, an ``Assistant:`` turn)."""
    chosen = row.get("chosen")
    return ("prompt" not in row and isinstance(chosen, str) and chosen.lstrip().startswith("Human:")
            and "\n\nAssistant:" in chosen)


def hh_messages(text: Any, key: str) -> list[dict[str, str]]:
    """An HH transcript as ``{role, content}`` messages; ``ValueError`` saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"{key!r} is {type(text).__name__}, not a transcript")
    if not text.lstrip().startswith("Human:"):
        raise ValueError(f"{key!r} does not start with a 'Human:' turn")
    parts = HH_TURN.split("\n\n" + text.lstrip())
    turns = zip(parts[1::2], parts[2::2], strict=True)  # parts: text before the first turn, then role, content, ...
    messages = [{"role": HH_ROLES[role], "content": content.strip()} for role, content in turns]
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{key!r} ends with a Human turn, not the Assistant's answer")
    return messages


def hh_pair(chosen: Any, rejected: Any) -> dict[str, list[dict[str, str]]]:
    """Conversational ``prompt`` (the turns both transcripts share, up to a Human turn) / ``chosen`` /
    ``rejected`` (from the first assistant turn where they part; usually the last one)."""
    c, r = hh_messages(chosen, "chosen"), hh_messages(rejected, "rejected")
    k = 0
    while k < min(len(c), len(r)) and c[k] == r[k]:
        k += 1
    k = min(k, len(c) - 1, len(r) - 1)  # each keeps at least its last answer
    while k > 0 and c[k - 1]["role"] != "user":
        k -= 1
    if k == 0:
        raise ValueError("'chosen' and 'rejected' share no Human turn to use as the prompt")
    return {"prompt": c[:k], "chosen": c[k:], "rejected": r[k:]}
