"""Progress of long work: reported where the work happens, shown by whoever runs the command.

A command installs one display for its duration (:func:`showing`; ``harness.progress_display``
has the terminal ones). The orchestration opens a :func:`task` per unit a person waits for (a
suite on a checkpoint, a training stage) and gets a :class:`Meter` back. Code deeper down reports
without being handed anything: a backend calls :func:`advance` after each batch, and the call it
is answering routes that to the right meter (:func:`reporting`, set by
``harness.backends.metered.MeteredBackend`` around each backend call). Suites and trainers stay
unaware of it. With no display installed (library use, tests) every call here does nothing.

Standard library only: the base of every layer imports it, and it must not slow a start-up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol


class Meter(Protocol):
    """One task's progress: phases of ``total`` items (``begin``), advanced as items finish."""

    def begin(self, phase: str, total: int | None, done: int = 0) -> None:
        """A new phase ("generate", "score", "step") of ``total`` items (None: not counted, e.g. loading a
        model), ``done`` of them already done."""
        ...

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        """``items`` more finished, having generated ``tokens`` tokens."""
        ...

    def note(self, text: str) -> None:
        """A short status shown next to the count (e.g. the last training loss)."""
        ...


class Display(Protocol):
    def task(self, name: str, *, report: bool = True,
             milestones: bool = False) -> contextlib.AbstractContextManager[Meter]:
        """A task shown while the block runs. ``report``: one line when it ends (what it did, how
        fast); ``milestones``: in line mode, a line at every tenth of a phase too (long training)."""
        ...


class _Silent:
    """The display (and meter) when nobody shows progress."""

    def begin(self, phase: str, total: int | None, done: int = 0) -> None:
        pass

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    @contextlib.contextmanager
    def task(self, name: str, *, report: bool = True, milestones: bool = False) -> Iterator[Meter]:
        yield self


SILENT = _Silent()
_DISPLAY: ContextVar[Display] = ContextVar("harness_progress_display", default=SILENT)
_CALL: ContextVar[Meter | None] = ContextVar("harness_progress_call", default=None)


def installed() -> bool:
    """Whether a display is showing progress now."""
    return _DISPLAY.get() is not SILENT


@contextlib.contextmanager
def _setting(var: ContextVar[Any], value: Any) -> Iterator[Any]:
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def showing(display: Display) -> contextlib.AbstractContextManager[Display]:
    """Show the progress of everything the block does on ``display``."""
    return _setting(_DISPLAY, display)


def task(name: str, *, report: bool = True, milestones: bool = False) -> contextlib.AbstractContextManager[Meter]:
    """A task on the installed display (a silent one when there is none); see :class:`Display`."""
    return _DISPLAY.get().task(name, report=report, milestones=milestones)


@contextlib.contextmanager
def loading(name: str) -> Iterator[None]:
    """A task without a count while the block loads ``name`` (a model: its libraries and weights)."""
    with task(f"loading {name}", report=False) as meter:
        meter.begin("loading", None)
        yield


def reporting(meter: Meter) -> contextlib.AbstractContextManager[Meter]:
    """Route the :func:`advance` calls made inside the block to ``meter``."""
    return _setting(_CALL, meter)


def advance(items: int = 1, tokens: int = 0) -> None:
    """A backend finished ``items`` requests (``tokens`` generated): counted by the call's meter, if any."""
    meter = _CALL.get()
    if meter is not None:
        meter.advance(items, tokens)
