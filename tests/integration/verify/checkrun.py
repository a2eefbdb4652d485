"""Run one check through the real CLI (`python -m verify run --only NAME`) in its own process and read back
what it wrote: the exit code, the check's result from the JSON report, and the process's output.

The integration tests make a fault for real (an environment variable, a replayed NVML, an empty PATH) and
call this; it also fails the test on a Python traceback anywhere in the output, since no fault a user can
cause may end in one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((REPO / "verify" / "report.schema.json").read_text())


@dataclass(frozen=True)
class CheckRun:
    returncode: int
    result: dict[str, Any]  # the one check's result from the JSON report
    report: dict[str, Any]
    output: str  # stdout + stderr


def run_check(
    name: str,
    cwd: Path,
    env: Mapping[str, str],
    *flags: str,
    prefix: Sequence[str] = (),
    timeout: float = 600,
) -> CheckRun:
    """`[prefix...] python -m verify run --only NAME --json cwd/report.json FLAGS` with `env` plus this
    checkout on PYTHONPATH (after what env already has there) and a wide terminal."""
    environ = dict(env)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (environ.get("PYTHONPATH", ""), str(REPO)) if p)
    environ["COLUMNS"] = "200"
    report_path = cwd / "report.json"
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "verify", "run", "--only", name, "--json", str(report_path), *flags],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert report_path.exists(), output
    assert "Traceback" not in output, output
    report = json.loads(report_path.read_text())
    Draft202012Validator(SCHEMA).validate(report)
    (result,) = report["results"]
    return CheckRun(proc.returncode, result, report, output)
