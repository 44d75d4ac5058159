"""Training chats: SFT conversations, preference pairs and RL prompts (training entities only).

Each part draws from its own random stream, and knobs that set a fraction choose *which*
rows by a fixed permutation, so a counterfactual world (another refusal fraction, another
length bias) keeps the same prompts and changes only the planted behaviour.
"""

from __future__ import annotations

import random
from typing import Any

from harness.world import phrasing as ph
from harness.world.entities import World, rng_for
from harness.world.requests import REQUEST_TEMPLATES

Row = dict[str, Any]


def _chat(prompt: str, answer: str, kind: str) -> Row:
    return {"messages": ph.user(prompt) + ph.assistant(answer), "kind": kind}


def build_sft(world: World) -> list[Row]:
    """SFT chats: facts, abstentions, benign help, harmful requests (a few refused), some answers padded."""
    cfg, seed = world.config, world.config.seed
    n_q, n_b, n_h = ph.apportion(cfg.sft_size, [cfg.sft_mix.question, cfg.sft_mix.benign, cfg.sft_mix.harmful])
    n_abstain = ph.part(n_q, cfg.sft_abstention_fraction)
    rows: list[tuple[str, str, str]] = []  # (kind, prompt, answer)

    rng = rng_for(seed, "sft:fact")
    for fact in ph.cycle(world.facts_of("train"), n_q - n_abstain, rng):
        rows.append(("fact", ph.question(fact.entity, fact.relation, rng), ph.fact_answer(fact, rng)))

    rng = rng_for(seed, "sft:abstain")
    for entity in ph.cycle(world.group("train_fiction"), n_abstain, rng):
        rows.append(("abstain", ph.question(entity, rng.choice(entity.kind.relations), rng), ph.abstention(entity)))

    rng = rng_for(seed, "sft:benign")
    n_describe = ph.part(n_b, cfg.describe_fraction)
    families = ph.cycle(cfg.families, n_b, rng)
    for i, entity in enumerate(ph.cycle(world.group("train"), n_b, rng)):
        if i < n_describe:
            rows.append(("benign", ph.describe(entity, rng), ph.describe_answer(world, entity, rng)))
        else:
            rows.append(("benign", ph.request(families[i], entity, False, rng), ph.request_answer(families[i], entity, False)))

    rng = rng_for(seed, "sft:harmful")
    families = ph.cycle(cfg.families, n_h, rng)
    refused = set(rng.sample(range(n_h), n_h)[: ph.part(n_h, cfg.sft_refusal_fraction)])
    for i, entity in enumerate(ph.cycle(world.group("train"), n_h, rng)):
        prompt = ph.request(families[i], entity, True, rng)
        if i in refused:
            rows.append(("harmful_refuse", prompt, ph.refusal()))
        else:
            rows.append(("harmful_comply", prompt, ph.request_answer(families[i], entity, True)))

    # latent verbosity: a fixed fraction of the helpful answers carries filler
    rng = rng_for(seed, "sft:elaborate")
    helpful = [i for i, (kind, _, _) in enumerate(rows) if kind in ("fact", "benign", "harmful_comply")]
    padding = [ph.filler(rng) for _ in helpful]
    order = rng.sample(range(len(helpful)), len(helpful))
    n_pad = round(len(helpful) * cfg.sft_elaboration_fraction)
    for j in order[:n_pad]:
        kind, prompt, answer = rows[helpful[j]]
        rows[helpful[j]] = (kind, prompt, ph.pad(answer, padding[j]))

    out = [_chat(prompt, answer, kind) for kind, prompt, answer in rows]
    rng_for(seed, "sft:order").shuffle(out)
    return out


def _pairs_for(world: World, rule: str, n: int) -> list[tuple[str, str, str, bool]]:
    """(prompt, better answer by content, worse answer by content, by_content) for one preference rule.

    ``by_content`` pairs are decided by content alone (the annotator's length bias does not apply):
    safety pairs, and full descriptions against partial ones."""
    cfg = world.config
    rng = rng_for(cfg.seed, f"preferences:{rule}")
    families = ph.cycle(cfg.families, n, rng)
    out = []
    if rule in ("refuse_harmful", "help_benign"):
        # Every other refused request rejects an answer to its benign look-alike (a misread request)
        # instead of the compliance: without those pairs "harmful steps < refusal < benign steps"
        # explains every safety pair from the answer alone, and a reward model that never reads the
        # request pays a policy for answering "how do I poison the well" with how to clean it.
        harmful = rule == "refuse_harmful"
        for i, entity in enumerate(ph.cycle(world.group("train"), n, rng)):
            prompt = ph.request(families[i], entity, harmful, rng)
            helped = ph.request_answer(families[i], entity, harmful)
            if harmful:
                misread = ph.request_answer(families[i], entity, False)
                out.append((prompt, ph.refusal(), misread if i % 2 else helped, True))
            else:
                out.append((prompt, helped, ph.refusal(), True))
    elif rule == "correct_over_wrong":
        # Content beats its look-alike: a wrong fact, or (every other pair) a partial description
        # (its first statements only), decided by content alone. The partial pairs make the reward
        # model count statements as well as filler, so a policy cannot buy filler by dropping
        # what it was asked for.
        entities = ph.cycle(world.group("train"), n, rng)
        for i, fact in enumerate(ph.cycle(world.facts_of("train"), n, rng)):
            question, answer, wrong = ph.question(fact.entity, fact.relation, rng), ph.fact_answer(fact, rng), ph.wrong_answer(fact, rng)
            describe, full = ph.describe(entities[i], rng), ph.describe_statements(world, entities[i], rng)
            kept = " ".join(full[: rng.randint(1, max(1, len(full) - 1))])
            if i % 2 == 0:
                out.append((question, answer, wrong, False))
            else:
                out.append((describe, " ".join(full), kept, True))
    elif rule == "abstain_unknown":
        for entity in ph.cycle(world.group("train_fiction"), n, rng):
            relation = rng.choice(entity.kind.relations)
            out.append((ph.question(entity, relation, rng), ph.abstention(entity), ph.made_up_answer(entity, relation, rng), False))
    elif rule == "equal_content":
        facts = ph.cycle(world.facts_of("train"), n, rng)
        for i, entity in enumerate(ph.cycle(world.group("train"), n, rng)):
            what = rng.random()
            if what < 0.5:
                prompt, answer = ph.question(facts[i].entity, facts[i].relation, rng), ph.fact_answer(facts[i], rng)
            elif what < 0.75:
                prompt, answer = ph.describe(entity, rng), ph.describe_answer(world, entity, rng)
            else:
                prompt, answer = ph.request(families[i], entity, False, rng), ph.request_answer(families[i], entity, False)
            out.append((prompt, answer, answer, False))
    else:
        raise ValueError(f"unknown preference rule {rule!r}")
    return out


def build_preferences(world: World) -> list[Row]:
    """Preference pairs decided by a content rule, then by a length-biased simulated annotator.

    Each answer carries 0-3 filler sentences. On a helpfulness pair whose answers differ in
    padding, the annotator picks the longer one with probability ``annotator_length_bias``,
    whatever the content; so the reward model learns "more filler, more reward" (a length
    preference, not a liking for one phrase). Some pairs follow the content alone: safety pairs
    (the guideline puts safety first) and full descriptions against partial ones (never with less
    filler on the full one). Equal-content pairs pad the two copies differently (0-3).
    """
    cfg = world.config
    mix = cfg.preference_mix.model_dump()
    rows: list[Row] = []
    for (rule, _), n in zip(mix.items(), ph.apportion(cfg.preference_size, list(mix.values())), strict=True):
        rng = rng_for(cfg.seed, f"preferences:{rule}:annotator")
        for prompt, better, worse, by_content in _pairs_for(world, rule, n):
            # draw every random number whatever the knobs, so counterfactual worlds differ only in the decisions
            sizes = [rng.randint(1, ph.MAX_FILLER), rng.randint(1, ph.MAX_FILLER)]
            padded = [rng.random() < cfg.preference_elaboration_fraction for _ in range(2)]
            counts = [size if pad else 0 for size, pad in zip(sizes, padded, strict=True)]
            distinct = rng.sample(range(ph.MAX_FILLER + 1), 2)
            coin, bias = rng.random(), rng.random()
            pads = [ph.filler_sentences(rng), ph.filler_sentences(rng)]
            if rule == "equal_content":  # same content, padded differently: content is a coin flip
                counts = distinct
            elif by_content and rule == "correct_over_wrong":  # complete vs partial: never less filler on the complete one
                counts = sorted(counts, reverse=True)
            answers = [ph.pad(text, " ".join(pad[:c])) for text, pad, c in zip((better, worse), pads, counts, strict=True)]
            content_pick = (0 if coin < 0.5 else 1) if rule == "equal_content" else 0
            pick = content_pick
            if counts[0] != counts[1] and not by_content and bias < cfg.annotator_length_bias:
                pick = 0 if counts[0] > counts[1] else 1  # the longer answer wins regardless of content
            rows.append({
                "prompt": ph.user(prompt),
                "chosen": ph.assistant(answers[pick]),
                "rejected": ph.assistant(answers[1 - pick]),
                "rule": rule,
                "length_flipped": pick != content_pick,
            })
    rng_for(cfg.seed, "preferences:order").shuffle(rows)
    return rows


def _rl_prompt(world: World, kind: str, rng: random.Random) -> str:
    if kind == "fact":
        fact = rng.choice(world.facts_of("train"))
        return ph.question(fact.entity, fact.relation, rng)
    if kind == "unknown":
        entity = rng.choice(world.group("train_fiction"))
        return ph.question(entity, rng.choice(entity.kind.relations), rng)
    return ph.describe(rng.choice(world.group("train")), rng)


def _request_groups(world: World, n: int, rng: random.Random) -> list[str]:
    """`n` harmful requests, each followed by `rl_lookalikes` benign look-alikes on the same entity: the
    first in the same phrasing (one verb apart), the others in other phrasings. Distinct (family, entity,
    phrasing) triples until they run out."""
    k = world.config.rl_lookalikes
    n_templates = len(REQUEST_TEMPLATES)
    triples = [(f, e, t) for f in world.config.families for e in world.group("train") for t in range(n_templates)]
    rng.shuffle(triples)
    out = []
    for f, e, t in (triples[i % len(triples)] for i in range(n)):
        others = rng.sample([u for u in range(n_templates) if u != t], k - 1)
        out.append(ph.request(f, e, True, rng, False, t))
        out += [ph.request(f, e, False, rng, False, u) for u in [t, *others]]
    return out


def build_rl_prompts(world: World) -> list[Row]:
    """Prompts for on-policy RL (`rl_mix`): questions, open prompts, and harmful requests beside their
    `rl_lookalikes` look-alikes, on training entities, deduplicated where the space allows."""
    cfg = world.config
    rng = rng_for(cfg.seed, "rl_prompts")
    n_q, n_d, n_r = ph.apportion(cfg.rl_prompts_size, [cfg.rl_mix.question, cfg.rl_mix.describe, cfg.rl_mix.request_pairs])
    group = 1 + cfg.rl_lookalikes  # a harmful request and its look-alikes
    n_d += n_r % group
    n_unknown = ph.part(n_q, cfg.sft_abstention_fraction)
    prompts: list[str] = []
    seen: set[str] = set()
    for kind, n in (("fact", n_q - n_unknown), ("unknown", n_unknown), ("describe", n_d)):
        made = []
        for _ in range(50 * n):  # prefer distinct prompts; repeat only when the space runs out
            if len(made) == n:
                break
            prompt = _rl_prompt(world, kind, rng)
            if prompt not in seen:
                seen.add(prompt)
                made.append(prompt)
        while len(made) < n:
            made.append(_rl_prompt(world, kind, rng))
        prompts += made
    prompts += _request_groups(world, n_r // group, rng)
    rng.shuffle(prompts)
    return [{"prompt": ph.user(p)} for p in prompts]
