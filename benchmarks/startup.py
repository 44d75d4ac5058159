"""Start-up: how long a no-op rerun of a cached run takes, and where its import time goes.

Runs ``harness run smoke`` once into ``--out`` (fills the cache; a no-op itself when it is filled
already), then times ``--repeats`` no-op reruns, each a fresh ``harness`` process: wall seconds and the
process's CPU seconds (user + system; on shared cores the wall time includes waiting for them). Then
one rerun under ``python -X importtime``: the modules imported at the top level with their cumulative
import time, and which heavy libraries (torch, transformers, trl, lm_eval, vllm, datasets, scipy) a
no-op imported (goal: none). Goal: a no-op rerun <= 3 s.

``--config default`` measures the default run instead; its output_dir (``runs/default``) must hold a
complete run of the current code, or the "rerun" trains and evaluates (10+ minutes).

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--out runs/bench-startup] [--config default]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "lm_eval", "vllm", "datasets", "scipy")
ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "CI": "true"}  # as `make demo`


def harness(args: list[str], importtime: bool = False) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``harness ARGS`` in a fresh interpreter: (wall s, CPU s, the finished process)."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "harness.cli", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"`harness {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc


def import_breakdown(stderr: str, top: int) -> tuple[list[tuple[float, str]], list[str]]:
    """(the ``top`` top-level imports by cumulative seconds, the heavy libraries imported at all)."""
    rows, imported = [], set()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        cumulative, indent, name = int(m.group(1)), len(m.group(2)), m.group(3)
        if name.split(".")[0] in HEAVY:
            imported.add(name.split(".")[0])
        if indent == 1:
            rows.append((cumulative / 1e6, name))
    return sorted(rows, reverse=True)[:top], sorted(imported)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="smoke", help="packaged config to rerun (smoke, or default if filled)")
    parser.add_argument("--out", default="runs/bench-startup", help="output_dir for smoke (default keeps its own)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="top-level imports to list")
    args = parser.parse_args()
    run = ["run", args.config] + ([f"output_dir={args.out}"] if args.config == "smoke" else [])
    wall, cpu, proc = harness(run)
    done = re.search(r"complete in .*?evaluations computed: \d+", " ".join(proc.stdout.split()))
    print(f"fill: `harness {' '.join(run)}` took {wall:.1f} s ({done.group(0) if done else 'no summary line'})")
    walls, cpus = [], []
    for _ in range(args.repeats):
        wall, cpu, proc = harness(run)
        if "trained: nothing" not in " ".join(proc.stdout.split()):
            sys.exit(f"not a no-op rerun:\n{proc.stdout[-2000:]}")
        walls.append(wall)
        cpus.append(cpu)
    print(f"no-op rerun of `harness {' '.join(run)}`: {min(walls):.2f} s wall (best of {args.repeats}; median "
          f"{statistics.median(walls):.2f}), {statistics.median(cpus):.2f} s CPU (median); goal <= 3 s")
    _, _, proc = harness(run, importtime=True)
    rows, heavy = import_breakdown(proc.stderr, args.top)
    print(f"import time of the no-op (python -X importtime, top-level imports, cumulative; "
          f"total {sum(s for s, _ in import_breakdown(proc.stderr, 10**6)[0]):.2f} s):")
    for seconds, name in rows:
        print(f"  {seconds:6.3f} s  {name}")
    print(f"heavy libraries imported: {', '.join(heavy) or 'none'} (of {', '.join(HEAVY)})")


if __name__ == "__main__":
    main()
