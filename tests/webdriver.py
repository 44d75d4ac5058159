"""Headless Chromium for the real-browser dashboard test, driven by Selenium over Debian's
chromium + chromedriver (`make test-browser` installs them with apt when missing).

Streamlit draws its pages over a websocket after the HTML loads, so a page is "there" only
once its own text shows and the script run is over (no status widget, no skeleton), checked
twice a second apart so charts drawn after the last message are in.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--hide-scrollbars", "--window-size=1400,1800"]
STATE_JS = """return [document.body ? document.body.innerText : '',
    document.querySelectorAll('[data-testid="stStatusWidget"], [data-testid="stSkeleton"]').length];"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def browser_binaries() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver, when both are installed."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


class Browser:
    """One headless Chromium session (Selenium's Chrome driver on the given binaries)."""

    def __init__(self, chromium: str, chromedriver: str, profile: Path) -> None:
        options = Options()
        options.binary_location = chromium
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        self.driver.set_page_load_timeout(120)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def text(self) -> str:
        return str(self.driver.execute_script(STATE_JS)[0])

    def open(self, url: str, expect: str, timeout: float = 90.0) -> str:
        """Load `url`; returns the page's text once it shows `expect` and has settled."""
        self.driver.get(url)
        return self.wait_for(expect, timeout)

    def wait_for(self, expect: str, timeout: float = 90.0) -> str:
        """The page's text once it contains `expect` and the script run is over (twice, 1 s apart)."""
        settled, text = [0], [""]

        def ready(driver: webdriver.Chrome) -> bool:
            text[0], busy = driver.execute_script(STATE_JS)
            settled[0] = settled[0] + 1 if expect in text[0] and not busy else 0
            return settled[0] >= 2

        try:
            WebDriverWait(self.driver, timeout, poll_frequency=1.0).until(ready)
        except TimeoutException:
            raise TimeoutError(f"{self.url} did not show {expect!r} within {timeout} s; "
                               f"it shows: {text[0][:500]!r}") from None
        return text[0]

    def wait_until_url(self, fragment: str, timeout: float = 30.0) -> str:
        """The address once it contains `fragment` (the dashboard writes its state there)."""
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(lambda d: fragment in d.current_url)
        except TimeoutException:
            raise TimeoutError(f"the address never contained {fragment!r}: {self.url}") from None
        return self.url

    def _combobox(self, label: str) -> WebElement:
        found = self.driver.find_elements(By.CSS_SELECTOR, f'input[role="combobox"][aria-label="{label}"]')
        assert found, f"no selectbox labelled {label!r}"
        return found[0]

    def selected(self, label: str) -> str:
        """The value shown by the selectbox labelled `label`."""
        return str(self._combobox(label).get_attribute("value"))

    def choose(self, label: str, option: str, timeout: float = 30.0) -> None:
        """Pick `option` in the selectbox labelled `label`, as a visitor does: open it, click the option."""
        self._combobox(label).click()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.driver.find_elements(By.CSS_SELECTOR, '[role="option"]'):
                if item.text.strip() == option:
                    item.click()
                    return
            time.sleep(0.3)
        raise TimeoutError(f"option {option!r} never showed in {label!r}")

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        try:
            self.driver.quit()
        except WebDriverException:
            pass
