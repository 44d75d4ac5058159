"""`harness run` end to end on the smoke config: caching, targeted reruns, kill-and-rerun, failures, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import smoke_overrides
from rich.console import Console

from harness.config import load_config
from harness.core.artifacts import is_complete, read_manifest
from harness.core.store import Store
from harness.pipeline import Pipeline

QUIET = Console(quiet=True)


def test_smoke_run_trains_and_evaluates_every_stage(smoke_run) -> None:
    cfg, result = smoke_run
    assert set(result.checkpoints) == {"init", "pretrain", *(s.name for s in cfg.stages)}
    for ckpt in result.checkpoints.values():
        assert is_complete(ckpt.path, ckpt.content_hash)
    with Store(Path(cfg.output_dir), readonly=True) as store:
        run = store.get_run(result.run_id)
        assert run["status"] == "complete"
        metrics = store.metrics(result.run_id)
        by_stage = metrics.groupby("stage")["suite"].unique().to_dict()
        # knowledge by cloze at every LM checkpoint, behaviour on chat checkpoints, reward model's own metrics
        assert "topic_coverage" in by_stage["init"] and "topic_coverage" in by_stage["pretrain"]
        # the world's random-weights init carries the world tokenizer's template but is no chat checkpoint
        assert not {"refusal", "verbosity"} & set(by_stage["init"])
        init_metrics = set(metrics[metrics["stage"] == "init"]["metric"])
        assert "hallucination.mc_accuracy" in init_metrics and "hallucination.abstention_rate" not in init_metrics
        for stage in ("sft", "dpo"):
            assert {"hallucination", "refusal", "verbosity", "topic_coverage"} <= set(by_stage[stage])
        assert set(by_stage["reward"]) == {"reward_model"}
        # every policy checkpoint has reward scores, including sft (evaluated before the reward model existed)
        reward_mean = metrics[metrics["metric"] == "verbosity.reward_mean"]
        assert set(reward_mean["stage"]) >= {"sft", "dpo"}
        assert not store.samples(result.run_id, stage="sft", suite="refusal").empty
    assert result.summary_path.is_file() and "refusal.harmful_refusal_rate" in result.summary_path.read_text()


def test_noop_rerun_trains_and_generates_nothing(smoke_copy: Path) -> None:
    cfg = load_config("smoke", smoke_overrides(smoke_copy))
    first = Pipeline(cfg, QUIET).run()  # new output_dir path -> new run; all checkpoints + evaluations cached
    assert first.trained == [] and first.evaluated == 0
    again = Pipeline(cfg, QUIET).run()
    assert again.run_id == first.run_id  # identical config resumes / re-confirms the same run
    assert again.trained == [] and again.evaluated == 0
    with Store(smoke_copy, readonly=True) as store:
        metrics = store.metrics(again.run_id)
        assert not metrics.duplicated(["stage", "metric"]).any()


def test_changing_dpo_beta_reruns_only_dpo(smoke_copy: Path) -> None:
    cfg = load_config("smoke", [*smoke_overrides(smoke_copy), "stages.dpo.beta=0.3"])
    result = Pipeline(cfg, QUIET).run()
    assert result.trained == ["dpo"]
    assert result.evaluated == len(cfg.suites)  # every configured suite applies to a dpo checkpoint


def test_failed_stage_keeps_results_and_exits_nonzero(smoke_copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "smoke", *smoke_overrides(smoke_copy),
         "stages.dpo.learning_rate=1e30", "stages.dpo.max_grad_norm=1e30"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "stage failed" in out.stderr and "dpo" in out.stderr
    with Store(smoke_copy, readonly=True) as store:
        runs = store.runs()
        failed = runs[runs["status"] == "failed"]
        assert len(failed) == 1
        run_id = failed.iloc[0]["run_id"]
        assert set(store.metrics(run_id)["stage"]) >= {"init", "pretrain", "sft"}  # kept
        ckpts = store.checkpoints(run_id).set_index("stage")
        assert ckpts.loc["dpo", "status"] == "failed"
    dpo_dirs = [p for p in (smoke_copy / "checkpoints").glob("dpo-*") if read_manifest(p).status == "failed"]
    assert dpo_dirs and not is_complete(dpo_dirs[0])


def test_kill_and_rerun_matches_uninterrupted(smoke_run, tmp_path: Path) -> None:
    """SIGKILL a fresh smoke run mid-training, rerun it: same numbers as the uninterrupted run, no duplicates."""
    _, reference = smoke_run
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "harness.cli", "run", "smoke", *smoke_overrides(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 600
    while time.time() < deadline and not list((out / "checkpoints").glob("sft-*/trainer_state/checkpoint-*")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    with Store(out, readonly=True) as store:
        run_id = store.require_run(None)
        assert len(store.runs()) == 1  # the killed run was resumed, not duplicated
        got = store.metrics(run_id).set_index(["stage", "metric"])["value"]
        assert not got.index.duplicated().any()
    with Store(Path(smoke_run[0].output_dir), readonly=True) as store:
        want = store.metrics(reference.run_id).set_index(["stage", "metric"])["value"]
    joined = want.to_frame("want").join(got.to_frame("got"), how="outer")
    assert joined["got"].notna().all() and joined["want"].notna().sum() == joined["got"].notna().sum()
    diff = (joined["want"] - joined["got"]).abs().max()
    assert diff < 1e-6, joined[(joined["want"] - joined["got"]).abs() > 1e-6]


def test_export_lm_eval_shape(smoke_run, tmp_path: Path) -> None:
    cfg, result = smoke_run
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "export", "--store", cfg.output_dir, "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "x" / "sft" / "results.json").read_text())
    assert {"results", "versions", "n-samples", "config", "harness"} <= set(doc)
    assert "harmful_refusal_rate,none" in doc["results"]["refusal"]
    assert doc["harness"]["parent"] == "pretrain"
    lines = (tmp_path / "x" / "sft" / "samples_refusal.jsonl").read_text().splitlines()
    assert lines and "doc_hash" in json.loads(lines[0])
