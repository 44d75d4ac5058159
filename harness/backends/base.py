"""The inference backend contract every engine implements (transformers, vLLM, ...).

A backend wraps one checkpoint and answers two questions:

- ``generate(prompts, sampling)``: a completion per prompt (``sampling.n`` per prompt, prompt
  by prompt), with its text, generated token ids (without the stop token) and why it stopped;
- ``loglikelihood(requests)``: for each ``(context, continuation)`` pair of plain text, the
  summed log-probability of the continuation's tokens after the context, and whether greedy
  decoding would have produced exactly those tokens (lm-eval's ``(logprob, is_greedy)``).

Prompt rendering is the same for every backend (:func:`render_prompt`): a chat prompt goes
through the checkpoint tokenizer's chat template with ``add_generation_prompt=True``; a
completion prompt is sent as plain text. Trailing whitespace is stripped first: a BPE
tokenizer folds a space into the next word (``" Paris"`` is one token), so a prompt ending in
a space tokenizes differently from the training text and the model sees a stray token.

The backend name and its decoding settings are part of every stored result
(:func:`decoding_key`): two backends give measurably different numbers for the same model,
so their results are never compared with each other.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """Either plain ``text`` (a completion prompt) or chat ``messages`` (``role``/``content`` dicts)."""

    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError("a Prompt has exactly one of `text` or `messages`")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))

    @classmethod
    def completion(cls, text: str) -> Prompt:
        return cls(text=text)

    @classmethod
    def chat(cls, user: str | list[dict[str, str]], system: str | None = None) -> Prompt:
        """A chat prompt from one user message (optionally after a system message) or a message list."""
        if isinstance(user, str):
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        else:
            msgs = list(user)
        return cls(messages=tuple(msgs))

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one ``generate`` call. ``temperature == 0`` is greedy (top_p unused)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    n: int = 1

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 samples per prompt need temperature > 0 (greedy gives n identical answers)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One generated answer: decoded ``text`` (special tokens skipped), the generated ``token_ids``
    (the stop token excluded), and ``finish_reason``: "stop" (hit EOS) or "length" (hit max_new_tokens)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason


@dataclass(frozen=True)
class LogLik:
    """Summed log-probability of a continuation, whether greedy decoding reproduces it, its token count."""

    logprob: float
    is_greedy: bool
    num_tokens: int


@runtime_checkable
class Backend(Protocol):
    """What suites call. Implementations also provide ``from_spec(ckpt_dir, spec, trust_remote_code)``."""

    name: str
    checkpoint: Path
    dtype_name: str  # the resolved dtype ("float32", "bfloat16", ...), part of the decoding key

    @property
    def has_chat_template(self) -> bool: ...

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        """``len(prompts) * sampling.n`` completions: all samples of prompt 0, then of prompt 1, ..."""
        ...

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLik]:
        """One :class:`LogLik` per ``(context, continuation)`` pair, in order."""
        ...

    def close(self) -> None:
        """Free the model (memory, child processes). The backend is unusable afterwards."""
        ...


# --------------------------------------------------------------------------- prompt rendering


def render_prompt(prompt: Prompt, tokenizer: Any) -> str:
    """The exact text a backend tokenizes for ``prompt``.

    Completion prompts: the text with trailing whitespace stripped. Chat prompts: every message's
    content stripped of trailing whitespace, rendered by the tokenizer's chat template with
    ``add_generation_prompt=True``; the rendered text is then stripped of trailing spaces and tabs
    only — a template's closing newline after the assistant header is part of the format the
    model was trained on and stays. Chat prompts on a tokenizer without a template are an error.
    """
    if prompt.text is not None:
        return prompt.text.rstrip()
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "chat prompt on a checkpoint without a chat template; chat items need a chat checkpoint "
            "(sft and later), completion/cloze items work on any checkpoint"
        )
    messages = [{"role": m["role"], "content": str(m["content"]).rstrip()} for m in prompt.messages or ()]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text).rstrip(" \t")


def split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the continuation's front (lm-eval's rule), so the
    context never ends in a space and ``" Paris"`` stays one token of the continuation."""
    stripped = context.rstrip()
    return stripped, context[len(stripped):] + continuation


# --------------------------------------------------------------------------- selection and identity


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch (seconds) where the answer is known
    before: a torch built without CUDA or ROCm (its ``torch/version.py`` says so) has no GPU. A
    cached rerun keys its evaluations (the device is in the decoding key) and does nothing else."""
    if "torch" not in sys.modules and not _torch_built_with_gpu():
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


@functools.cache
def _torch_built_with_gpu() -> bool:
    """False only when the installed torch's ``version.py`` sets both ``cuda`` and ``hip`` to None."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return False
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return True  # unknown: ask torch itself
    builds = re.findall(r"^(cuda|hip)\b[^=\n]*=\s*(.+?)\s*$", text, flags=re.M)
    return len(builds) != 2 or any(value != "None" for _, value in builds)


def resolve_backend(name: str) -> str:
    """``auto`` -> ``vllm`` when vllm is importable and CUDA is available, else ``hf``; others unchanged."""
    if name != "auto":
        return name
    if importlib.util.find_spec("vllm") is not None and cuda_available():
        return "vllm"
    return "hf"


def decoding_key(
    backend: str, sampling: Sampling, dtype: str = "auto", extra: dict[str, Any] | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The canonical description of how responses were produced, stored with every result.

    Contains the (resolved) backend name, its dtype, the batch size (sampling draws per batch, and
    padding changes greedy logits in the last bits) and every setting that changes outputs; the
    thread count is left out (speed only). ``extra`` adds backend-specific settings that change outputs.
    """
    if backend == "auto":
        raise ValueError("decoding_key needs the resolved backend name; call resolve_backend first")
    key: dict[str, Any] = {"backend": backend, "dtype": dtype, **asdict(sampling)}
    if batch_size is not None:
        key["batch_size"] = batch_size
    if sampling.greedy:  # top_p and seed do not change greedy outputs
        key["top_p"], key["seed"] = 1.0, 0
    return {**key, **(extra or {})}


def open_backend(ckpt_dir: Path | str, spec: Any = None, trust_remote_code: bool = False) -> Backend:
    """Open the backend ``spec.name`` (a :class:`harness.core.spec.BackendSpec`; default ``auto``) on a checkpoint."""
    from harness.backends import BACKENDS
    from harness.core.spec import BackendSpec

    spec = spec or BackendSpec()
    factory = BACKENDS.get(resolve_backend(spec.name))
    return factory.from_spec(Path(ckpt_dir), spec, trust_remote_code=trust_remote_code)


def encode_prompt(prompt: Prompt, tokenizer: Any) -> list[int]:
    """Token ids a model sees for ``prompt``: chat prompts rendered by the template (which writes BOS
    itself), completion prompts with the tokenizer's special tokens (see :func:`render_prompt`)."""
    text = render_prompt(prompt, tokenizer)
    return list(tokenizer(text, add_special_tokens=not prompt.is_chat)["input_ids"])


def encode_prompts(prompts: list[Prompt], tokenizer: Any, max_length: int, max_new_tokens: int) -> list[list[int]]:
    """Encode every prompt and keep at most ``max_length - max_new_tokens`` trailing tokens of each
    (a warning says how many were cut), so every backend sees exactly the same tokens."""
    budget = max_length - max_new_tokens
    if budget < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt "
                         f"(the model handles {max_length} positions)")
    encoded = [encode_prompt(p, tokenizer) for p in prompts]
    if any(len(ids) > budget for ids in encoded):
        log.warning("%d prompt(s) longer than %d tokens keep only their last %d tokens (max_new_tokens=%d)",
                    sum(len(ids) > budget for ids in encoded), budget, budget, max_new_tokens)
        encoded = [ids[-budget:] for ids in encoded]
    return encoded

