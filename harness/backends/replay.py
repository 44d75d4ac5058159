"""Keep what a backend answered, and answer again from it without a model.

:class:`RecordingBackend` wraps a real backend for one suite run and keeps every answer it gives:
each completion of each prompt (text, token ids, finish reason: everything a :class:`Completion`
carries) and each log-likelihood. :meth:`RecordingBackend.answers` is a plain JSON dict, stored
with the evaluation. :class:`ReplayBackend` implements the :class:`~harness.backends.base.Backend`
protocol from such a dict: the suite's own ``run`` asks it the same prompts and gets the same
answers, so a new judge (or reward model) scores the stored responses through exactly the path a
fresh evaluation takes, with no generation. A prompt it does not hold raises :class:`ReplayMissing`.

Answers are looked up by what was asked: the prompt (text or chat messages; rendering it is the
checkpoint's business, and the checkpoint is part of the key the answers are stored under) with the
sampling settings, or the ``(context, continuation)`` pair. The same question asked twice gets its
answers back in the order they were first given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, Completion, LogLik, Prompt, Sampling
from harness.core.artifacts import canonical_json

ANSWERS_VERSION = 1  # the layout of an answers dict


class ReplayMissing(LookupError):
    """A replayed suite asked something the stored answers do not hold."""


def _ask_key(prompt: Prompt, sampling: Sampling) -> str:
    return canonical_json({"text": prompt.text, "messages": prompt.messages, "sampling": asdict(sampling)})


def _pair_key(request: tuple[str, str]) -> str:
    return canonical_json(list(request))


class RecordingBackend:
    """A real backend that keeps every answer it gives (see the module docstring); closing it closes that backend."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name, self.checkpoint, self.dtype_name = inner.name, inner.checkpoint, inner.dtype_name
        self._generated: list[list[Any]] = []  # [ask key, [[text, token ids, finish reason], ...]]
        self._scored: list[list[Any]] = []  # [pair key, [logprob, is_greedy, num_tokens]]

    @property
    def has_chat_template(self) -> bool:
        return self.inner.has_chat_template

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        outs = self.inner.generate(prompts, sampling)
        n = sampling.n
        for i, prompt in enumerate(prompts):
            completions = [[c.text, list(c.token_ids), c.finish_reason] for c in outs[i * n:(i + 1) * n]]
            self._generated.append([_ask_key(prompt, sampling), completions])
        return outs

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLik]:
        outs = self.inner.loglikelihood(requests)
        self._scored += [[_pair_key(r), [o.logprob, o.is_greedy, o.num_tokens]] for r, o in zip(requests, outs, strict=True)]
        return outs

    def close(self) -> None:
        self.inner.close()

    def answers(self) -> dict[str, Any]:
        """Everything answered so far, as a JSON-ready dict for :class:`ReplayBackend`."""
        return {"version": ANSWERS_VERSION, "backend": self.name, "dtype": self.dtype_name,
                "chat_template": self.has_chat_template, "generate": self._generated, "loglikelihood": self._scored}


class ReplayBackend:
    """A backend that answers from stored answers (:meth:`RecordingBackend.answers`); no model.

    ``name`` and ``dtype_name`` are those of the backend that answered. ``served`` counts the
    completions handed out, ``scored`` the log-likelihoods.
    """

    def __init__(self, answers: Mapping[str, Any], checkpoint: Path | str, source: str = "the stored answers") -> None:
        if answers.get("version") != ANSWERS_VERSION:
            raise ReplayMissing(f"{source}: answers of layout {answers.get('version')!r}, "
                                f"this harness replays layout {ANSWERS_VERSION}")
        self.name, self.dtype_name, self.checkpoint = answers["backend"], answers["dtype"], Path(checkpoint)
        self._chat, self.source = bool(answers["chat_template"]), source
        self._generated: dict[str, deque[list[Any]]] = {}
        for key, completions in answers["generate"]:
            self._generated.setdefault(key, deque()).append(completions)
        self._scored: dict[str, deque[list[Any]]] = {}
        for key, value in answers["loglikelihood"]:
            self._scored.setdefault(key, deque()).append(value)
        self.served = self.scored = 0

    @property
    def has_chat_template(self) -> bool:
        return self._chat

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        out: list[Completion] = []
        for prompt in prompts:
            stored = self._generated.get(_ask_key(prompt, sampling))
            if not stored or len(stored[0]) != sampling.n:
                raise ReplayMissing(f"{self.source} hold no response to {prompt} with {sampling}")
            out += [Completion(text, tuple(ids), finish) for text, ids, finish in stored.popleft()]
        self.served += len(out)
        return out

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLik]:
        out: list[LogLik] = []
        for request in requests:
            stored = self._scored.get(_pair_key(request))
            if not stored:
                raise ReplayMissing(f"{self.source} hold no log-likelihood of {request!r}")
            logprob, greedy, tokens = stored.popleft()
            out.append(LogLik(float(logprob), bool(greedy), int(tokens)))
        self.scored += len(out)
        return out

    def close(self) -> None:
        pass
