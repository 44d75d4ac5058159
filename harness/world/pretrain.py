"""The pretraining corpus: facts in paraphrase, topics in their token shares.

Each topic gets `share * pretrain_tokens` tokens (world tokenizer), its share after
`share_assignment`. Inside a topic every fact gets a weight of 1 +/- `mention_jitter`, and
mentions are handed out in proportion to the weights until the topic's budget is spent (at
least `min_mentions_per_fact` each), so frequent topics repeat each fact many times and rare
topics a few. Each mention uses one of the relation's paraphrases, cycling through them. A
document is a few sentences about one entity. Only real entities appear: fictitious ones never
do. The corpus is the only file that depends on the shares: the tokenizer is trained on every
fact once (`calibration_sentences`), so worlds that differ only in their shares share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean
from typing import TYPE_CHECKING, Any

from harness.world.entities import World, rng_for
from harness.world.phrasing import apportion
from harness.world.tokenizer import count_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


@dataclass
class TopicStats:
    name: str
    share_target: float
    n_entities: int
    n_facts: int
    mentions: int = 0
    tokens: int = 0
    mentions_per_fact: list[int] = field(default_factory=list)


def calibration_sentences(world: World) -> list[str]:
    """Every fact in every paraphrase once: what the tokenizer must know, whatever the shares."""
    return [fact.statement(i) for fact in world.facts for i in range(len(fact.relation.statements))]


def build_pretrain(world: World, tokenizer: PreTrainedTokenizerFast) -> tuple[list[dict[str, Any]], list[TopicStats]]:
    """Rows `{"text", "topic"}` in a fixed shuffled order, and per-topic statistics."""
    cfg = world.config
    docs: list[dict[str, Any]] = []
    stats: list[TopicStats] = []
    shares = cfg.shares()
    for spec in cfg.topics:
        facts = world.topic_facts(spec.name)
        rng = rng_for(cfg.seed, f"pretrain:{spec.name}")
        n_templates = [len(f.relation.statements) for f in facts]
        sentences = [[f.statement(i) for i in range(n)] for f, n in zip(facts, n_templates, strict=True)]
        flat = count_tokens(tokenizer, [" " + s for group in sentences for s in group])
        costs, at = [], 0
        for n in n_templates:
            costs.append(fmean(flat[at : at + n]))
            at += n
        weights = [1.0 + cfg.mention_jitter * (2.0 * rng.random() - 1.0) for _ in facts]
        budget = shares[spec.name] * cfg.pretrain_tokens
        total_mentions = round(budget * sum(weights) / sum(w * c for w, c in zip(weights, costs, strict=True)))
        counts = [max(cfg.min_mentions_per_fact, c) for c in apportion(total_mentions, weights)]

        by_entity: dict[str, list[str]] = {}
        for fact, group, count in zip(facts, sentences, counts, strict=True):
            order = rng.sample(range(len(group)), len(group))  # cycle through the paraphrases
            by_entity.setdefault(fact.entity.name, []).extend(group[order[k % len(group)]] for k in range(count))
        for name in sorted(by_entity):
            lines = by_entity[name]
            rng.shuffle(lines)
            for start in range(0, len(lines), cfg.doc_sentences):
                docs.append({"text": " ".join(lines[start : start + cfg.doc_sentences]), "topic": spec.name})
        stats.append(TopicStats(
            spec.name, shares[spec.name], spec.n_entities, len(facts), mentions=sum(counts), mentions_per_fact=counts,
        ))
    rng_for(cfg.seed, "pretrain:order").shuffle(docs)

    per_topic = {s.name: s for s in stats}
    for doc, n in zip(docs, count_tokens(tokenizer, [d["text"] for d in docs]), strict=True):
        per_topic[doc["topic"]].tokens += n
    return docs, stats
