"""`python -m images` answers every command without its optional packages, and ends quietly on a closed pipe.

The "no extras" runs use a real venv (`python -m venv --without-pip`) holding only `packaging`, the one
third-party package the matrix code needs, and run the CLI from this checkout, as a bare system Python does.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import packaging
import pytest

from images.cli import MODULES, OPTIONAL_PACKAGES, STDOUT_CLOSED

REPO = Path(__file__).resolve().parents[3]
ALL_COMMANDS = [command for _module, commands in MODULES for command in commands]
# What each command needs beyond `packaging` when it runs (its module's imports).
NEEDS = {
    "pins": "requests",
    "pins-check": "requests",
    "dockerfiles": "jinja2",
    "lock": "jinja2",
    "build": "docker",
    "push": "docker",
    "verify": "docker",
}
# The commands that work with `packaging` alone, each run for real (read-only: nothing in the tree changes).
RUNS_BARE = {
    "readme": ["readme", "--check"],
    "ci-matrix": ["ci-matrix", "--tags", "v2.8"],
    "lint": ["lint", "--only", "hadolint", "--root", "/nonexistent-tree"],
}


def test_the_command_table_is_what_the_modules_register() -> None:
    for module_name, commands in MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"images.{module_name}").add_parsers(sub)
        assert tuple(sub.choices) == commands, module_name


def test_every_command_is_either_needing_a_package_or_run_bare() -> None:
    assert set(NEEDS) | set(RUNS_BARE) == set(ALL_COMMANDS)
    assert set(NEEDS.values()) <= set(OPTIONAL_PACKAGES)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv with `packaging` only: no docker-py, jinja2, requests or rich."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shutil.copytree(Path(packaging.__file__).parent, Path(site) / "packaging")
    for name in OPTIONAL_PACKAGES:  # the venv really lacks them
        probe = subprocess.run([python, "-c", f"import {name}"], capture_output=True, check=False)
        assert probe.returncode != 0, name
    assert sysconfig.get_paths()["purelib"] != site
    return python


def _run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "images", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_top_level_help_lists_every_command_and_what_the_missing_ones_need(bare_python: Path) -> None:
    result = _run(bare_python, "--help")
    assert result.returncode == 0, result.stderr
    for command in ALL_COMMANDS:
        assert command in result.stdout
    assert "(needs 'docker': make tools)" in result.stdout
    assert "(needs 'jinja2': make tools)" in result.stdout


@pytest.mark.parametrize("command", sorted(NEEDS))
@pytest.mark.parametrize("extra_args", [["--help"], []], ids=["help", "run"])
def test_a_command_without_its_package_names_it_and_the_install_command(
    bare_python: Path, command: str, extra_args: list[str]
) -> None:
    result = _run(bare_python, command, *extra_args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    package = NEEDS[command]
    assert lines[0].startswith(f"error: 'python -m images {command}' needs the Python package '{package}'")
    assert "the [build] extra" in lines[0]
    assert f"fix: make tools (sets up .venv), or {bare_python} -m pip install -e '.[build]'" in lines[0]


def test_make_builds_arguments_meet_the_missing_package_not_an_argparse_error(bare_python: Path) -> None:
    """The first contact that failed: `make build` passed `--tag v2.8 --flavor runtime` to an empty parser."""
    result = _run(bare_python, "build", "--tag", "v2.8", "--flavor", "runtime", "--extra-ca-cert", "x.pem")
    assert result.returncode == 2
    assert "unrecognized arguments" not in result.stderr
    assert "needs the Python package 'docker'" in result.stderr


@pytest.mark.parametrize("command", sorted(RUNS_BARE))
def test_a_command_that_needs_no_extra_runs_bare(bare_python: Path, command: str) -> None:
    helped = _run(bare_python, command, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: python -m images {command}")
    result = _run(bare_python, *RUNS_BARE[command])
    assert "Traceback" not in result.stderr, result.stderr
    if command == "lint":  # a tree without Dockerfiles: hadolint has nothing to lint, or is missing
        assert result.returncode in (0, 1), result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_every_command_helps_with_the_build_extra_installed() -> None:
    for command in ALL_COMMANDS:
        result = _run(Path(sys.executable), command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"usage: python -m images {command}"), command


@pytest.mark.parametrize(
    ("args", "code"),
    # argparse drops a help text it cannot write (it ignores OSError) and exits 0; our output exits 141.
    [(["ci-matrix", "--pretty"], STDOUT_CLOSED), (["--help"], 0), (["ci-matrix", "--help"], 0)],
    ids=["output", "help", "sub-help"],
)
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(args: list[str], code: int) -> None:
    """A real pipe whose reader is gone before the command writes: 141 like `yes | head`, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "images", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away first
    _out, err = proc.communicate(timeout=60)
    assert err == ""
    assert proc.returncode == code


def test_the_readme_pipe_into_head_prints_the_start_and_nothing_on_stderr() -> None:
    result = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m images ci-matrix --pretty | head -c 10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == '{\n  "inclu'
    assert result.stderr == ""
