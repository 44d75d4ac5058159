"""Starting the dashboard server: what `harness dashboard [--store PATH] [--port N]` runs.

`command()` is the Streamlit command line; `launch()` starts it as a child process with the
store also passed in ``$HARNESS_STORE``. Nothing here imports Streamlit, so the CLI stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The dashboards sit on top of the orchestration, so the server is found by path, never imported.
APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
STORE_ENV = "HARNESS_STORE"


def command(store: Path | str | None, port: int = 8501, headless: bool = True,
            address: str | None = None) -> list[str]:
    """The command line that serves the dashboard for `store` on `port` (all interfaces
    unless `address`, e.g. ``127.0.0.1``). Usage statistics are never sent."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    if address:
        cmd += ["--server.address", address]
    if store is not None:
        cmd += ["--", "--store", str(Path(store).expanduser())]
    return cmd


def launch(store_path: Path | str | None, port: int = 8501, headless: bool = True,
           address: str | None = None, **popen: object) -> subprocess.Popen[bytes]:
    """Start the dashboard server and return its process (the caller waits on or stops it)."""
    env = dict(os.environ)
    if store_path is not None:
        env[STORE_ENV] = str(Path(store_path).expanduser())
    return subprocess.Popen(command(store_path, port, headless, address), env=env, **popen)  # type: ignore[call-overload]
