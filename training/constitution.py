"""A constitution (a list of principles) and the feedback models that apply it to two answers.

The ``constitutional`` stage (:mod:`training.constitutional`) asks a feedback model, for one answer
pair and one principle drawn at random, which answer better follows the principle. Two feedback
models, one interface (``choose(judgements) -> choices``, ``key``, ``close``):

- :class:`ModelFeedback`: a real judge model behind any backend (``harness.backends``). It reads
  :data:`JUDGE_TEMPLATE` (the Constitutional AI paper's multiple-choice form) and the choice is the
  one it gives more probability to: ``P(A)`` from the log-likelihoods of ``A`` and ``B`` after the
  template, asked in both orders and averaged, so a judge that always says "A" is not a preference.
  The stage is keyed by the judge model's content hash (its harness manifest's, else a fingerprint of
  its files), never by its path.
- :class:`RuleFeedback`: the stand-in for the world's tiny models, which can not judge anything. It
  applies each principle's literal ``rule`` from the constitution file (fewer words; has / lacks a
  phrase; only for prompts with / without some words). It is no model and does not generalise a
  principle beyond its rule; the stage says so in its metrics (``feedback_note``).

A judgement a feedback model can not decide (both answers alike under the rule, a principle that does
not apply to the prompt, a model within ``margin`` of 0.5) gets ``winner None``: the pair is dropped.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "constitution.yaml"
RULES_NOTE = ("rule-based stand-in: each principle's literal `rule` from the constitution decided the pairs "
              "(the world's tiny models can not judge); no feedback model was asked")
JUDGE_TEMPLATE = (
    "Consider the following conversation between a human and an assistant:\n\n"
    "Human: {prompt}\n\n"
    "{principle}\n\n"
    "Options:\n(A) {first}\n(B) {second}\n\n"
    "The answer is: ("
)
TEMPLATE_FIELDS = ("{prompt}", "{principle}", "{first}", "{second}")


class Rule(BaseModel):
    """How the rule-based stand-in applies a principle, literally."""

    model_config = ConfigDict(extra="forbid")
    prefer: Literal["shorter", "contains", "lacks"] = Field(
        description="shorter: fewer words wins; contains / lacks: the answer with / without one of `phrases` wins.")
    phrases: list[str] = Field(default_factory=list, description="Phrases (whole words, any case) for contains / lacks.")
    when_prompt_has: list[str] = Field(default_factory=list, description="Applies only to prompts with one of these.")
    unless_prompt_has: list[str] = Field(default_factory=list, description="Does not apply to prompts with one of these.")

    @model_validator(mode="after")
    def _phrases_given(self) -> Rule:
        if self.prefer != "shorter" and not self.phrases:
            raise ValueError(f"prefer: {self.prefer} needs `phrases`")
        return self


class Principle(BaseModel):
    """One principle: the text a feedback model reads, its draw weight, its literal rule."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Short name (counted per principle in the stage's metrics).")
    text: str = Field(min_length=1, description="The principle as a feedback model reads it (a question).")
    weight: float = Field(1.0, gt=0, description="Relative probability of drawing this principle.")
    rule: Rule | None = Field(None, description="Literal application for the rule-based stand-in; none: it abstains.")


class Constitution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("constitution", description="Name of the constitution.")
    principles: list[Principle] = Field(min_length=1, description="The principles.")

    @model_validator(mode="after")
    def _unique(self) -> Constitution:
        names = [p.name for p in self.principles]
        if len(set(names)) != len(names):
            raise ValueError(f"principle names must be unique, got {names}")
        return self


def load_constitution(path: Path | str | None) -> Constitution:
    """A constitution YAML file (``None``: the shipped ``examples/constitution.yaml``); one ``ValueError``
    naming the file and the key when it is not one."""
    path = Path(path).expanduser() if path is not None else SHIPPED
    if not path.is_file():
        raise ValueError(f"{path}: constitution file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Constitution.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'top'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: not a constitution ({problems})") from None


def check_template(template: str) -> str:
    missing = [f for f in TEMPLATE_FIELDS if f not in template]
    if missing:
        raise ValueError(f"a feedback template needs {', '.join(TEMPLATE_FIELDS)}; missing {', '.join(missing)}")
    try:
        template.format(prompt="", principle="", first="", second="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"a feedback template may use only {', '.join(TEMPLATE_FIELDS)} "
                         f"(write literal braces as {{{{ }}}}): {exc!r}") from None
    return template


@functools.lru_cache(maxsize=16)
def _fingerprint(path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    from harness.core.artifacts import MANIFEST, fingerprint_paths, read_manifest

    folder = Path(path)
    return read_manifest(folder).content_hash if (folder / MANIFEST).is_file() else fingerprint_paths([folder])


def model_content_hash(path: Path | str) -> str:
    """A judge model's identity: a harness checkpoint's content hash, else a hash of its files (cached per
    process while no file changes size or time)."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"{path}: no such model folder")
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    signature = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint(str(folder), signature)


# --------------------------------------------------------------------------- judgements


@dataclass(frozen=True)
class Judgement:
    """Which of ``first`` / ``second`` better follows ``principle``, as an answer to ``prompt``."""

    prompt: str  # the user's request as text
    first: str
    second: str
    principle: Principle


@dataclass(frozen=True)
class Choice:
    winner: int | None  # 0: first, 1: second, None: undecided (the pair is dropped)
    p_first: float | None = None  # the feedback model's probability that the first is better


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """A prompt row as the text a feedback model reads: plain text, or the user turns of a chat."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m["content"]) for m in prompt if m.get("role") == "user") or str(prompt[-1]["content"])


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("\u2018", "'")
    return " " + " ".join(re.sub(r"[^\w']+", " ", text).split()) + " "


def word_count(text: str) -> int:
    """Words as the rules count them: runs of letters, digits and apostrophes."""
    return len(_normalise(text).split())


def _has(text: str, phrases: Sequence[str]) -> bool:
    norm = _normalise(text)
    return any(_normalise(p) in norm for p in phrases if p.strip())


def rule_choice(rule: Rule | None, judgement: Judgement) -> int | None:
    """The literal application of one rule (None when it does not decide)."""
    if rule is None:
        return None
    if rule.when_prompt_has and not _has(judgement.prompt, rule.when_prompt_has):
        return None
    if rule.unless_prompt_has and _has(judgement.prompt, rule.unless_prompt_has):
        return None
    if rule.prefer == "shorter":
        a, b = word_count(judgement.first), word_count(judgement.second)
        return None if a == b else int(b < a)
    a, b = (_has(t, rule.phrases) for t in (judgement.first, judgement.second))
    if a == b:
        return None
    wins_first = a if rule.prefer == "contains" else b
    return 0 if wins_first else 1


class RuleFeedback:
    """The rule-based stand-in (module docstring)."""

    kind = "rules"
    note = RULES_NOTE

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def choose(self, judgements: Sequence[Judgement]) -> list[Choice]:
        return [Choice(rule_choice(j.principle.rule, j)) for j in judgements]

    def close(self) -> None:
        pass


class ModelFeedback:
    """A judge model behind any backend; the choice from the probabilities of ``A`` and ``B``."""

    kind = "model"

    def __init__(self, backend: Any, model_hash: str, template: str = JUDGE_TEMPLATE, margin: float = 0.0) -> None:
        self.backend, self.model_hash, self.template, self.margin = backend, model_hash, check_template(template), margin
        self.note = f"feedback model {model_hash[:12]} ({backend.name} backend), both answer orders averaged"

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_hash, "backend": self.backend.name}

    def _p_a(self, contexts: list[str]) -> list[float]:
        """P(A) of a two-way choice for each context (softmax over the log-likelihoods of A and B)."""
        scores = self.backend.loglikelihood([(c, x) for c in contexts for x in ("A", "B")])
        out = []
        for la, lb in zip(scores[0::2], scores[1::2], strict=True):
            a, b = la.logprob, lb.logprob
            top = max(a, b)
            if not math.isfinite(top):
                out.append(0.5)
                continue
            ea, eb = math.exp(a - top), math.exp(b - top)
            out.append(ea / (ea + eb))
        return out

    def choose(self, judgements: Sequence[Judgement]) -> list[Choice]:
        def ask(j: Judgement, first: str, second: str) -> str:
            return self.template.format(prompt=j.prompt, principle=j.principle.text, first=first, second=second)

        forward = self._p_a([ask(j, j.first, j.second) for j in judgements])
        backward = self._p_a([ask(j, j.second, j.first) for j in judgements])
        choices = []
        for pf, pb in zip(forward, backward, strict=True):
            p_first = (pf + (1.0 - pb)) / 2  # the first answer is "A" in one order and "B" in the other
            winner = None if abs(p_first - 0.5) <= self.margin else int(p_first < 0.5)
            choices.append(Choice(winner, p_first))
        return choices

    def close(self) -> None:
        self.backend.close()
