"""`verify fleet` over one node's reports from several runs names a GPU that keeps failing, by UUID and
serial ("third FAIL of GPU-... since ...").

The reports are real: `verify run --only driver` on a real H200's recorded NVML (tests/nvml_replay) with the
GPU's uncorrected ECC count changed from 0 to 1, and its serial (the recording has none: NVML answered "not
supported") set, as a failing card reports itself; one run between them with the count back at 0 passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checkrun import REPO, run_check

SERIAL = "1652921045219"


def driver_report(nvml_replay: Callable[..., Any], tmp_path: Path, name: str, ecc: int) -> Path:
    def edit(data: dict[str, Any]) -> None:
        data["devices"][0]["nvmlDeviceGetTotalEccErrors(1,0)"] = ecc
        data["devices"][0]["nvmlDeviceGetSerial"] = SERIAL

    replay = nvml_replay("h200-idle", edit=edit)
    run_dir = tmp_path / name
    run_dir.mkdir()
    run = run_check("driver", run_dir, replay.env, timeout=120)
    assert run.result["status"] == ("fail" if ecc else "pass"), run.result["summary"]
    return run_dir / "report.json"


def test_a_gpu_failing_in_three_reports_is_named_by_uuid_and_serial(
    nvml_replay: Callable[..., Any], tmp_path: Path
) -> None:
    reports = [
        driver_report(nvml_replay, tmp_path, "monday", ecc=1),
        driver_report(nvml_replay, tmp_path, "tuesday", ecc=0),
        driver_report(nvml_replay, tmp_path, "wednesday", ecc=1),
        driver_report(nvml_replay, tmp_path, "thursday", ecc=1),
    ]
    uuid = json.loads(reports[0].read_text())["results"][0]["details"]["gpus"][0]["uuid"]
    out = tmp_path / "fleet.json"
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "fleet", *map(str, reports), "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (repeat,) = [f for f in json.loads(out.read_text())["flags"] if f["kind"] == "gpu_repeat"]
    assert repeat["message"].startswith(f"third FAIL of {uuid} (serial {SERIAL}) since "), repeat
    assert "driver:" in repeat["message"] and "uncorrected ECC" in repeat["message"]
    assert "have it replaced (RMA)" in repeat["message"]
    assert repeat["value"] == 3.0
    assert "third FAIL of" in proc.stdout  # the terminal summary names it too


def test_one_failing_report_is_no_repeat(nvml_replay: Callable[..., Any], tmp_path: Path) -> None:
    reports = [
        driver_report(nvml_replay, tmp_path, "a", ecc=1),
        driver_report(nvml_replay, tmp_path, "b", ecc=0),
    ]
    out = tmp_path / "fleet.json"
    subprocess.run(
        [sys.executable, "-m", "verify", "fleet", *map(str, reports), "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not [f for f in json.loads(out.read_text())["flags"] if f["kind"] == "gpu_repeat"]
