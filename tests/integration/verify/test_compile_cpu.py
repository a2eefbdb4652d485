"""The compile check for real on this GPU-less host: `verify run --only compile` in its own process, a real
torch.compile through Inductor and g++, and real faults (no compiler on PATH, CXX naming nothing,
TORCH_COMPILE_DISABLE=1) that must flip the verdict.

The passing run is a cold CPU compile: about 15 s on 2 cores with warm page cache, up to a minute the first
time. The faults fail in seconds: Inductor looks for the compiler before it builds anything.
"""

from __future__ import annotations

import os
from pathlib import Path

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
