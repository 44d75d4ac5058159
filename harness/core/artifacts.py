"""Where things live on disk, and the checkpoint manifest.

This is the ONLY module that maps an experiment, a stage or a run to a path. Checkpoints
are content-addressed (``checkpoints/<stage>-<hash12>``): the hash covers the stage's
config, the hashes of every checkpoint it reads, its data fingerprint and the stage code's
version, so an identical stage is found and skipped, and any change upstream retrains
everything downstream. A checkpoint counts only once its completion marker exists; the
marker is written last, after the manifest says ``complete``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STORE_FILENAME = "results.sqlite"
MANIFEST = "manifest.json"
COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE_DIR = "trainer_state"  # intermediate trainer checkpoints, for resuming
Status = Literal["started", "complete", "failed"]


# --------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_paths(paths: list[Path | str]) -> str:
    """A hash of the named files' (or directories') contents, independent of where they live."""
    digest = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            rel = f.relative_to(p).as_posix() if p.is_dir() else p.name
            digest.update(f"{rel}\0{sha256_file(f)}\0".encode())
    return digest.hexdigest()


def content_hash(config: dict[str, Any], input_hashes: dict[str, str], data_fingerprint: str, code_version: str) -> str:
    """The identity of a stage's output: same hash, same checkpoint."""
    return sha256_text(
        canonical_json({"config": config, "inputs": input_hashes, "data": data_fingerprint, "code": code_version})
    )


# --------------------------------------------------------------------------- atomic writes


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + fsync + ``os.replace``: old or new, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# --------------------------------------------------------------------------- manifest


class InputRef(BaseModel):
    """A checkpoint a stage read: which stage, its content hash, where it was."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    content_hash: str
    path: str


class Manifest(BaseModel):
    """What made a checkpoint, and how that went. Lives in ``<checkpoint>/manifest.json``."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    stage: str = Field(description="Stage name in the pipeline config.")
    kind: str = Field(description="Stage kind (pretrain, sft, reward, ppo, dpo, init).")
    content_hash: str = Field(description="Hash of config + input hashes + data fingerprint + code version.")
    inputs: dict[str, InputRef] = Field(default_factory=dict, description="Role (parent, reward, ...) -> checkpoint read.")
    config: dict[str, Any] = Field(default_factory=dict, description="The stage's resolved config.")
    data_fingerprint: str = ""
    code_version: str = ""
    package_version: str = ""
    git_revision: str | None = None
    status: Status = "started"
    error: str | None = None
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, description="Training metrics (final loss, tokens/s, ...).")
    log_history: list[dict[str, Any]] = Field(default_factory=list, description="Per-step training logs.")


@contextmanager
def exclusive(ckpt_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a checkpoint folder (``.locks/<name>.lock`` beside it) across
    processes: two runs sharing an output_dir never train the same checkpoint at once. The
    lock is the kernel's (``flock``), so a killed holder releases it."""
    lock = ckpt_dir.parent / ".locks" / f"{ckpt_dir.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_manifest(ckpt_dir: Path, manifest: Manifest) -> None:
    write_json_atomic(ckpt_dir / MANIFEST, manifest.model_dump(mode="json"))


def read_manifest(ckpt_dir: Path) -> Manifest:
    path = Path(ckpt_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; not a harness checkpoint")
    return Manifest.model_validate_json(path.read_text(encoding="utf-8"))


def is_complete(ckpt_dir: Path, expected_hash: str | None = None) -> bool:
    """True only when the marker exists and agrees with a ``complete`` manifest (and the expected hash)."""
    ckpt_dir = Path(ckpt_dir)
    marker = ckpt_dir / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        manifest = read_manifest(ckpt_dir)
    except (FileNotFoundError, ValueError):
        return False
    recorded = marker.read_text(encoding="utf-8").strip()
    ok = manifest.status == "complete" and recorded == manifest.content_hash
    return ok and (expected_hash is None or expected_hash == manifest.content_hash)


def mark_complete(ckpt_dir: Path, manifest: Manifest) -> None:
    """Manifest first (status complete), the marker last: a crash in between leaves it incomplete."""
    manifest.status = "complete"
    manifest.finished_at = time.time()
    write_manifest(ckpt_dir, manifest)
    write_text_atomic(Path(ckpt_dir) / COMPLETE_MARKER, manifest.content_hash + "\n")


def mark_failed(ckpt_dir: Path, manifest: Manifest, error: str) -> None:
    manifest.status = "failed"
    manifest.error = error
    manifest.finished_at = time.time()
    (Path(ckpt_dir) / COMPLETE_MARKER).unlink(missing_ok=True)
    write_manifest(ckpt_dir, manifest)


def require_complete(ckpt_dir: Path) -> Manifest:
    """The manifest of a complete checkpoint, or a clear error: half-written checkpoints are never used."""
    ckpt_dir = Path(ckpt_dir)
    if not is_complete(ckpt_dir):
        status = "missing"
        try:
            status = read_manifest(ckpt_dir).status
        except (FileNotFoundError, ValueError):
            pass
        raise RuntimeError(f"{ckpt_dir}: checkpoint is not complete (status: {status}); refusing to use it")
    return read_manifest(ckpt_dir)


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alignment-harness")
    except PackageNotFoundError:
        return "0+unknown"


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """All paths under one ``output_dir``. Several runs may share it (and its store)."""

    output_dir: Path

    @classmethod
    def of(cls, output_dir: str | Path) -> Layout:
        return cls(Path(output_dir).expanduser().resolve())

    @property
    def store_path(self) -> Path:
        return self.output_dir / STORE_FILENAME

    def world_dir(self, world_hash: str) -> Path:
        """Generated worlds are shared by every run with the same world config."""
        return self.output_dir / "worlds" / world_hash[:12]

    def checkpoint_dir(self, stage: str, content_hash: str) -> Path:
        return self.output_dir / "checkpoints" / f"{stage}-{content_hash[:12]}"

    def trainer_state_dir(self, ckpt_dir: Path) -> Path:
        return ckpt_dir / TRAINER_STATE_DIR

    def run_dir(self, run_id: str) -> Path:
        return self.output_dir / "runs" / run_id

    def summary_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "summary.md"

    def report_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "report.md"
