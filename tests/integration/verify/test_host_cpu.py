"""The host check for real on this machine: the `verify run --only host` CLI against this machine's own
/dev/shm, and the memlock rule made real with a lowered RLIMIT_MEMLOCK in a real check process.

This machine has no InfiniBand hardware, so the memlock tests give the check a directory tree in which
/dev/infiniband/uverbs0 and the sysfs files of one mlx5 device are plain files, laid out as the kernel lays
them out; everything else in that tree links to the real thing (/dev/shm, /proc/self, /proc/meminfo,
/sys/fs/cgroup). The limit and the capability are the check process's own: lowered and dropped for real.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from verify.checks.host import GiB

REPO = Path(__file__).resolve().parents[3]
LOW_MEMLOCK = 64 * 1024  # the kernel's built-in default for RLIMIT_MEMLOCK before 5.16
PR_CAPBSET_DROP = 24  # linux/prctl.h
CAP_IPC_LOCK = 14


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "NCCL_IB_DISABLE"}
    return {**base, "PYTHONPATH": str(REPO), "COLUMNS": "200", **extra}


def test_verify_run_only_host_reports_this_machines_shm(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "run", "--only", "host", "--json", "r.json"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads((tmp_path / "r.json").read_text())
    (result,) = report["results"]
    st = os.statvfs("/dev/shm")
    size, free = st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail
    assert result["name"] == "host"
    assert result["figures"]["shm_bytes"] == size
    expected = "pass" if min(size, free) >= GiB else "warn"  # no IB device here, no cgroup limit below 1 GiB
    assert result["status"] == expected, result["summary"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["duration_s"] < 5, "the host check must stay light"
    print(f"\n{result['status'].upper()} host {result['duration_s']:.2f} s: {result['summary']}")


def test_the_check_does_not_import_torch():
    code = (
        "import sys; from verify.checks import host; from verify.context import Context; "
        "r = host.run(Context()); print(r.status.value, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "False", out.stdout


# ---- memlock with an InfiniBand device ---------------------------------------------------------------------


def fake_ib_root(root: Path, port_state: str = "4: ACTIVE", uverbs: bool = True) -> Path:
    """A root whose IB files are fake (see the module docstring) and the rest links to this machine's."""
    for rel, target in {
        "dev/shm": "/dev/shm",
        "proc/self": "/proc/self",
        "proc/meminfo": "/proc/meminfo",
        "sys/fs/cgroup": "/sys/fs/cgroup",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    files = {
        "dev/infiniband/rdma_cm": "",
        "sys/class/infiniband/mlx5_0/ports/1/state": port_state + "\n",
        "sys/class/infiniband/mlx5_0/ports/1/link_layer": "InfiniBand\n",
    }
    if uverbs:
        files |= {"dev/infiniband/uverbs0": "", "sys/class/infiniband_verbs/uverbs0/ibdev": "mlx5_0\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _lower_memlock_and_drop_ipc_lock(keep_cap: bool):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (LOW_MEMLOCK, LOW_MEMLOCK))
        if not keep_cap and os.geteuid() == 0:  # root gets CAP_IPC_LOCK back at exec unless it is gone
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK)")

    return preexec


def run_worker(tmp_path: Path, root: Path, keep_cap: bool = False, **extra_env: str) -> dict:
    """The check in its own process, as `verify run` starts it (verify.worker), with a lowered limit."""
    out = tmp_path / f"result-{len(list(tmp_path.glob('result-*')))}.json"
    ctx = {"options": {"host": {"root": str(root)}}}
    subprocess.run(
        [sys.executable, "-m", "verify.worker", "verify.checks.host", json.dumps(ctx), str(out)],
        env=env(**extra_env),
        preexec_fn=_lower_memlock_and_drop_ipc_lock(keep_cap),
        check=True,
        timeout=60,
    )
    return json.loads(out.read_text())


def test_low_memlock_with_an_active_ib_device_warns(tmp_path):
    r = run_worker(tmp_path, fake_ib_root(tmp_path / "root"))
    assert r["details"]["memlock_soft"] == LOW_MEMLOCK and r["details"]["cap_ipc_lock"] is False
    assert r["status"] == "warn", r["summary"]
    assert "locked-memory limit (ulimit -l) is 64 KiB (65536 bytes)" in r["summary"]
    assert "mlx5_0 (uverbs0, port 1 ACTIVE InfiniBand)" in r["summary"]
    assert "--ulimit memlock=-1" in r["summary"]


@pytest.mark.parametrize(
    ("tree", "extra_env", "why"),
    [
        ({"uverbs": False}, {}, "no InfiniBand/RoCE verbs device"),  # the H200 host: rdma_cm only
        ({"port_state": "1: DOWN"}, {}, "without an ACTIVE port"),
        ({}, {"NCCL_IB_DISABLE": "1"}, "NCCL_IB_DISABLE is set"),
    ],
)
def test_same_low_memlock_passes_where_nccl_would_not_pin(tmp_path, tree, extra_env, why):
    r = run_worker(tmp_path, fake_ib_root(tmp_path / "root", **tree), **extra_env)
    assert r["details"]["memlock_soft"] == LOW_MEMLOCK
    assert r["status"] == "pass", r["summary"]
    assert why in r["summary"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root holds CAP_IPC_LOCK here")
def test_cap_ipc_lock_lifts_the_limit(tmp_path):
    r = run_worker(tmp_path, fake_ib_root(tmp_path / "root"), keep_cap=True)
    assert r["details"]["cap_ipc_lock"] is True
    assert r["status"] == "pass" and "CAP_IPC_LOCK held" in r["summary"]
