"""Dashboard render time on a large store: 100 checkpoints × 4 suites × 500 samples.

    .venv/bin/python benchmarks/dashboard_render.py [--checkpoints 100] [--items 500] [--store PATH]

Writes a synthetic run through the real Store API (init -> pretrain -> sft -> reward, then
policy stages alternating ppo / dpo, all children of sft) with its effects from the real
attribution (several minutes on 2 cores: reuse the store with --store), then renders every page with
Streamlit's AppTest: "cold" is the first render with the dashboard's caches cleared (what a
new visitor sees after the store changed), "warm" a second render in a new session (cached).
Module imports are paid once by a warm-up render before timing. Goal: cold ≤ 3 s for
Overview and Attribution.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # no "missing ScriptRunContext" noise
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from dashboard_fixtures import write_synthetic_run  # noqa: E402

from harness.core.store import Store  # noqa: E402

APP = ROOT / "dashboards" / "app.py"
PAGES = ("overview", "attribution", "compare", "topics", "reward_hacking", "samples")
GOALS = {"overview": 3.0, "attribution": 3.0}


def stages(n: int) -> list[tuple[str, str, str | None]]:
    """`n` checkpoints: the default chain, then policy siblings from sft."""
    out: list[tuple[str, str, str | None]] = [("init", "init", None), ("pretrain", "pretrain", "init"),
                                              ("sft", "sft", "pretrain"), ("reward", "reward", "sft")]
    for i in range(n - len(out)):
        kind = "ppo" if i % 2 == 0 else "dpo"
        out.append((f"{kind}_{i:02d}", kind, "sft"))
    return out


def render(page: str) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads: not inflated by other
    processes on a busy machine) of one first render of `page` in a new session."""
    start, cpu = time.perf_counter(), time.process_time()
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.switch_page(f"views/{page}.py").run()
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=100)
    parser.add_argument("--items", type=int, default=500, help="samples per suite and checkpoint")
    parser.add_argument("--store", type=Path, help="reuse (or create) the store here instead of a temp dir")
    args = parser.parse_args()
    path = args.store or Path(tempfile.mkdtemp(prefix="dash-bench-")) / "results.sqlite"
    if not path.exists():
        start = time.perf_counter()
        with Store(path) as store:
            write_synthetic_run(store, stages(args.checkpoints), n_items=args.items, name="bench")
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    with Store(path, readonly=True) as store:
        run_id = store.require_run()
        n_cp = len(store.checkpoints(run_id))
        n_samples = len(store.samples(run_id))
        n_effects = len(store.effects(run_id))
    print(f"store: {n_cp} checkpoints, {n_samples} samples, {n_effects} effects, "
          f"{path.stat().st_size / 1e6:.1f} MB")

    os.environ["HARNESS_STORE"] = str(path)
    render("overview")  # warm-up: imports of streamlit, altair, the pages
    rows = []
    for page in PAGES:
        st.cache_data.clear()
        cold = render(page)
        warm = render(page)
        rows.append((page, *cold, *warm))

    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; seconds (wall / CPU of this process)")
    print(f"{'page':<16}{'cold wall':>10}{'cold cpu':>10}{'warm wall':>10}{'warm cpu':>10}  goal (cold)")
    for page, cold, cold_cpu, warm, warm_cpu in rows:
        goal = GOALS.get(page)
        verdict = "" if goal is None else f"≤ {goal:.0f} s {'ok' if cold <= goal else 'MISSED'}"
        print(f"{page:<16}{cold:>10.2f}{cold_cpu:>10.2f}{warm:>10.2f}{warm_cpu:>10.2f}  {verdict}")


if __name__ == "__main__":
    main()
