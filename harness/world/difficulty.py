"""How hard each topic's facts are, whatever its share: the card's `topic_difficulty` table.

A topic's share of the corpus is the planted cause of how well it is learned, so nothing
else may differ systematically between topics. The catalog builds every topic alike (see
`catalog.py`); this table measures what the world actually wrote, per topic:

- `relations`, `values_per_relation`: the structure of a fact (every topic: 3 x 8);
- `chance`: expected accuracy of a blind guess on the topic-coverage items (1/options);
- `value_entropy_bits`: entropy of the gold values over the topic's facts, per relation (a
  guesser who knows which values are common gains nothing when it is the same everywhere);
- `value_tokens`: tokens per value with the world tokenizer, and `length_cue`: the fraction of
  items whose options differ in token count (a summed log-likelihood prefers shorter options,
  which would make a topic easier or harder for reasons other than knowledge);
- `shared_values`: values of this topic that any other relation of the catalog also uses;
- `statement_tokens`: tokens per mention, and `mentions_per_fact_at_equal_share`: how often a
  fact is repeated when every topic has the same share (a topic with longer sentences would get
  fewer mentions for the same share of tokens);
- `name_tokens`: tokens per entity name (how hard it is to tell the topic's entities apart).

Empirical difficulty (accuracy when every topic has the same share) needs a trained model;
the README reports it (`tests/test_world_topics.py` measures it).
"""

from __future__ import annotations

import math
from collections import Counter
from statistics import fmean
from typing import TYPE_CHECKING, Any

from harness.world.catalog import TOPICS
from harness.world.entities import World
from harness.world.tokenizer import count_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Columns that must be equal across topics for the construction to be balanced, whatever the
# tokenizer (tests check it); the token columns depend on the vocabulary size and are compared
# with a tolerance by `imbalance`.
BALANCED = ("relations", "values_per_relation", "chance", "shared_values")
TOKEN_COLUMNS = ("value_tokens", "statement_tokens", "name_tokens")


def _entropy(counts: Counter[str]) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def value_owners() -> Counter[str]:
    """How many relations of the whole catalog use each value (1 everywhere when no value is shared)."""
    return Counter(v for t in TOPICS for r in t.relations for v in set(r.value_names()))


def topic_difficulty(
    world: World, tokenizer: PreTrainedTokenizerFast, coverage_items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per topic of the world, in config order."""
    cfg = world.config
    owners = value_owners()
    rows = []
    for spec in cfg.topics:
        facts = world.topic_facts(spec.name)
        relations = {f.relation.name: f.relation for f in facts}
        items = [i for i in coverage_items if i["topic"] == spec.name]
        values = [v for r in relations.values() for v in r.value_names()]
        value_tokens = count_tokens(tokenizer, [" " + v for v in values])
        option_lengths = [set(count_tokens(tokenizer, list(i["choices"]))) for i in items]
        statements = [f.statement(k) for f in facts for k in range(len(f.relation.statements))]
        statement_tokens = fmean(count_tokens(tokenizer, [" " + s for s in statements]))
        names = sorted({f.entity.name for f in facts})
        equal_budget = cfg.pretrain_tokens / len(cfg.topics)
        rows.append({
            "topic": spec.name,
            "relations": len(relations),
            "values_per_relation": min(len(r.values) for r in relations.values()),
            "chance": round(fmean(1 / len(i["choices"]) for i in items), 4) if items else None,
            "value_entropy_bits": round(fmean(
                _entropy(Counter(f.value for f in facts if f.relation.name == name)) for name in relations), 3),
            "value_tokens": round(fmean(value_tokens), 3),
            "length_cue": round(fmean(len(lengths) > 1 for lengths in option_lengths), 3) if items else None,
            "shared_values": sum(owners[v] > 1 for v in values),
            "statement_tokens": round(statement_tokens, 2),
            "mentions_per_fact_at_equal_share": round(equal_budget / len(facts) / statement_tokens, 1),
            "name_tokens": round(fmean(count_tokens(tokenizer, [" " + n for n in names])), 2),
        })
    return rows


def imbalance(rows: list[dict[str, Any]], rel_tolerance: float = 0.1) -> list[str]:
    """What differs between topics: `BALANCED` columns must be equal; the `TOKEN_COLUMNS` may differ
    by at most `rel_tolerance` of their mean, and `length_cue` by `rel_tolerance`. Empty when balanced."""
    problems = []
    for column in BALANCED:
        seen = {r[column] for r in rows}
        if len(seen) > 1:
            problems.append(f"{column} differs across topics: " + ", ".join(f"{r['topic']}={r[column]}" for r in rows))
    for column in TOKEN_COLUMNS:
        values = [r[column] for r in rows]
        if max(values) - min(values) > rel_tolerance * fmean(values):
            problems.append(f"{column} spans {min(values)}..{max(values)} (more than {rel_tolerance:.0%} of the mean)")
    cues = [r["length_cue"] or 0.0 for r in rows]
    if max(cues) - min(cues) > rel_tolerance:
        problems.append(f"length_cue spans {min(cues)}..{max(cues)} (more than {rel_tolerance})")
    return problems
