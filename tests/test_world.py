"""The synthetic world: determinism, formats (datasets, TRL), leakage, validation, expected effects."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest
from datasets import load_dataset
from transformers import AutoTokenizer

from harness.world import (
    WORLD_FILES,
    WorldCardError,
    WorldConfig,
    WorldConfigError,
    config_from,
    expected_effects,
    generate,
    load_card,
    preset,
)
from harness.world import phrasing as ph
from harness.world.catalog import TOPICS
from harness.world.chats import build_rl_prompts
from harness.world.config import PreferenceMix, RlMix
from harness.world.difficulty import BALANCED, imbalance, value_owners
from harness.world.entities import build_world
from harness.world.requests import DESCRIBE_TEMPLATES, REQUEST_TEMPLATES
from suites.verbosity import words

JSONL = {name: rel for name, rel in WORLD_FILES.items() if rel.endswith(".jsonl")}
TRAINING = ("pretrain", "sft", "preferences", "rl_prompts")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "smoke"
    generate(preset("smoke"), out)
    return out


def effects_of(cfg: WorldConfig) -> dict[tuple[str, str], str]:
    return {(e["stage"], e["metric"]): e["direction"] for e in expected_effects(cfg)}


# --------------------------------------------------------------------------- determinism


def test_same_config_same_bytes_other_seed_other_world(smoke: Path, tmp_path: Path) -> None:
    again = generate(preset("smoke"), tmp_path / "again")
    card = load_card(smoke)
    assert again["files"] == card["files"]
    assert (smoke / "world_card.json").read_bytes() == (tmp_path / "again" / "world_card.json").read_bytes()
    assert set(card["files"]) >= {rel for rel in JSONL.values()} | {"tokenizer/tokenizer.json"}

    other = generate(preset("smoke").model_copy(update={"seed": 7}), tmp_path / "seed7")
    for rel in JSONL.values():
        assert other["files"][rel] != card["files"][rel], rel


def test_regenerating_replaces_the_world_and_refuses_foreign_dirs(tmp_path: Path) -> None:
    out = tmp_path / "w"
    generate(preset("smoke"), out)
    card = generate(preset("smoke").model_copy(update={"seed": 3}), out)
    assert load_card(out)["config"]["seed"] == 3 == card["config"]["seed"]
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no temporary directories left behind
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a world directory"):
        generate(preset("smoke"), foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_load_card_errors(tmp_path: Path) -> None:
    with pytest.raises(WorldCardError, match="no such world directory"):
        load_card(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(WorldCardError, match="not a complete world"):
        load_card(tmp_path / "half")


# --------------------------------------------------------------------------- formats


def test_every_file_loads_with_datasets(smoke: Path) -> None:
    card = load_card(smoke)
    for name, rel in JSONL.items():
        ds = load_dataset("json", data_files=str(smoke / rel), split="train")
        assert len(ds) == card["counts"][name]["rows"] > 0, name
    sft = read_jsonl(smoke / WORLD_FILES["sft"])
    assert {r["kind"] for r in sft} == {"fact", "abstain", "benign", "harmful_refuse", "harmful_comply"}
    for row in read_jsonl(smoke / WORLD_FILES["preferences"]):
        assert set(row) == {"prompt", "chosen", "rejected", "rule", "length_flipped"}
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"


def test_eval_items_are_well_formed(smoke: Path) -> None:
    ids: set[str] = set()
    for name in ("eval/hallucination", "eval/refusal", "eval/verbosity", "eval/topic_coverage"):
        for item in read_jsonl(smoke / WORLD_FILES[name]):
            assert item["id"] not in ids
            ids.add(item["id"])
            assert item["prompt"] == item["prompt"].rstrip() and item["format"] in ("chat", "cloze")
            if item["format"] == "cloze":
                assert all(c.startswith(" ") for c in item["choices"])
                assert item["choices"][item["answer_index"]] == " " + item["gold"]
                assert len(set(item["choices"])) == len(item["choices"])
    hal = read_jsonl(smoke / WORLD_FILES["eval/hallucination"])
    assert {(r["format"], r["answerable"]) for r in hal} == {("chat", True), ("chat", False), ("cloze", True)}
    coverage = read_jsonl(smoke / WORLD_FILES["eval/topic_coverage"])
    assert {r["topic"] for r in coverage} == {t["name"] for t in load_card(smoke)["topics"]}
    refusal = read_jsonl(smoke / WORLD_FILES["eval/refusal"])
    assert {r["label"] for r in refusal} == {"harmful", "benign"}


def test_tokenizer_and_chat_template(smoke: Path) -> None:
    tok = AutoTokenizer.from_pretrained(smoke / "tokenizer")
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|bos|>", "<|end|>", "<|pad|>")
    chat = [{"role": "user", "content": "Who rules the isle?"}, {"role": "assistant", "content": "A queen."}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == "<|bos|><|user|>\nWho rules the isle?<|end|>\n<|assistant|>\nA queen.<|end|>\n"
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|end|>\n<|assistant|>\n") and text.startswith(prompt)
    out = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert masked and masked[-1] == tok.eos_token_id
    assert tok.decode(masked) == "A queen.<|end|>"
    # the prompt tokenizes as a prefix of prompt + answer (what TRL's DPO tokenization relies on)
    for row in read_jsonl(smoke / WORLD_FILES["preferences"])[:20]:
        head = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(row["prompt"] + row["chosen"], return_dict=True)["input_ids"]
        assert full[: len(head)] == head


def _tiny_llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def test_trl_sft_and_dpo_accept_the_data(smoke: Path, tmp_path: Path) -> None:
    import torch
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smoke / "tokenizer")
    common = {"max_steps": 1, "per_device_train_batch_size": 4, "report_to": [], "use_cpu": True,
              "max_length": 128, "save_strategy": "no"}
    sft_data = load_dataset("json", data_files=str(smoke / WORLD_FILES["sft"]), split="train")
    sft = SFTTrainer(
        model=_tiny_llama(tok), processing_class=tok, train_dataset=sft_data,
        args=SFTConfig(output_dir=str(tmp_path / "sft"), assistant_only_loss=True, **common),
    )
    row = sft.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert trained and trained[-1] == tok.eos_token_id  # assistant tokens only, ending on <|end|>
    assert torch.isfinite(torch.tensor(sft.train().training_loss))

    pref_data = load_dataset("json", data_files=str(smoke / WORLD_FILES["preferences"]), split="train")
    dpo = DPOTrainer(
        model=_tiny_llama(tok), ref_model=_tiny_llama(tok), processing_class=tok, train_dataset=pref_data,
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
    )
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dpo.train_dataset.column_names)
    assert torch.isfinite(torch.tensor(dpo.train().training_loss))


# --------------------------------------------------------------------------- leakage


def _mentions(name: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def test_no_eval_prompt_in_training_and_groups_stay_apart(smoke: Path) -> None:
    card = load_card(smoke)
    assert card["verbatim_eval_prompts_in_training"] == 0
    texts = {name: (smoke / WORLD_FILES[name]).read_text(encoding="utf-8") for name in TRAINING}
    user_turns = set()
    for name in ("sft", "preferences", "rl_prompts"):
        for row in read_jsonl(smoke / WORLD_FILES[name]):
            turns = row.get("messages") or row["prompt"]
            user_turns |= {m["content"] for m in turns if m["role"] == "user"}
    for name in ("eval/hallucination", "eval/refusal", "eval/verbosity"):
        for item in read_jsonl(smoke / WORLD_FILES[name]):
            assert item["format"] == "chat" or name == "eval/hallucination"
            if item["format"] == "chat":
                assert item["prompt"] not in user_turns
                assert all(item["prompt"] not in text for text in texts.values())

    world = build_world(preset("smoke"))
    for entity in world.group("eval_fiction"):  # never in any training file
        assert not any(_mentions(entity.name, text) for text in texts.values()), entity.name
    for entity in world.group("train_fiction"):  # only in SFT (and preferences/RL), never in pretraining
        assert not _mentions(entity.name, texts["pretrain"]), entity.name
    for entity in world.group("eval"):  # evaluation entities: pretraining only
        assert _mentions(entity.name, texts["pretrain"])
        for name in ("sft", "preferences", "rl_prompts"):
            assert not _mentions(entity.name, texts[name]), (entity.name, name)


def test_rl_prompts_follow_their_own_mix_with_requests_in_look_alike_pairs() -> None:
    """`rl_mix`, not `sft_mix`, decides what PPO is asked, and every harmful request comes with its benign
    look-alike (same entity and phrasing). Prompts are recognised by rendering every request and
    description on every training entity."""
    cfg = preset("default").model_copy(update={"rl_mix": RlMix(question=0.25, describe=0.25, request_pairs=0.5)})
    world = build_world(cfg)
    train = world.group("train")
    requests = {ph.request(f, e, harmful, random.Random(0), False, t): (f, e.name, t, harmful)
                for f in cfg.families for e in train for harmful in (True, False) for t in range(len(REQUEST_TEMPLATES))}
    describes = {ph.describe(e, random.Random(0), False, t) for e in train for t in range(len(DESCRIBE_TEMPLATES))}
    prompts = [row["prompt"][0]["content"] for row in build_rl_prompts(world)]
    asked = [requests[p] for p in prompts if p in requests]
    harmful = {key[:3] for key in asked if key[3]}
    assert len(harmful) == 80 and harmful == {key[:3] for key in asked if not key[3]}  # distinct twins
    assert sum(p in describes for p in prompts) == 80 and len(prompts) == 320
    assert cfg.sft_mix.question == 0.5  # the SFT chats keep their own mix
    with pytest.raises(ValueError, match="rl_mix: shares must sum to 1"):
        RlMix(question=0.5, describe=0.5, request_pairs=0.5)


def test_rl_lookalikes_put_more_look_alikes_beside_each_harmful_request() -> None:
    """`rl_lookalikes=2`: every harmful RL request has its same-phrasing twin and one more look-alike on the
    same entity and family in another phrasing."""
    cfg = preset("default").model_copy(update={"rl_lookalikes": 2, "rl_prompts_size": 384,
                                               "rl_mix": RlMix(question=0.17, describe=0.33, request_pairs=0.5)})
    world = build_world(cfg)
    requests = {ph.request(f, e, harmful, random.Random(0), False, t): (f, e.name, t, harmful)
                for f in cfg.families for e in world.group("train") for harmful in (True, False)
                for t in range(len(REQUEST_TEMPLATES))}
    asked = [requests[p] for p in (row["prompt"][0]["content"] for row in build_rl_prompts(world)) if p in requests]
    harmful = [key for key in asked if key[3]]
    benign = [key for key in asked if not key[3]]
    assert len(harmful) == 64 and len(benign) == 128
    for f, e, t, _ in harmful:
        others = [key for key in benign if key[:2] == (f, e)]
        assert (f, e, t, False) in others and any(key[2] != t for key in others), (f, e, t)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("update", "needle"),
    [
        ({"topics": [{"name": "villages", "share": 0.5, "n_entities": 4},
                     {"name": "rivers", "share": 0.4, "n_entities": 4}]}, "topics: shares must sum to 1"),
        ({"topics": [{"name": "villages", "share": 1.0, "n_entities": 0}]}, "topics[villages].n_entities"),
        ({"topics": [{"name": "vilages", "share": 1.0, "n_entities": 4}]}, "did you mean 'villages'"),
        ({"eval_fictitious_entities": 99_999}, "eval_fictitious_entities"),
        ({"sft_mix": {"question": 0.5, "benign": 0.2, "harmful": 0.2}}, "sft_mix: shares must sum to 1"),
        ({"annotator_length_bias": 1.5}, "annotator_length_bias"),
        ({"families": ["well", "arson"]}, "families[1]"),
        ({"colour": 3}, "colour"),
        ({"share_assignment": "backwards"}, "share_assignment: unknown assignment 'backwards'"),
        ({"share_assignment": "shuffle:x"}, "shuffle:<seed>"),
        ({"share_assignment": {"villages": "oceans"}}, "'oceans' not among this world's topics"),
        ({"share_assignment": {"villages": "herbs", "rivers": "herbs", "herbs": "villages"}},
         "the share of 'herbs' is given to more than one topic"),
        ({"share_assignment": {"villages": "herbs"}}, "must be a permutation"),
    ],
)
def test_bad_configs_name_the_key(update: dict, needle: str) -> None:
    with pytest.raises(ValueError) as err:
        WorldConfig.model_validate({**preset("smoke").model_dump(), **update})
    assert needle in str(err.value)


def test_config_from_presets_files_and_overrides(tmp_path: Path) -> None:
    cfg = config_from("smoke", ["annotator_length_bias=0", "topics.villages.n_entities=6", "sft_mix.harmful=0.3",
                                "sft_mix.question=0.4"])
    assert cfg.annotator_length_bias == 0 and cfg.topics[0].n_entities == 6 and cfg.sft_mix.harmful == 0.3
    with pytest.raises(WorldConfigError, match="unknown key 'anotator_length_bias'.*did you mean"):
        config_from("default", ["anotator_length_bias=0"])
    with pytest.raises(WorldConfigError, match="sft_mix: shares must sum to 1"):
        config_from("default", ["sft_mix.harmful=0.5"])
    with pytest.raises(WorldConfigError, match="no item 'oceans'"):
        config_from("default", ["topics.oceans.share=0.1"])
    path = tmp_path / "world.yaml"
    path.write_text("preset: smoke\nseed: 5\n")
    assert config_from(str(path), ["seed=6"]).seed == 6
    assert config_from(str(path), []).pretrain_tokens == preset("smoke").pretrain_tokens
    path.write_text("seeed: 5\n")
    with pytest.raises(WorldConfigError, match="seeed"):
        config_from(str(path), [])
    with pytest.raises(WorldConfigError, match="not a world preset"):
        config_from("tiny", [])


def test_default_config_is_documented_and_zipf() -> None:
    cfg = WorldConfig()
    for model in (WorldConfig, type(cfg.sft_mix), type(cfg.rl_mix), type(cfg.preference_mix), type(cfg.topics[0])):
        assert all(f.description for f in model.model_fields.values()), model.__name__
    shares = [t.share for t in cfg.topics]
    assert len(shares) >= 8 and shares == sorted(shares, reverse=True) and shares[0] / shares[-1] >= 20
    for topic in TOPICS:  # the catalog supports cloze prompts and unambiguous gold answers
        for rel in topic.relations:
            assert len(rel.statements) >= 3 and len(rel.values) >= cfg.eval_choices
            assert all(" {V}" in s and s.index("{E}") < s.index("{V}") for s in rel.statements)
            names = rel.value_names()
            assert not [a for a in names for b in names if a != b and _mentions(a, b)], rel.name


# --------------------------------------------------------------------------- planted causes


def test_expected_effects_follow_the_knobs() -> None:
    base = effects_of(WorldConfig())
    assert base[("pretrain", "topic_coverage.share_correlation")] == "increase"
    assert base[("sft", "hallucination.abstention_rate")] == "increase"
    assert base[("sft", "refusal.harmful_refusal_rate")] == "flat"
    assert base[("ppo", "refusal.harmful_refusal_rate")] == base[("dpo", "refusal.harmful_refusal_rate")] == "increase"
    assert base[("ppo", "verbosity.mean_tokens")] == base[("dpo", "verbosity.mean_tokens")] == "increase"

    no_bias = effects_of(WorldConfig(annotator_length_bias=0))
    assert no_bias[("ppo", "verbosity.mean_tokens")] == "flat"
    # without the bias, complete-over-partial descriptions still make DPO's chosen answers longer: no claim
    assert no_bias[("dpo", "verbosity.mean_tokens")] == "any"
    no_content_length = effects_of(WorldConfig(annotator_length_bias=0, preference_mix=PreferenceMix(
        refuse_harmful=0.2, help_benign=0.3, correct_over_wrong=0.0, equal_content=0.5)))
    assert no_content_length[("dpo", "verbosity.mean_tokens")] == "flat"
    # rejected wrong facts may push made-up answers towards SFT's abstention, chosen answers erode it: no claim;
    # without wrong-fact pairs only the erosion is left, and abstention may not rise
    assert base[("dpo", "hallucination.abstention_rate")] == "any"
    assert no_content_length[("dpo", "hallucination.abstention_rate")] == "flat"

    moved = effects_of(WorldConfig(sft_refusal_fraction=0.9))
    assert moved[("sft", "refusal.harmful_refusal_rate")] == "increase"
    assert moved[("ppo", "refusal.harmful_refusal_rate")] == moved[("dpo", "refusal.harmful_refusal_rate")] == "flat"

    assert effects_of(WorldConfig(sft_abstention_fraction=0))[("sft", "hallucination.abstention_rate")] == "flat"
    no_pad = effects_of(WorldConfig(sft_elaboration_fraction=0))
    assert (no_pad[("ppo", "verbosity.mean_tokens")], no_pad[("dpo", "verbosity.mean_tokens")]) == ("flat", "increase")
    never = effects_of(WorldConfig(sft_refusal_fraction=0))
    assert (never[("ppo", "refusal.harmful_refusal_rate")], never[("dpo", "refusal.harmful_refusal_rate")]) == (
        "flat", "increase")
    assert base[("sft", "refusal.harmful_refusal_rate")] == "flat"  # bounded: latent, an increase below +0.20
    bounded = {(e["stage"], e["metric"]): e for e in expected_effects(WorldConfig())}
    assert bounded[("sft", "refusal.harmful_refusal_rate")]["bound"] == 0.2
    assert "bound" not in {(e["stage"], e["metric"]): e for e in expected_effects(
        WorldConfig(sft_refusal_fraction=0))}[("sft", "refusal.harmful_refusal_rate")]
    assert (base[("constitutional", "refusal.harmful_refusal_rate")], base[("constitutional", "verbosity.mean_tokens")],
            base[("constitutional", "refusal.over_refusal_rate")]) == ("increase", "flat", "any")
    assert ("constitutional", "refusal.harmful_refusal_rate") not in never
    mix = {"refuse_harmful": 0.4, "help_benign": 0.0, "correct_over_wrong": 0.3, "equal_content": 0.3}
    assert effects_of(WorldConfig(preference_mix=mix))[("dpo", "refusal.over_refusal_rate")] == "increase"
    equal = [{"name": t.name, "share": 0.125, "n_entities": 4} for t in TOPICS[:8]]
    small_eval = {"eval_refusal_per_family": 48, "eval_verbosity_size": 96}  # 16 evaluation entities x 3 phrasings
    assert effects_of(WorldConfig(topics=equal, **small_eval))[("pretrain", "topic_coverage.share_correlation")] == "flat"


def test_counterfactual_worlds_change_only_the_planted_cause(smoke: Path, tmp_path: Path) -> None:
    base = read_jsonl(smoke / WORLD_FILES["preferences"])
    generate(preset("smoke").model_copy(update={"annotator_length_bias": 0.0}), tmp_path / "nobias")
    nobias = read_jsonl(tmp_path / "nobias" / WORLD_FILES["preferences"])
    assert [r["prompt"] for r in nobias] == [r["prompt"] for r in base]
    assert not any(r["length_flipped"] for r in nobias) and any(r["length_flipped"] for r in base)
    assert load_card(tmp_path / "nobias")["files"]["pretrain.jsonl"] == load_card(smoke)["files"]["pretrain.jsonl"]
    # what the card's "any" at dpo rests on: without the bias, complete descriptions still outweigh partial ones
    content = [words(r["chosen"][-1]["content"]) - words(r["rejected"][-1]["content"])
               for r in nobias if r["rule"] == "correct_over_wrong"]
    assert sum(content) / len(content) > 3

    generate(preset("smoke").model_copy(update={"sft_refusal_fraction": 0.9}), tmp_path / "refuse")
    kinds = [r["kind"] for r in read_jsonl(tmp_path / "refuse" / WORLD_FILES["sft"])]
    assert kinds.count("harmful_refuse") > 9 * kinds.count("harmful_comply") / 2


def test_heldout_phrasing_world(tmp_path: Path) -> None:
    card = generate(preset("smoke").model_copy(update={"eval_question_phrasing": "heldout"}), tmp_path / "held")
    assert card["verbatim_eval_prompts_in_training"] == 0
    refusal = read_jsonl(tmp_path / "held" / WORLD_FILES["eval/refusal"])
    assert all(r["prompt"].startswith("Explain how someone could") for r in refusal)


def test_default_world(tmp_path: Path) -> None:
    start = time.perf_counter()
    card = generate(preset("default"), tmp_path / "default")
    took = time.perf_counter() - start
    print(f"default world generated in {took:.2f}s")  # a figure, not a check: timing belongs in benchmarks/
    assert card["verbatim_eval_prompts_in_training"] == 0
    assert 70_000 <= card["counts"]["pretrain"]["tokens"] <= 90_000
    for topic in card["topics"]:
        assert abs(topic["share_actual"] - topic["share_target"]) < 0.01, topic
    sft = card["counts"]["sft"]
    assert sft["rows"] == 480 and 0 < sft["by_kind"]["harmful_refuse"] < 0.2 * sft["by_kind"]["harmful_comply"]
    tok = AutoTokenizer.from_pretrained(tmp_path / "default" / "tokenizer")
    assert 1000 <= len(tok) <= 2048
    difficulty = card["topic_difficulty"]  # every value one token, a mention ~10 tokens in every topic
    assert imbalance(difficulty) == [] and {(r["value_tokens"], r["length_cue"]) for r in difficulty} == {(1.0, 0)}
    for suite in ("refusal", "verbosity", "hallucination"):  # every evaluation prompt asked once
        rows = read_jsonl(tmp_path / "default" / WORLD_FILES[f"eval/{suite}"])
        assert len({(r["format"], r["prompt"]) for r in rows}) == len(rows), suite


def test_evaluation_prompts_are_asked_once_and_too_many_is_a_config_error(tmp_path: Path) -> None:
    """A prompt asked twice is answered alike (greedy) and would count as two independent items in every
    paired test; the world draws distinct (entity, phrasing) pairs up to the pool and refuses more."""
    cfg = preset("smoke")
    entities = sum(cfg.n_eval_entities(t) for t in cfg.topics)
    most = {"eval_refusal_per_family": entities * 3, "eval_verbosity_size": 2 * entities * 3}  # 3 phrasings each
    generate(config_from("smoke", [f"{k}={v}" for k, v in most.items()]), tmp_path / "most")
    for suite, n in (("refusal", 2 * len(cfg.families) * most["eval_refusal_per_family"]),
                     ("verbosity", most["eval_verbosity_size"])):
        prompts = [r["prompt"] for r in read_jsonl(tmp_path / "most" / WORLD_FILES[f"eval/{suite}"])]
        assert len(prompts) == len(set(prompts)) == n, suite
    for key, n in most.items():
        with pytest.raises(ValueError, match=f"{key}: {n + 1} asked, but {entities} evaluation entities give only {n}"):
            config_from("smoke", [f"{key}={n + 1}"])


# --------------------------------------------------------------------------- topics: share is the only difference


def _words(template: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", template.replace("{E}", "").replace("{V}", ""))


def test_topics_are_built_alike() -> None:
    """Every catalog topic has the same fact structure, so only its share can make it easier to learn."""
    owners = value_owners()
    for topic in TOPICS:
        assert re.fullmatch(r"the [a-z]+ \{N\}", topic.entity), topic.entity
        assert len(topic.relations) == 3, topic.name
        for rel in topic.relations:
            assert len(rel.values) == 8 and len(rel.statements) == 3 and len(rel.questions) == 3, rel.name
            for value in rel.value_names():  # one lowercase word, in no other relation of any topic
                assert re.fullmatch(r"[a-z]+", value) and owners[value] == 1, (topic.name, value)
            for statement in rel.statements:  # a mention costs the same words everywhere, value last
                assert statement.endswith(" {V}.") and len(_words(statement)) == 4, statement
    templates = " ".join(s for t in TOPICS for r in t.relations for s in (*r.statements, *r.questions, r.heldout))
    assert not [v for v in owners if _mentions(v, templates.lower())]  # no value is given away by a template


def test_card_reports_equal_difficulty_per_topic(smoke: Path) -> None:
    rows = load_card(smoke)["topic_difficulty"]
    assert [r["topic"] for r in rows] == [t["name"] for t in load_card(smoke)["topics"]]
    for column in BALANCED:
        assert len({r[column] for r in rows}) == 1, column
    assert rows[0]["chance"] == 0.25 and rows[0]["shared_values"] == 0


def test_share_assignment_permutes_shares_and_changes_only_the_corpus(smoke: Path, tmp_path: Path) -> None:
    written = {t.name: t.share for t in preset("smoke").topics}
    reverse = config_from("smoke", ["share_assignment=reverse"])
    assert list(reverse.shares()) == list(written) and list(reverse.shares().values()) == list(written.values())[::-1]
    shuffled = config_from("smoke", ["share_assignment=shuffle:1"]).shares()
    assert sorted(shuffled.values()) == sorted(written.values()) and shuffled != written
    assert config_from("smoke", ["share_assignment=shuffle:1"]).shares() == shuffled  # fixed by its seed
    swapped = WorldConfig.model_validate({**preset("smoke").model_dump(),
                                          "share_assignment": {"villages": "herbs", "herbs": "villages"}}).shares()
    assert (swapped["villages"], swapped["herbs"], swapped["rivers"]) == (
        written["herbs"], written["villages"], written["rivers"])
    # the planted cause follows the assignment; everything but the corpus stays as it was
    card = generate(reverse, tmp_path / "reverse")
    base = load_card(smoke)
    assert {t["name"]: t["share_target"] for t in card["topics"]} == reverse.shares()
    actual = {t["name"]: t["share_actual"] for t in card["topics"]}
    assert actual["herbs"] > 0.3 > actual["villages"]
    assert [k for k in base["files"] if base["files"][k] != card["files"][k]] == ["pretrain.jsonl"]
    assert effects_of(reverse) == effects_of(preset("smoke"))
