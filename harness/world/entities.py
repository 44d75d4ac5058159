"""The world's entities and facts, and how they are put into words.

Four disjoint groups of entities:
- `train`: real (in pretraining), asked about in SFT, preference and RL data;
- `eval`: real (in pretraining), asked about only in evaluation items;
- `train_fiction`: never in pretraining, asked about in SFT abstention examples;
- `eval_fiction`: never in any training file, asked about only in the hallucination suite.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from harness.world.catalog import TOPICS_BY_NAME, Relation, Topic, name_pool
from harness.world.config import WorldConfig

Role = Literal["train", "eval", "train_fiction", "eval_fiction"]
ROLES: tuple[Role, ...] = ("train", "eval", "train_fiction", "eval_fiction")


def rng_for(seed: int, stream: str) -> random.Random:
    """An independent, reproducible random stream per purpose (str seeds hash with sha512, not PYTHONHASHSEED)."""
    return random.Random(f"{seed}:{stream}")


def render(template: str, **slots: str) -> str:
    """Fill `{E}`/`{V}`/`{A}`/`{L}`/`{S}` slots and capitalise the first letter."""
    text = template.format(**slots)
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class Entity:
    name: str
    topic: str
    role: Role

    @property
    def kind(self) -> Topic:
        return TOPICS_BY_NAME[self.topic]

    @property
    def phrase(self) -> str:
        """How the entity is named in running text, e.g. "the village of Kelmire"."""
        return self.kind.entity.format(N=self.name)

    @property
    def locative(self) -> str:
        """Where a request about it takes place, e.g. "in the village of Kelmire"."""
        return self.kind.locative.format(N=self.name)

    @property
    def real(self) -> bool:
        return self.role in ("train", "eval")


@dataclass(frozen=True)
class Fact:
    entity: Entity
    relation: Relation
    value: str

    def statement(self, i: int) -> str:
        return render(self.relation.statements[i], E=self.entity.phrase, V=self.value)

    def cloze(self, i: int) -> str:
        """The statement's text before " {V}": a prompt the value continues."""
        template = self.relation.statements[i]
        return render(template[: template.index(" {V}")], E=self.entity.phrase)

    @property
    def aliases(self) -> list[str]:
        return self.relation.aliases(self.value)


@dataclass
class World:
    config: WorldConfig
    entities: list[Entity]
    facts: list[Fact]  # facts of real entities, in topic, entity, relation order

    def __post_init__(self) -> None:
        self._groups = {r: [e for e in self.entities if e.role == r] for r in ROLES}
        self._facts = {r: [f for f in self.facts if f.entity.role == r] for r in ROLES}

    def group(self, role: Role) -> list[Entity]:
        return self._groups[role]

    def facts_of(self, role: Role) -> list[Fact]:
        return self._facts[role]

    def facts_about(self, entity: Entity) -> list[Fact]:
        return [f for f in self.facts if f.entity == entity]

    def topic_facts(self, topic: str) -> list[Fact]:
        return [f for f in self.facts if f.entity.topic == topic]


def build_world(config: WorldConfig) -> World:
    """Name every entity, split them into the four groups and draw each real entity's facts."""
    names = name_pool()
    rng_for(config.seed, "names").shuffle(names)
    taken = iter(names)
    topic_names = [t.name for t in config.topics]
    entities: list[Entity] = []
    for spec in config.topics:
        n_eval = config.n_eval_entities(spec)
        for i in range(spec.n_entities):
            entities.append(Entity(next(taken), spec.name, "eval" if i < n_eval else "train"))
    for role, count in (("train_fiction", config.train_fictitious_entities),
                        ("eval_fiction", config.eval_fictitious_entities)):
        for i in range(count):
            entities.append(Entity(next(taken), topic_names[i % len(topic_names)], role))  # type: ignore[arg-type]

    facts: list[Fact] = []
    for spec in config.topics:
        members = [e for e in entities if e.topic == spec.name and e.real]
        by_entity: dict[str, list[Fact]] = {e.name: [] for e in members}
        for relation in TOPICS_BY_NAME[spec.name].relations:
            # balanced: every value is used about equally often, so no value is a good blind guess
            rng = rng_for(config.seed, f"values:{spec.name}:{relation.name}")
            pool: list[str] = []
            while len(pool) < len(members):
                pool += rng.sample(relation.value_names(), len(relation.values))
            pool = pool[: len(members)]
            rng.shuffle(pool)
            for entity, value in zip(members, pool, strict=True):
                by_entity[entity.name].append(Fact(entity, relation, value))
        for entity in members:
            facts.extend(by_entity[entity.name])
    return World(config, entities, facts)
