"""A backend whose calls show on a progress meter: prompts answered, tokens generated, requests scored.

:class:`MeteredBackend` wraps any backend for one suite run. Each ``generate`` call is a phase of
``len(prompts)`` items, each ``loglikelihood`` call one of ``len(requests)``; while the call runs,
the wrapped backend's per-batch :func:`harness.core.progress.advance` reports move the meter (the
transformers backend reports every batch), and whatever it did not report (an engine answering all
at once) is counted when the call returns. Every other attribute is the wrapped backend's.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend, Completion, LogLik, Prompt, Sampling
from harness.core import progress
from harness.core.progress import Meter


class _Counted:
    """Forwards a call's reports to the task's meter and keeps what was reported."""

    def __init__(self, meter: Meter) -> None:
        self.meter, self.items, self.tokens = meter, 0, 0

    def begin(self, phase: str, total: int | None, done: int = 0) -> None:
        pass  # the call's phase is the wrapper's

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        self.items, self.tokens = self.items + items, self.tokens + tokens
        self.meter.advance(items, tokens)

    def note(self, text: str) -> None:
        self.meter.note(text)


class MeteredBackend:
    """``inner`` with its calls reported to ``meter`` (see the module docstring)."""

    def __init__(self, inner: Backend, meter: Meter) -> None:
        self.inner, self.meter = inner, meter
        self.name, self.checkpoint, self.dtype_name = inner.name, inner.checkpoint, inner.dtype_name

    def __getattr__(self, name: str) -> Any:  # tokenizer and the like, read by adapters
        return getattr(self.inner, name)

    @property
    def has_chat_template(self) -> bool:
        return self.inner.has_chat_template

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        self.meter.begin("generate", len(prompts))
        with progress.reporting(_Counted(self.meter)) as counted:
            outs = self.inner.generate(prompts, sampling)
        self._rest(len(prompts) - counted.items, sum(len(c.token_ids) for c in outs) - counted.tokens)
        return outs

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLik]:
        self.meter.begin("score", len(requests))
        with progress.reporting(_Counted(self.meter)) as counted:
            outs = self.inner.loglikelihood(requests)
        self._rest(len(requests) - counted.items, 0)
        return outs

    def _rest(self, items: int, tokens: int) -> None:
        """What the call answered that the wrapped backend did not report batch by batch."""
        if items > 0 or tokens > 0:
            self.meter.advance(max(items, 0), max(tokens, 0))

    def close(self) -> None:
        self.inner.close()
