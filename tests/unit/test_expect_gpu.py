"""tests/gpu/conftest.py for real: on this GPU-less machine the GPU tests skip, unless VERIFY_EXPECT_GPU=1
says a GPU is expected; then every one fails, saying why. Real pytest and make runs of tests/gpu."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = "no GPU seen although VERIFY_EXPECT_GPU=1: torch.cuda.is_available() is False"
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")


def _run(cmd: list[str], expect: str | None) -> subprocess.CompletedProcess[str]:
    # CI (and BUILD_NUMBER) make pytest print its short summary untruncated, which repeats each message.
    drop = ("VERIFY_EXPECT_GPU", "PYTEST_ADDOPTS", "PYTEST_ARGS", "MAKEFLAGS", "CUDA_VISIBLE_DEVICES")
    drop += ("CI", "BUILD_NUMBER", "MAKELEVEL", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if expect is not None:
        env["VERIFY_EXPECT_GPU"] = expect
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _pytest_gpu(expect: str | None) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider"], expect)


def _count(word: str, out: str) -> int:
    found = re.search(rf"(\d+) {word}", out.splitlines()[-1])
    return int(found[1]) if found else 0


@pytest.mark.parametrize("expect", [None, "0", ""])
def test_without_the_expectation_gpu_tests_skip(expect):
    proc = _pytest_gpu(expect)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert _count("skipped", proc.stdout) >= 10
    assert _count("error", proc.stdout) == _count("failed", proc.stdout) == _count("passed", proc.stdout) == 0
    assert "needs a CUDA GPU: torch.cuda.is_available() is False" in proc.stdout


@pytest.mark.parametrize("expect", ["1", "true"])
def test_with_a_gpu_expected_every_gpu_test_fails_saying_why(expect):
    proc = _pytest_gpu(expect)
    assert proc.returncode == 1, proc.stdout[-2000:]
    errors = _count("error", proc.stdout)
    assert errors >= 10 and _count("skipped", proc.stdout) == _count("passed", proc.stdout) == 0
    assert proc.stdout.count(MESSAGE) == errors  # each one says why, with the fix
    assert "fix: run where torch sees the GPU" in proc.stdout
    assert "GPU tests: VERIFY_EXPECT_GPU=1, torch sees 0 GPU(s)" in proc.stdout


def test_an_unclear_expectation_is_a_usage_error():
    proc = _pytest_gpu("maybe")
    assert proc.returncode == 4
    assert "VERIFY_EXPECT_GPU='maybe'; fix: set it to 1 (a GPU must be seen) or 0" in proc.stderr


def test_make_test_gpu_expects_a_gpu_unless_told_otherwise():
    cmd = ["make", "-s", "test-gpu", f"PYTHON={sys.executable}", "PYTEST_ARGS=-q -p no:cacheprovider"]
    proc = _run(cmd, None)
    assert proc.returncode != 0 and MESSAGE in proc.stdout
    proc = _run(cmd, "0")
    assert proc.returncode == 0 and _count("skipped", proc.stdout) >= 10, proc.stdout[-2000:]


@pytest.mark.parametrize("expect", ["1", "0"])
def test_a_missing_examples_package_fails_where_a_gpu_is_expected_and_skips_elsewhere(
    tmp_path, monkeypatch, expect
):
    """onnx made unimportable for real (a sitecustomize that sets sys.modules['onnx'] = None, as for a
    package that is not installed): the GPU examples' tests used to skip even under VERIFY_EXPECT_GPU=1."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['onnx'] = None\n")
    paths = (str(tmp_path), os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    test = "tests/gpu/test_examples_gpu.py"
    proc = _run([sys.executable, "-m", "pytest", "-m", "gpu", test, "-p", "no:cacheprovider", "-rs"], expect)
    assert "the examples need onnx; fix: pip install -e '.[examples]'" in proc.stdout, proc.stdout[-2000:]
    if expect == "1":
        assert proc.returncode != 0, proc.stdout[-2000:]
        assert "VERIFY_EXPECT_GPU=1: a failure, not a skip" in proc.stdout, proc.stdout[-2000:]
    else:
        # exit 5: pytest collected no test to run, the module skipped whole
        assert proc.returncode in (0, 5) and "skipped" in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
