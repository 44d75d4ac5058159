"""`make demo`'s wall time: the default run trained and evaluated from nothing, timed, with its verdicts.

Runs ``harness run default`` into a fresh ``--out`` (a new temporary folder unless given; a folder that
already holds the run's checkpoints would time a rerun, not the demo), in the environment ``make demo``
gives it (torch threads: ``training.process.cpu_threads``, i.e. the usable cores unless
``OMP_NUM_THREADS`` / ``HARNESS_TORCH_THREADS`` is set), then prints:

- the wall time of the whole run and the goal (<= 600 s on 2 idle cores, issue 19);
- each stage's training wall time and torch threads (its manifest) and each checkpoint's evaluation
  time (the run's own "evaluated ... in Ns" lines);
- the report's "planted effects recovered" and "reward hacking at ppo" lines.

Run it on idle cores: another busy process on 2 cores makes every number meaningless.

    .venv/bin/python benchmarks/demo_time.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "CI": "true", "COLUMNS": "200"}  # as `make demo`
GOAL_S = 600


def harness(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env={**os.environ, **ENV},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"`harness {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return " ".join(proc.stdout.split())  # one line: the CI log wraps long lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="a fresh output_dir (default: a new temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="demo-time-"))
    if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        sys.exit(f"{out} already holds checkpoints: give a fresh --out to time the demo from nothing")
    start = time.perf_counter()
    log = harness("run", "default", f"output_dir={out}")
    wall = time.perf_counter() - start
    print(f"`harness run default` from nothing: {wall:.0f} s wall (goal <= {GOAL_S} s on 2 idle cores) -> {out}")
    for manifest in sorted((out / "checkpoints").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        metrics = json.loads(manifest.read_text()).get("metrics", {})
        print(f"  train {manifest.parent.name:24} {metrics.get('wall_s', float('nan')):7.1f} s"
              f"  ({metrics.get('torch_threads', '?')} torch threads)")
    for stage, seconds in re.findall(r"evaluated (\w+): [\w, ]+ in (\d+)s", log):
        print(f"  evaluate {stage:22} {int(seconds):7d} s")
    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--store", str(out)], cwd=ROOT,
                            env={**os.environ, **ENV}, capture_output=True, text=True).stdout
    for line in report.splitlines():
        if line.startswith(("planted effects recovered", "reward hacking at ppo")):
            print(line)


if __name__ == "__main__":
    main()
