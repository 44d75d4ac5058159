"""One short check on a CUDA machine; prints one table:

- **training**: the ``gpu`` config's model (~27M parameters, bf16) through its ``pretrain`` and ``sft``
  stages for ``--steps`` optimizer steps each: tokens/s (the tokens the trainer counted, padding left
  out) and model FLOPs utilisation, MFU = 6 x parameters x tokens/s / the device's dense bf16 peak
  (attention's own FLOPs left out, so MFU is a lower bound);
- **generation**: hf and vLLM (bfloat16, greedy, ``--max-new-tokens``) on the same ``--prompts`` chat
  prompts of the world, on the sft checkpoint just trained: generated tokens/s each, best of 2 after
  a warm-up call;
- **smoke**: ``harness run smoke`` end to end in a fresh output_dir (backend auto: vLLM when installed).

    python benchmarks/gpu_check.py [--steps 60] [--prompts 256] [--out DIR] [--peak-tflops 989]

On a machine without CUDA it prints one line naming CUDA and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; the first name found in the device's wins
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0), ("H800", 989.0),
                    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
                    ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0))


def peak_tflops(name: str, given: float | None) -> float | None:
    return given if given else next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def train_rows(out: Path, steps: int, peak: float | None) -> tuple[list[tuple[str, str, str]], Path, object]:
    from rich.console import Console

    from harness.config import load_config
    from harness.pipeline import Pipeline

    overrides = [f"output_dir={out}", *(f"stages.{s}.{k}={v}" for s in ("pretrain", "sft")
                                       for k, v in (("max_steps", steps), ("save_steps", 10 * steps)))]
    pipeline = Pipeline(load_config("gpu", overrides), Console(quiet=True))
    rows = []
    for stage in ("pretrain", "sft"):
        ckpt = pipeline.train_one(stage)
        pipeline.checkpoints[stage] = ckpt
        metrics = json.loads((ckpt.path / "manifest.json").read_text())["metrics"]
        params = json.loads((pipeline.checkpoints["init"].path / "manifest.json").read_text())["metrics"]["parameters"]
        rate = float(metrics["tokens_per_s"])
        mfu = f"{6 * params * rate / (peak * 1e12):.1%}" if peak else "n/a (unknown device: --peak-tflops)"
        rows.append((f"train {stage} ({params / 1e6:.1f}M params, bf16={metrics.get('bf16')})",
                     f"{rate:,.0f} tokens/s", f"MFU {mfu}"))
    return rows, pipeline.checkpoints["sft"].path, pipeline


def generation_rows(ckpt: Path, world: Path, n: int, max_new_tokens: int) -> list[tuple[str, str, str]]:
    from harness.backends.base import Prompt, Sampling
    from harness.backends.hf import HFBackend
    from harness.backends.vllm import VLLMBackend, vllm_available
    from harness.world import WORLD_FILES

    rows = [json.loads(line) for name in ("verbosity", "refusal") for line in (world / WORLD_FILES[f"eval/{name}"]).open()]
    prompts = [Prompt(messages=({"role": "user", "content": r["prompt"]},)) for r in rows if r.get("prompt")]
    prompts = (prompts * (n // max(len(prompts), 1) + 1))[:n]
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
    result = []
    for name, open_backend in (("hf", lambda: HFBackend(ckpt, dtype="bfloat16", batch_size=64)),
                               ("vllm", lambda: VLLMBackend(ckpt, dtype="bfloat16"))):
        if name == "vllm" and not vllm_available():
            result.append(("generate vllm", "not installed", "pip install 'alignment-harness[vllm]'"))
            continue
        backend = open_backend()
        backend.generate(prompts[:8], sampling)  # warm-up
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            tokens = sum(len(c.token_ids) for c in backend.generate(prompts, sampling))
            best = min(best, time.perf_counter() - start)
        getattr(backend, "close", lambda: None)()
        result.append((f"generate {name} ({n} prompts, greedy)", f"{tokens / best:,.0f} tokens/s", f"{best:.2f} s"))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps of pretrain and of sft")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, if not in the table")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available (torch {torch.__version__}); run it on a machine with an NVIDIA "
              "GPU and a CUDA build of torch", file=sys.stderr)
        return 1
    from rich.console import Console
    from rich.table import Table

    from harness.config import load_config
    from harness.pipeline import Pipeline, world_path

    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name, args.peak_tflops)
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    rows, sft, pipeline = train_rows(out / "gpu", args.steps, peak)
    rows += generation_rows(sft, world_path(pipeline.cfg, pipeline.layout), args.prompts, args.max_new_tokens)
    start = time.perf_counter()
    result = Pipeline(load_config("smoke", [f"output_dir={out / 'smoke'}"]), Console(quiet=True)).run()
    rows.append(("smoke pipeline end to end", f"{time.perf_counter() - start:.1f} s",
                 f"trained {len(result.trained)}, evaluations {result.evaluated}"))
    table = Table(title=f"gpu_check on {name} (bf16 peak {peak or '?'} TFLOP/s, torch {torch.__version__})")
    for column in ("what", "figure", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
