"""Ctrl-C or SIGTERM on `verify run` while the nccl check's ranks wait for a stalled rank: every rank process
ends with the run and no temporary folder stays behind (the ranks run in their own process groups, so the
runner's kill of the check's group alone never reached them). Real processes, gloo on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.foreground import foreground_python

REPO = Path(__file__).resolve().parents[3]
HOOKS = Path(__file__).resolve().parent / "nccl_hooks"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _gone(pid: int, settle_s: float = 10.0) -> bool:
    deadline = time.monotonic() + settle_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_a_stalled_all_reduce_leaves_no_rank_and_no_temp_folder(tmp_path, sig):
    marks, tmp = tmp_path / "marks", tmp_path / "tmp"
    marks.mkdir()
    tmp.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HOOKS), str(REPO)]),
        "NCCL_TEST_MARK_DIR": str(marks),
        "NCCL_TEST_STALL_RANK": "1",
        "TMPDIR": str(tmp),
        "PYTHONFAULTHANDLER": "1",  # a hang below is shown with every thread's stack (SIGABRT)
    }
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        foreground_python("-m", "verify", "run", "--only", "nccl", "--json", str(report)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list(marks.glob("rank*.pid"))) < 2:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the nccl check's two ranks never started"
        time.sleep(0.1)
    pids = {p.stem: int(p.read_text()) for p in marks.glob("rank*.pid")}
    assert all(_running(pid) for pid in pids.values()), pids
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread of the runner is
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"`verify run` still running 60 s after {sig.name}; its stacks:\n{out[-8000:]}")
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    left = [name for name, pid in pids.items() if not _gone(pid)]
    assert not left, f"rank processes outlived `verify run`: {left}"
    assert list(tmp.iterdir()) == [], f"left behind in TMPDIR: {list(tmp.iterdir())}"
    nccl = json.loads(report.read_text())["results"][0]
    assert nccl["status"] == "skip" and nccl["summary"].startswith("interrupted after"), nccl
