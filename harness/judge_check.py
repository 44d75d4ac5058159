"""A refusal judge measured against human labels (`harness judge check`).

Input: a CSV of completions labelled by people — columns ``prompt``, ``completion`` and either
``final_label`` in XSTest's classes (``1_full_compliance``, ``2_full_refusal``, ``3_partial_refusal``;
the numeric prefix optional) or ``label`` as ``comply`` / ``refuse`` / ``partial``; an optional ``type``
column gives a per-type breakdown. XSTest's released model completions have exactly this shape.

Output (:class:`Validity`): binary agreement (a partial refusal counts as a refusal, XSTest's reading),
3-class agreement, Cohen's kappa of both, refusal precision and recall, the 3×3 confusion matrix,
agreement per ``type``, and the disagreements, binary ones first. A run whose judge lists
``validation:`` files stores each :class:`Validity` with the run (:func:`validity_record`), and
`harness report` prints it next to the metrics that judge produced.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.core.artifacts import sha256_file
from harness.core.stats import cohen_kappa
from suites.judges import Judge
from suites.refusal_rules import CLASSES, COMPLY, PARTIAL, REFUSE, classify

LABELS = {"full_compliance": COMPLY, "compliance": COMPLY, "comply": COMPLY, "complied": COMPLY,
          "full_refusal": REFUSE, "refusal": REFUSE, "refuse": REFUSE, "refused": REFUSE,
          "partial_refusal": PARTIAL, "partial": PARTIAL}
SHORT = {COMPLY: "comply", REFUSE: "refuse", PARTIAL: "partial"}


def human_label(raw: str) -> str | None:
    """XSTest's class of a human label: ``2_full_refusal``, ``full refusal``, ``refuse`` ... (None: unknown)."""
    key = re.sub(r"^\s*\d+\s*[_.:)-]?\s*", "", raw or "").strip().lower().replace(" ", "_").replace("-", "_")
    return LABELS.get(key)


@dataclass(frozen=True)
class LabelledRow:
    line: int  # line in the file where the row starts (header = 1)
    prompt: str
    completion: str
    human: str  # one of refusal_rules.CLASSES
    type: str


def load_labelled(path: Path | str) -> list[LabelledRow]:
    """The rows of a labelled-completions CSV; one error naming file, line and column for an unusable one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found (expected a CSV of human-labelled completions)")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        label_col = "final_label" if "final_label" in columns else "label" if "label" in columns else None
        missing = [c for c in ("prompt", "completion") if c not in columns] + ([] if label_col else ["final_label"])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected prompt, completion and "
                             f"final_label (XSTest classes) or label (refuse / partial / comply); "
                             f"found: {', '.join(sorted(columns)) or 'none'}")
        rows = []
        for record in reader:
            line = reader.line_num - str(record.get("completion") or "").count("\n")
            human = human_label(record.get(label_col) or "")
            if human is None:
                raise ValueError(f"{path}:{line}: column {label_col!r}: {record.get(label_col)!r} is not a label; "
                                 f"expected one of {', '.join(sorted(LABELS))} (a numeric prefix like '2_' is fine)")
            rows.append(LabelledRow(line, record["prompt"] or "", record["completion"] or "", human,
                                    (record.get("type") or "all").strip() or "all"))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


@dataclass
class Validity:
    """How well a judge agrees with human labels on one file."""

    file: str
    sha256: str
    n: int
    agreement: float  # binary: refusal (full or partial) vs compliance
    kappa: float  # binary
    agreement_3class: float
    kappa_3class: float
    precision: float  # of the judge's refusals, the share people call refusals
    recall: float  # of people's refusals, the share the judge finds
    confusion: dict[str, dict[str, int]]  # human class -> judge class -> count
    by_type: dict[str, dict[str, float]]  # type -> {n, agreement}
    judge: dict[str, Any] = field(default_factory=dict)
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what a reader needs to trust (or not) the judge's numbers."""
        return (f"agreement {self.agreement:.3f}, kappa {self.kappa:.3f}, refusal precision {self.precision:.3f} "
                f"recall {self.recall:.3f} (3-class agreement {self.agreement_3class:.3f}, n={self.n}, "
                f"{Path(self.file).name})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def measure(rows: Sequence[LabelledRow], judged: Sequence[str], path: Path | str = "",
            judge_key: dict[str, Any] | None = None, cues: Sequence[str | None] = ()) -> Validity:
    """Agreement of judge classes ``judged`` with the rows' human classes."""
    human = [r.human for r in rows]
    hb, jb = [h != COMPLY for h in human], [j != COMPLY for j in judged]
    confusion = {h: {j: 0 for j in CLASSES} for h in CLASSES}
    for h, j in zip(human, judged, strict=True):
        confusion[h][j] += 1
    types: dict[str, list[bool]] = defaultdict(list)
    for row, h, j in zip(rows, hb, jb, strict=True):
        types[row.type].append(h == j)
    by_type = {t: {"n": len(v), "agreement": sum(v) / len(v)} for t, v in sorted(types.items())}
    both = sum(h and j for h, j in zip(hb, jb, strict=True))
    order = sorted(range(len(rows)), key=lambda i: (hb[i] == jb[i], human[i] == judged[i], rows[i].line))
    disagreements = [{"line": rows[i].line, "type": rows[i].type, "human": human[i], "judge": judged[i],
                      "cue": cues[i] if cues else None, "prompt": rows[i].prompt,
                      "completion": rows[i].completion} for i in order if human[i] != judged[i]]
    return Validity(
        file=str(path), sha256=sha256_file(Path(path)) if path and Path(path).is_file() else "", n=len(rows),
        agreement=_ratio(sum(h == j for h, j in zip(hb, jb, strict=True)), len(rows)), kappa=cohen_kappa(hb, jb),
        agreement_3class=_ratio(sum(h == j for h, j in zip(human, judged, strict=True)), len(rows)),
        kappa_3class=cohen_kappa(human, list(judged)), precision=_ratio(both, sum(jb)), recall=_ratio(both, sum(hb)),
        confusion=confusion, by_type=by_type, judge=judge_key or {}, disagreements=disagreements)


def check(path: Path | str, judge: Judge, judge_key: dict[str, Any] | None = None, batch: int = 64) -> Validity:
    """Run ``judge`` over a labelled file and measure it (the rules judge also reports the cue of each call)."""
    rows = load_labelled(path)
    judged: list[str] = []
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        judged += [v.refusal_class for v in judge.verdicts([r.prompt for r in part], [r.completion for r in part])]
    rules = (judge_key or judge.key()).get("kind") == "rules"
    cues = [classify(r.completion).cue for r in rows] if rules else []
    return measure(rows, judged, path, judge_key or judge.key(), cues)


def render(v: Validity, show: int = 10, width: int = 100) -> str:
    """The report `harness judge check` prints: plain text, fits ``width`` columns."""
    short = [SHORT[c] for c in CLASSES]
    lines = [
        f"judge check: {v.file} ({v.n} completions; judge {v.judge.get('kind', '?')})",
        f"  binary agreement   {v.agreement:.3f}   (partial refusal counts as refusal)",
        f"  Cohen's kappa      {v.kappa:.3f}   binary;  {v.kappa_3class:.3f} 3-class",
        f"  3-class agreement  {v.agreement_3class:.3f}",
        f"  refusal precision  {v.precision:.3f}   recall {v.recall:.3f}",
        "", "  confusion (rows: human, columns: judge)",
        "  " + " " * 9 + "".join(f"{s:>9}" for s in short),
    ]
    lines += ["  " + f"{SHORT[h]:<9}" + "".join(f"{v.confusion[h][j]:>9}" for j in CLASSES) for h in CLASSES]
    lines += ["", "  agreement by type (binary)"]
    lines += [f"  {t[:34]:<34} n={d['n']:<4.0f} {d['agreement']:.3f}" for t, d in v.by_type.items()]
    if show and v.disagreements:
        lines += ["", f"  disagreements ({len(v.disagreements)}; binary first, {min(show, len(v.disagreements))} shown)"]
        for d in v.disagreements[:show]:
            text = " ".join(d["completion"].split())
            cue = f" cue={d['cue']!r}" if d.get("cue") else ""
            lines.append(f"  line {d['line']}: human {SHORT[d['human']]}, judge {SHORT[d['judge']]}{cue}")
            lines.append(f"    Q: {' '.join(d['prompt'].split())[:width - 7]}")
            lines.append(f"    A: {text[:width - 7]}")
    return "\n".join(lines)



def validate_judges(suites: Sequence[Any], store: Any, run_id: str, say: Any = print,
                    trust_remote_code: bool = False) -> list[tuple[str, Validity]]:
    """Measure every suite entry's judge on its ``judge.validation`` files and store each result with the run
    (once per distinct judge and file). Returns (suite label, validity) pairs."""
    from harness.backends.base import open_backend
    from harness.core.spec import BackendSpec
    from suites.judges import judge_identity, make_judge

    done: dict[str, Validity] = {}
    out = []
    for spec in suites:
        if not spec.judge.validation:
            continue
        identity = judge_identity(spec.judge)
        for path in spec.judge.validation:
            key = f"{sorted(identity.items())}|{sha256_file(Path(path))}"
            if key not in done:
                judge = make_judge(spec.judge, lambda p: open_backend(p, BackendSpec(name="hf"), trust_remote_code))
                try:
                    done[key] = check(path, judge, identity)
                finally:
                    judge.close()
            validity = done[key]
            store.record_judge_validity(run_id, spec.label, identity, validity.to_dict())
            say(f"judge of {spec.label}: {validity.summary()}")
            out.append((spec.label, validity))
    return out
