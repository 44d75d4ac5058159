"""The terminal side of :mod:`harness.core.progress`: one display per command.

- In a terminal (:class:`LiveDisplay`): rich progress bars, one per running task (a suite on a
  checkpoint, a training stage): items done / total, generated tokens/s (or the last loss), ETA.
  A finished task's bar goes; one line stays saying what it did and how fast.
- In CI (``CI`` set to true, or stdout not a terminal; :class:`LineDisplay`): no bars, that one
  line per finished task; a training stage also prints a line at every tenth of its steps.

Third-party bars (tqdm: lm-eval's request building, datasets, transformers' weight loading) are
switched off while a display runs: ours says the same, once. :func:`progress_display` installs it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from harness.core import progress

QUIET_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def line_mode(console: Console) -> bool:
    """Whether progress is printed as lines: under CI (``CI=true``/``1``) or when output is not a terminal."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes") or not console.is_terminal


def silence_third_party_bars() -> None:
    """tqdm bars off (read when tqdm is imported) unless the user set them; switched off too in the
    Hugging Face libraries already imported."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    with contextlib.suppress(Exception):
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        if "huggingface_hub" in sys.modules:
            sys.modules["huggingface_hub"].utils.disable_progress_bars()


class _Task:
    """What every display's task keeps: the phases it went through, for its closing line."""

    def __init__(self, name: str, report: bool, milestones: bool) -> None:
        self.name, self.report, self.milestones = name, report, milestones
        self.start = time.perf_counter()
        self.phase, self.total, self.done, self.note_text = "", None, 0, ""
        self.phase_start = self.start
        self.counts: dict[str, int] = {}  # phase -> items done in it
        self.tokens, self.generate_s = 0, 0.0

    def begin(self, phase: str, total: int | None, done: int = 0) -> None:
        self._close_phase()
        self.phase, self.total, self.done, self.phase_start = phase, total, done, time.perf_counter()

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        self.done += items
        self.tokens += tokens
        self.counts[self.phase] = self.counts.get(self.phase, 0) + items

    def note(self, text: str) -> None:
        self.note_text = text

    def _close_phase(self) -> None:
        if self.phase == "generate":
            self.generate_s += time.perf_counter() - self.phase_start
        self.phase = ""

    def summary(self) -> str | None:
        """The closing line: what was done, how fast (None when nothing was)."""
        self._close_phase()
        if not self.report or not self.counts:
            return None
        parts = []
        if "generate" in self.counts:
            rate = f" ({self.tokens / self.generate_s:,.0f} tok/s)" if self.generate_s > 0 else ""
            parts.append(f"{self.counts['generate']} prompts → {self.tokens:,} tokens{rate}")
        if "score" in self.counts:
            parts.append(f"{self.counts['score']} scored")
        parts += [f"{n} {phase}s" for phase, n in self.counts.items() if phase not in ("generate", "score")]
        return f"  {self.name}: {', '.join(parts)}, {time.perf_counter() - self.start:.1f}s"


class LineDisplay:
    """Progress as plain lines (CI, logs): one per finished task, and a training stage's tenths."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self) -> LineDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=False)

    @contextlib.contextmanager
    def task(self, name: str, *, report: bool = True, milestones: bool = False) -> Iterator[progress.Meter]:
        task = _LineTask(self, name, report, milestones)
        yield task
        line = task.summary()
        if line:
            self._say(line)


class _LineTask(_Task):
    def __init__(self, display: LineDisplay, name: str, report: bool, milestones: bool) -> None:
        super().__init__(name, report, milestones)
        self.display = display

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        super().advance(items, tokens)
        if not self.milestones or not self.total:
            return
        every = max(self.total // 10, 1)
        if self.done % every == 0 or self.done == self.total:  # about ten lines, as training always printed
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(self.done, 1) * (self.total - self.done)
            note = f" {self.note_text}" if self.note_text else ""
            self.display._say(f"  {self.name}: {self.phase} {self.done}/{self.total}{note}  "
                              f"elapsed {elapsed:.0f}s  eta {eta:.0f}s")


class _RateColumn(ProgressColumn):
    """Generated tokens per second in the current phase, else the task's note, else the phase."""

    def render(self, task: Any) -> Text:
        if task.total is None:  # loading: the description says it
            return Text("")
        tokens, elapsed = task.fields.get("tokens", 0), task.elapsed or 0.0
        if task.fields.get("note"):
            return Text(task.fields["note"], style="progress.data.speed")
        if tokens and elapsed > 0:
            return Text(f"{tokens / elapsed:,.0f} tok/s", style="progress.data.speed")
        return Text(task.fields.get("phase", ""), style="progress.data.speed")


class _CountColumn(MofNCompleteColumn):
    """``done/total``; nothing for a task without a count (loading a model)."""

    def render(self, task: Any) -> Text:
        return super().render(task) if task.total is not None else Text("")


class _TimeColumn(TimeRemainingColumn):
    """``ETA h:mm:ss``; the time elapsed for a task without a count.

    rich estimates the speed from the advances it has seen (two at least), so after a phase's first
    batch its ETA is ``-:--:--``, for as long as one batch takes (minutes on a large model); until it
    has its own, the ETA is the phase's items done so far over its time elapsed."""

    def render(self, task: Any) -> Text:
        if task.total is None:
            return Text(f"{task.elapsed or 0:.0f}s", style="progress.elapsed")
        done, elapsed = task.completed - task.fields.get("start_done", 0), task.elapsed or 0.0
        if task.time_remaining is None and not task.finished and done > 0 and elapsed > 0:
            left = (task.total - task.completed) * elapsed / done
            return Text.assemble("ETA ", Text(format_eta(left), style="progress.remaining"))
        return Text.assemble("ETA ", super().render(task))


def format_eta(seconds: float) -> str:
    """``h:mm:ss``, as rich writes its ETA (whole seconds, rounded up)."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class LiveDisplay:
    """rich progress bars, one per running task (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=16), _CountColumn(), _RateColumn(), _TimeColumn(),
            console=console, transient=True, refresh_per_second=4,
        )

    def __enter__(self) -> LiveDisplay:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    @contextlib.contextmanager
    def task(self, name: str, *, report: bool = True, milestones: bool = False) -> Iterator[progress.Meter]:
        task = _LiveTask(self.bars, name, report, milestones)
        try:
            yield task
        finally:
            if task.id is not None:
                self.bars.remove_task(task.id)
        line = task.summary()
        if line:
            self.console.print(line, highlight=False, markup=False, soft_wrap=False)


class _LiveTask(_Task):
    def __init__(self, bars: Progress, name: str, report: bool, milestones: bool) -> None:
        super().__init__(name, report, milestones)
        self.bars, self.id = bars, None

    def begin(self, phase: str, total: int | None, done: int = 0) -> None:
        super().begin(phase, total, done)
        fields = {"phase": phase, "tokens": 0, "note": "", "start_done": done}
        if self.id is None:
            self.id = self.bars.add_task(self.name, total=total, completed=done, **fields)
        else:  # a new phase: its own count, clock and speed
            self.bars.reset(self.id, total=total, completed=done, **fields)
        self.phase_tokens = 0

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        super().advance(items, tokens)
        if self.id is not None:
            self.phase_tokens += tokens
            self.bars.update(self.id, advance=items, tokens=self.phase_tokens)

    def note(self, text: str) -> None:
        super().note(text)
        if self.id is not None:
            self.bars.update(self.id, note=text)


@contextlib.contextmanager
def progress_display(console: Console) -> Iterator[None]:
    """Show the block's progress on ``console``: bars in a terminal, lines in CI (see the module
    docstring). Inside a block that already shows progress, the outer display is kept."""
    if progress.installed():
        yield
        return
    silence_third_party_bars()
    display = LineDisplay(console) if line_mode(console) else LiveDisplay(console)
    with display, progress.showing(display):
        yield


class TrainingProgress:
    """A transformers ``TrainerCallback`` (by the methods it has: the trainer calls ``on_<event>`` by
    name) that moves ``meter`` one step per optimizer step and shows the last loss. Not a subclass,
    so making one does not import transformers: a cached stage never trains and never needs it."""

    def __init__(self, meter: progress.Meter) -> None:
        self.meter, self.seen = meter, None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.meter.note(f"loss {float(logs['loss']):.3f}")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.seen is None:  # the first step seen (after a resume: the trainer's step count goes on)
            self.seen = state.global_step - 1
            self.meter.begin("step", max(int(state.max_steps), 1), self.seen)
        self.meter.advance(state.global_step - self.seen)
        self.seen = state.global_step

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):  # every other event: nothing to do
            return lambda *args, **kwargs: None
        raise AttributeError(name)
