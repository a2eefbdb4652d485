"""JupyterLab in a real browser: the compose `jupyter` service (CPU override) driven by headless Chromium.

What a user does first: open the URL with the token, make a notebook with the Python 3 kernel, import torch;
and what a stranger gets without the token: the login page. The image's JupyterLab settings keep the
"official Jupyter news" pop-up away (images/rootfs/opt/venv/share/jupyter/lab/settings/overrides.d/); the
last test takes that file away and sees the pop-up come back, so the check for it can fail.

Screenshots of each page are kept in build/test-artifacts/browser/ (git-ignored): lab-notebook.png,
login.png, news-popup.png, and `<name>-failure.png` beside the page's text when a wait times out.
Browser: Debian's chromium + chromium-driver through selenium (browser.py); .ci/run installs them.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
from browser import Browser, chromium
from compose_fixtures import (
    Deployment,
    deployments,  # noqa: F401  (the fixture)
)

from images.matrix import ImageLine

NEWS_QUESTION = "Would you like to get notified about official Jupyter news?"
# The image's settings file, as the container sees it; the last test moves it away and back.
NEWS_OVERRIDE = "/opt/venv/share/jupyter/lab/settings/overrides.d/pytorch-cuda.json5"
TORCH_LINE = r"^(\S+) (True|False)$"
LAB_TIMEOUT = 60  # the lab's JavaScript, first load on a busy 2-core machine
KERNEL_TIMEOUT = 120  # kernel start plus `import torch` on CPU


@pytest.fixture(scope="module")
def token() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def lab(deployments, token: str) -> Iterator[Deployment]:  # noqa: F811
    deployment = deployments(JUPYTER_TOKEN=token)
    deployment.up("jupyter")
    deployment.wait_jupyter()
    yield deployment


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as session:
        yield session


def open_lab(browser: Browser, lab: Deployment, token: str, name: str) -> None:
    """The lab with its default layout (`reset`: the launcher, not the tabs a previous test left open)."""
    browser.open(f"http://127.0.0.1:{lab.jupyter_port}/lab?reset&token={token}")
    browser.wait_visible("#jp-main-dock-panel", LAB_TIMEOUT, "the lab's main area", name)


def news_popup_shown(browser: Browser) -> bool:
    return NEWS_QUESTION in browser.text()


def test_without_the_token_the_lab_shows_the_login_form(browser: Browser, lab: Deployment) -> None:
    browser.driver.delete_all_cookies()
    browser.open(f"http://127.0.0.1:{lab.jupyter_port}/lab")
    browser.wait_visible("input#password_input[type=password]", LAB_TIMEOUT, "the login form", "login")
    browser.expect("/login" in browser.url, "login", "not redirected to the login page")
    browser.expect(browser.find("#login_submit"), "login", "the login form has no Log in button")
    browser.expect("token" in browser.text().lower(), "login", "the login page does not ask for the token")
    browser.expect(not browser.find(".jp-LabShell"), "login", "the lab itself is visible without the token")
    browser.screenshot("login")


def test_with_the_token_a_notebook_runs_torch(
    browser: Browser, lab: Deployment, token: str, matrix_line: ImageLine
) -> None:
    name = "lab-notebook"
    open_lab(browser, lab, token, name)
    card = browser.wait_visible(
        '.jp-LauncherCard[data-category="Notebook"][title*="Python 3"]',
        LAB_TIMEOUT,
        "the launcher's Python 3 notebook card",
        name,
    )
    card.click()
    browser.wait_text(".jp-KernelName", r"Python 3", LAB_TIMEOUT, "the notebook's kernel name", name)
    # The kernel name shows as soon as the session exists; a cell run before the kernel is connected can be
    # dropped (CI saw "[ ]" and no output after 120 s), so wait, as a user would, for the status bar's "Idle".
    browser.wait_text(
        ".jp-StatusBar-TextItem", r"Python 3 \(ipykernel\) \| Idle", KERNEL_TIMEOUT, "the kernel idle", name
    )
    editor = browser.wait_visible(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content", LAB_TIMEOUT, "the first cell", name
    )
    browser.type_and_run(editor, "import torch; print(torch.__version__, torch.cuda.is_available())")
    printed = browser.wait_text(
        ".jp-OutputArea-output", TORCH_LINE, KERNEL_TIMEOUT, "the cell's printed line", name
    )
    browser.screenshot(name)
    version, cuda = printed.group(1), printed.group(2)
    pinned = matrix_line.torch
    browser.expect(
        version.split("+")[0] == pinned, name, f"torch {version} in the lab, the image pins {pinned}"
    )
    browser.expect(cuda == "False", name, f"torch.cuda.is_available() printed {cuda} under the CPU override")
    browser.expect(
        not news_popup_shown(browser),
        name,
        f"the news pop-up is shown ({NEWS_QUESTION!r}); the image's JupyterLab settings should keep it off",
    )


def test_news_popup_comes_back_without_the_image_setting(
    browser: Browser, lab: Deployment, token: str
) -> None:
    """The pop-up check can fail: with the settings file moved away (and the server restarted, since it reads
    the file at start), a fresh page load asks about the news."""
    container = lab.container("jupyter")
    moved = f"{NEWS_OVERRIDE}.off"

    def move(src: str, dst: str) -> None:
        argv = ["docker", "exec", "-u", "0", container, "mv", src, dst]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    move(NEWS_OVERRIDE, moved)
    try:
        lab.run("restart", "-t", "5", "jupyter")
        lab.wait_jupyter()
        browser.driver.delete_all_cookies()
        open_lab(browser, lab, token, "news-popup")
        browser.wait(lambda: news_popup_shown(browser), LAB_TIMEOUT, "the news pop-up", "news-popup")
        browser.screenshot("news-popup")
    finally:
        move(moved, NEWS_OVERRIDE)
