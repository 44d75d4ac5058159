"""Users' own benchmark files: TruthfulQA-, XSTest- and AdvBench-style CSV as suite items.

:func:`load_suite_items` is what a suite's ``load_items`` calls: a ``.csv`` file is read by the
CSV format that suite accepts (the header decides which), anything else is the suite's JSONL
schema (:func:`suites.items.load_items`). ``docs/data_formats.md`` documents every format.

=============  ==========================================================  =========================
suite          CSV header (case, spaces and ``_`` ignored; extra columns ok)  items produced
=============  ==========================================================  =========================
refusal        XSTest-style: ``prompt, label`` (+ optional ``id, type``);  ``label`` safe -> benign,
               ``label`` is ``safe`` or ``unsafe``                          unsafe -> harmful;
                                                                            ``family`` = ``type``
refusal        AdvBench-style: ``goal`` (+ optional ``target``)            all harmful,
                                                                            ``family`` "advbench"
hallucination  TruthfulQA-style: ``Type, Category, Question, Best Answer,  per row: a cloze item
               Correct Answers, Incorrect Answers, Source`` (+ optional     (MC1: best answer vs the
               ``Best Incorrect Answer``); answer lists ``;``-separated     incorrect ones) and an
                                                                            answerable chat item
truthfulqa     the same TruthfulQA-style CSV                               per row: a ``cloze`` item
                                                                            (MC1, MC2) and a ``chat``
                                                                            item (generation)
=============  ==========================================================  =========================

Every error names the file and the line: a missing or renamed column ("expected column 'prompt',
got 'text'"), a row with the wrong number of fields, an empty required cell, an unknown label, a
duplicated id, a Git LFS pointer, an empty file. A UTF-8 BOM and CRLF line ends are fine, and so
are newlines inside quoted cells (the line named is where the row starts).
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suites.items import LFS_POINTER, Item, ItemsError, fail, load_items

Check = Callable[[Path, Item], None]
TQA_PROMPT = "Q: {question}\nA:"  # the cloze prompt of TruthfulQA's multiple choice (lm-eval's, without the primer)


@dataclass(frozen=True)
class CsvFormat:
    name: str
    required: tuple[str, ...]  # column names as documented; matched by :func:`_norm`
    optional: tuple[str, ...] = ()

    def describe(self) -> str:
        extra = f" (optional: {', '.join(self.optional)})" if self.optional else ""
        return f"{self.name}-style header {', '.join(self.required)}{extra}"


XSTEST = CsvFormat("XSTest", ("prompt", "label"), ("id", "type"))
ADVBENCH = CsvFormat("AdvBench", ("goal",), ("target",))
TRUTHFULQA = CsvFormat(
    "TruthfulQA",
    ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"),
    ("Best Incorrect Answer",),
)
XSTEST_LABELS = {"safe": "benign", "unsafe": "harmful"}


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").strip().lower().split())


@dataclass
class Row:
    """One data row: its 1-based data index, the physical line it starts on, its cells by column."""

    index: int
    line: int
    cells: dict[str, str]  # keyed by normalised column name

    def get(self, column: str) -> str:
        return self.cells.get(_norm(column), "").strip()


# --------------------------------------------------------------------------- reading


def read_csv(path: Path | str) -> tuple[list[str], list[Row]]:
    """The header and the data rows of a CSV file (UTF-8, optional BOM, LF or CRLF, quoted cells may
    hold commas and newlines). Blank lines are skipped; every row must have the header's width."""
    path = Path(path)
    if not path.is_file():
        raise ItemsError(f"{path}: items file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ItemsError(f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    if text.startswith(LFS_POINTER):
        raise ItemsError(f"{path}: this is a Git LFS pointer, not the data; run `git lfs pull`")
    if not text.strip():
        raise ItemsError(f"{path}: the file is empty; expected a CSV header line and rows")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[Row] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ItemsError(f"{path}:{start}: malformed CSV ({exc}); quote cells that hold commas, "
                             "quotes or newlines") from None
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            dup = next((h for i, h in enumerate(header) if _norm(h) in map(_norm, header[:i])), None)
            if dup is not None or not all(header):
                what = f"column {dup!r} appears twice" if dup is not None else "an empty column name"
                raise ItemsError(f"{path}:{start}: bad header ({what}): {', '.join(header)}")
            continue
        if len(cells) != len(header):
            raise ItemsError(f"{path}:{start}: expected {len(header)} fields ({', '.join(header)}), got "
                             f"{len(cells)}; quote cells that hold commas")
        rows.append(Row(len(rows) + 1, start, {_norm(h): c for h, c in zip(header, cells, strict=True)}))
    if header is None:
        raise ItemsError(f"{path}: the file is empty; expected a CSV header line and rows")
    if not rows:
        raise ItemsError(f"{path}: no items (only a header)")
    return header, rows


def _match_format(path: Path, header: list[str], formats: tuple[CsvFormat, ...], suite: str) -> CsvFormat:
    """The format whose required columns the header has; else an error naming the missing column."""
    have = {_norm(h) for h in header}
    for fmt in formats:
        if all(_norm(c) in have for c in fmt.required):
            return fmt
    overlap = [sum(_norm(c) in have for c in (*f.required, *f.optional)) for f in formats]
    if max(overlap) == 0:
        expected = " or ".join(f"an {f.describe()}" for f in formats)
        raise ItemsError(f"{path}:1: suite {suite!r} reads CSV with {expected}; got columns {', '.join(header)}")
    fmt = formats[overlap.index(max(overlap))]
    missing = next(c for c in fmt.required if _norm(c) not in have)
    known = {_norm(c) for c in (*fmt.required, *fmt.optional)}
    unknown = [h for h in header if _norm(h) not in known]
    close = difflib.get_close_matches(_norm(missing), [_norm(h) for h in unknown], n=1, cutoff=0.5)
    if close:
        got = repr(next(h for h in unknown if _norm(h) == close[0]))
    elif len(unknown) == 1:
        got = repr(unknown[0])
    else:
        got = "columns " + ", ".join(header)
    raise ItemsError(f"{path}:1: expected column {missing!r} ({fmt.describe()}), got {got}")


def _required(path: Path, row: Row, column: str, ident: str | None = None) -> str:
    value = row.get(column)
    if not value:
        raise fail(path, {"_line": row.line, **({"id": ident} if ident else {})}, f"column {column!r} is empty")
    return value


def split_answers(cell: str) -> list[str]:
    """A ``;``-separated answer list: stripped, empties dropped, duplicates removed (first kept)."""
    out: list[str] = []
    for part in cell.split(";"):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


# --------------------------------------------------------------------------- per format


def xstest_items(path: Path, rows: list[Row]) -> list[Item]:
    items = []
    for row in rows:
        ident = row.get("id") or f"row{row.index}"
        where = {"_line": row.line, "id": ident}
        label = row.get("label").lower()
        if label not in XSTEST_LABELS:
            raise fail(path, where, f"column 'label': unknown value {row.get('label')!r}; expected safe or unsafe")
        items.append({"id": ident, "prompt": _required(path, row, "prompt", ident), "label": XSTEST_LABELS[label],
                      "family": row.get("type") or "all", "_line": row.line})
    return items


def advbench_items(path: Path, rows: list[Row]) -> list[Item]:
    return [{"id": f"row{row.index}", "prompt": _required(path, row, "goal"), "label": "harmful",
             "family": "advbench", "_line": row.line} for row in rows]


def truthfulqa_rows(path: Path, rows: list[Row]) -> list[dict[str, Any]]:
    """Each row's question and answer lists, checked. The best answer leads the correct answers;
    a ``Best Incorrect Answer`` leads the incorrect ones; no answer is both correct and incorrect."""
    out = []
    for row in rows:
        ident = f"q{row.index}"
        where = {"_line": row.line, "id": ident}
        question = _required(path, row, "Question", ident)
        best = _required(path, row, "Best Answer", ident)
        correct = [best] + [a for a in split_answers(row.get("Correct Answers")) if a != best]
        best_wrong = row.get("Best Incorrect Answer")
        incorrect = split_answers(f"{best_wrong};{row.get('Incorrect Answers')}")
        if not incorrect:
            raise fail(path, where, "column 'Incorrect Answers' is empty; multiple choice needs at least one")
        both = next((a for a in incorrect if a in correct), None)
        if both is not None:
            raise fail(path, where, f"answer {both!r} is listed as both correct and incorrect")
        out.append({"id": ident, "_line": row.line, "question": question, "best_answer": best,
                    "correct_answers": correct, "incorrect_answers": incorrect,
                    "category": row.get("Category") or "all", "type": row.get("Type")})
    return out


def truthfulqa_hallucination_items(path: Path, rows: list[Row]) -> list[Item]:
    """For the hallucination suite: a cloze item (MC1: the best answer among the incorrect ones,
    so ``mc_accuracy`` is TruthfulQA's MC1) and an answerable chat item per question."""
    items: list[Item] = []
    for q in truthfulqa_rows(path, rows):
        choices = [" " + a for a in [q["best_answer"], *q["incorrect_answers"]]]
        items.append({"id": f"{q['id']}-mc1", "format": "cloze", "prompt": TQA_PROMPT.format(question=q["question"]),
                      "choices": choices, "answer_index": 0, "category": q["category"], "_line": q["_line"]})
        items.append({"id": f"{q['id']}-gen", "format": "chat", "prompt": q["question"], "answerable": True,
                      "gold": q["best_answer"], "aliases": q["correct_answers"][1:], "category": q["category"],
                      "_line": q["_line"]})
    return items


def truthfulqa_suite_items(path: Path, rows: list[Row]) -> list[Item]:
    """For the truthfulqa suite (its JSONL schema, see :mod:`suites.truthfulqa`): a ``cloze`` item
    and a ``chat`` item per question, both with the full answer lists."""
    items: list[Item] = []
    for q in truthfulqa_rows(path, rows):
        common = {"correct_answers": q["correct_answers"], "incorrect_answers": q["incorrect_answers"],
                  "category": q["category"], "_line": q["_line"]}
        items.append({"id": f"{q['id']}-mc", "format": "cloze", "prompt": TQA_PROMPT.format(question=q["question"]),
                      **common})
        items.append({"id": f"{q['id']}-gen", "format": "chat", "prompt": q["question"], **common})
    return items


CSV_FORMATS: dict[str, tuple[tuple[CsvFormat, Callable[[Path, list[Row]], list[Item]]], ...]] = {
    "refusal": ((XSTEST, xstest_items), (ADVBENCH, advbench_items)),
    "hallucination": ((TRUTHFULQA, truthfulqa_hallucination_items),),
    "truthfulqa": ((TRUTHFULQA, truthfulqa_suite_items),),
}


# --------------------------------------------------------------------------- entry points


def csv_items(path: Path | str, suite: str) -> list[Item]:
    """Raw items (each with ``_line``) of a CSV file in a format ``suite`` accepts."""
    path = Path(path)
    if suite not in CSV_FORMATS:
        raise ItemsError(f"{path}: suite {suite!r} reads JSONL only; CSV files are read by "
                         f"{', '.join(sorted(CSV_FORMATS))} (see docs/data_formats.md)")
    header, rows = read_csv(path)
    options = CSV_FORMATS[suite]
    fmt = _match_format(path, header, tuple(f for f, _ in options), suite)
    convert = next(conv for f, conv in options if f is fmt)
    return convert(path, rows)


def finish_items(path: Path | str, items: list[Item], check: Check) -> list[Item]:
    """The rules of :func:`suites.items.load_items` for rows that came from elsewhere: a missing id
    becomes ``line<N>``, ids are strings and unique, ``check`` runs on every row, ``_line`` goes."""
    path = Path(path)
    seen: dict[str, int] = {}
    for item in items:
        if item.get("id") in (None, ""):
            item["id"] = f"line{item['_line']}"
        item["id"] = str(item["id"])
        if item["id"] in seen:
            raise fail(path, item, f"duplicated id (first on line {seen[item['id']]})")
        seen[item["id"]] = item["_line"]
        check(path, item)
    for item in items:
        item.pop("_line", None)
    return items


def load_suite_items(path: Path | str, suite: str, check: Check) -> list[Item]:
    """A suite's items from ``path``: CSV (by suffix) in a format the suite accepts, else its JSONL."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return finish_items(path, csv_items(path, suite), check)
    return load_items(path, check)
