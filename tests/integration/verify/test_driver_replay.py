"""`verify run --only driver` as a user runs it, on a real H200's recorded NVML answers (tests/nvml_replay).

The check runs in its own process, as always; the replay reaches it through PYTHONPATH and NVML_REPLAY.
h200-held.json is a real recording with another process (pid 483, python3) holding 130.5 GiB.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from checkrun import run_check

WHERE = "GPU0 (00000000:00:06.0, GPU-b360bc59-811c-f617-4d21-e808a2fbf02a)"


def verify_driver(env: dict[str, str], cwd: Path, prefix: tuple[str, ...] = ()) -> tuple[int, str, dict]:
    run = run_check("driver", cwd, env, prefix=prefix, timeout=120)
    return run.returncode, run.output, run.report


def test_another_process_holding_memory_warns_and_exits_0(nvml_replay, tmp_path):
    replay = nvml_replay("h200-held")  # no edit: the real recording
    code, out, report = verify_driver(replay.env, tmp_path)
    assert code == 0, out
    (result,) = report["results"]
    assert result["status"] == "warn"
    assert result["summary"].startswith(
        f"{WHERE}: other processes hold GPU memory: pid 483 (python3) 130.5 GiB"
    )
    assert "WARN" in out and "pid 483 (python3) 130.5 GiB" in out
    assert report["gpus"][0]["processes"][0] == {
        "pid": 483,
        "used_MiB": 133638,
        "kinds": ["compute"],
        "name": "python3",
        "this_process": False,
    }
    assert report["exit_code"] == 0


def test_in_a_container_pid_namespace_the_pid_is_named_as_the_hosts(nvml_replay, tmp_path):
    """A real new pid namespace (what a container has): NVML's pids are the host's, so no name is guessed."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to make a pid namespace")
    replay = nvml_replay("h200-held")  # no edit
    prefix = ("unshare", "--pid", "--fork", "--mount-proc")
    code, out, report = verify_driver(replay.env, tmp_path, prefix)
    assert code == 0, out
    summary = report["results"][0]["summary"]
    assert "pid 483 (name not readable here: the pid is in the host's pid namespace" in summary, summary
    assert "python3" not in summary
    assert "on the host (pids are the host's)" in summary
    assert report["results"][0]["details"]["host_pid_namespace"] is False


def test_an_uncorrected_ecc_error_fails_and_exits_1(nvml_replay, tmp_path):
    def one_error(data):  # edited: uncorrected, volatile ECC count 0 -> 1
        data["devices"][0]["nvmlDeviceGetTotalEccErrors(1,0)"] = 1

    replay = nvml_replay("h200-idle", edit=one_error)
    code, out, report = verify_driver(replay.env, tmp_path)
    assert code == 1, out
    assert report["results"][0]["status"] == "fail"
    assert report["results"][0]["summary"].startswith(f"{WHERE} has 1 uncorrected ECC errors")
