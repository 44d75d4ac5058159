"""A user's own model and data, end to end: an ``init`` from a model folder with a chat template
is a chat checkpoint (every behaviour suite runs on it, and the first stage is measured against
it), on the tiny model of ``tests/fixtures_own_model.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_own_model import ANSWER, make_model, xstest_csv

from harness.backends.hf import HFBackend


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("own") / "model")


def test_refusal_runs_on_an_init_with_a_chat_template_but_not_on_a_fresh_world_init(model, tmp_path) -> None:
    from harness.config import DecodingSpec, SuiteSpec
    from harness.core.artifacts import Manifest, mark_complete
    from harness.evaluate import evaluate
    from suites import SUITES
    from suites.suite import counts_chat_template, is_chat_checkpoint

    refusal = SUITES.get("refusal")
    assert refusal.applies_to("init", True) and not refusal.applies_to("init", False)
    assert is_chat_checkpoint("init", True) and not is_chat_checkpoint("reward", True)
    items = {"refusal": xstest_csv(tmp_path / "xstest.csv")}
    [result] = evaluate(model, "init", [SuiteSpec(name="refusal")], HFBackend(model), items,
                        decoding=DecodingSpec(max_new_tokens=8))
    assert {m.name for m in result.metrics} >= {"refusal.harmful_refusal_rate", "refusal.over_refusal_rate"}
    assert len(result.samples) == 6 and {s.response for s in result.samples} == {ANSWER}
    # a user's model copied by `init` counts its template; the world's random-weights init does not
    for mode, counts in (("path", True), ("fresh", False)):
        ckpt = tmp_path / mode
        ckpt.mkdir()
        mark_complete(ckpt, Manifest(stage="init", kind="init", content_hash=mode, metrics={"mode": mode}))
        assert counts_chat_template(ckpt, True) is counts
    assert counts_chat_template(model, True) and not counts_chat_template(model, False)  # no manifest: the file decides
