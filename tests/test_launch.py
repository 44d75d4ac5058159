"""`harness run --launch`: the shipped accelerate configs, launch plans, and the smoke pipeline on 2 CPU processes.

The slow test trains the smoke pipeline's stages (pretrain, sft, reward, dpo, ppo) twice: each stage
under ``accelerate launch`` with the shipped DDP config on 2 gloo processes, and in one process with
the same global batch (gradient accumulation 2; PPO: twice the rollouts and minibatch per step).
Tolerances, stated and measured (docs/multi-gpu.md):

- Trainer stages (pretrain, sft, reward, dpo): both runs draw the same seeded permutation and the
  same examples make each global batch (accelerate deals the batches to the processes; accumulation
  walks them in order). The test sizes every data set to whole global batches of 16 (pretrain
  blocks of 56 tokens: 112; 64 chats; 48 pairs, 32 of them for the reward model), because accelerate
  fills a last partial batch with examples from the start of the epoch (``even_batches``, so that
  every process steps alike) where one process trains on the short batch: a few % apart in the
  final losses otherwise. Left: the order of floating-point sums (an all-reduce of two halves vs one
  sum), amplified over the steps: final losses within ``LOSS_RTOL`` relative.
- PPO draws every rollout with its own seed (run seed, position in the step's global batch: Gumbel-max
  with a generator per row, ``training/ppo_models.py``), so 2 processes sample exactly the rollouts of
  one: step 1's (the SFT policy's, before any update) mean score ``score_first`` within
  ``PPO_FIRST_TOL`` (measured 7e-9: the reward model scores 16 padded rows instead of 32). Its updates
  match too: the minibatch deal (``minibatch_rows``) makes each process's minibatch its half of the
  single-process one, and the loss is scaled so that DDP's mean of the processes' token means is the
  minibatch's token mean. Left: the order of floating-point sums, amplified over 12 steps through
  sampling; measured: every step's score equal, kl within 4e-7, ``score_last`` equal, ``kl_last``
  1.2e-7 apart, every evaluation metric of its checkpoint identical. Compared: every step's score and
  kl within ``PPO_TOL`` absolute (the scores are normalised to the SFT policy's spread, kl is ~1.6
  nats at the end) and its response lengths exactly; its evaluation metrics like the others'.
  Without these two update-loop changes the runs drift apart (measured, same data): with neither,
  ``score_last`` 0.028 and ``kl_last`` 0.049 (3 %) apart; with the deal but per-process token means,
  0.006 and 0.006 (0.4 %).
- Evaluation metrics of every checkpoint (the same suites, greedy decoding): within ``METRIC_TOL``
  absolute (measured 0 for every stage).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from harness.config import dump, load_config
from harness.core.store import Store
from harness.launch import CONFIG_DIR, ENGINES, Launch, LaunchError, accelerate_config, plan_or_follow

STAGES = ("pretrain", "sft", "reward", "dpo", "ppo")
LOSS_RTOL = 1e-3
PPO_FIRST_TOL = 1e-5
PPO_TOL = 1e-3
METRIC_TOL = 0.1
QUIET = Console(quiet=True)


# --------------------------------------------------------------------------- configs and plans (fast)


@pytest.mark.parametrize("engine", ENGINES)
def test_shipped_accelerate_configs_validate(engine: str) -> None:
    """accelerate reads every shipped file (unknown keys are its error) and resolves its launch arguments;
    the harness's own checks pass (mixed precision left to the stages, full state dicts saved)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = CONFIG_DIR / f"{engine}.yaml"
    cluster = accelerate_config(path)
    expected = {"single": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
    assert cluster["distributed_type"] == expected[engine]
    args, defaults, _ = _validate_launch_command(
        launch_command_parser().parse_args(["--config_file", str(path), "-m", "harness.launch"]))
    assert defaults is not None and args.num_processes == (1 if engine == "single" else 2)
    assert bool(args.use_fsdp) == (engine == "fsdp") and bool(args.use_deepspeed) == engine.startswith("zero")
    text = path.read_text()
    if engine in ("fsdp", "zero2", "zero3"):
        assert "NEEDS CUDA" in text  # and docs/multi-gpu.md says so


def test_launch_plans_refuse_what_can_not_work(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="at least 2 processes"):
        Launch.plan("ddp", 1)
    with pytest.raises(LaunchError, match="runs one process"):
        Launch.plan("single", 2)
    with pytest.raises(LaunchError, match="--main-address"):
        Launch.plan("ddp", 4, num_machines=2, machine_rank=1)
    with pytest.raises(LaunchError, match="multiple of --num-machines"):
        Launch.plan("ddp", 3, num_machines=2, main_address="10.0.0.1")
    with pytest.raises(LaunchError, match="expected one of"):
        Launch.plan("ddpp", 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\nmixed_precision: bf16\n")
    with pytest.raises(LaunchError, match="mixed_precision"):
        Launch.plan(str(bad))
    with pytest.raises(LaunchError, match="go with --launch"):
        plan_or_follow(None, QUIET, None, num_processes=2)


def test_launch_command_and_stage_fallback() -> None:
    plan = Launch.plan("ddp", 4, num_machines=2, machine_rank=0, main_address="10.0.0.1", main_port=29555)
    cmd = plan.command(Path("run.yaml"), "sft")
    assert cmd[cmd.index("--config_file") + 1].endswith("configs/accelerate/ddp.yaml")
    for flag, value in (("--num_processes", "4"), ("--num_machines", "2"), ("--machine_rank", "0"),
                        ("--main_process_ip", "10.0.0.1"), ("--main_process_port", "29555")):
        assert cmd[cmd.index(flag) + 1] == value
    assert cmd[-6:] == ["-m", "harness.launch", "--config", "run.yaml", "--stage", "sft"]
    assert Launch.plan("ddp", 2).command(Path("c.yaml"), "sft")[-7:-6] == ["0"]  # one machine: a free port
    # a stage that can not be sharded runs under DDP with the same processes
    sharded = Launch("fsdp", CONFIG_DIR / "fsdp.yaml", "FSDP", 2)
    assert sharded.for_stage(shardable=True) is sharded
    assert sharded.for_stage(shardable=False).engine == "ddp" and sharded.for_stage(False).num_processes == 2


def test_processes_enter_the_content_hash_but_not_the_init(tmp_path: Path) -> None:
    from harness.core.artifacts import Layout, Manifest, mark_complete
    from training import STAGES, StageInputs
    from training.runtime import stage_identity

    parent = tmp_path / "tok"
    parent.mkdir()
    (parent / "tokenizer.json").write_text("{}")
    layout = Layout.of(tmp_path)
    spec = load_config("smoke").model
    init = [stage_identity("init", "init", spec, StageInputs(parent=parent, data=None), layout, processes=n)
            for n in (1, 2)]
    assert init[0].content_hash == init[1].content_hash
    mark_complete(parent, Manifest(stage="init", kind="init", content_hash=init[0].content_hash))
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n")
    config = STAGES.get("sft").Config()
    one, two = (stage_identity("sft", "sft", config, StageInputs(parent=parent, data=data), layout, processes=n)
                for n in (1, 2))
    assert one.content_hash != two.content_hash


def test_vllm_parallel_settings(monkeypatch) -> None:
    from harness.backends.base import Sampling
    from harness.backends.vllm import replica_devices, split_in_order
    from harness.config import BackendSpec, ConfigError
    from harness.evaluate import planned_decoding

    for n in range(7):
        for parts in (1, 2, 3):
            chunks = split_in_order(list(range(n)), parts)
            assert len(chunks) == parts and sum(chunks, []) == list(range(n))
            assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert replica_devices(2, 2, on_cpu=False) == [{"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    assert replica_devices(1, 4, on_cpu=False) == [{}]
    with pytest.raises(ValueError, match="needs 6 GPUs; 4 visible"):
        replica_devices(3, 2, on_cpu=False)
    assert replica_devices(2, 1, on_cpu=True) == [{}, {}]
    with pytest.raises(ConfigError, match="backend.tensor_parallel_size: a vLLM setting"):
        load_config("smoke", ["backend.name=hf", "backend.tensor_parallel_size=2"])
    cfg = load_config("gpu", ["backend.tensor_parallel_size=2", "backend.data_parallel_size=4"])
    assert (cfg.backend.name, cfg.backend.dtype, cfg.model.fresh.hidden_size) == ("vllm", "bfloat16", 512)
    greedy = Sampling(max_new_tokens=8, temperature=0.0)
    # tensor parallelism changes the order of sums, so it is part of the evaluation key; replicas are not
    assert planned_decoding(cfg.backend, greedy)["tensor_parallel_size"] == 2
    assert "tensor_parallel_size" not in planned_decoding(BackendSpec(name="vllm"), greedy)
    assert planned_decoding(BackendSpec(name="vllm", data_parallel_size=4), greedy) == planned_decoding(
        BackendSpec(name="vllm"), greedy)


# --------------------------------------------------------------------------- 2 processes vs 1 (slow)


def smoke_stages(output_dir: Path, accumulate: bool) -> object:
    """The smoke config's world, model, suites and five stages; ``accumulate``: the 1-process twin of a
    2-process run (accumulation 2, PPO twice the rollouts and minibatch per step)."""
    raw = dump(load_config("smoke", [f"output_dir={output_dir}", "backend.name=hf"]))
    raw["stages"] = [s for s in raw["stages"] if s["name"] in STAGES]
    whole_batches = {"pretrain": {"max_length": 56, "per_device_train_batch_size": 8},
                     "reward": {"heldout_fraction": 1 / 3}}  # 112 blocks, 32 training pairs: 7 and 2 batches of 16
    for stage in raw["stages"]:
        stage.update(whole_batches.get(stage["name"], {}))
    for stage in raw["stages"] if accumulate else []:
        if stage["kind"] == "ppo":
            stage["rollout_batch_size"] *= 2
            stage["minibatch_size"] *= 2
        else:
            stage["gradient_accumulation_steps"] = 2 * stage.get("gradient_accumulation_steps", 1)
    path = output_dir.parent / f"{output_dir.name}.yaml"
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def run_pair(root: Path) -> dict[str, dict]:
    from harness.pipeline import Pipeline

    out = {}
    for name, launch in (("one", None), ("two", Launch.plan("ddp", 2))):
        cfg = smoke_stages(root / name, accumulate=launch is None)
        start = time.perf_counter()
        result = Pipeline(cfg, QUIET, launch=launch).run()
        manifests = {s: json.loads((c.path / "manifest.json").read_text()) for s, c in result.checkpoints.items()}
        with Store(root / name, readonly=True) as store:
            metrics = store.metrics(result.run_id)
            rows = {"runs": len(store.runs()), "checkpoints": len(store.checkpoints(result.run_id)),
                    "evaluations": len(store.evaluations(result.run_id)), "metrics": len(metrics),
                    "duplicate_metrics": int(metrics.duplicated(["stage", "metric"]).sum())}
        out[name] = {"wall_s": time.perf_counter() - start, "manifests": manifests, "rows": rows,
                     "metrics": {(r.stage, r.metric): r.value for r in metrics.itertuples()}}
    return out


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    res = run_pair(tmp_path)
    one, two = res["one"], res["two"]
    print(f"\nwall time: 1 process {one['wall_s']:.0f}s, 2 processes {two['wall_s']:.0f}s")
    for stage in STAGES:
        a, b = one["manifests"][stage]["metrics"], two["manifests"][stage]["metrics"]
        keys = ("train_loss", "final_loss") if stage != "ppo" else ("score_first", "score_last", "kl_last")
        print(f"{stage:>8}: global batch {a['global_batch_size']} / {b['global_batch_size']}, "
              + ", ".join(f"{k} {a[k]:.4f} / {b[k]:.4f}" for k in keys)
              + f", wall {a['wall_s']:.1f}s / {b['wall_s']:.1f}s")
        assert (a["num_processes"], b["num_processes"], b["launch"]) == (1, 2, "ddp")
        assert a["global_batch_size"] == b["global_batch_size"]
        if stage == "ppo":
            assert a["steps"] == b["steps"] and abs(a["score_first"] - b["score_first"]) <= PPO_FIRST_TOL
            assert two["manifests"][stage]["log_history"][0]["kl"] == pytest.approx(0.0, abs=1e-4)
            logs = list(zip(one["manifests"][stage]["log_history"], two["manifests"][stage]["log_history"], strict=True))
            print("     ppo: largest step differences: score {:.2g}, kl {:.2g}, response length {:.2g}".format(
                *(max(abs(x[k] - y[k]) for x, y in logs) for k in ("score", "kl", "mean_response_length"))))
            for x, y in logs:
                assert y["mean_response_length"] == x["mean_response_length"], x["step"]
                for key in ("score", "kl"):
                    assert y[key] == pytest.approx(x[key], abs=PPO_TOL), (x["step"], key)
            for key in ("score_last", "kl_last"):
                assert b[key] == pytest.approx(a[key], abs=PPO_TOL), key
        else:
            for key in keys:
                assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), (stage, key)
    def compared(run: dict) -> dict:
        return {k: v for k, v in run["metrics"].items() if v is not None}

    differences = {k: abs(v - compared(two)[k]) for k, v in compared(one).items()}
    worst = sorted(differences.items(), key=lambda kv: -kv[1])[:4]
    print("largest evaluation differences:", ", ".join(f"{s}/{m} {d:.4g}" for (s, m), d in worst))
    print("store rows 1 / 2 processes:", one["rows"], two["rows"])
    assert compared(one).keys() == compared(two).keys()
    assert max(differences.values()) <= METRIC_TOL, sorted(differences.items(), key=lambda kv: -kv[1])[:4]
    # the orchestrator alone writes the store: one run, one row per checkpoint and per evaluation
    for rows in (one["rows"], two["rows"]):
        assert (rows["runs"], rows["checkpoints"], rows["duplicate_metrics"]) == (1, len(STAGES) + 1, 0)
    assert two["rows"]["evaluations"] == one["rows"]["evaluations"]


KILLER = """
import os, threading, time
from pathlib import Path
if "KILL_RANK_AT_FIRST_SAVE_RANK" in os.environ and os.environ["KILL_RANK_AT_FIRST_SAVE_RANK"] == os.environ.get("RANK"):
    def watch(root=Path(os.environ["KILL_RANK_AT_FIRST_SAVE_ROOT"])):
        while not any(root.glob("checkpoints/*/trainer_state/checkpoint-*/trainer_state.json")):
            time.sleep(0.02)
        os.kill(os.getpid(), 9)  # this rank dies mid-stage, between two trainer saves
    threading.Thread(target=watch, daemon=True).start()
"""


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_stage_and_a_rerun_completes(tmp_path: Path, monkeypatch) -> None:
    """Rank 1 is SIGKILLed once the first trainer checkpoint exists: the launch exits non-zero, the stage
    fails (its checkpoint marked failed, never complete) and the run with it; a rerun resumes and completes."""
    import os

    from harness.core.artifacts import is_complete, read_manifest
    from harness.pipeline import Pipeline
    from training.runtime import StageFailed

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(KILLER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("KILL_RANK_AT_FIRST_SAVE_RANK", "1")
    monkeypatch.setenv("KILL_RANK_AT_FIRST_SAVE_ROOT", str(tmp_path / "out"))
    raw = dump(load_config("smoke", [f"output_dir={tmp_path / 'out'}", "backend.name=hf"]))
    raw["stages"] = [dict(s, max_steps=40, save_steps=10) for s in raw["stages"] if s["name"] == "pretrain"]
    raw["suites"] = [{"name": "topic_coverage"}]
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(tmp_path / "one.yaml")
    with pytest.raises(StageFailed, match="exit code") as info:
        Pipeline(cfg, QUIET, launch=Launch.plan("ddp", 2)).run()
    path = info.value.path
    assert read_manifest(path).status == "failed" and not is_complete(path)
    assert read_manifest(path).error  # rank 0's (its peer is gone) or the launch's exit code
    with Store(tmp_path / "out", readonly=True) as store:
        assert store.runs()["status"].tolist() == ["failed"]
    monkeypatch.delenv("KILL_RANK_AT_FIRST_SAVE_RANK")
    result = Pipeline(cfg, QUIET, launch=Launch.plan("ddp", 2)).run()
    manifest = read_manifest(result.checkpoints["pretrain"].path)
    assert result.checkpoints["pretrain"].path == path and is_complete(path)
    assert manifest.metrics["resumed_from"] and manifest.metrics["global_step"] == 40


@pytest.mark.slow
def test_two_machines_on_one_host(tmp_path: Path) -> None:
    """`--num-machines 2` with both machine ranks on this host (1 process each), sharing output_dir: machine 1
    waits for the world, joins each stage's launch and writes no store; machine 0 evaluates and stores."""
    import socket
    import subprocess
    import sys

    raw = dump(load_config("smoke", [f"output_dir={tmp_path / 'out'}", "backend.name=hf"]))
    raw["stages"] = [s for s in raw["stages"] if s["name"] in ("pretrain", "sft")]
    raw["suites"] = [{"name": "topic_coverage"}]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = [sys.executable, "-m", "harness.cli", "run", str(tmp_path / "two.yaml"), "--launch", "ddp",
              "--num-processes", "2", "--num-machines", "2", "--main-address", "127.0.0.1", "--main-port", str(port)]
    machines = [subprocess.Popen([*common, "--machine-rank", str(rank)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    out = [m.communicate(timeout=900)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], out[0][-3000:] + out[1][-3000:]
    assert "machine 1: trained pretrain, sft with machine 0" in " ".join(out[1].split())
    assert "2 processes on 2 machines" in out[0]
    assert "topic_coverage" in out[0] and "topic_coverage" not in out[1]  # only machine 0 evaluates
    with Store(tmp_path / "out", readonly=True) as store:
        run_id = store.runs()["run_id"].tolist()
        assert len(run_id) == 1 and len(store.checkpoints(run_id[0])) == 3
    for stage in ("pretrain", "sft"):
        manifest = json.loads(next((tmp_path / "out" / "checkpoints").glob(f"{stage}-*/manifest.json")).read_text())
        assert manifest["status"] == "complete" and manifest["metrics"]["num_processes"] == 2
