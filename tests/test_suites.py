"""One contract test over every registered suite, on tiny real models (5 items each).

Every suite must: load and validate its items; report metrics named ``<suite>.<metric>`` or
``<suite>.<metric>[group]`` that it declares, each with a value, n, a 95% interval around the
value and a direction; store one sample per item (and sample index) with the item's hash and
per-item outcomes under the metric names; round-trip through the results store; run on a
base checkpoint without a chat template when it applies to base checkpoints (cloze items);
and report ``<suite>.consistency`` whenever it generated several samples per item.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _evalkit import ITEMS, WORLD_CARD, make_checkpoint, write_jsonl

from harness.backends.hf import HFBackend
from harness.config import DecodingSpec, JudgeSpec, SuiteSpec
from harness.core.store import Store
from harness.eval_runner import world_items
from harness.evaluate import evaluate, result_key, store_result
from suites import SUITES
from suites.items import ItemsError, item_hash
from suites.suite import SuiteResult

DECODING = DecodingSpec(max_new_tokens=8)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("suites")
    chat, base = make_checkpoint(root / "chat"), make_checkpoint(root / "base", chat=False)
    paths = {name: write_jsonl(root / "items" / f"{name}.jsonl", rows) for name, rows in ITEMS.items()}
    return {"root": root, "chat": chat, "base": base, "paths": paths,
            "chat_backend": HFBackend(chat), "base_backend": HFBackend(base)}


def check_result(result: SuiteResult, name: str, items: list[dict]) -> None:
    suite = SUITES.get(name)
    declared = {d.name: d for d in suite.metrics}
    assert result.suite == name and result.version.split("+")[0] == suite.version  # + code fingerprint
    assert result.metrics, f"{name}: no metrics"
    assert len(result.items_hash) == 64 and result.decoding["backend"] == "hf"
    assert bool(result.judge) == suite.uses_judge  # the judge is part of the key only where it decides
    by_id = {i["id"]: i for i in items}
    for m in result.metrics:
        base = m.name.split("[", 1)[0]
        assert base in declared, f"{m.name} is not declared by {name}"
        assert m.name.startswith(f"{name}.") and (("[" in m.name) == (m.family == "breakdown"))
        assert math.isfinite(m.value) and m.n >= 1, m
        assert isinstance(m.higher_is_better, bool) and m.higher_is_better == declared[base].higher_is_better
        assert m.outcome in ("binary", "continuous", None)
        if math.isfinite(m.ci_low):
            assert m.ci_low - 1e-9 <= m.value <= m.ci_high + 1e-9, m
        else:
            assert m.n < 2 or (m.outcome is None and m.n <= 3), f"{m.name}: an interval is missing"
        if m.outcome is not None:  # attribution can pair items on this key
            assert any(m.name in s.outcome for s in result.samples), f"{m.name}: no per-item outcome"
    assert result.samples
    seen = set()
    for s in result.samples:
        assert s.item_id in by_id and s.item_hash == item_hash(by_id[s.item_id])
        assert isinstance(s.response, str) and s.prompt == by_id[s.item_id]["prompt"]
        assert any(k.startswith(f"{name}.") for k in s.outcome), s
        assert (s.item_id, s.sample_index) not in seen
        seen.add((s.item_id, s.sample_index))
    if any(s.sample_index > 0 for s in result.samples):
        assert any(m.name == f"{name}.consistency" for m in result.metrics)


@pytest.mark.parametrize("name", SUITES.names())
def test_suite_contract(name: str, kit: dict, tmp_path: Path) -> None:
    assert name in ITEMS, f"add 5 test items for suite {name!r} to tests/_evalkit.py ITEMS"
    suite = SUITES.get(name)
    items = suite.load_items(kit["paths"][name])
    assert len(items) == 5 and not suite.applies_to("reward") and suite.applies_to("sft")

    [result] = evaluate(kit["chat"], "sft", [SuiteSpec(name=name)], kit["chat_backend"], kit["paths"],
                        WORLD_CARD, decoding=DECODING)
    check_result(result, name, items)

    store = Store(tmp_path / "results.sqlite")
    run_id = store.create_run("contract", {})
    key = store_result(store, run_id, "sft", "ckpt-hash", result)
    assert key == result_key("ckpt-hash", result) and store.is_evaluation_complete(key)
    assert len(store.samples(run_id, suite=name)) == len(result.samples)
    stored = store.metrics(run_id, suite=name).set_index("metric")["value"]
    assert {m.name: m.value for m in result.metrics} == pytest.approx(stored.to_dict())

    # a base checkpoint without a chat template: cloze items only, or the suite does not apply
    base = evaluate(kit["base"], "pretrain", [SuiteSpec(name=name)], kit["base_backend"], kit["paths"],
                    WORLD_CARD, decoding=DECODING)
    if suite.applies_to("pretrain"):
        [base_result] = base
        check_result(base_result, name, items)
        assert all(by["format"] == "cloze" for s in base_result.samples
                   for by in [next(i for i in items if i["id"] == s.item_id)])
    else:
        assert base == [] and not suite.applies_to("init")

    # several samples per item: rates averaged over samples, consistency reported
    [multi] = evaluate(kit["chat"], "sft", [SuiteSpec(name=name, samples_per_item=2, temperature=1.0)],
                       kit["chat_backend"], kit["paths"], WORLD_CARD, decoding=DECODING)
    check_result(multi, name, items)
    assert multi.decoding["n"] == 2 and result_key("h", multi) != result_key("h", result)


def test_max_items_selects_a_stable_subset(kit: dict) -> None:
    spec = SuiteSpec(name="refusal", max_items=3)
    [a] = evaluate(kit["chat"], "sft", [spec], kit["chat_backend"], kit["paths"], decoding=DECODING)
    [b] = evaluate(kit["chat"], "sft", [spec], kit["chat_backend"], kit["paths"], decoding=DECODING)
    assert len({s.item_id for s in a.samples}) == 3 and a.items_hash == b.items_hash
    assert [s.response for s in a.samples] == [s.response for s in b.samples]


def test_llm_judge_runs_through_a_backend(kit: dict) -> None:
    spec = SuiteSpec(name="refusal", judge=JudgeSpec(kind="llm", model=str(kit["chat"])))
    [result] = evaluate(kit["chat"], "sft", [spec], kit["chat_backend"], kit["paths"], decoding=DECODING)
    assert result.judge["kind"] == "llm" and len(result.judge["model"]) == 64
    assert result.metric("refusal.harmful_refusal_rate").n == 3


def test_bad_items_and_options_name_file_and_row(kit: dict, tmp_path: Path) -> None:
    bad = tmp_path / "refusal.jsonl"
    bad.write_text('{"id": "a", "prompt": "x", "label": "harmful"}\n{"id": "b", "prompt": "y", "label": "evil"}\n')
    with pytest.raises(ItemsError, match=r"refusal.jsonl:2 \(id 'b'\): field 'label': unknown value 'evil'"):
        SUITES.get("refusal").load_items(bad)
    bad.write_text('{"id": "a", "prompt": "x", "label": "harmful"}\n{"id": "a", "prompt": "y", "label": "benign"}\n')
    with pytest.raises(ItemsError, match="duplicated id"):
        SUITES.get("refusal").load_items(bad)
    bad.write_text('{"id": "c", "format": "cloze", "prompt": "p", "choices": [" a"], "answer_index": 0}\n')
    with pytest.raises(ItemsError, match="at least 2"):
        SUITES.get("hallucination").load_items(bad)
    bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    with pytest.raises(ItemsError, match="Git LFS"):
        SUITES.get("verbosity").load_items(bad)
    with pytest.raises(ValueError, match="unknown option"):
        evaluate(kit["chat"], "sft", [SuiteSpec(name="refusal", options={"colour": 1})], kit["chat_backend"],
                 kit["paths"], decoding=DECODING)
    with pytest.raises(ValueError, match="no items file"):
        evaluate(kit["chat"], "sft", [SuiteSpec(name="refusal")], kit["chat_backend"], {}, decoding=DECODING)


def test_world_items_run_in_every_suite(tmp_path: Path) -> None:
    """The world's real evaluation files and card, on a tiny model with the world's tokenizer."""
    world = pytest.importorskip("harness.world")
    world.generate(world.preset("smoke"), tmp_path / "world")
    card = world.load_card(tmp_path / "world")
    ckpt = make_checkpoint(tmp_path / "model", tokenizer_dir=tmp_path / "world" / "tokenizer")
    paths = world_items(tmp_path / "world")  # suite -> the world's items file, as the pipeline maps them
    names = [n for n in SUITES.names() if n in paths]
    assert {"hallucination", "refusal", "verbosity", "topic_coverage"} <= set(names)
    for name in names:
        assert len(SUITES.get(name).load_items(paths[name])) >= 5
    specs = [SuiteSpec(name=n, max_items=None if n == "topic_coverage" else 6) for n in names]
    results = evaluate(ckpt, "sft", specs, HFBackend(ckpt), paths, card, decoding=DECODING)
    assert sorted(r.suite for r in results) == sorted(names)
    corr = next(r for r in results if r.suite == "topic_coverage").metric("topic_coverage.share_correlation")
    assert corr.n == len(card["topics"]) >= 8 and -1 <= corr.value <= 1
