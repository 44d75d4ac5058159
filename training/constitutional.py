"""Stage kind ``constitutional``: Constitutional AI's preference phase (RL from AI feedback, trained by DPO).

1. **Sample.** The parent policy answers every prompt of ``data`` (the world's ``rl_prompts.jsonl`` by
   default) twice, at ``temperature``, through any inference backend (``backend``; ``auto`` is vLLM on
   CUDA, else transformers), ``rounds`` times over the prompts.
2. **Label.** For each pair of different answers a principle of the constitution is drawn at random
   (by weight, seeded) and the feedback model (:mod:`training.constitution`) picks the answer that
   better follows it. ``feedback: model`` is a real judge model (``feedback_model``: any HF causal LM
   folder or harness checkpoint, through ``feedback_backend``), keyed by its content hash;
   ``feedback: rules`` (the default) is the rule-based stand-in that applies each principle's literal
   rule, because the world's tiny models can not judge. Undecided pairs are dropped and counted. The
   labelled pairs are written to ``ai_feedback.jsonl`` in the checkpoint (a resumed stage reuses them).
3. **Train.** DPO on the AI-labelled pairs, from the parent, with :mod:`training.dpo`'s trainer and every
   DPO option (``beta``, ``loss_type`` ...).

The constitution is ``constitution`` (a YAML file; null: the shipped ``examples/constitution.yaml``).
Its principles are copied into the stage config on validation (``principles``), so they are part of the
checkpoint's content hash and manifest: an edited constitution retrains the stage. Metrics say which
feedback model decided (``feedback``, ``feedback_note``), how many pairs each principle decided, and
how often the chosen answer is the shorter one.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from training import dpo
from training.constitution import (
    JUDGE_TEMPLATE,
    Choice,
    Judgement,
    ModelFeedback,
    Principle,
    RuleFeedback,
    check_template,
    load_constitution,
    model_content_hash,
    prompt_text,
    word_count,
)
from training.stage import StageDef, StageInputs

PAIRS_FILE = "ai_feedback.jsonl"


class Config(dpo.Config):
    """Constitutional AI options: the constitution, the feedback model, sampling; and every DPO option."""

    constitution: str | None = Field(None, description="Constitution YAML file; null: the shipped "
                                     "examples/constitution.yaml.")
    principles: list[Principle] = Field(default_factory=list, description="Filled from `constitution` when "
                                        "validated (or written inline): part of the content hash, so an edited "
                                        "constitution retrains the stage.")
    feedback: Literal["rules", "model"] = Field("rules", description="rules: the rule-based stand-in (literal "
                                                "rules, for the world's tiny models); model: `feedback_model`.")
    feedback_model: str | None = Field(None, description="Judge model folder (HF causal LM or harness "
                                       "checkpoint) for `feedback: model`.")
    feedback_model_hash: str | None = Field(None, description="Filled when validated: the judge's content hash "
                                            "(keys the stage by the judge's content, not its path).")
    feedback_backend: str = Field("auto", description="Backend of the judge model: auto, hf, vllm.")
    feedback_template: str | None = Field(None, description="Judge prompt with {prompt}, {principle}, {first}, "
                                          "{second}, ending where the judge writes A or B; null: the built-in one.")
    feedback_margin: float = Field(0.0, ge=0, lt=0.5, description="A judge's P(first better) within this of 0.5 "
                                   "decides nothing (the pair is dropped).")
    backend: str = Field("auto", description="Backend the policy samples with: auto, hf, vllm.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the two answers.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(64, ge=1, description="Longest sampled answer.")
    rounds: int = Field(1, ge=1, description="Passes over the prompts, each with fresh samples and draws.")
    max_prompts: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    generation_batch_size: int = Field(32, ge=1, description="Prompts per generation batch.")

    @field_validator("feedback_model")
    @classmethod
    def _model_folder(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_dir():
            raise ValueError(f"{value}: no such model folder (a judge model: HF causal LM or harness checkpoint)")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Config:
        if not self.principles:
            self.principles = list(load_constitution(self.constitution).principles)
        if self.feedback == "model":
            if not self.feedback_model:
                raise ValueError("feedback: model needs feedback_model (a judge model folder)")
            if self.feedback_model_hash is None:
                self.feedback_model_hash = model_content_hash(self.feedback_model)
        if self.feedback_template is not None:
            check_template(self.feedback_template)
        return self


def load_prompts(source: Path | str) -> list[str | list[dict[str, Any]]]:
    """The ``prompt`` column (text, or chat messages) of a file or ``hf:`` dataset."""
    from training.data import check_messages, load_rows

    rows = load_rows(source, {"prompt": (str, list)})
    check_messages(source, [r for r in rows if isinstance(r["prompt"], list)], ("prompt",))
    return [r["prompt"] for r in rows]


def open_feedback(config: Config, inputs: StageInputs) -> RuleFeedback | ModelFeedback:
    if config.feedback == "rules":
        return RuleFeedback()
    from harness.backends.base import open_backend
    from harness.core.spec import BackendSpec, DecodingSpec

    spec = BackendSpec(name=config.feedback_backend, decoding=DecodingSpec(batch_size=config.generation_batch_size))
    backend = open_backend(config.feedback_model, spec, inputs.trust_remote_code)
    return ModelFeedback(backend, config.feedback_model_hash or "", config.feedback_template or JUDGE_TEMPLATE,
                         config.feedback_margin)


def sample_answers(config: Config, inputs: StageInputs, prompts: list[Any]) -> list[list[tuple[str, str]]]:
    """Per round, per prompt: the policy's two answers."""
    from harness.backends.base import Prompt, Sampling, open_backend
    from harness.core.spec import BackendSpec, DecodingSpec

    asks = [Prompt.completion(p) if isinstance(p, str) else Prompt(messages=tuple(p)) for p in prompts]
    spec = BackendSpec(name=config.backend, decoding=DecodingSpec(batch_size=config.generation_batch_size))
    backend = open_backend(inputs.parent, spec, inputs.trust_remote_code)
    try:
        rounds = []
        for r in range(config.rounds):
            sampling = Sampling(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, seed=inputs.seed * 1009 + r, n=2)
            texts = [c.text.strip() for c in backend.generate(asks, sampling)]
            rounds.append(list(zip(texts[0::2], texts[1::2], strict=True)))
        return rounds
    finally:
        backend.close()


def label_pairs(config: Config, inputs: StageInputs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample, draw principles, ask the feedback model: (DPO rows, labelling statistics)."""
    if inputs.data is None:
        raise ValueError("constitutional needs prompts (`data:`), e.g. the world's rl_prompts.jsonl")
    prompts = load_prompts(inputs.data)[: config.max_prompts]
    rounds = sample_answers(config, inputs, prompts)
    rng = random.Random(f"constitutional:{inputs.seed}")
    weights = [p.weight for p in config.principles]
    candidates, identical = [], 0
    for answers in rounds:
        for prompt, (first, second) in zip(prompts, answers, strict=True):
            principle = rng.choices(config.principles, weights)[0]  # drawn for every pair: seeded, in order
            if first == second:
                identical += 1
                continue
            candidates.append((prompt, Judgement(prompt_text(prompt), first, second, principle)))
    feedback = open_feedback(config, inputs)
    try:
        choices = feedback.choose([j for _, j in candidates]) if candidates else []
    finally:
        feedback.close()
    rows = [_row(prompt, j, c, feedback.kind) for (prompt, j), c in zip(candidates, choices, strict=True)
            if c.winner is not None]
    stats = _stats(config, rows, candidates, choices, identical, len(prompts))
    stats.update(feedback=feedback.kind, feedback_note=feedback.note, feedback_key=feedback.key())
    return rows, stats


def _row(prompt: Any, j: Judgement, choice: Choice, kind: str) -> dict[str, Any]:
    chosen, rejected = (j.first, j.second) if choice.winner == 0 else (j.second, j.first)
    chat = not isinstance(prompt, str)
    wrap = (lambda t: [{"role": "assistant", "content": t}]) if chat else (lambda t: t)
    return {"prompt": prompt, "chosen": wrap(chosen), "rejected": wrap(rejected), "principle": j.principle.name,
            "feedback": kind, "p_first": choice.p_first}


def _words(answer: Any) -> int:
    return word_count(answer if isinstance(answer, str) else answer[0]["content"])


def _stats(config: Config, rows: list[dict[str, Any]], candidates: list[Any], choices: list[Choice],
           identical: int, n_prompts: int) -> dict[str, Any]:
    per = {p.name: {"drawn": 0, "decided": 0} for p in config.principles}
    for (_, j), c in zip(candidates, choices, strict=True):
        per[j.principle.name]["drawn"] += 1
        per[j.principle.name]["decided"] += c.winner is not None
    chosen = [_words(r["chosen"]) for r in rows]
    rejected = [_words(r["rejected"]) for r in rows]
    shorter = [c < r for c, r in zip(chosen, rejected, strict=True) if c != r]
    return {
        "prompts": n_prompts, "candidate_pairs": len(candidates) + identical, "identical_dropped": identical,
        "undecided_dropped": len(candidates) - len(rows), "ai_labelled_pairs": len(rows), "principles": per,
        "chosen_shorter_share": sum(shorter) / len(shorter) if shorter else None,
        "mean_chosen_words": sum(chosen) / len(chosen) if chosen else None,
        "mean_rejected_words": sum(rejected) / len(rejected) if rejected else None,
    }


def run(config: Config, inputs: StageInputs, out: Path) -> dict[str, Any]:
    from harness.core.artifacts import write_text_atomic

    pairs, stats_file = out / PAIRS_FILE, out / "ai_feedback_stats.json"
    if pairs.is_file() and stats_file.is_file():  # a resumed stage: the same labels (same content hash)
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
    else:
        rows, stats = label_pairs(config, inputs)
        if not rows:
            raise ValueError(f"the feedback model decided none of {stats['candidate_pairs']} answer pairs "
                             f"({stats['identical_dropped']} identical, {stats['undecided_dropped']} undecided); "
                             "sample more (`rounds`, `temperature`) or check the constitution's rules")
        write_text_atomic(pairs, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        write_text_atomic(stats_file, json.dumps(stats, sort_keys=True, indent=1))
    metrics = dpo.run(config, replace(inputs, data=pairs), out)
    return {**metrics, **stats}


STAGE = StageDef(kind="constitutional", Config=Config, run=run, version="1", data_key="rl_prompts")
