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

A row is refused only when it is unusable, and the error names the file, the line and the column:
a missing or renamed column ("expected column 'prompt', got 'text'"), a row with the wrong number
of fields, an empty required cell, an unknown label, a duplicated id, a Git LFS pointer, an empty
file. A UTF-8 BOM and CRLF line ends are fine, and so are newlines inside quoted cells (the line
named is where the row starts).

Where the meaning is clear the loader repairs, warns once and counts instead (:func:`drop_conflicts`):
an answer listed as both correct and incorrect (compared ignoring case and spacing; both TruthfulQA
releases have such rows) is dropped from both lists; a question left without a correct or an
incorrect answer, or whose best answer was such an answer, is dropped whole. One
``logging.warning`` per file names the rows (file, line, id), and the counts travel with the
items (:class:`suites.items.ItemList`) into the suite's result as the metrics
``<suite>.conflicting_answers_dropped`` and ``<suite>.questions_dropped`` (:func:`dropped_metrics`;
value = count, ``n`` = questions read). The same holds for the truthfulqa suite's JSONL rows.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suites.items import LFS_POINTER, Item, ItemList, ItemsError, dropped_of, fail, load_items, load_jsonl
from suites.suite import Metric, MetricDef

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, ...]] = set()  # (file, rows): a file loaded again (each checkpoint, each key) warns once

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


def truthfulqa_rows(path: Path, rows: list[Row]) -> tuple[list[dict[str, Any]], Drops]:
    """Each row's question and answer lists, checked; what :func:`drop_conflicts` dropped. The best
    answer leads the correct answers; a ``Best Incorrect Answer`` leads the incorrect ones."""
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
        out.append({"id": ident, "_line": row.line, "question": question, "correct_answers": correct,
                    "incorrect_answers": incorrect, "category": row.get("Category") or "all", "type": row.get("Type")})
    return drop_conflicts(path, out)


def _answer_key(answer: str) -> str:
    return " ".join(answer.casefold().split())


@dataclass
class Drops:
    """What :func:`drop_conflicts` dropped from one file."""

    read: int = 0  # questions (rows) read
    answers: int = 0  # distinct answers listed as both correct and incorrect, dropped from both lists
    questions: int = 0  # questions left unusable, dropped whole
    where: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"conflicting_answers": self.answers, "questions": self.questions, "read": self.read} \
            if self.answers or self.questions else {}

    def attach(self, items: Iterable[Item]) -> ItemList:
        return ItemList(items, self.counts())


def drop_conflicts(path: Path, rows: list[dict[str, Any]], most: int = 5) -> tuple[list[dict[str, Any]], Drops]:
    """``rows`` (each with ``_line``, ``correct_answers``, ``incorrect_answers``, best answer first)
    with every answer listed in both lists dropped from both; a row left without a correct or an
    incorrect answer, or whose best answer was dropped, is dropped. One warning names the rows
    (the first ``most``), once per process for one file's rows. Rows whose lists are not lists of strings are left for the suite's check."""
    kept, drops = [], Drops(read=len(rows))
    for row in rows:
        correct, incorrect = row.get("correct_answers"), row.get("incorrect_answers")
        if not all(isinstance(x, list) and all(isinstance(a, str) for a in x) for x in (correct, incorrect)):
            kept.append(row)
            continue
        both = {_answer_key(a) for a in correct} & {_answer_key(a) for a in incorrect}
        if not both:
            kept.append(row)
            continue
        names = [a for a in correct if _answer_key(a) in both]
        drops.answers += len(both)
        row["correct_answers"] = [a for a in correct if _answer_key(a) not in both]
        row["incorrect_answers"] = [a for a in incorrect if _answer_key(a) not in both]
        usable = row["correct_answers"] and row["incorrect_answers"] and _answer_key(correct[0]) not in both
        ident = f" (id {row['id']!r})" if row.get("id") not in (None, "") else ""
        drops.where.append(f"line {row['_line']}{ident}: {', '.join(map(repr, names))}"
                           + ("" if usable else ", question dropped"))
        if usable:
            kept.append(row)
        else:
            drops.questions += 1
    seen = (str(Path(path).resolve()), *drops.where)
    if drops.where and seen not in _WARNED:
        _WARNED.add(seen)
        more = f"; and {len(drops.where) - most} more rows" if len(drops.where) > most else ""
        log.warning("%s: %d answer(s) listed as both correct and incorrect dropped from both lists; %d question(s) "
                    "left without a usable answer dropped whole (%s%s)", path, drops.answers, drops.questions,
                    "; ".join(drops.where[:most]), more)
    if not kept:
        raise ItemsError(f"{path}: no usable items (every question lost its answers to conflicts: "
                         f"{'; '.join(drops.where[:most])})")
    return kept, drops


def dropped_metric_defs(suite: str) -> tuple[MetricDef, ...]:
    return (MetricDef(f"{suite}.conflicting_answers_dropped", False, None,
                      "Answers the items file listed as both correct and incorrect, dropped from both lists "
                      "(a count over the file; n = questions read)."),
            MetricDef(f"{suite}.questions_dropped", False, None,
                      "Questions of the items file left unusable by those drops (a count; n = questions read)."))


def dropped_metrics(suite: str, items: Iterable[Item]) -> list[Metric]:
    """The counts of :func:`drop_conflicts` as metrics (exact: the interval is the value); none
    when loading dropped nothing."""
    counts = dropped_of(items)
    if not counts:
        return []
    return [Metric(f"{suite}.{name}", float(counts[key]), float(counts[key]), float(counts[key]), counts["read"],
                   False, "headline", None)
            for name, key in (("conflicting_answers_dropped", "conflicting_answers"), ("questions_dropped", "questions"))]


def truthfulqa_hallucination_items(path: Path, rows: list[Row]) -> list[Item]:
    """For the hallucination suite: a cloze item (MC1: the best answer among the incorrect ones,
    so ``mc_accuracy`` is TruthfulQA's MC1) and an answerable chat item per question."""
    questions, drops = truthfulqa_rows(path, rows)
    items: list[Item] = []
    for q in questions:
        best = q["correct_answers"][0]
        choices = [" " + a for a in [best, *q["incorrect_answers"]]]
        items.append({"id": f"{q['id']}-mc1", "format": "cloze", "prompt": TQA_PROMPT.format(question=q["question"]),
                      "choices": choices, "answer_index": 0, "category": q["category"], "_line": q["_line"]})
        items.append({"id": f"{q['id']}-gen", "format": "chat", "prompt": q["question"], "answerable": True,
                      "gold": best, "aliases": q["correct_answers"][1:], "category": q["category"],
                      "_line": q["_line"]})
    return drops.attach(items)


def truthfulqa_suite_items(path: Path, rows: list[Row]) -> list[Item]:
    """For the truthfulqa suite (its JSONL schema, see :mod:`suites.truthfulqa`): a ``cloze`` item
    and a ``chat`` item per question, both with the full answer lists."""
    questions, drops = truthfulqa_rows(path, rows)
    items: list[Item] = []
    for q in questions:
        common = {"correct_answers": q["correct_answers"], "incorrect_answers": q["incorrect_answers"],
                  "category": q["category"], "_line": q["_line"]}
        items.append({"id": f"{q['id']}-mc", "format": "cloze", "prompt": TQA_PROMPT.format(question=q["question"]),
                      **common})
        items.append({"id": f"{q['id']}-gen", "format": "chat", "prompt": q["question"], **common})
    return drops.attach(items)


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


def load_suite_items(path: Path | str, suite: str, check: Check, answer_lists: bool = False) -> list[Item]:
    """A suite's items from ``path``: CSV (by suffix) in a format the suite accepts, else its JSONL.
    ``answer_lists``: JSONL rows carry ``correct_answers`` / ``incorrect_answers``, whose conflicts
    :func:`drop_conflicts` resolves before ``check`` runs (CSV rows always have theirs resolved)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return finish_items(path, csv_items(path, suite), check)
    if answer_lists:
        rows, drops = drop_conflicts(path, load_jsonl(path))
        return finish_items(path, drops.attach(rows), check)
    return load_items(path, check)
