"""Profile the PPO stage: response tokens/s and where a step's time goes.

Usage::

    .venv/bin/python benchmarks/ppo_profile.py                      # fresh world-sized models, 12 steps
    .venv/bin/python benchmarks/ppo_profile.py --steps 20 --hidden 64 --layers 2
    .venv/bin/python benchmarks/ppo_profile.py --policy CKPT/sft-… --reward CKPT/reward-… --prompts WORLD/rl_prompts.jsonl

Without checkpoints it builds, in-process, a fresh Llama of the default world's size on the
``smoke`` world's tokenizer (policy) and a sequence classifier from the same weights (reward
and value model); numbers then measure the machinery, not learning. Each PPO step's time is
split into: **generate** (sampling the rollout), **score** (the reward model on the decoded
responses), **forward** (log-probs under policy and reference, values) and **update** (the
PPO epochs: forward + backward + optimizer). The first step (warm-up) is excluded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_models(root: Path, hidden: int, layers: int) -> tuple[Path, Path, Path]:
    """(policy, reward, prompts) built from the smoke world's tokenizer and a fresh Llama."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from harness.world import WORLD_FILES, generate, preset

    world = root / "world"
    generate(preset("smoke"), world)
    tok = AutoTokenizer.from_pretrained(world / WORLD_FILES["tokenizer"])
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 32, num_key_value_heads=hidden // 32, head_dim=32, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    policy = LlamaForCausalLM(cfg)
    policy.save_pretrained(root / "policy")
    tok.save_pretrained(root / "policy")
    reward_cfg = {k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id")}
    reward = LlamaForSequenceClassification(LlamaConfig(**reward_cfg, num_labels=1))
    reward.model.load_state_dict(policy.model.state_dict())
    reward.save_pretrained(root / "reward")
    tok.save_pretrained(root / "reward")
    return root / "policy", root / "reward", world / WORLD_FILES["rl_prompts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, help="SFT checkpoint (default: a fresh model built here)")
    parser.add_argument("--reward", type=Path, help="reward checkpoint (default: built here)")
    parser.add_argument("--prompts", type=Path, help="RL prompts JSONL (default: the smoke world's)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rollout-batch-size", type=int, default=32)
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from training.ppo import Config, run
    from training.stage import StageInputs

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.policy and args.reward and args.prompts:
            policy, reward, prompts = args.policy, args.reward, args.prompts
        else:
            policy, reward, prompts = build_models(root, args.hidden, args.layers)
        config = Config(
            steps=args.steps, rollout_batch_size=args.rollout_batch_size, minibatch_size=args.minibatch_size,
            ppo_epochs=args.ppo_epochs, max_new_tokens=args.max_new_tokens, save_every=0, seed=0,
        )
        start = time.perf_counter()
        metrics = run(config, StageInputs(parent=policy, data=prompts, reward=reward), root / "out")
        wall = time.perf_counter() - start
    log = metrics["log_history"][1:] or metrics["log_history"]
    phases = {p: sum(e[f"time_{p}_s"] for e in log) for p in ("generate", "score", "forward", "update")}
    total = sum(e["time_step_s"] for e in log)
    tokens = sum(e["response_tokens"] for e in log)
    figures = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "steps_timed": len(log),
        "step_s_median": statistics.median(e["time_step_s"] for e in log),
        "response_tokens_per_s": tokens / total,
        "episodes_per_s": len(log) * args.rollout_batch_size / total,
        "mean_response_length": tokens / (len(log) * args.rollout_batch_size),
        **{f"share_{p}": t / total for p, t in phases.items()},
        "wall_s_including_load": wall,
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value:.3f}" if isinstance(value, float) else f"{key:>24}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
