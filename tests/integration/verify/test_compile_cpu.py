"""The compile check for real on this GPU-less host: `verify run --only compile` in its own process, a real
torch.compile through Inductor and g++, and real faults (no compiler on PATH, CXX naming nothing,
TORCH_COMPILE_DISABLE=1, a temporary folder mounted noexec as Docker's `--tmpfs /tmp` is) that must flip
the verdict.

The passing run is a cold CPU compile: about 15 s on 2 cores with warm page cache, up to a minute the first
time. The faults fail in seconds: Inductor looks for the compiler before it builds anything.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkrun import run_check


def run_compile(tmp_path: Path, *args: str, **env: str | None) -> tuple[int, dict]:
    environ = {k: v for k, v in os.environ.items() if k not in env}
    environ |= {k: v for k, v in env.items() if v is not None}
    run = run_check("compile", tmp_path, environ, *args)
    return run.returncode, run.result


def test_quick_compiles_on_the_cpu_and_passes_with_the_gpu_half_skipped(tmp_path):
    code, result = run_compile(tmp_path, "--quick", CXX=None, CC=None, TORCH_COMPILE_DISABLE=None)
    assert (code, result["status"]) == (0, "pass"), result["summary"]
    assert result["summary"].startswith("compiled and matched eager: cpu ")
    assert result["summary"].endswith("(cold compile); GPU compile skipped: torch sees no CUDA GPU")
    (outcome,) = result["details"]["outcomes"]
    assert outcome["device"] == "cpu" and outcome["error"] is None
    assert outcome["kernels"] >= 1 and outcome["max_abs_diff"] <= 1e-5
    assert result["figures"]["compile_s_cpu"] > 0
    assert result["details"]["toolchain"]["cxx_path"]  # the compiler it used


def test_no_compiler_on_path_fails_naming_g_plus_plus(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    code, result = run_compile(tmp_path, PATH=str(empty), CXX=None)
    assert (code, result["status"]) == (1, "fail")
    assert result["summary"].startswith(
        "cpu: no C++ compiler: Inductor runs g++ ($CXX unset) and it is not on PATH; fix: apt-get install g++"
    ), result["summary"]
    (outcome,) = result["details"]["outcomes"]
    assert "No working C++ compiler" in outcome["error"]  # the real compile failed too, for that reason


def test_cxx_naming_no_compiler_fails_naming_the_setting(tmp_path):
    code, result = run_compile(tmp_path, CXX="/nonexistent/g++")
    assert (code, result["status"]) == (1, "fail")
    assert "cpu: no C++ compiler: Inductor runs CXX=/nonexistent/g++" in result["summary"]
    assert "fix: unset CXX or point it at a C++ compiler" in result["summary"]


def test_compile_switched_off_is_a_fail_not_a_silent_eager_pass(tmp_path):
    code, result = run_compile(tmp_path, TORCH_COMPILE_DISABLE="1", CXX=None)
    assert (code, result["status"]) == (1, "fail")
    assert "torch.compile is switched off (TORCH_COMPILE_DISABLE=1)" in result["summary"]
    assert "fix: unset TORCH_COMPILE_DISABLE" in result["summary"]


@pytest.fixture
def noexec_tmp(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs mounted noexec, as `docker run --tmpfs /tmp` mounts /tmp (root only: mount(8))."""
    folder = tmp_path / "noexec"
    folder.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "noexec,size=64m", "tmpfs", str(folder)]
    mounted = subprocess.run(command, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_noexec_temporary_folder_fails_naming_the_mount_and_the_fix(tmp_path, noexec_tmp):
    code, result = run_compile(tmp_path, "--quick", TMPDIR=str(noexec_tmp), CXX=None)
    assert (code, result["status"]) == (1, "fail"), result["summary"]
    assert "is on a file system mounted noexec" in result["summary"], result["summary"]
    assert "fix: mount it exec (docker run --tmpfs" in result["summary"]
    (outcome,) = result["details"]["outcomes"]
    assert outcome["error"]  # the real compile failed too: the built kernel could not be loaded
