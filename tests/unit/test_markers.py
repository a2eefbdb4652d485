"""Which tests run where: a plain `pytest` and `make test-unit` leave out the tests marked `network`
(they read PyPI) so they pass offline; `make test`, what CI runs, includes them. Real pytest and make runs
(collection only), on the real test files that carry the marker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NETWORK_FILES = [
    "tests/unit/images/test_pins.py",
    "tests/unit/images/test_lock.py",
    "tests/unit/images/test_matrix_index.py",
]
COLLECT = ["--collect-only", "-q", "-p", "no:cacheprovider"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_ARGS", "MAKEFLAGS")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _ids(proc: subprocess.CompletedProcess[str]) -> set[str]:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line for line in proc.stdout.splitlines() if "::" in line and not line.startswith("ERROR")}


def _pytest(*args: str) -> set[str]:
    return _ids(_run([sys.executable, "-m", "pytest", *COLLECT, *args]))


def _make(target: str, *args: str) -> set[str]:
    pytest_args = " ".join([*COLLECT, *args])
    return _ids(_run(["make", "-s", target, f"PYTHON={sys.executable}", f"PYTEST_ARGS={pytest_args}"]))


@pytest.fixture(scope="module")
def network() -> set[str]:
    ids = _pytest("-m", "network", *NETWORK_FILES)
    assert len(ids) >= 5, ids  # the marker is in use: otherwise this file proves nothing
    return ids


def test_a_plain_pytest_leaves_out_network_tests_unless_asked(network):
    plain = _pytest(*NETWORK_FILES)
    assert plain, "the files' offline tests are still collected"
    assert plain.isdisjoint(network)


def test_make_test_unit_runs_offline(network):
    unit = _make("test-unit")
    assert any(i.startswith("tests/unit/images/test_pins.py::") for i in unit)  # the file was collected
    assert any(i.startswith("tests/integration/") for i in unit)
    assert any(i.startswith("tests/examples/") for i in unit)  # the GitHub unit job runs the examples too
    assert unit.isdisjoint(network)


def test_make_test_what_ci_runs_includes_network_tests(network):
    assert network <= _make("test", *NETWORK_FILES)


def test_ci_runs_make_test_without_leaving_out_network_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    calls = re.findall(r"^make test\b.*$", ci, flags=re.M)
    assert calls, "CI no longer runs `make test`"
    assert all("network" not in call for call in calls), calls
