"""`harness sweep`: the variants it plans (fast), the `smoke-methods` config (fast), and its sweep over
seeds 0 and 1 end to end with `harness compare` of ppo, dpo, rloo and constitutional and a rerun that
trains and evaluates nothing (slow: ~2.5 min on 2 shared cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import smoke_overrides
from rich.console import Console
from typer.testing import CliRunner

from harness.cli import app
from harness.config import ConfigError, load_config, stage_config
from harness.sweep import parse_seeds, plan, run_sweep


def test_plan_is_seeds_times_the_product_of_the_varied_lists(tmp_path: Path) -> None:
    variants = plan("smoke", [f"output_dir={tmp_path}"], [0, 1],
                    ["dpo.beta=0.1,0.2", "stages.ppo.kl_coef=0.05,0.1"])
    labels = [v.label for v, _ in variants]
    assert labels[:4] == ["seed=0 dpo.beta=0.1 ppo.kl_coef=0.05", "seed=0 dpo.beta=0.1 ppo.kl_coef=0.1",
                          "seed=0 dpo.beta=0.2 ppo.kl_coef=0.05", "seed=0 dpo.beta=0.2 ppo.kl_coef=0.1"]
    assert len(variants) == 8 and labels[4].startswith("seed=1 ")
    cfg = variants[2][1]
    assert cfg.seed == 0 and cfg.stage("dpo").options()["beta"] == 0.2 and cfg.output_dir == str(tmp_path)
    assert {c.output_dir for _, c in variants} == {str(tmp_path)}  # one store, one checkpoint cache


@pytest.mark.parametrize(("vary", "message"), [
    (["dpo.beta"], "expected STAGE.FIELD=a,b"),
    (["seed=1,2"], "set by the sweep itself"),
    (["dpo.beta=0.1,0.1"], "listed twice"),
    (["dpo.beta=0.1", "stages.dpo.beta=0.2"], "varied twice"),
    (["dpo.beta=-1,0.1"], "variant seed=0 dpo.beta=-1"),  # validated before anything runs
    (["dpo.betta=1"], "betta"),
])
def test_bad_vary_is_a_config_error_before_anything_runs(vary: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        plan("smoke", [f"output_dir={tmp_path}"], [0], vary)


def test_seeds_parse() -> None:
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("", "a", "1,1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    out = CliRunner().invoke(app, ["sweep", "smoke", "--seeds", "x"])
    assert out.exit_code == 2 and "--seeds" in out.output


def test_smoke_methods_is_smoke_plus_rloo() -> None:
    """The packaged `smoke-methods`: smoke's stages unchanged (same checkpoints in one output_dir) and rloo."""
    cfg, smoke = load_config("smoke-methods"), load_config("smoke")
    assert (cfg.model, cfg.world, cfg.suites, cfg.backend) == (smoke.model, smoke.world, smoke.suites, smoke.backend)
    assert [s for s in cfg.stages if s.kind != "rloo"] == smoke.stages
    (rloo,) = [s for s in cfg.stages if s.kind == "rloo"]
    assert rloo.name == "rloo" and rloo.from_ == "sft" and rloo.reward == "reward"
    assert stage_config(rloo).max_steps == 4
    assert {"ppo", "dpo", "rloo", "constitutional"} <= {s.name for s in cfg.stages}


METHODS = ("ppo", "dpo", "rloo", "constitutional")


@pytest.mark.slow
def test_smoke_sweep_compares_and_a_rerun_does_nothing(tmp_path: Path) -> None:
    """`harness sweep smoke-methods --seeds 0,1`, `harness compare` of ppo, dpo, rloo and constitutional
    on it, then the same sweep again: all cached."""
    out = tmp_path / "sweep"
    quiet = Console(quiet=True)
    first = run_sweep("smoke-methods", smoke_overrides(out), [0, 1], [], quiet)
    assert not first.failed and len(first.rows) == 2
    assert {s for r in first.rows for s in r["trained"]} >= {"sft", *METHODS}
    again = run_sweep("smoke-methods", smoke_overrides(out), [0, 1], [], quiet)
    assert again.trained == [] and again.evaluated == 0
    assert [r["run_id"] for r in again.rows] == [r["run_id"] for r in first.rows]  # the same runs, resumed
    js = tmp_path / "compare.json"
    cli = CliRunner().invoke(app, ["compare", "--store", str(out), "--methods", ",".join(METHODS),
                                   "--json", str(js)])
    assert cli.exit_code == 0, cli.output
    result = json.loads(js.read_text())
    assert result["seeds"] == [0, 1] and [m["label"] for m in result["methods"]] == list(METHODS)
    assert all(e["parents"] == ["sft"] and e["n_seeds"] == 2 for e in result["effects"])
    assert len(result["pairs"]) == 6 * len(result["metrics"])  # every pair of the four methods
    notes = next(m for m in result["methods"] if m["label"] == "constitutional")["notes"]
    assert notes and "rule-based stand-in" in notes[0]
