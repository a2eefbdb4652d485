"""The Makefile's bootstrap for real: `make tools` in a copy of the project, with a temporary VENV.

A fresh machine has Docker and python3 only; `make build` must set up the venv it runs in (the project and its
[build] extra, no torch), finish one that a Ctrl-C cut short, and leave a finished one alone. These tests run
the real make, scripts/setup_venv.sh, python3 -m venv and pip (from the index pip is configured for: marker
network), then the installed `python -m images`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAMP = ".pytorch-cuda-tools"
# What `pip install -e .` reads, and what make reads: enough of the project to install it, nothing else.
PROJECT_FILES = ("Makefile", "pyproject.toml", "README.md", "scripts/setup_venv.sh")
PROJECT_DIRS = ("images", "verify")

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.timeout(600)]


def _copy_project(dest: Path) -> Path:
    for name in PROJECT_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    for name in PROJECT_DIRS:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _make(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_project(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="module")
def venv(project: Path) -> Path:
    """A venv made by `make tools` from nothing, shared by the tests that only read or resume it."""
    path = project / "tools-venv"
    result = _make(project, "tools", f"VENV={path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"make: creating {path} with " in result.stdout
    assert f"make: {path} is ready" in result.stdout
    return path


def test_a_fresh_venv_has_the_build_tools_and_no_torch(venv: Path) -> None:
    assert (venv / STAMP).is_file()
    python = str(venv / "bin" / "python")
    imports = subprocess.run(
        [python, "-c", "import docker, jinja2, requests, rich, images.build; import torch"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "No module named 'torch'" in imports.stderr, imports.stderr  # all but torch imported
    helped = subprocess.run([python, "-m", "images", "build", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    assert "--extra-ca-cert" in helped.stdout


def test_a_finished_venv_is_left_alone(project: Path, venv: Path) -> None:
    result = _make(project, "tools", f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    assert "make: creating" not in result.stdout
    assert "installing" not in result.stdout
    assert "Nothing to be done" in result.stdout


def test_a_venv_without_its_stamp_gets_the_install_again_not_a_new_venv(project: Path, venv: Path) -> None:
    (venv / STAMP).unlink()  # what a Ctrl-C during pip install leaves
    marker = venv / "kept-by-resume"
    marker.touch()
    result = _make(project, "tools", f"VENV={venv}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"make: installing the project + [build] extra into {venv}" in result.stdout
    assert marker.exists(), "the venv was made again instead of finished"
    assert (venv / STAMP).is_file()


def test_a_venv_cut_short_before_its_python_is_made_again(project: Path, tmp_path: Path) -> None:
    broken = tmp_path / "half-venv"
    broken.mkdir()
    # `python3 -m venv` writes pyvenv.cfg first; interrupted there, the venv has no interpreter.
    (broken / "pyvenv.cfg").write_text("home = /usr/bin\n")
    result = _make(project, "tools", f"VENV={broken}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"make: {broken} has no working Python >= 3.11 with pip" in result.stdout
    assert f"make: creating {broken} with " in result.stdout
    assert (broken / STAMP).is_file()
    assert (broken / "bin" / "python").exists()


def test_a_folder_that_is_not_a_venv_is_not_deleted(project: Path, tmp_path: Path) -> None:
    precious = tmp_path / "not-a-venv"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    result = _make(project, "tools", f"VENV={precious}")
    assert result.returncode == 2
    assert f"error: {precious} exists but is not a Python venv" in result.stderr
    assert "fix: move it away, or make VENV=" in result.stderr
    assert (precious / "notes.txt").read_text() == "mine"


def test_no_reachable_index_says_so_in_one_line_and_leaves_no_stamp(project: Path, tmp_path: Path) -> None:
    venv = tmp_path / "offline-venv"
    # An index that refuses connections, no pip config, no cache: pip finds nothing to install.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0"}
    env |= {"PIP_NO_CACHE_DIR": "1", "BOOTSTRAP_PYTHON": "python3"}
    result = _make(project, "tools", f"VENV={venv}", env=env)
    assert result.returncode == 2  # make's own code for a failed recipe
    assert f"error: pip could not install the project + [build] extra into {venv}" in result.stderr
    assert "fix: make pip reach an index" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (venv / STAMP).exists()
