"""Evaluation items for every suite, on evaluation entities only.

Chat items reuse SFT's phrasings on other entities (or a held-out phrasing), so none is a
training prompt. Cloze items are a pretraining template's prefix on an evaluation entity,
with the gold value and same-relation distractors as options (a LAMA-style memory probe
that works on a base model; it reuses pretraining phrasing by design).
"""

from __future__ import annotations

import random
from typing import Any

from harness.world import phrasing as ph
from harness.world.entities import Fact, World, rng_for
from harness.world.requests import DESCRIBE_TEMPLATES, REQUEST_TEMPLATES

Row = dict[str, Any]


def _number(rows: list[Row], prefix: str) -> list[Row]:
    """Give rows stable ids in their (deterministic) order, id first."""
    return [{"id": f"{prefix}-{i + 1:04d}", **row} for i, row in enumerate(rows)]


def cloze_item(fact: Fact, template: int, n_choices: int, rng: random.Random) -> Row:
    others = [v for v in fact.relation.value_names() if v != fact.value]
    choices = [fact.value, *rng.sample(others, n_choices - 1)]
    rng.shuffle(choices)
    return {
        "format": "cloze", "prompt": fact.cloze(template),
        "choices": [" " + c for c in choices], "answer_index": choices.index(fact.value),
        "answerable": True, "gold": fact.value, "aliases": fact.aliases,
        "topic": fact.entity.topic, "entity": fact.entity.name, "relation": fact.relation.name,
    }


def hallucination_items(world: World) -> list[Row]:
    """Answerable questions (evaluation entities), unanswerable ones (evaluation fictitious entities), cloze."""
    cfg = world.config
    heldout = cfg.eval_question_phrasing == "heldout"
    rng = rng_for(cfg.seed, "eval:hallucination")
    rows: list[Row] = []
    for fact in world.facts_of("eval"):
        rows.append({
            "format": "chat", "prompt": ph.question(fact.entity, fact.relation, rng, heldout),
            "answerable": True, "gold": fact.value, "aliases": fact.aliases,
            "topic": fact.entity.topic, "entity": fact.entity.name, "relation": fact.relation.name,
            "choices": None, "answer_index": None,
        })
    for entity in world.group("eval_fiction"):
        for relation in entity.kind.relations:
            rows.append({
                "format": "chat", "prompt": ph.question(entity, relation, rng, heldout),
                "answerable": False, "gold": None, "aliases": [],
                "topic": entity.topic, "entity": entity.name, "relation": relation.name,
                "choices": None, "answer_index": None,
            })
    for fact in world.facts_of("eval"):
        for template in sorted(rng.sample(range(len(fact.relation.statements)), cfg.eval_cloze_per_fact)):
            rows.append(cloze_item(fact, template, cfg.eval_choices, rng))
    return _number(rows, "hal")


def topic_coverage_items(world: World) -> list[Row]:
    """Cloze items, `eval_cloze_per_fact` per evaluation fact (each from another template), every topic."""
    cfg = world.config
    rng = rng_for(cfg.seed, "eval:topic_coverage")
    rows = []
    for fact in world.facts_of("eval"):
        for template in sorted(rng.sample(range(len(fact.relation.statements)), cfg.eval_cloze_per_fact)):
            rows.append(cloze_item(fact, template, cfg.eval_choices, rng))
    return _number(rows, "topic")


def refusal_items(world: World) -> list[Row]:
    """Per family, matched pairs: a harmful request and its benign look-alike on the same entity and phrasing."""
    cfg = world.config
    heldout = cfg.eval_question_phrasing == "heldout"
    rng = rng_for(cfg.seed, "eval:refusal")
    rows: list[Row] = []
    templates = 1 if heldout else len(REQUEST_TEMPLATES)
    for family in cfg.families:
        for entity, template in ph.distinct_phrasings(world.group("eval"), cfg.eval_refusal_per_family, templates,
                                                      rng, "eval_refusal_per_family"):
            harmful = ph.request(family, entity, True, rng, heldout, template)  # same phrasing for the pair
            benign = ph.request(family, entity, False, rng, heldout, template)
            rows.append({"format": "chat", "prompt": harmful, "label": "harmful", "family": family})
            rows.append({"format": "chat", "prompt": benign, "label": "benign", "family": family})
    return _number(rows, "ref")


def verbosity_items(world: World) -> list[Row]:
    """Open prompts (describe an entity, or a benign request) with a concise reference answer."""
    cfg = world.config
    heldout = cfg.eval_question_phrasing == "heldout"
    rng = rng_for(cfg.seed, "eval:verbosity")
    n_describe = (cfg.eval_verbosity_size + 1) // 2  # alternating, a description first
    entities = world.group("eval")
    describe = ph.distinct_phrasings(entities, n_describe, 1 if heldout else len(DESCRIBE_TEMPLATES), rng,
                                     "eval_verbosity_size (its descriptions: every other prompt)")
    requests = ph.distinct_phrasings([(e, f) for e in entities for f in cfg.families],
                                     cfg.eval_verbosity_size - n_describe, 1 if heldout else len(REQUEST_TEMPLATES),
                                     rng, "eval_verbosity_size (its benign requests: every other prompt)")
    rows = []
    for i in range(cfg.eval_verbosity_size):
        if i % 2 == 0:
            entity, template = describe[i // 2]
            prompt, reference = ph.describe(entity, rng, heldout, template), ph.describe_answer(world, entity)
        else:
            (entity, family), template = requests[i // 2]
            prompt = ph.request(family, entity, False, rng, heldout, template)
            reference = ph.request_answer(family, entity, False)
        rows.append({"format": "chat", "prompt": prompt, "reference": reference})
    return _number(rows, "verb")


def build_eval(world: World) -> dict[str, list[Row]]:
    """Items per suite, keyed like `WORLD_FILES` ("eval/hallucination", ...)."""
    return {
        "eval/hallucination": hallucination_items(world),
        "eval/refusal": refusal_items(world),
        "eval/verbosity": verbosity_items(world),
        "eval/topic_coverage": topic_coverage_items(world),
    }
