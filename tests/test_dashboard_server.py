"""`harness dashboard` as a process: the Streamlit command line, loopback unless told
otherwise (checked on the listening socket), a warning when told otherwise, SIGTERM to the
harness process leaving no server and no open port, and the real-browser test (`-m browser`,
`make test-browser`): every page in headless Chromium and the links `harness report
--dashboard-url` prints opening their exact views."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from harness import dashboard_server
from harness.dashboard_server import command, exposure_warning, is_loopback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_fixtures import RUN_NAME, make_demo_store  # noqa: E402

HARNESS = Path(sys.executable).with_name("harness")
CRASH = "could not be drawn"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("demo") / "results.sqlite"
    return path, make_demo_store(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(port: int) -> list[str]:
    """The local addresses of LISTEN sockets on `port` (from /proc/net/tcp and tcp6, hex)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.append(address)
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as s:  # SO_REUSEADDR: a TIME_WAIT left by our requests is no listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not listeners(port)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@contextmanager
def harness_dashboard(store: Path, port: int, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`harness dashboard --store STORE --port PORT` until its server answers; killed afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(HARNESS), "dashboard", "--store", str(store), "--port", str(port), *extra],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


def test_launch_command() -> None:
    cmd = command([Path("out"), Path("other")], 8600)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4].endswith("dashboards/app.py")
    assert cmd[-4:] == ["--store", "out", "--store", "other"] and "8600" in cmd and "--server.headless" in cmd
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"  # loopback unless told otherwise
    shared = command("out", 1, address="0.0.0.0")
    assert shared[shared.index("--server.address") + 1] == "0.0.0.0"


def test_beyond_loopback_warns_of_what_is_exposed(monkeypatch) -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.1.2.3", "example.org"]))
    assert exposure_warning("127.0.0.1", 8501, ["s"]) is None
    started: list[tuple] = []
    monkeypatch.setattr(dashboard_server, "launch", lambda *a, **k: started.append((a, k)) or subprocess.Popen(["true"]))
    err = io.StringIO()
    assert dashboard_server.serve(["/r/a.sqlite"], 8502, "0.0.0.0", err=err) == 0
    text = err.getvalue()
    assert "every network interface" in text and "no authentication" in text and "harmful requests" in text
    assert started[0][1]["address"] == "0.0.0.0" and "README: Sharing the dashboard" in text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_loopback_only_and_sigterm_leaves_no_server_and_no_port(demo, tmp_path) -> None:
    """The server listens on 127.0.0.1 only; SIGTERM to `harness dashboard` stops it and its
    server, and the port is free again within a few seconds."""
    path, _ = demo
    port = free_port()
    with harness_dashboard(path, port, tmp_path / "server.log") as proc:
        assert listeners(port) == ["0100007F"], listeners(port)  # 127.0.0.1, no IPv6, no 0.0.0.0
        servers = children(proc.pid)
        assert len(servers) == 1 and alive(servers[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, (tmp_path / "server.log").read_text()
        deadline = time.monotonic() + 5
        while (alive(servers[0]) or not port_is_free(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(servers[0]), "the Streamlit server outlived harness dashboard"
        assert port_is_free(port), f"port {port} still open after SIGTERM"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)


# -- a real browser -------------------------------------------------------------------
@pytest.mark.browser
def test_dashboard_in_headless_chromium(demo, tmp_path) -> None:
    """`harness dashboard` opened in headless Chromium (Selenium): every page draws, and the links
    `harness report --dashboard-url` prints open their exact views, whose state the URL then
    follows. Screenshots of each are left in the test's temp dir."""
    pytest.importorskip("selenium", reason="selenium is in the dev extras: pip install -e '.[dev]'")
    from webdriver import Browser, browser_binaries

    found = browser_binaries()
    if found is None:
        pytest.skip("chromium / chromedriver are not installed: `make test-browser` installs them with apt")
    path, run_id = demo
    port = 8501 if port_is_free(8501) else free_port()
    url = f"http://127.0.0.1:{port}/"
    report = subprocess.run([str(HARNESS), "report", "--store", str(path), "--dashboard-url", url.rstrip("/")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert report.returncode == 0, report.stderr
    links = dict(re.findall(r"^- \[(.+?)\]\((http://\S+)\)$", report.stdout, re.M))
    assert links, report.stdout
    with harness_dashboard(path, port, tmp_path / "server.log"):
        browser = Browser(*found, tmp_path / "profile")
        try:
            text = browser.open(url, f"Run: {RUN_NAME}")
            assert "Lineage" in text and "Headline metrics by stage" in text
            browser.screenshot(tmp_path / "overview.png")
            expect = {"attribution": "All stage × metric effects", "compare": "ppo, dpo over seeds 0",
                      "topics": "Per-topic accuracy", "reward_hacking": "flagged for reward hacking",
                      "samples": "became refused at dpo"}
            for page, words in expect.items():
                text = browser.open(url + page, words)
                assert CRASH not in text and "Traceback" not in text, page
                assert browser.screenshot(tmp_path / f"{page}.png").stat().st_size > 30_000, page

            label, link = next((k, v) for k, v in links.items() if k.endswith("(attribution)"))
            stage, metric = label.split(" (")[0].split(": ")
            browser.open(link, f"{metric} starts at")  # the Attribution page's caption for that metric
            assert browser.selected("Metric") == metric and stage in browser.selected("Lineage path").split(" → ")
            assert browser.selected("Run").endswith(run_id)
            address = urlsplit(browser.wait_until_url("/attribution"))
            assert parse_qs(address.query) == {"run": [run_id], "page": ["attribution"], "metric": [metric],
                                               "stage": [stage]}, address
            browser.screenshot(tmp_path / "linked_attribution.png")
            other = "verbosity.mean_tokens" if metric != "verbosity.mean_tokens" else "refusal.harmful_refusal_rate"
            browser.choose("Metric", other)  # a visitor's choice is written back into the URL
            browser.wait_until_url(f"metric={quote(other)}")
            browser.wait_for(f"{other} starts at")

            flagged = next(v for k, v in links.items() if k.endswith("flagged for reward hacking"))
            text = browser.open(flagged, "Linked stage ppo: flagged for reward hacking")
            assert "/reward_hacking?" in browser.url and "stage=ppo" in browser.url
            label, samples = next((k, v) for k, v in links.items()
                                  if k.endswith("(samples that flipped)") and "refusal.harmful" in k)
            stage, metric = label.split(" (")[0].split(": ")
            text = browser.open(samples, "Content warning")
            assert f"refusal · {metric} · sft → {stage}" in text and "harmful request hidden" in text
            browser.screenshot(tmp_path / "linked_samples.png")
        finally:
            browser.close()
