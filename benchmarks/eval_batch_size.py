"""Greedy generation on the transformers backend at several batch sizes, on one trained checkpoint.

Why: the default run's evaluations generate ~2,500 chat answers per checkpoint (the refusal suite alone
asks 1,728). The tiny world model is so small that each decoding step costs mostly Python and kernel
launch overhead, so larger batches are nearly free; the default configs set ``backend.decoding.batch_size``
from this benchmark. For each batch size it prints the wall time, items/s, the speed-up over 32 (the
library default, sized for real models) and how many answers differ from batch size 32's (left padding
changes the floating-point sums a little, so a rare greedy tie may break the other way).

    python benchmarks/eval_batch_size.py --checkpoint runs/default/checkpoints/ppo-<hash> \\
        --items runs/default/worlds/<hash>/eval/refusal.jsonl [--n 768] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.backends.base import Prompt, Sampling
from harness.backends.hf import HFBackend
from training.data import load_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="an HF causal LM folder with a chat template")
    ap.add_argument("--items", type=Path, required=True, help="a JSONL file of items with a `prompt` field")
    ap.add_argument("--n", type=int, default=768, help="items to generate for (the first N)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    args = ap.parse_args()
    rows = load_rows(args.items, {"prompt": str})[: args.n]
    prompts = [Prompt(messages=({"role": "user", "content": row["prompt"]},)) for row in rows]
    sampling = Sampling(max_new_tokens=64, temperature=0.0)
    base_s, base_texts = None, None
    print(f"{len(prompts)} prompts, greedy, 64 new tokens at most, {args.threads} torch threads")
    for size in args.sizes:
        backend = HFBackend(args.checkpoint, batch_size=size, threads=args.threads)
        backend.generate(prompts[:size], sampling)  # warm-up: the first call pays one-off set-up costs
        start = time.perf_counter()
        texts = [c.text for c in backend.generate(prompts, sampling)]
        seconds = time.perf_counter() - start
        if base_s is None:
            base_s, base_texts = seconds, texts
        differ = sum(a != b for a, b in zip(texts, base_texts, strict=True))
        print(f"batch {size:4d}: {seconds:6.1f} s  {len(prompts) / seconds:6.1f} items/s  "
              f"x{base_s / seconds:.2f} vs {args.sizes[0]}  answers differing from batch {args.sizes[0]}: {differ}")


if __name__ == "__main__":
    main()
