"""Overhead of the harness's ``sft`` and ``dpo`` stages over bare TRL trainers.

Same model (a tiny fresh Llama on the world tokenizer), same data (the world's ``smoke``
preset, or ``--preset default``), same steps and trainer settings (bare TRL keeps its default
logging every 10 steps; ours logs every step for the NaN guard). Run back to back in one
process after an untimed warm-up: ``--repeats`` pairs, alternating who goes first; best and
median kept. "Ours" is the whole ``training.runtime.execute`` call (hashing, manifest,
seeding, NaN guard, per-step logging and token counting, saving the checkpoint); "bare" is
loading the model, building the TRL trainer, ``train()`` and ``save_model()``.
Goal: wall-time ratio <= 1.10.

    .venv/bin/python benchmarks/training_overhead.py [--steps 40] [--repeats 3] [--preset smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def bare_trl(kind: str, parent: Path, data: Path, config, out: Path) -> None:
    """The same training with TRL alone: load, build the trainer, train, save."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from training.data import read_rows

    set_seed(0)
    tok = AutoTokenizer.from_pretrained(parent)
    model = AutoModelForCausalLM.from_pretrained(parent, use_safetensors=True, dtype="float32")
    common = dict(
        output_dir=str(out), seed=0, learning_rate=config.learning_rate, max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size, lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio, max_length=config.max_length, report_to=[], use_cpu=True, bf16=False,
        gradient_checkpointing=False, save_strategy="no", disable_tqdm=True, logging_steps=10,
    )
    rows = read_rows(data, {})
    if kind == "sft":
        dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
        trainer = SFTTrainer(model=model, args=SFTConfig(**common, assistant_only_loss=True), train_dataset=dataset, processing_class=tok)
    else:
        dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        ref = AutoModelForCausalLM.from_pretrained(parent, use_safetensors=True, dtype="float32")
        args = DPOConfig(**common, beta=config.beta, loss_type=list(config.loss_type), loss_weights=config.loss_weights)
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dataset, processing_class=tok)
    trainer.remove_callback(PrinterCallback)  # no per-log prints (ours has none either)
    trainer.train()
    trainer.save_model(str(out / "final"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="ours/bare pairs, alternating who goes first")
    parser.add_argument("--preset", default="smoke", help="world preset for the data")
    opts = parser.parse_args()

    from harness.config import FreshModel, ModelSpec
    from harness.core.artifacts import Layout
    from harness.world import generate, preset
    from training import STAGES
    from training.process import THREADS_ENV, prepare_process
    from training.runtime import execute
    from training.stage import StageInputs

    root = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        generate(preset(opts.preset), root / "world")
        env = prepare_process(0)
        os.environ[THREADS_ENV] = str(env["torch_threads"])  # the same torch threads for both sides
        print(f"device {env['device']}, torch threads {env['torch_threads']} ({env['torch_threads_reason']})")
        model = ModelSpec(fresh=FreshModel(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=384))
        init = execute("init", "init", model, StageInputs(parent=root / "world" / "tokenizer", data=None), Layout.of(root / "init"))
        for kind, data in (("sft", "sft.jsonl"), ("dpo", "preferences.jsonl")):
            config = STAGES.get(kind).Config.model_validate({"max_steps": opts.steps})
            inputs = StageInputs(parent=init.path, data=root / "world" / data)
            times: dict[str, list[float]] = {"ours": [], "bare": []}
            tokens = 0

            def ours(tag: str) -> float:
                nonlocal tokens
                start = time.perf_counter()
                res = execute(kind, kind, config, inputs, Layout.of(root / f"{kind}-ours-{tag}"))  # noqa: B023
                tokens = res.manifest.metrics["train_tokens"]
                return time.perf_counter() - start

            def bare(tag: str) -> float:
                start = time.perf_counter()
                bare_trl(kind, init.path, inputs.data, config, root / f"{kind}-bare-{tag}")  # noqa: B023
                return time.perf_counter() - start

            warm = config.model_copy(update={"max_steps": 2})
            execute(kind, kind, warm, inputs, Layout.of(root / f"{kind}-warm"))  # imports, caches: untimed
            bare_trl(kind, init.path, inputs.data, warm, root / f"{kind}-bare-warm")
            for rep in range(opts.repeats):  # alternate who goes first
                order = (("ours", ours), ("bare", bare)) if rep % 2 == 0 else (("bare", bare), ("ours", ours))
                for name, fn in order:
                    times[name].append(fn(str(rep)))
            o, b = min(times["ours"]), min(times["bare"])
            med = statistics.median(times["ours"]) / statistics.median(times["bare"])
            print(
                f"{kind}: {opts.steps} steps, {tokens} tokens | ours {o:.2f} s ({tokens / o:,.0f} tok/s) | "
                f"bare TRL {b:.2f} s ({tokens / b:,.0f} tok/s) | ratio best {o / b:.3f}, median {med:.3f} (goal <= 1.10)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
