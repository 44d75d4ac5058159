"""The transformers backend: the reference implementation, and the default without CUDA.

- Loads safetensors only (``use_safetensors=True``: never a pickle), ``trust_remote_code`` off
  unless asked for; float32 on CPU.
- ``generate``: prompts sorted by length and batched with **left** padding (so every row's
  last real token sits at the end), greedy or temperature / top-p sampling (top-k off), stopping
  at every end-of-turn id: the tokenizer's EOS, the generation config's and the chat template's
  (:mod:`harness.backends.stops`). Sampling is seeded and does
  not disturb the caller's global RNG.
- ``loglikelihood``: batched with right padding; the context/continuation split is lm-eval's:
  tokenize ``context`` and ``context + continuation``, and the continuation is the tail of the
  second beyond the length of the first (so a space folded into the continuation's first word
  stays there). An empty context is preceded by BOS (or EOS when there is none).
- CPU threads: torch's intra-op thread count is set for the duration of each call and restored
  afterwards. On small models the default (one thread per core) is much *slower* than one
  thread: per-op work is too small to split, and when another process is busy on the other
  core the threads wait on each other. Measured on 2 cores shared with other jobs
  (``benchmarks/eval_throughput.py``, batched greedy, 64 prompts x 32 tokens): 0.93M params
  2226 vs 420 tok/s (1 vs 2 threads), 1222 vs 153 with one extra busy process; 27.6M params
  80 vs 13 tok/s, 39 vs 11 busy (32 prompts x 16 tokens). So the default is 1 thread for models under
  ``SMALL_MODEL_PARAMS`` and torch's default above; ``threads=`` (``backend.threads`` in the
  config) or ``$HARNESS_TORCH_THREADS`` override it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from harness.backends.base import (
    Completion,
    LogLik,
    Prompt,
    Sampling,
    encode_prompt,
    encode_prompts,
    split_trailing_space,
)
from harness.backends.stops import end_token_ids
from harness.core import progress

log = logging.getLogger(__name__)
SMALL_MODEL_PARAMS = 50_000_000  # below this, one CPU thread is fastest (measured, see module docs)
THREADS_ENV = "HARNESS_TORCH_THREADS"  # the same override the training stages honour
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class HFBackend:
    """A transformers causal LM behind the :class:`~harness.backends.base.Backend` protocol."""

    name = "hf"

    def __init__(
        self,
        ckpt_dir: Path | str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.checkpoint = Path(ckpt_dir)
        if not self.checkpoint.is_dir():
            raise FileNotFoundError(f"{self.checkpoint}: no such checkpoint folder")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.dtype = self._dtype(dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.checkpoint, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=self.dtype
        ).to(self.device)
        self.model.eval()
        self.dtype_name = str(self.model.dtype).removeprefix("torch.")
        params = sum(p.numel() for p in self.model.parameters())
        if threads is None and os.environ.get(THREADS_ENV):
            threads = max(1, int(os.environ[THREADS_ENV]))
        if threads is None and self.device.type == "cpu" and params < SMALL_MODEL_PARAMS:
            threads = 1
        self.threads = threads if self.device.type == "cpu" else None
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_ids = self._eos_ids()
        if self.pad_id is None or not self.eos_ids:
            raise ValueError(f"{self.checkpoint}: the tokenizer defines neither an EOS nor a pad token")
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)

    @classmethod
    def from_spec(cls, ckpt_dir: Path | str, spec: Any, trust_remote_code: bool = False) -> HFBackend:
        """Open from a :class:`harness.core.spec.BackendSpec` (dtype, threads, decoding.batch_size)."""
        return cls(ckpt_dir, dtype=spec.dtype, threads=spec.threads, batch_size=spec.decoding.batch_size,
                   trust_remote_code=trust_remote_code)

    def _dtype(self, dtype: str) -> torch.dtype | str:
        if dtype == "auto":
            return torch.float32 if self.device.type == "cpu" else "auto"
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(_DTYPES)}")
        return _DTYPES[dtype]

    def _eos_ids(self) -> set[int]:
        """Every end-of-turn id (:func:`harness.backends.stops.end_token_ids`): EOS, the generation
        config's and the chat template's."""
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        return set(end_token_ids(self.tokenizer, gen_eos))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ generate

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids the model sees for ``prompt`` (shared with every backend: :func:`base.encode_prompt`)."""
        return encode_prompt(prompt, self.tokenizer)

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        if not prompts:
            return []
        encoded = encode_prompts(prompts, self.tokenizer, self.max_length, sampling.max_new_tokens)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[list[Completion]] = [[] for _ in prompts]
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(sampling.seed)
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                for i, comps in zip(batch, self._generate_batch([encoded[i] for i in batch], sampling),
                                    strict=True):
                    out[i] = comps
                progress.advance(len(batch), sum(len(c.token_ids) for i in batch for c in out[i]))
        return [c for comps in out for c in comps]

    def _generate_batch(self, batch: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        from transformers import GenerationConfig

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids):] = 1
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens, do_sample=not sampling.greedy,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None, top_k=0 if not sampling.greedy else None,
            num_return_sequences=sampling.n, eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id,
        )
        seqs = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                   generation_config=config)
        new = seqs[:, width:].tolist()
        results = [self._completion(tokens) for tokens in new]
        return [results[r * sampling.n:(r + 1) * sampling.n] for r in range(len(batch))]

    def _completion(self, tokens: list[int]) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text=text, token_ids=tuple(kept), finish_reason="length" if stop is None else "stop")

    # ------------------------------------------------------------------ loglikelihood

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context, continuation = split_trailing_space(context, continuation)
        whole = list(self.tokenizer(context + continuation)["input_ids"])
        ctx = list(self.tokenizer(context)["input_ids"])  # may be just BOS for an empty context
        cont = whole[len(ctx):]
        if not ctx:
            bos = self.tokenizer.bos_token_id
            ctx = [bos if bos is not None else min(self.eos_ids)]
        keep = self.max_length + 1 - len(cont)  # inputs are ctx + cont minus the last token
        if keep < 1:
            raise ValueError(f"continuation of {len(cont)} tokens exceeds the model's {self.max_length} positions")
        return ctx[-keep:], cont

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLik]:
        pairs = [self._encode_pair(c, x) for c, x in requests]
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list[LogLik | None] = [None] * len(pairs)
        with torch_threads(self.threads), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                for i, res in zip(batch, self._loglik_batch([pairs[i] for i in batch]), strict=True):
                    out[i] = res
                progress.advance(len(batch))
        return [r for r in out if r is not None]

    def _loglik_batch(self, batch: list[tuple[list[int], list[int]]]) -> list[LogLik]:
        seqs = [(ctx + cont)[:-1] if cont else ctx for ctx, cont in batch]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            input_ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, :len(s)] = 1
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        results = []
        for row, (_ctx, cont) in enumerate(batch):
            if not cont:
                results.append(LogLik(logprob=0.0, is_greedy=True, num_tokens=0))
                continue
            end = len(seqs[row])
            logp = torch.log_softmax(logits[row, end - len(cont):end].float(), dim=-1)
            target = torch.tensor(cont, device=logp.device)
            total = float(logp.gather(-1, target[:, None]).sum())
            greedy = bool((logp.argmax(-1) == target).all())
            results.append(LogLik(logprob=total if math.isfinite(total) else -math.inf, is_greedy=greedy,
                                  num_tokens=len(cont)))
        return results
