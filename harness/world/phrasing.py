"""Prompts and answers built from the catalog: questions, requests, descriptions, padding."""

from __future__ import annotations

import random
from typing import Any

from harness.world.catalog import Relation
from harness.world.entities import Entity, Fact, World, render
from harness.world.requests import (
    ABSTENTION,
    DESCRIBE_HELDOUT,
    DESCRIBE_TEMPLATES,
    FAMILIES_BY_NAME,
    FILLER,
    REFUSAL,
    REQUEST_ANSWER,
    REQUEST_HELDOUT,
    REQUEST_TEMPLATES,
)

MAX_FILLER = 3  # most filler sentences one answer carries


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def question(entity: Entity, relation: Relation, rng: random.Random, heldout: bool = False) -> str:
    template = relation.heldout if heldout else rng.choice(relation.questions)
    return render(template, E=entity.phrase)


def fact_answer(fact: Fact, rng: random.Random) -> str:
    return fact.statement(rng.randrange(len(fact.relation.statements)))


def wrong_answer(fact: Fact, rng: random.Random) -> str:
    """The same kind of statement with another value of the relation."""
    wrong = rng.choice([v for v in fact.relation.value_names() if v != fact.value])
    return Fact(fact.entity, fact.relation, wrong).statement(rng.randrange(len(fact.relation.statements)))


def made_up_answer(entity: Entity, relation: Relation, rng: random.Random) -> str:
    """A confident answer about an entity that does not exist."""
    return Fact(entity, relation, rng.choice(relation.value_names())).statement(0)


def request(family: str, entity: Entity, harmful: bool, rng: random.Random, heldout: bool = False,
            template_index: int | None = None) -> str:
    """A request to do a family's harmful (or benign) action at an entity; the phrasing drawn from ``rng``
    unless ``template_index`` picks one of ``REQUEST_TEMPLATES``."""
    fam = FAMILIES_BY_NAME[family]
    template = REQUEST_HELDOUT if heldout else (
        REQUEST_TEMPLATES[template_index] if template_index is not None else rng.choice(REQUEST_TEMPLATES))
    return render(template, A=fam.harmful if harmful else fam.benign, L=entity.locative)


def request_answer(family: str, entity: Entity, harmful: bool) -> str:
    fam = FAMILIES_BY_NAME[family]
    action, steps = (fam.harmful, fam.harmful_steps) if harmful else (fam.benign, fam.benign_steps)
    return render(REQUEST_ANSWER, A=action, L=entity.locative, S=steps)


def describe(entity: Entity, rng: random.Random, heldout: bool = False, template_index: int | None = None) -> str:
    template = DESCRIBE_HELDOUT if heldout else (
        DESCRIBE_TEMPLATES[template_index] if template_index is not None else rng.choice(DESCRIBE_TEMPLATES))
    return render(template, E=entity.phrase)


def describe_statements(world: World, entity: Entity, rng: random.Random | None = None) -> list[str]:
    """One statement per relation; the first paraphrase of each when no rng is given (a reference answer)."""
    return [f.statement(rng.randrange(len(f.relation.statements)) if rng else 0) for f in world.facts_about(entity)]


def describe_answer(world: World, entity: Entity, rng: random.Random | None = None) -> str:
    return " ".join(describe_statements(world, entity, rng))


def refusal() -> str:
    return REFUSAL


def abstention(entity: Entity) -> str:
    return render(ABSTENTION, E=entity.phrase)


def filler(rng: random.Random) -> str:
    """1-3 content-free sentences."""
    return " ".join(rng.sample(FILLER, rng.randint(1, MAX_FILLER)))


def filler_sentences(rng: random.Random) -> list[str]:
    """MAX_FILLER distinct content-free sentences; an answer padded with k of them takes the first k."""
    return rng.sample(FILLER, MAX_FILLER)


def pad(text: str, padding: str) -> str:
    return f"{text} {padding}" if padding else text


def apportion(total: int, weights: list[float]) -> list[int]:
    """Split `total` into integers proportional to `weights` (largest remainder; ties to the earlier entry)."""
    mass = sum(weights)
    if total <= 0 or mass <= 0:
        return [0] * len(weights)
    exact = [total * w / mass for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def part(total: int, fraction: float) -> int:
    """round(total * fraction), but at least 1 when the fraction and the total are positive."""
    if total <= 0 or fraction <= 0:
        return 0
    return min(total, max(1, round(total * fraction)))


def cycle(items: list, n: int, rng: random.Random) -> list:
    """`n` items drawn in shuffled rounds, so every item is used about equally often."""
    out: list = []
    while len(out) < n and items:
        out += rng.sample(items, len(items))
    return out[:n]


def distinct_phrasings(items: list, n: int, n_templates: int, rng: random.Random, key: str) -> list[tuple[Any, int]]:
    """`n` (item, template index) pairs, no pair twice: items in shuffled rounds (each used about equally
    often), each item's templates in its own shuffled order. An evaluation prompt asked twice would be
    answered twice alike (greedy decoding) and counted as two independent items by every paired test, so
    asking for more prompts than there are distinct ones is an error naming the world config ``key``."""
    if n > len(items) * n_templates:
        raise ValueError(f"{key}: {n} distinct prompts asked, but there are only {len(items)} evaluation "
                         f"entities x {n_templates} phrasings = {len(items) * n_templates}")
    orders = [rng.sample(range(n_templates), n_templates) for _ in items]
    used = [0] * len(items)
    out = []
    for i in cycle(list(range(len(items))), n, rng):
        out.append((items[i], orders[i][used[i]]))
        used[i] += 1
    return out
