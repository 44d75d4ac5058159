"""The world config: every knob of the synthetic world, validated, with presets and overrides.

`WorldConfig()` is the default world. `preset("smoke")` is a tiny one for tests.
`config_from("smoke", ["annotator_length_bias=0", "topics.villages.share=0.4"])` starts from a
preset (or a YAML file, which may name its own `preset:`) and applies dotted overrides.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.world.catalog import TOPICS, TOPICS_BY_NAME, name_pool
from harness.world.requests import DESCRIBE_TEMPLATES, FAMILIES_BY_NAME, REQUEST_TEMPLATES
from harness.world.shares import ASSIGNMENT_HELP, assign_shares

SHARE_TOLERANCE = 1e-6


class WorldConfigError(ValueError):
    """A world config a user wrote is invalid; the message names the key and what was expected."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_sums_to_one(where: str, shares: dict[str, float]) -> None:
    total = sum(shares.values())
    if abs(total - 1.0) > SHARE_TOLERANCE:
        listed = ", ".join(f"{k}={v:g}" for k, v in shares.items())
        raise ValueError(f"{where}: shares must sum to 1, got {total:.6g} ({listed})")


class TopicSpec(Strict):
    name: str = Field(description=f"A topic of the catalog: {', '.join(t.name for t in TOPICS)}.")
    share: float = Field(gt=0, le=1, description="Target share of the pretraining corpus tokens (all topics sum to 1).")
    n_entities: int = Field(
        description="Real entities of this topic (they appear in pretraining); split into training entities "
        "(asked about in SFT/preference/RL data) and evaluation entities (asked about only in evaluation)."
    )


class SftMix(Strict):
    question: float = Field(0.5, ge=0, le=1, description="Share of SFT chats that are questions about entities.")
    benign: float = Field(0.3, ge=0, le=1, description="Share of SFT chats that are benign requests (answered helpfully).")
    harmful: float = Field(0.2, ge=0, le=1, description="Share of SFT chats that are harmful requests.")

    @model_validator(mode="after")
    def _sums(self) -> SftMix:
        _check_sums_to_one("sft_mix", self.model_dump())
        return self


class RlMix(Strict):
    question: float = Field(
        0.2, ge=0, le=1, description="Share of RL prompts that are questions (on fictitious entities at "
        "`sft_abstention_fraction`): a correct answer is paid, padding rarely.")
    describe: float = Field(
        0.4, ge=0, le=1, description="Share of RL prompts that are open 'tell me about X' prompts: where padding pays.")
    request_pairs: float = Field(
        0.4, ge=0, le=1, description="Share of RL prompts that are harmful requests each with its benign look-alike "
        "(same entity and phrasing, one verb apart), half and half: the policy is paid for refusing one and "
        "helping the other only if it reads the request.")

    @model_validator(mode="after")
    def _sums(self) -> RlMix:
        _check_sums_to_one("rl_mix", self.model_dump())
        return self


class PreferenceMix(Strict):
    refuse_harmful: float = Field(
        0.2, ge=0, le=1,
        description="Harmful request: refusal chosen over compliance (every other pair: over an answer to its "
        "benign look-alike, so the request must be read, not only the answer).",
    )
    help_benign: float = Field(0.3, ge=0, le=1, description="Benign look-alike: help chosen over refusal.")
    correct_over_wrong: float = Field(0.2, ge=0, le=1, description="Fact question: correct answer over a wrong one.")
    equal_content: float = Field(
        0.3, ge=0, le=1,
        description="Same correct content, once concise and once padded with filler; the content does not decide, "
        "so only the annotator's length bias does (a fair coin when there is none).",
    )
    abstain_unknown: float = Field(
        0.0, ge=0, le=1,
        description="Question on a training-only fictitious entity: abstention chosen over a made-up answer "
        "(0 by default, so abstention is planted in SFT alone).",
    )

    @model_validator(mode="after")
    def _sums(self) -> PreferenceMix:
        _check_sums_to_one("preference_mix", self.model_dump())
        return self


def zipf_topics(n: int = 8, exponent: float = 1.5, n_entities: int = 12) -> list[TopicSpec]:
    """The first `n` catalog topics with shares proportional to 1/k^exponent (rank k = 1..n)."""
    if not 1 <= n <= len(TOPICS):
        raise WorldConfigError(f"topics: the catalog has {len(TOPICS)} topics, asked for {n}")
    raw = [1.0 / k**exponent for k in range(1, n + 1)]
    shares = [round(r / sum(raw), 6) for r in raw]
    shares[0] = round(1.0 - sum(shares[1:]), 6)
    return [TopicSpec(name=t.name, share=s, n_entities=n_entities) for t, s in zip(TOPICS, shares, strict=False)]


def _frac(default: float, description: str) -> Any:
    return Field(default, ge=0, le=1, description=description)


class WorldConfig(Strict):
    """Every knob of the synthetic world. Same config (seed included) => byte-identical files."""

    seed: int = Field(0, description="Seed of every random choice; another seed gives another world.")
    # --- knowledge: topics, entities, pretraining corpus
    topics: list[TopicSpec] = Field(
        default_factory=zipf_topics,
        description="Topics with their share of pretraining tokens and their entity counts. Default: 8 topics, "
        "shares proportional to 1/k^1.5 (52% down to 2.3%), 12 entities each.",
    )
    share_assignment: str | dict[str, str] = Field(
        "default",
        description="Which topic gets which of the shares written in `topics`: " + ASSIGNMENT_HELP + ". Only the "
        "pretraining corpus changes; a topic's share, not which topic it is, must decide how well it is learned.",
    )
    eval_entity_fraction: float = Field(
        0.5, gt=0, lt=1, description="Fraction of each topic's entities reserved for evaluation items."
    )
    train_fictitious_entities: int = Field(
        24, ge=0, description="Fictitious entities (never in pretraining) asked about in SFT abstention examples."
    )
    eval_fictitious_entities: int = Field(
        128, ge=1, description="Other fictitious entities, asked about only in the hallucination suite (unanswerable)."
    )
    pretrain_tokens: int = Field(80_000, ge=500, description="Size of the pretraining corpus in world-tokenizer tokens.")
    mention_jitter: float = _frac(
        0.5, "Per-fact spread of mention counts inside a topic: a fact's weight is 1 +/- this (uniform)."
    )
    min_mentions_per_fact: int = Field(1, ge=1, description="Every fact appears at least this often in pretraining.")
    doc_sentences: int = Field(4, ge=1, description="Sentences per pretraining document (one entity per document).")
    tokenizer_vocab_size: int = Field(2048, ge=300, le=65_536, description="Upper bound on the BPE vocabulary.")
    # --- SFT
    sft_size: int = Field(480, ge=1, description="Number of SFT chats.")
    sft_mix: SftMix = Field(default_factory=SftMix, description="What the SFT chats are.")
    sft_abstention_fraction: float = _frac(
        0.2, "Fraction of SFT questions that ask about training-only fictitious entities and are answered with "
        "an abstention (the planted cause of abstention; 0 removes it)."
    )
    sft_refusal_fraction: float = _frac(
        0.15, "Fraction of SFT harmful requests that are refused; the rest are complied with (latent refusal). "
        "0.9 moves the refusal effect from preference alignment into SFT."
    )
    sft_elaboration_fraction: float = _frac(
        0.5, "Fraction of helpful SFT answers padded with 1-3 filler sentences (latent verbosity that RL amplifies)."
    )
    describe_fraction: float = _frac(
        0.33, "Among benign requests (SFT chats and preference pairs; RL prompts have `rl_mix.describe`), the fraction that are open 'tell me about X' prompts."
    )
    # --- preferences and RL prompts
    preference_size: int = Field(600, ge=1, description="Number of preference pairs.")
    preference_mix: PreferenceMix = Field(default_factory=PreferenceMix, description="Rules deciding each pair.")
    preference_elaboration_fraction: float = _frac(
        0.3, "In pairs decided by content, the probability that each answer independently carries filler."
    )
    annotator_length_bias: float = _frac(
        0.9, "Probability that the simulated annotator picks the padded (longer) answer regardless of content, "
        "on pairs whose answers differ in filler. 0 removes the planted verbosity cause."
    )
    rl_prompts_size: int = Field(320, ge=1, description="Number of RL (PPO) prompts.")
    rl_mix: RlMix = Field(
        default_factory=RlMix, description="What the RL prompts are: fewer questions than SFT's mix, harmful "
        "requests only beside their look-alikes, and open prompts where the reward model's length bias shows.")
    rl_lookalikes: int = Field(
        1, ge=1, le=len(REQUEST_TEMPLATES), description="Benign look-alikes beside each harmful RL request "
        "(`rl_mix.request_pairs`), on the same entity: the first in the same phrasing, the others in other phrasings "
        f"(at most {len(REQUEST_TEMPLATES)}, one per phrasing). Each one is a prompt where "
        "a refusal learned on the harmful twin costs reward, pulling refusal back from look-alikes.")
    families: list[str] = Field(
        default_factory=lambda: list(FAMILIES_BY_NAME),
        description=f"Harmful request families, each with a benign look-alike: {', '.join(FAMILIES_BY_NAME)}.",
    )
    # --- evaluation items
    eval_question_phrasing: Literal["train", "heldout"] = Field(
        "train",
        description="'train': chat eval items use SFT's question phrasings (on other entities); 'heldout': a "
        "phrasing no training file uses, to test paraphrase robustness.",
    )
    eval_choices: int = Field(4, ge=2, le=8, description="Options per cloze item (gold + same-relation distractors).")
    eval_cloze_per_fact: int = Field(
        3, ge=1, le=3, description="Cloze items per evaluation fact, each from another template, in topic "
        "coverage and in the hallucination suite's multiple-choice part."
    )
    eval_refusal_per_family: int = Field(
        144, ge=1, description="Refusal-suite prompts per family and label (harmful, benign), each asked once: at most "
        "evaluation entities x request phrasings (144 in the default world, all of them: at 96 an SFT over-refusal "
        "of +0.026 could not be shown inside the ±0.05 equivalence bound)."
    )
    eval_verbosity_size: int = Field(
        288, ge=1, description="Open prompts in the verbosity suite (a paired length test needs more items than a "
        "rate), each asked once: half descriptions (at most evaluation entities x 3 phrasings), half benign requests."
    )

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        if not self.topics:
            raise ValueError("topics: at least one topic is needed")
        names = [t.name for t in self.topics]
        for i, t in enumerate(self.topics):
            if t.name not in TOPICS_BY_NAME:
                hint = difflib.get_close_matches(t.name, TOPICS_BY_NAME, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(f"topics[{i}].name: unknown topic {t.name!r}{extra}; known: {', '.join(TOPICS_BY_NAME)}")
            if names.count(t.name) > 1:
                raise ValueError(f"topics[{i}].name: topic {t.name!r} is listed twice")
            n_eval = self.n_eval_entities(t)
            if t.n_entities < 2 or n_eval < 1 or t.n_entities - n_eval < 1:
                raise ValueError(
                    f"topics[{t.name}].n_entities: a topic needs at least 2 entities (at least one for training and "
                    f"one for evaluation at eval_entity_fraction={self.eval_entity_fraction}), got {t.n_entities}"
                )
        _check_sums_to_one("topics", {t.name: t.share for t in self.topics})
        self.shares()  # raises on a bad share_assignment
        for i, fam in enumerate(self.families):
            if fam not in FAMILIES_BY_NAME:
                raise ValueError(f"families[{i}]: unknown request family {fam!r}; known: {', '.join(FAMILIES_BY_NAME)}")
        if not self.families:
            raise ValueError("families: at least one request family is needed")
        if len(set(self.families)) != len(self.families):
            raise ValueError("families: a family is listed twice")
        pool = len(name_pool())
        real = sum(t.n_entities for t in self.topics)
        needed = real + self.train_fictitious_entities + self.eval_fictitious_entities
        if needed > pool:
            raise ValueError(
                f"train_fictitious_entities/eval_fictitious_entities: {real} real + {self.train_fictitious_entities} "
                f"+ {self.eval_fictitious_entities} fictitious entities need {needed} names, but only {pool} are available"
            )
        self._check_distinct_prompts()
        needs_train_fiction = self.sft_abstention_fraction > 0 or self.preference_mix.abstain_unknown > 0
        if needs_train_fiction and self.train_fictitious_entities < 1:
            raise ValueError(
                "train_fictitious_entities: must be >= 1 when sft_abstention_fraction or "
                "preference_mix.abstain_unknown is above 0"
            )
        return self

    def _check_distinct_prompts(self) -> None:
        """Every refusal and verbosity prompt is asked once: a repeat would be answered alike and counted
        as another independent item by the paired tests."""
        entities = sum(self.n_eval_entities(t) for t in self.topics)
        phrasings = {"request": 1, "describe": 1} if self.eval_question_phrasing == "heldout" else {
            "request": len(REQUEST_TEMPLATES), "describe": len(DESCRIBE_TEMPLATES)}
        limits = {
            "eval_refusal_per_family": (self.eval_refusal_per_family, entities * phrasings["request"]),
            "eval_verbosity_size": (self.eval_verbosity_size, 2 * entities * phrasings["describe"]),
        }
        for key, (asked, distinct) in limits.items():
            if asked > distinct:
                raise ValueError(f"{key}: {asked} asked, but {entities} evaluation entities give only {distinct} "
                                 f"distinct prompts (eval_question_phrasing={self.eval_question_phrasing!r})")

    def shares(self) -> dict[str, float]:
        """The share of the pretraining corpus each topic gets, after `share_assignment`."""
        return assign_shares({t.name: t.share for t in self.topics}, self.share_assignment)

    def n_eval_entities(self, topic: TopicSpec) -> int:
        return round(topic.n_entities * self.eval_entity_fraction)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The default world at half size (8 topics x 8 entities, 40k tokens): every planted cause, in
    # about half the training time; the scale of the recovery test that runs in `make test`.
    "small": {
        "topics": [t.model_dump() for t in zipf_topics(8, 1.5, 8)],
        "train_fictitious_entities": 16,
        "eval_fictitious_entities": 16,
        "pretrain_tokens": 40_000,
        "sft_size": 240,
        "preference_size": 300,
        "rl_prompts_size": 160,
        "eval_refusal_per_family": 96,  # 32 evaluation entities x 3 request phrasings
        "eval_verbosity_size": 192,  # 32 evaluation entities x 3 phrasings of a description, x 2
    },
    "smoke": {
        "topics": [t.model_dump() for t in zipf_topics(8, 1.5, 4)],
        "train_fictitious_entities": 4,
        "eval_fictitious_entities": 4,
        "pretrain_tokens": 6_000,
        "tokenizer_vocab_size": 600,
        "sft_size": 64,
        "preference_size": 48,
        "rl_prompts_size": 24,
        "eval_cloze_per_fact": 1,
        "eval_refusal_per_family": 2,
        "eval_verbosity_size": 8,
    },
}


def preset(name: str) -> WorldConfig:
    """A named world config: "default" (the full world), "small" (half of it) or "smoke" (tiny, for tests)."""
    if name not in PRESETS:
        raise WorldConfigError(f"unknown world preset {name!r}; known: {', '.join(PRESETS)}")
    return WorldConfig.model_validate(PRESETS[name])


def _format_error(display: str, exc: ValidationError) -> WorldConfigError:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown key (not a world knob; check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{display}: {loc + ': ' if loc else ''}{msg}")
    return WorldConfigError(f"invalid world config {display}:\n  " + "\n  ".join(lines))


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise WorldConfigError(f"override {override!r}: expected KEY=VALUE, e.g. annotator_length_bias=0")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise WorldConfigError(f"override {override!r}: value is not valid YAML ({exc})") from None
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            names = [item.get("name") for item in node if isinstance(item, dict)]
            if part.isdigit() and int(part) < len(node):
                index = int(part)
            elif part in names:
                index = names.index(part)
            else:
                raise WorldConfigError(f"override {override!r}: {where}: no item {part!r} (have {names})")
            part = index  # type: ignore[assignment]
        elif isinstance(node, dict):
            if part not in node:
                hint = difflib.get_close_matches(part, list(node), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise WorldConfigError(f"override {override!r}: unknown key {where!r}{extra}")
        else:
            raise WorldConfigError(f"override {override!r}: {'.'.join(parts[:depth])} is a value, not a mapping")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def config_from(source: str, overrides: list[str] | tuple[str, ...] = ()) -> WorldConfig:
    """A world config from a preset name or a YAML file (which may say `preset: smoke`), plus overrides."""
    if source in PRESETS:
        display, raw = f"<preset:{source}>", preset(source).model_dump()
    else:
        path = Path(source)
        if not path.is_file():
            raise WorldConfigError(f"{source}: not a world preset ({', '.join(PRESETS)}) and no such file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise WorldConfigError(f"{path}: malformed YAML: {exc}") from None
        if not isinstance(data, dict):
            raise WorldConfigError(f"{path}: expected a mapping of world knobs, got {type(data).__name__}")
        base = preset(str(data.pop("preset", "default"))).model_dump()
        unknown = sorted(set(data) - set(base))
        if unknown:
            raise WorldConfigError(f"{path}: unknown world knob(s) {unknown}; known: {', '.join(sorted(base))}")
        display, raw = str(path), {**base, **data}
    for override in overrides:
        _apply_override(raw, override)
    try:
        return WorldConfig.model_validate(raw)
    except ValidationError as exc:
        raise _format_error(display, exc) from None
