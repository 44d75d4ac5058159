"""Evaluation throughput on the transformers backend, all on the same prompts in one invocation.

1. **Suite overhead**: each generation suite end to end (items -> prompts -> backend -> judge ->
   metrics) vs the raw backend calls it makes (``generate`` on its chat prompts, ``loglikelihood``
   on its cloze requests). Goal: raw time / suite time >= 0.90.
2. **Batching**: hf ``generate`` with batch size 32 vs one prompt at a time. Goal: >= 5x.
3. **Threads**: batched ``generate`` with torch threads 1 vs 2, with the machine as it is and
   with one extra busy process per core beyond the first (another job on the second core).

The model is a random tiny Llama on the synthetic world's tokenizer (``--checkpoint`` takes any
HF causal LM folder with a chat template instead); the prompts are the world's evaluation items.

    python benchmarks/eval_throughput.py                      # the world's default model size
    python benchmarks/eval_throughput.py --hidden 512 --layers 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.backends.base import Prompt, Sampling
from harness.backends.hf import HFBackend
from harness.config import DecodingSpec, SuiteSpec
from harness.evaluate import evaluate
from suites import SUITES

GEN_SUITES = ("refusal", "verbosity", "hallucination")


def build_model(out: Path, world_dir: Path, hidden: int, layers: int) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(world_dir / "tokenizer")
    heads = max(1, hidden // 32)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      head_dim=hidden // heads, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def timed(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by other load)."""
    return interleaved([fn], repeats)[0]


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """The fastest of ``repeats`` rounds for each function, the functions alternating within a round,
    so a burst of load from another process hits both sides of a comparison alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def _burn() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def suite_overhead(backend: HFBackend, ckpt: Path, items_paths: dict[str, Path], decoding: DecodingSpec,
                   repeats: int) -> dict[str, dict[str, float]]:
    sampling = Sampling(max_new_tokens=decoding.max_new_tokens)
    out = {}
    for name in GEN_SUITES:
        items = SUITES.get(name).load_items(items_paths[name])
        chat = [Prompt.chat(i["prompt"]) for i in items if i.get("format", "chat") == "chat"]
        cloze = [(i["prompt"], c) for i in items if i.get("format") == "cloze" for c in i["choices"]]

        def raw(chat: list[Prompt] = chat, cloze: list[tuple[str, str]] = cloze) -> None:
            backend.generate(chat, sampling)
            if cloze:
                backend.loglikelihood(cloze)

        def suite(name: str = name) -> None:
            evaluate(ckpt, "sft", [SuiteSpec(name=name)], backend, items_paths, decoding=decoding)

        t_raw, t_suite = interleaved([raw, suite], repeats)
        out[name] = {"prompts": len(chat), "cloze_requests": len(cloze), "raw_s": t_raw, "suite_s": t_suite,
                     "ratio": t_raw / t_suite}
    return out


def batching(backend: HFBackend, prompts: list[Prompt], sampling: Sampling, repeats: int) -> dict[str, float]:
    backend.batch_size = 32
    t_batched = timed(lambda: backend.generate(prompts, sampling), repeats)
    backend.batch_size = 1
    t_single = timed(lambda: backend.generate(prompts, sampling), 1)
    backend.batch_size = 32
    tokens = len(prompts) * sampling.max_new_tokens
    return {"prompts": len(prompts), "batched_s": t_batched, "single_s": t_single,
            "batched_tok_s": tokens / t_batched, "single_tok_s": tokens / t_single, "speedup": t_single / t_batched}


def threads(backend: HFBackend, prompts: list[Prompt], sampling: Sampling, repeats: int,
            busy: int) -> dict[str, float]:
    tokens = len(prompts) * sampling.max_new_tokens
    result = {}
    for label, n_busy in (("idle", 0), ("busy", busy)):
        procs = [mp.Process(target=_burn, daemon=True) for _ in range(n_busy)]
        for p in procs:
            p.start()
        try:
            for n in (1, 2):
                backend.threads = n
                result[f"{label}_threads{n}_tok_s"] = tokens / timed(lambda: backend.generate(prompts, sampling),
                                                                      repeats)
        finally:
            for p in procs:
                p.terminate()
                p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="an HF causal LM folder (default: a random tiny Llama)")
    ap.add_argument("--hidden", type=int, default=128, help="hidden size of the random model (128: the world's)")
    ap.add_argument("--layers", type=int, default=4, help="layers of the random model")
    ap.add_argument("--preset", default="smoke", help="world preset whose evaluation items are the prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=64, help="prompts for the batching and thread figures")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--busy", type=int, default=1, help="busy processes for the 'busy' thread figures")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from harness.world import generate, preset

    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    world = tmp / "world"
    generate(preset(args.preset), world)
    items_paths = {name: world / "eval" / f"{name}.jsonl" for name in SUITES.names()}
    ckpt = args.checkpoint or build_model(tmp / "model", world, args.hidden, args.layers)
    backend = HFBackend(ckpt, batch_size=32)
    params = sum(p.numel() for p in backend.model.parameters())
    decoding = DecodingSpec(max_new_tokens=args.max_new_tokens)
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    chat = [Prompt.chat(i["prompt"]) for n in GEN_SUITES for i in SUITES.get(n).load_items(items_paths[n])
            if i.get("format", "chat") == "chat"]
    prompts = (chat * (args.prompts // max(len(chat), 1) + 1))[:args.prompts]

    figures = {
        "model": {"checkpoint": str(ckpt), "parameters": params, "default_threads": backend.threads},
        "suite_overhead": suite_overhead(backend, ckpt, items_paths, decoding, args.repeats),
        "batching": batching(backend, prompts, sampling, args.repeats),
        "threads": threads(backend, prompts, sampling, args.repeats, args.busy),
    }
    ratios = [v["ratio"] for v in figures["suite_overhead"].values()]
    figures["summary"] = {
        "suite_vs_raw_min_ratio": min(ratios), "suite_vs_raw_median_ratio": statistics.median(ratios),
        "batched_speedup": figures["batching"]["speedup"],
        "goal_suite_ratio_0.90": min(ratios) >= 0.90, "goal_batched_5x": figures["batching"]["speedup"] >= 5,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
