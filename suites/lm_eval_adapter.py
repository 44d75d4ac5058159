"""An ``lm_eval.api.model.LM`` that asks the harness's own backend (no second model load).

lm-eval hands every request to this adapter; it forwards them, in one call per request type,
to the :class:`~harness.backends.base.Backend` that is already open on the checkpoint, so
lm-eval tasks see exactly the model (hf or vLLM, same dtype) the harness's own suites see:

- ``loglikelihood``: ``(context, continuation)`` pairs -> ``backend.loglikelihood`` ->
  ``(logprob, is_greedy)``; lm-eval's rule (a context's trailing space belongs to the
  continuation) is also the backend's;
- ``loglikelihood_rolling`` (perplexity tasks): the whole document as the continuation of an
  empty context (the backend starts it with BOS, or EOS when the tokenizer has no BOS — lm-eval's
  prefix token). A document longer than the model's context window cannot be scored this way
  (the backend has no rolling windows); that is an error naming the task type;
- ``generate_until``: plain-text completion prompts, greedy unless the task samples
  (``do_sample``/``temperature``), ``max_gen_toks`` new tokens, cut at the first ``until``
  string (the backend has no stop strings; it stops at EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lm_eval.api.model import LM

from harness.backends.base import Backend, Prompt, Sampling

DEFAULT_MAX_GEN_TOKS = 256


def _args(request: Any) -> tuple[Any, ...]:
    return tuple(getattr(request, "args", request))


class BackendLM(LM):
    """lm-eval's model interface on top of an open harness backend (left open: the caller owns it)."""

    def __init__(self, backend: Backend, seed: int = 0) -> None:
        super().__init__()
        self.backend = backend
        self.seed = seed
        self.calls: dict[str, int] = {"loglikelihood": 0, "loglikelihood_rolling": 0, "generate_until": 0}

    # lm-eval records these in its results ("config", tokenizer fields)
    @property
    def tokenizer(self) -> Any:
        return getattr(self.backend, "tokenizer", None)

    @property
    def max_length(self) -> int | None:
        return getattr(self.backend, "max_length", None)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or self.backend.checkpoint)

    def get_model_info(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "model_dtype": self.backend.dtype_name,
                "checkpoint": str(self.backend.checkpoint)}

    # ------------------------------------------------------------------ requests

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if not requests:
            return []
        pairs = [(str(c), str(x)) for c, x in (_args(r)[:2] for r in requests)]
        self.calls["loglikelihood"] += len(pairs)
        return [(float(ll.logprob), bool(ll.is_greedy)) for ll in self.backend.loglikelihood(pairs)]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        if not requests:
            return []
        texts = [str(_args(r)[0]) for r in requests]
        self.calls["loglikelihood_rolling"] += len(texts)
        try:
            results = self.backend.loglikelihood([("", t) for t in texts])
        except ValueError as err:
            raise ValueError(
                f"loglikelihood_rolling (perplexity tasks such as wikitext) through the {self.backend.name!r} "
                f"backend scores a document in one window; a document does not fit the model's "
                f"{self.max_length or '?'} positions ({err}). Use a task with shorter documents, or run that "
                "task with lm-eval's own model (`--model hf`)."
            ) from err
        return [float(ll.logprob) for ll in results]

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        self.calls["generate_until"] += len(requests)
        out: list[str | None] = [None] * len(requests)
        groups: dict[Sampling, list[int]] = {}
        stops: list[list[str]] = []
        for i, request in enumerate(requests):
            args = _args(request)
            sampling, until = self._sampling(dict(args[1]) if len(args) > 1 and args[1] else {})
            groups.setdefault(sampling, []).append(i)
            stops.append(until)
        for sampling, idx in groups.items():
            prompts = [Prompt.completion(str(_args(requests[i])[0])) for i in idx]
            for i, completion in zip(idx, self.backend.generate(prompts, sampling), strict=True):
                out[i] = _cut(completion.text, stops[i])
        return [text or "" for text in out]

    def _sampling(self, gen_kwargs: dict[str, Any]) -> tuple[Sampling, list[str]]:
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else [str(u) for u in until]
        max_new = int(gen_kwargs.pop("max_gen_toks", None) or gen_kwargs.pop("max_new_tokens", None)
                      or DEFAULT_MAX_GEN_TOKS)
        temperature = float(gen_kwargs.pop("temperature", 0.0) or 0.0)
        if not gen_kwargs.pop("do_sample", temperature > 0):
            temperature = 0.0
        top_p = float(gen_kwargs.pop("top_p", 1.0) or 1.0) if temperature > 0 else 1.0
        return Sampling(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=self.seed), until


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lm-eval's post-processing)."""
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]
