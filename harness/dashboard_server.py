"""Starting the dashboard server: what `harness dashboard [--store PATH ...] [--port N]` runs.

`command()` is the Streamlit command line; `launch()` starts it as a child process with the
stores also passed in ``$HARNESS_STORE``; `serve()` is the CLI's whole job: it starts the
server, forwards SIGTERM / SIGINT / SIGHUP to it and exits with it, so stopping `harness
dashboard` by its process id (a service manager, a CI teardown) leaves no server holding the
port. The stores are fixed here, when the server starts: a visitor picks among them and can
name no other file. Nothing here imports Streamlit, so the CLI stays fast.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

# The dashboards sit on top of the orchestration, so the server is found by path, never imported.
APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
STORE_ENV = "HARNESS_STORE"  # the allowed stores, os.pathsep-separated
LOOPBACK = "127.0.0.1"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0


def _paths(stores: Sequence[Path | str] | Path | str | None) -> list[str]:
    if stores is None:
        return []
    items = [stores] if isinstance(stores, str | Path) else list(stores)
    return [str(Path(s).expanduser()) for s in items]


def command(stores: Sequence[Path | str] | Path | str | None, port: int = 8501, headless: bool = True,
            address: str = LOOPBACK) -> list[str]:
    """The command line that serves the dashboard for `stores` on `address`:`port` (loopback
    unless told otherwise). Usage statistics are never sent."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--server.address", address]
    paths = _paths(stores)
    if paths:
        cmd += ["--", *(arg for p in paths for arg in ("--store", p))]
    return cmd


def launch(stores: Sequence[Path | str] | Path | str | None, port: int = 8501, headless: bool = True,
           address: str = LOOPBACK, **popen: object) -> subprocess.Popen[bytes]:
    """Start the dashboard server in its own process group and return its process (the caller
    waits on or stops it). On Linux the server also gets SIGTERM if its parent dies."""
    env = dict(os.environ)
    paths = _paths(stores)
    if paths:
        env[STORE_ENV] = os.pathsep.join(paths)
    popen.setdefault("start_new_session", True)
    if sys.platform.startswith("linux"):
        popen.setdefault("preexec_fn", _die_with_parent)
    return subprocess.Popen(command(paths, port, headless, address), env=env, **popen)  # type: ignore[call-overload]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def is_loopback(address: str) -> bool:
    """Whether `address` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(address: str, port: int, stores: Sequence[str]) -> str | None:
    """What listening on `address` means for who can read what (None on loopback)."""
    if is_loopback(address):
        return None
    where = "every network interface of this machine" if address in ("0.0.0.0", "::", "") else address
    return (f"warning: the dashboard listens on {where} (port {port}) with no authentication. Anyone who can reach "
            f"that port can read every run, metric and stored sample in {len(stores)} store(s) -- model responses "
            "and the prompts of the refusal suite, harmful requests (AdvBench, XSTest unsafe) among them. Visitors "
            "can open only the stores listed here, never another file. To share it with a team, keep it on "
            "127.0.0.1 behind an authenticating reverse proxy, or restrict the port with a firewall "
            "(README: Sharing the dashboard).")


def serve(stores: Sequence[str], port: int, address: str = LOOPBACK, err: TextIO | None = None,
          **popen: object) -> int:
    """Run the server until it exits; SIGTERM / SIGINT / SIGHUP sent to this process are
    forwarded to the server's process group (killed after STOP_GRACE_S if it lingers).
    Returns the server's exit code (0 when it stopped because it was told to)."""
    err = err or sys.stderr
    warning = exposure_warning(address, port, stores)
    if warning:
        err.write(warning + "\n")
        err.flush()
    received: list[int] = []
    started: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        for server in started:
            _signal_group(server, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}  # before the start: no gap
    try:
        server = launch(stores, port, headless=True, address=address, **popen)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    started.append(server)
    if received:  # told to stop while it was starting
        _signal_group(server, received[-1])
    try:
        code = _wait(server, received)
    finally:
        if server.poll() is None:  # an exception here: never leave the server behind
            _signal_group(server, signal.SIGKILL)
            server.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if received and code in (0, *(-int(s) for s in FORWARDED)) else abs(code)


def _wait(server: subprocess.Popen[bytes], received: list[int], poll_s: float = 0.5) -> int:
    """The server's exit code; after a forwarded signal, SIGKILL once STOP_GRACE_S have passed."""
    deadline: float | None = None
    while True:
        try:
            return server.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        if received and deadline is None:
            deadline = time.monotonic() + STOP_GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            _signal_group(server, signal.SIGKILL)


def _signal_group(server: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(server.pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            server.send_signal(signum)
        except ProcessLookupError:
            pass
