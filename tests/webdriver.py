"""A minimal W3C WebDriver client over Debian's chromedriver + headless chromium (stdlib only).

Streamlit draws its pages over a websocket after the HTML loads, so `chromium --screenshot`
can fire before the page is there; this waits for the page's own text and for the script
run to finish (no status widget) before a screenshot.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1800"]
STATE_JS = """return [document.body ? document.body.innerText : '',
    document.querySelectorAll('[data-testid="stStatusWidget"], [data-testid="stSkeleton"]').length];"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver process and one headless chromium session."""

    def __init__(self, chromium: str, chromedriver: str, profile: Path) -> None:
        self.port = free_port()
        self.driver = subprocess.Popen([chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.driver.kill()
                    raise
                time.sleep(0.2)
        options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"{}").get("value")

    def _session(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str, expect: str, timeout: float = 90.0) -> str:
        """Load `url` and wait until its text contains `expect` and the script run is over
        (checked twice, 1 s apart, so charts drawn after the last message are in); returns the text."""
        self._session("POST", "/url", {"url": url})
        deadline, settled = time.monotonic() + timeout, 0
        text = ""
        while time.monotonic() < deadline:
            text, busy = self._session("POST", "/execute/sync", {"script": STATE_JS, "args": []})
            settled = settled + 1 if expect in text and not busy else 0
            if settled >= 2:
                return text
            time.sleep(1.0)
        raise TimeoutError(f"{url} did not show {expect!r} within {timeout} s; it shows: {text[:500]!r}")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path

    def close(self) -> None:
        try:
            self._session("DELETE", "")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=30)
