"""`make lock`'s pip minimum against real pips: 23.2.1 is refused by name, 23.3 passes the check.

Each pip lives in a venv of its own; a .pth file behind the venv's site-packages lends it this environment's
packages (jinja2, requests, the project), so `pip` is the venv's and everything else is ours. The resolution
itself runs against an empty local index, which is enough to see whether pip accepts the platform options.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from images.lock import MIN_PIP

REPO = Path(__file__).resolve().parents[3]
TARGET_ERROR = "Can not use any platform or abi specific options unless installing via '--target'"

pytestmark = [pytest.mark.network, pytest.mark.timeout(300)]  # pip==23.3 comes from the index

RESOLVE_OFFLINE = """
import subprocess, sys
from pathlib import Path
from images.lock import pip_command, pip_environment
work = Path(sys.argv[1])
(work / "requirements.txt").write_text("torch==2.8.0\\n")
(work / "wheels").mkdir(exist_ok=True)
cmd = pip_command(work / "requirements.txt", "3.13", work / "report.json", "https://no.invalid/", None)
at = cmd.index("--index-url")
cmd[at : at + 2] = ["--no-index", "--find-links", str(work / "wheels")]
print(subprocess.run(cmd, env=pip_environment(), capture_output=True, text=True).stderr)
"""


def _venv_with_pip(path: Path, pip_version: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"pip=={pip_version}"],
        check=True,
        timeout=240,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # After the venv's own site-packages: its pip wins, the rest comes from this environment.
    (Path(site) / "lend-project-env.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO}\n")
    found = subprocess.run(
        [python, "-c", "import pip, jinja2, images.lock; print(pip.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == pip_version
    return python


def test_the_minimum_is_23_3() -> None:
    assert str(MIN_PIP) == "23.3"


def test_pip_23_2_1_is_refused_naming_the_minimum_and_the_fix(tmp_path: Path) -> None:
    python = _venv_with_pip(tmp_path / "venv", "23.2.1")
    result = subprocess.run(
        [python, "-m", "images", "lock", "--tag", "v2.8", "--root", str(tmp_path / "no-images")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: make lock needs pip >= 23.3")
    assert f"{python} has pip 23.2.1" in line
    assert f"fix: {python} -m pip install -U 'pip>=23.3'" in line
    # And the minimum is real: this pip refuses lock's own command line.
    (tmp_path / "work").mkdir()
    resolved = subprocess.run(
        [python, "-c", RESOLVE_OFFLINE, str(tmp_path / "work")], capture_output=True, text=True, check=True
    )
    assert TARGET_ERROR in resolved.stdout


def test_pip_23_3_passes_the_check_and_takes_the_platform_options(tmp_path: Path) -> None:
    python = _venv_with_pip(tmp_path / "venv", "23.3")
    check = subprocess.run(
        [python, "-c", "from images.lock import check_pip; check_pip()"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    (tmp_path / "work").mkdir()
    resolved = subprocess.run(
        [python, "-c", RESOLVE_OFFLINE, str(tmp_path / "work")], capture_output=True, text=True, check=True
    )
    assert TARGET_ERROR not in resolved.stdout
    assert "No matching distribution found for torch==2.8.0" in resolved.stdout  # it got to resolving
