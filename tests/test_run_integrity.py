"""No silent loss on the smoke run: renamed stages keep their effects, a failed rerun leaves no stale
effects, a broken attribution fails the run, and one suite listed twice keeps both results."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import smoke_overrides
from rich.console import Console

from harness.config import ConfigError, load_config
from harness.core.store import Store
from harness.pipeline import Pipeline
from harness.report import compute_and_store_effects

RENAMED = ["stages.sft.name=tuned", "stages.reward.from=tuned", "stages.dpo.from=tuned", "stages.ppo.from=tuned",
           "stages.constitutional.from=tuned"]


def run(out: Path, *overrides: str):
    return Pipeline(load_config("smoke", [*smoke_overrides(out), *overrides]), Console(quiet=True)).run()


def effects_of(store_path: Path, run_id: str):
    with Store(store_path, readonly=True) as store:
        return store.effects(run_id).sort_values(["stage", "metric"]).reset_index(drop=True)


def test_a_renamed_stage_keeps_its_effects_and_nothing_retrains(smoke_copy: Path) -> None:
    result = run(smoke_copy, *RENAMED)
    assert result.trained == []  # checkpoints are content-addressed by kind, not by stage name
    effects = effects_of(smoke_copy / "results.sqlite", result.run_id)
    parents = dict(zip(effects["stage"], effects["parent_stage"], strict=False))
    assert parents["tuned"] == "pretrain"
    assert {parents[s] for s in ("dpo", "ppo", "constitutional")} == {"tuned"}  # children attributed against the renamed parent
    with Store(smoke_copy, readonly=True) as store:
        ckpts = store.checkpoints(result.run_id).set_index("stage")
    assert ckpts.loc["ppo", "parent_stage"] == "tuned" and ckpts.loc["ppo", "inputs"]["reward"] == "reward"


def test_a_failed_rerun_leaves_no_stale_effects(smoke_copy: Path) -> None:
    """Same config, changed SFT data: sft retrains and is re-evaluated, then the reward stage fails on a
    bad row. The run's effects must describe the evaluations it now shows, not the earlier ones."""
    first = run(smoke_copy)
    before = effects_of(smoke_copy / "results.sqlite", first.run_id)
    [world] = list((smoke_copy / "worlds").iterdir())
    sft = (world / "sft.jsonl").read_text().splitlines(keepends=True)
    (world / "sft.jsonl").write_text("".join(sft[: len(sft) // 2]))
    with (world / "preferences.jsonl").open("a") as prefs:
        prefs.write('{"prompt": "no chosen or rejected here"}\n')
    with pytest.raises(Exception, match="preferences"):
        run(smoke_copy)
    with Store(smoke_copy, readonly=True) as store:
        runs = store.runs().set_index("run_id")
        assert runs.loc[first.run_id, "status"] == "failed"  # the same run, resumed and failed
        linked = store.evaluations(first.run_id)
        assert "verbosity" not in set(linked[linked["stage"] == "sft"]["suite"])  # the old sft's, unlinked
    stored = effects_of(smoke_copy / "results.sqlite", first.run_id)
    copy = smoke_copy.parent / "recomputed.sqlite"
    shutil.copy(smoke_copy / "results.sqlite", copy)
    with Store(copy) as store:
        compute_and_store_effects(store, first.run_id)
    fresh = effects_of(copy, first.run_id)
    assert stored[["stage", "metric", "effect"]].equals(fresh[["stage", "metric", "effect"]])
    sft_before = before[before["stage"] == "sft"].set_index("metric")["effect"]
    sft_after = stored[stored["stage"] == "sft"].set_index("metric")["effect"]
    shared = sft_before.index.intersection(sft_after.index)
    assert not sft_before[shared].equals(sft_after[shared])  # the retrained sft really changed the effects


def test_an_attribution_import_error_fails_the_run(smoke_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "harness.report", None)  # what a broken install looks like
    with pytest.raises(ImportError):
        run(smoke_copy)
    with Store(smoke_copy, readonly=True) as store:
        run_id = store.latest_run_id()
        assert store.get_run(run_id)["status"] == "failed"
        assert store.effects(run_id).empty


def test_one_suite_listed_twice_keeps_both_results(smoke_copy: Path) -> None:
    twice = "suites=[{name: refusal, max_items: 40}, {name: refusal, alias: refusal_few, max_items: 6}]"
    result = run(smoke_copy, twice)
    with Store(smoke_copy, readonly=True) as store:
        evals = store.evaluations(result.run_id)
        metrics = store.metrics(result.run_id, stage="sft")
    assert set(evals[evals["stage"] == "sft"]["suite"]) == {"refusal", "refusal_few"}
    names = set(metrics["metric"])
    assert "refusal.harmful_refusal_rate" in names and "refusal_few.harmful_refusal_rate" in names
    few = metrics.set_index("metric").loc["refusal_few.harmful_refusal_rate", "n"]
    assert int(few) <= 6
    with pytest.raises(ConfigError, match=r"suites\[1\]\.alias.*already listed"):
        load_config("smoke", ["suites=[{name: refusal}, {name: refusal}]"])
