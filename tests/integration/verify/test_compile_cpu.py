"""The compile check for real on this GPU-less host: `verify run --only compile` in its own process, a real
torch.compile through Inductor and g++, and real faults (no compiler on PATH, CXX naming nothing,
TORCH_COMPILE_DISABLE=1) that must flip the verdict.

The passing run is a cold CPU compile: about 15 s on 2 cores with warm page cache, up to a minute the first
time. The faults fail in seconds: Inductor looks for the compiler before it builds anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_compile(tmp_path: Path, *args: str, **env: str | None) -> tuple[int, dict]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "run", "--only", "compile", "--json", str(report), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.exists(), proc.stdout + proc.stderr
    (result,) = json.loads(report.read_text())["results"]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.returncode, result


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
