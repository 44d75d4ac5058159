"""Running lm-evaluation-harness offline on a harness backend: task lookup (the world's task YAMLs or
an include path; lm-eval's built-in index only when a name is found nowhere else), offline mode, and
errors that name the task that cannot load."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.backends.base import Backend
from suites.items import Item, items_hash
from suites.lm_eval_tasks import write_tasks

log = logging.getLogger(__name__)
NAME = "capabilities"  # the suite whose options these are (named in errors)
OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


class CapabilityTaskError(RuntimeError):
    """A configured lm-eval task cannot be found or cannot load its data."""


@contextlib.contextmanager
def offline_mode(enabled: bool) -> Iterator[None]:
    """Hugging Face datasets/hub offline for the block (env vars and the already-imported modules'
    flags, which are read at import time); everything restored afterwards."""
    if not enabled:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in OFFLINE_ENV}
    flags = [(sys.modules.get("datasets.config"), ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
             (sys.modules.get("huggingface_hub.constants"), ("HF_HUB_OFFLINE",))]
    saved_flags = [(mod, name, getattr(mod, name)) for mod, names in flags if mod is not None
                   for name in names if hasattr(mod, name)]
    os.environ.update({k: "1" for k in OFFLINE_ENV})
    for mod, name, _ in saved_flags:
        setattr(mod, name, True)
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for mod, name, value in saved_flags:
            setattr(mod, name, value)


_BUILTIN_MANAGERS: dict[tuple[str, ...], Any] = {}  # include paths -> TaskManager with lm-eval's built-ins


def world_tasks_dir(items: Sequence[Item]) -> Path:
    """The lm-eval tasks of ``items``, written (again; idempotent) into a folder named by their hash
    under the temp dir: a stable path, so an index built over it can be reused across checkpoints."""
    out = Path(tempfile.gettempdir()) / "harness-lm-eval-tasks" / items_hash(list(items))[:16]
    write_tasks(items, out)
    return out


def task_manager(tasks: Sequence[str], include_path: Sequence[Path | str]) -> Any:
    """A ``TaskManager`` over ``include_path``; lm-eval's built-in tasks are indexed (slow) only
    when a requested name is not found there. Unknown names raise :class:`CapabilityTaskError`."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_path] or None
    manager = TaskManager(include_path=paths, include_defaults=False)
    missing = [t for t in tasks if t not in manager.all_tasks and not str(t).endswith((".yaml", ".yml"))]
    if missing:
        key = tuple(paths or ())
        if key not in _BUILTIN_MANAGERS:
            log.info("lm-eval tasks %s are not in the include path; indexing lm-eval's built-in tasks", missing)
            _BUILTIN_MANAGERS[key] = TaskManager(include_path=paths, include_defaults=True)
        manager = _BUILTIN_MANAGERS[key]
        unknown = [t for t in missing if t not in manager.all_tasks]
        if unknown:
            hints = []
            for t in unknown:
                close = difflib.get_close_matches(t, manager.all_tasks, n=3)
                hints.append(f"{t!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise CapabilityTaskError(
                f"suite {NAME!r}: unknown lm-eval task(s) {', '.join(hints)}; not a built-in task, group or tag "
                f"and not in include_path {[str(p) for p in include_path] or 'none'}")
    return manager


def _load_failure(manager: Any, tasks: Sequence[str], offline: bool) -> CapabilityTaskError | None:
    """The first configured task that cannot load (its data), as an error naming it; None if all load."""
    for name in tasks:
        try:
            manager.load([name])
        except Exception as err:  # noqa: BLE001 - any loading failure is reported with the task's name
            how = ("the harness runs lm-eval offline (HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1), so a task whose "
                   "dataset is on the Hugging Face Hub needs it in the local datasets cache already; give a task "
                   "YAML with local `data_files` (absolute paths) through option include_path, or set option "
                   "offline: false on a machine with network"
                   if offline else "check the task's dataset_path / data_files")
            return CapabilityTaskError(
                f"suite {NAME!r}: lm-eval task {name!r} cannot load its data ({type(err).__name__}: {err}); {how}")
    return None


def run_lm_eval(
    backend: Backend,
    tasks: Sequence[str],
    include_path: Sequence[Path | str] = (),
    *,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    bootstrap_iters: int = 1000,
    offline: bool = True,
    seed: int = 0,
    evaluation_tracker: Any = None,
) -> dict[str, Any]:
    """lm-eval's results dict (``simple_evaluate``'s, with ``samples``) for ``tasks`` on ``backend``.
    ``evaluation_tracker``: an ``lm_eval.loggers.EvaluationTracker`` to record the run's settings
    (save its files with it afterwards, as lm-eval's CLI does)."""
    import lm_eval

    from suites.lm_eval_adapter import BackendLM

    with offline_mode(offline):
        manager = task_manager(tasks, include_path)
        try:
            results = lm_eval.simple_evaluate(
                model=BackendLM(backend, seed=seed), tasks=list(tasks), task_manager=manager, limit=limit,
                num_fewshot=num_fewshot, bootstrap_iters=bootstrap_iters, log_samples=True,
                evaluation_tracker=evaluation_tracker,
            )
        except CapabilityTaskError:
            raise
        except Exception as err:
            failure = _load_failure(manager, tasks, offline)
            if failure is not None:
                raise failure from err
            raise
    if results is None:  # only non-zero ranks get None; we run one process
        raise RuntimeError("lm-eval returned no results")
    return results
