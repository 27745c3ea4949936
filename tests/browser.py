"""A real headless Chromium for the pages people see (Selenium driving Debian's
``chromium`` and ``chromium-driver``; nothing downloads a browser).

``browser`` (a fixture in ``conftest.py``) gives a :class:`Browser`: one
Chromium per test session, its console and network logs drained before each
test. Tests skip, with the reason, only where Chromium, chromedriver or
Selenium is missing; CI (``.ci/run``) installs all three.

Screenshots go to ``test-artifacts/screenshots/`` at the repository root (or
``$OAUTH_CALLBACK_TEST_ARTIFACTS/screenshots``); the directory is gitignored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("OAUTH_CALLBACK_TEST_ARTIFACTS") or ROOT / "test-artifacts")

_CHROMIUM_NAMES = ("chromium", "chromium-browser")
_DRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def find_chromium() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, or the reason they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[test]')"
    chromium = next((p for p in map(shutil.which, _CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in _DRIVER_PATHS if os.access(p, os.X_OK)), None
    )
    if chromium is None or driver is None:
        return (
            "needs a headless Chromium: apt-get install -y chromium chromium-driver "
            "(CI installs them)"
        )
    return chromium, driver


class Browser:
    """A thin layer over a Selenium Chrome driver: open, click, read logs, screenshot."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.console_seen: list[dict[str, Any]] = []
        self.network_seen: list[dict[str, Any]] = []

    # -- navigation ---------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def title(self) -> str:
        return str(self.driver.title)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def text(self) -> str:
        """The visible text of the page body."""
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))

    def wait_for(self, condition: Callable[[Browser], object], timeout: float = 30.0) -> None:
        """Wait until ``condition(self)`` is truthy (polled by Selenium)."""
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _d: condition(self))

    def wait_for_title(self, title: str, timeout: float = 30.0) -> None:
        self.wait_for(lambda b: b.title == title, timeout)

    def style(self, css: str, prop: str) -> str:
        return str(self.find(css).value_of_css_property(prop))

    # -- what the browser reported ------------------------------------------------

    def console(self) -> list[dict[str, Any]]:
        """Console messages since the last call (Chromium's ``browser`` log)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        self.console_seen.extend(entries)
        return entries

    def csp_violations(self) -> list[str]:
        """Console messages since the last call that report a Content Security Policy violation."""
        return [
            str(e.get("message", ""))
            for e in self.console()
            if "Content Security Policy" in str(e.get("message", ""))
        ]

    def network(self) -> list[dict[str, Any]]:
        """DevTools ``Network.*`` events since the last call."""
        events: list[dict[str, Any]] = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if str(message.get("method", "")).startswith("Network."):
                events.append(message)
        self.network_seen.extend(events)
        return events

    def document_responses(self) -> list[dict[str, Any]]:
        """The HTTP responses of every document loaded since the last :meth:`network` call
        (``url``, ``status`` and ``headers`` with lower-cased names), redirects excluded."""
        out = []
        for event in self.network():
            if event["method"] != "Network.responseReceived":
                continue
            params = event["params"]
            if params.get("type") != "Document":
                continue
            response = params["response"]
            out.append({
                "url": response["url"],
                "status": response["status"],
                "headers": {k.lower(): v for k, v in response["headers"].items()},
            })
        return out

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the viewport under the artefacts directory and return its path."""
        directory = ARTIFACTS / "screenshots"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise AssertionError(f"Chromium could not save the screenshot {path}")
        return path

    def reset(self) -> None:
        self.driver.get("about:blank")
        self.driver.delete_all_cookies()
        self.driver.get_log("browser")
        self.driver.get_log("performance")
        self.console_seen = []
        self.network_seen = []


@pytest.fixture(scope="session")
def _chromium_session() -> Iterator[Browser]:
    found = find_chromium()
    if isinstance(found, str):
        pytest.skip(found)
    chromium, driver_path = found
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="oc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-sync",
        "--window-size=1000,760",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    try:
        browser = Browser(driver)
        browser.reset()
        yield browser
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(_chromium_session: Browser) -> Iterator[Browser]:
    """The session's headless Chromium, on ``about:blank`` with empty logs."""
    _chromium_session.reset()
    yield _chromium_session
    _chromium_session.reset()
