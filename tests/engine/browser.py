"""Headless Chromium for the engine tests: Debian's `chromium` + `chromium-driver`, driven through selenium.

Nothing is downloaded at test time: the driver and the browser are the system's (/usr/bin/chromedriver,
/usr/bin/chromium), named explicitly so selenium never runs its Selenium Manager (which would fetch them).
The flags keep Chromium off the network except for the page under test: on a closed network its background
connections (component updates, sync, QUIC probes) only stall it. Every run gets a fresh profile.

Screenshots go to build/test-artifacts/browser/ (git-ignored): one per test, and `<name>-failure.png` with
the page's text in the assertion message when a wait times out.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "build" / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in CI; the sandbox needs user namespaces we may not have
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)
PAGE_TEXT_LIMIT = 4000


def _missing(reason: str) -> None:
    """No browser: CI must have one (.ci/run installs it), elsewhere the test skips, saying how to get it."""
    fix = "apt-get install chromium chromium-driver && .venv/bin/pip install -e '.[dev]'"
    if os.environ.get("CI"):
        pytest.fail(f"the browser test needs {reason}; fix: {fix} (.ci/run does this)", pytrace=False)
    pytest.skip(f"{reason}; fix: {fix}")


class Browser:
    """One Chromium session and the waits the tests need; a failed wait leaves a screenshot and the page."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def text(self) -> str:
        from selenium.common.exceptions import WebDriverException

        try:
            return str(self.driver.find_element("tag name", "body").text)
        except WebDriverException as exc:
            return f"(no page text: {exc.msg})"

    def screenshot(self, name: str) -> Path:
        """Save the page as ARTIFACTS/<name>.png; a success also drops an earlier run's <name>-failure.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if not name.endswith("-failure"):
            (ARTIFACTS / f"{name}-failure.png").unlink(missing_ok=True)
        return path

    def fail(self, name: str, what: str) -> None:
        """Raise with everything needed to see why: the URL, the page's text, a screenshot's path."""
        shot = self.screenshot(f"{name}-failure")
        text = self.text()
        if len(text) > PAGE_TEXT_LIMIT:
            text = text[:PAGE_TEXT_LIMIT] + " [...]"
        raise AssertionError(f"{what}\nURL: {self.url}\nscreenshot: {shot}\npage text:\n{text}")

    def expect(self, condition: object, name: str, what: str) -> None:
        """An assertion that, when it fails, also leaves the screenshot and the page's text."""
        if not condition:
            self.fail(name, what)

    def wait(self, ready: Callable[[], object], timeout: float, what: str, name: str) -> object:
        """Poll `ready` until it returns something truthy (returned) or `timeout` seconds have passed."""
        from selenium.common.exceptions import WebDriverException

        deadline = time.monotonic() + timeout
        while True:
            try:
                result = ready()
            except WebDriverException:  # an element went stale or is not there yet: try again
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                self.fail(name, f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.5)

    def find(self, css: str):
        """The first visible element matching `css`, or None."""
        visible = [e for e in self.driver.find_elements("css selector", css) if e.is_displayed()]
        return visible[0] if visible else None

    def wait_visible(self, css: str, timeout: float, what: str, name: str):
        return self.wait(lambda: self.find(css), timeout, f"{what} ({css})", name)

    def type_and_run(self, editor, text: str) -> None:
        """Type `text` into a cell's editor and run it as a user does: Shift+Enter."""
        from selenium.webdriver.common.keys import Keys

        editor.click()
        editor.send_keys(text)
        editor.send_keys(Keys.SHIFT, Keys.ENTER)

    def wait_text(self, css: str, pattern: str, timeout: float, what: str, name: str) -> re.Match[str]:
        """The first match of `pattern` in the text of any visible element matching `css`."""

        def matched() -> re.Match[str] | None:
            for element in self.driver.find_elements("css selector", css):
                found = re.search(pattern, element.text)
                if found:
                    return found
            return None

        return self.wait(matched, timeout, f"{what} (/{pattern}/ in {css})", name)  # type: ignore[return-value]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, quit (and the profile removed) at the end."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("the Python package selenium")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            _missing(f"{path} (Debian package {package})")
    with tempfile.TemporaryDirectory(prefix="pytorch-cuda-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        driver.set_page_load_timeout(60)
        try:
            yield Browser(driver)
        finally:
            driver.quit()
