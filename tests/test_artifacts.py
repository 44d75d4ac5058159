"""Manifests and markers: atomic writes, completion semantics, content hashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.core.artifacts import (
    COMPLETE_MARKER,
    Layout,
    Manifest,
    content_hash,
    fingerprint_paths,
    is_complete,
    mark_complete,
    mark_failed,
    read_manifest,
    require_complete,
    write_manifest,
)

WRITER = r"""
import sys
from pathlib import Path
from harness.core.artifacts import Manifest, write_manifest
ckpt = Path(sys.argv[1])
big = [{"step": i, "loss": 1.0 / (i + 1), "pad": "x" * 200} for i in range(4000)]
i = 0
while True:
    tag = "new" if i % 2 else "old"
    write_manifest(ckpt, Manifest(stage=tag, kind="sft", content_hash=tag * 8, log_history=big))
    i += 1
    if i == 1:
        print("ready", flush=True)
"""


def test_killed_writer_leaves_old_or_new_manifest(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ckpt)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.037 * attempt)  # land the kill at different points of a write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        manifest = read_manifest(ckpt)  # parses: never a partial file
        assert manifest.stage in {"old", "new"}
        assert len(manifest.log_history) == 4000
        assert manifest.content_hash == manifest.stage * 8
    leftovers = [p for p in os.listdir(ckpt) if p != "manifest.json"]
    assert all(p.endswith(".tmp") for p in leftovers)  # only temp files a kill interrupted, never read


def test_completion_marker_written_last(tmp_path: Path) -> None:
    ckpt = tmp_path / "c"
    manifest = Manifest(stage="sft", kind="sft", content_hash="abc")
    write_manifest(ckpt, manifest)
    assert not is_complete(ckpt)
    mark_complete(ckpt, manifest)
    assert is_complete(ckpt) and is_complete(ckpt, "abc") and not is_complete(ckpt, "other")
    assert read_manifest(ckpt).finished_at is not None
    # a marker whose hash disagrees with the manifest (e.g. a rewrite interrupted) is not complete
    (ckpt / COMPLETE_MARKER).write_text("stale\n")
    assert not is_complete(ckpt)
    mark_failed(ckpt, manifest, "boom")
    assert not is_complete(ckpt)
    try:
        require_complete(ckpt)
    except RuntimeError as exc:
        assert "status: failed" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a failed checkpoint must not be usable")


def test_content_hash_covers_every_input(tmp_path: Path) -> None:
    base = content_hash({"lr": 1}, {"parent": "p"}, "d", "1")
    assert base == content_hash({"lr": 1}, {"parent": "p"}, "d", "1")
    assert len({
        base,
        content_hash({"lr": 2}, {"parent": "p"}, "d", "1"),
        content_hash({"lr": 1}, {"parent": "q"}, "d", "1"),
        content_hash({"lr": 1}, {"parent": "p", "reward": "r"}, "d", "1"),
        content_hash({"lr": 1}, {"parent": "p"}, "e", "1"),
        content_hash({"lr": 1}, {"parent": "p"}, "d", "2"),
    }) == 6


def test_fingerprint_ignores_location(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jsonl").write_text(json.dumps({"k": 1}))
    assert fingerprint_paths([tmp_path / "a"]) == fingerprint_paths([tmp_path / "b"])
    (tmp_path / "b" / "x.jsonl").write_text(json.dumps({"k": 2}))
    assert fingerprint_paths([tmp_path / "a"]) != fingerprint_paths([tmp_path / "b"])


def test_layout_paths_live_under_output_dir(tmp_path: Path) -> None:
    layout = Layout.of(tmp_path / "out")
    for p in (layout.store_path, layout.world_dir("f" * 64), layout.checkpoint_dir("sft", "a" * 64), layout.run_dir("r1")):
        assert layout.output_dir in p.parents
    assert layout.checkpoint_dir("sft", "a" * 64).name == "sft-" + "a" * 12
