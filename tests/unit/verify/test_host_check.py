"""host check: the rules on plain facts, and collect() on real directory trees (and real tmpfs mounts).

The trees are laid out as the kernel lays out /sys/class/infiniband*, /dev/infiniband, /proc/self/cgroup
and the cgroup v1/v2 files, so collect() reads real files the way it reads them on a host.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from verify.checks.host import GiB, HostFacts, IbDevice, IbPort, MiB, Paths, collect, evaluate, size_text
from verify.result import Status

ACTIVE_IB = IbDevice("uverbs0", "mlx5_0", (IbPort("1", "ACTIVE", "InfiniBand"),))
DOWN_ROCE = IbDevice("uverbs1", "mlx5_1", (IbPort("1", "DOWN", "Ethernet"),))
# A healthy container: 8 GiB /dev/shm, no cgroup limit, Docker's 8 MiB memlock, 24 GiB RAM, no IB.
OK = HostFacts(
    shm_bytes=8 * GiB,
    shm_free_bytes=8 * GiB,
    mem_total=24 * GiB,
    memlock_soft=8 * MiB,
    memlock_hard=8 * MiB,
    cap_ipc_lock=False,
)


# ---- evaluate: /dev/shm ------------------------------------------------------------------------------------


def test_enough_shm_and_no_ib_passes_with_the_figures():
    r = evaluate(OK)
    assert r.status is Status.PASS
    assert r.summary.startswith("/dev/shm 8.0 GiB (8.0 GiB free); no cgroup memory limit; memlock 8 MiB; ")
    assert "no InfiniBand/RoCE verbs device" in r.summary
    assert r.figures["shm_bytes"] == 8 * GiB and r.figures["memlock_soft_bytes"] == 8 * MiB
    assert r.figures["ib_devices"] == r.figures["ib_devices_usable"] == 0


def test_dockers_default_64_mib_shm_warns_with_size_cause_and_fix():
    r = evaluate(replace(OK, shm_bytes=64 * MiB, shm_free_bytes=64 * MiB))
    assert r.status is Status.WARN
    assert "/dev/shm is 64 MiB (67108864 bytes), under 1 GiB" in r.summary
    assert "bus error" in r.summary and "NCCL" in r.summary
    assert "--shm-size 8g" in r.summary and "ipc: host" in r.summary and "shm_size:" in r.summary


def test_shm_threshold_is_one_gib():
    assert evaluate(replace(OK, shm_bytes=GiB, shm_free_bytes=GiB)).status is Status.PASS
    assert evaluate(replace(OK, shm_bytes=GiB - 4096, shm_free_bytes=GiB - 4096)).status is Status.WARN


def test_missing_shm_warns():
    r = evaluate(replace(OK, shm_bytes=None, shm_free_bytes=None))
    assert r.status is Status.WARN
    assert r.summary.startswith("no /dev/shm (a tmpfs)") and "--shm-size" in r.summary


def test_cgroup_memory_limit_below_1_gib_caps_shared_memory():
    r = evaluate(replace(OK, cgroup_memory_limit=512 * MiB))
    assert r.status is Status.WARN
    assert "cgroup memory limit is 512 MiB (536870912 bytes)" in r.summary
    assert "OOM" in r.summary and "--memory 16g" in r.summary and "mem_limit" in r.summary


def test_cgroup_memory_limit_above_1_gib_is_reported_not_judged():
    r = evaluate(replace(OK, cgroup_memory_limit=4 * GiB))
    assert r.status is Status.PASS
    assert "cgroup memory limit 4.0 GiB" in r.summary
    assert r.figures["cgroup_memory_limit_bytes"] == 4 * GiB


def test_full_shm_warns_and_names_the_leftovers():
    r = evaluate(replace(OK, shm_free_bytes=100 * MiB))
    assert r.status is Status.WARN
    assert "/dev/shm has 100 MiB free of 8.0 GiB" in r.summary and "ls -la /dev/shm" in r.summary


# ---- evaluate: memlock with InfiniBand/RoCE ----------------------------------------------------------------


def test_low_memlock_with_an_active_ib_device_warns_with_the_fix():
    r = evaluate(replace(OK, ib_devices=(ACTIVE_IB,)))
    assert r.status is Status.WARN
    assert "locked-memory limit (ulimit -l) is 8 MiB (8388608 bytes)" in r.summary
    assert "mlx5_0 (uverbs0, port 1 ACTIVE InfiniBand)" in r.summary
    assert "ibv_reg_mr" in r.summary and "--ulimit memlock=-1" in r.summary
    assert "ulimits: {memlock: -1}" in r.summary and "limits.conf" in r.summary
    assert r.figures["ib_devices_usable"] == 1


def test_hard_limit_is_named_when_it_differs():
    r = evaluate(replace(OK, ib_devices=(ACTIVE_IB,), memlock_soft=64 * 1024, memlock_hard=None))
    assert "is 64 KiB (65536 bytes, hard limit unlimited)" in r.summary


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"memlock_soft": None, "memlock_hard": None}, "memlock unlimited with mlx5_0"),
        ({"memlock_soft": 24 * GiB}, "memlock 24.0 GiB with mlx5_0"),  # as big as RAM: never reached
        ({"cap_ipc_lock": True}, "CAP_IPC_LOCK held (the limit does not apply)"),
        ({"nccl_ib_disable": True}, "NCCL_IB_DISABLE is set"),
    ],
)
def test_memlock_that_cannot_bite_passes(change, why):
    r = evaluate(replace(OK, ib_devices=(ACTIVE_IB,), **change))
    assert r.status is Status.PASS, r.summary
    assert why in r.summary


def test_memlock_just_under_ram_warns():
    r = evaluate(replace(OK, ib_devices=(ACTIVE_IB,), memlock_soft=24 * GiB - 4096))
    assert r.status is Status.WARN


def test_ib_device_without_an_active_port_is_not_used_by_nccl():
    r = evaluate(replace(OK, ib_devices=(DOWN_ROCE,)))
    assert r.status is Status.PASS
    assert "without an ACTIVE port (mlx5_1 (uverbs1, port 1 DOWN Ethernet))" in r.summary
    assert r.figures["ib_devices"] == 1 and r.figures["ib_devices_usable"] == 0


def test_ports_unknown_count_as_usable():
    r = evaluate(replace(OK, ib_devices=(IbDevice("uverbs0"),)))
    assert r.status is Status.WARN and "uverbs0 (uverbs0)" in r.summary


def test_rdma_in_sysfs_without_uverbs_node_is_reported_not_judged():
    r = evaluate(replace(OK, rdma_without_verbs=("mlx5_0",)))
    assert r.status is Status.PASS
    assert "RDMA devices mlx5_0 exist but are not passed in" in r.summary
    assert "--device /dev/infiniband" in r.summary


def test_shm_and_memlock_problems_are_both_named():
    r = evaluate(replace(OK, shm_bytes=64 * MiB, shm_free_bytes=64 * MiB, ib_devices=(ACTIVE_IB,)))
    assert r.status is Status.WARN
    assert "--shm-size" in r.summary and "memlock=-1" in r.summary


def test_size_text():
    assert [size_text(v) for v in (None, 65536, 64 * MiB, 8 * GiB, 23_500_000_000)] == [
        "unlimited",
        "64 KiB",
        "64 MiB",
        "8.0 GiB",
        "21.9 GiB",
    ]


# ---- collect on real trees ---------------------------------------------------------------------------------


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ib_port(root: Path, dev: str, port: str, state: str, link: str) -> None:
    write(root, f"sys/class/infiniband/{dev}/ports/{port}/state", state + "\n")
    write(root, f"sys/class/infiniband/{dev}/ports/{port}/link_layer", link + "\n")


def test_paths_under_reroots_every_path(tmp_path):
    paths = Paths.under(tmp_path)
    for value in vars(paths).values():
        assert tmp_path in value.parents
    assert paths.shm == tmp_path / "dev/shm" and paths.proc_self == tmp_path / "proc/self"


def test_collect_reads_verbs_devices_ports_and_names(tmp_path):
    for n, dev in enumerate(("mlx5_0", "mlx5_1")):
        write(tmp_path, f"dev/infiniband/uverbs{n}", "")
        write(tmp_path, f"sys/class/infiniband_verbs/uverbs{n}/ibdev", dev + "\n")
    write(tmp_path, "dev/infiniband/rdma_cm", "")
    ib_port(tmp_path, "mlx5_0", "1", "4: ACTIVE", "InfiniBand")
    ib_port(tmp_path, "mlx5_1", "1", "1: DOWN", "Ethernet")
    ib_port(tmp_path, "mlx5_2", "1", "4: ACTIVE", "InfiniBand")  # on the host, not passed in
    facts = collect(Paths.under(tmp_path), environ={})
    assert facts.ib_devices == (
        IbDevice("uverbs0", "mlx5_0", (IbPort("1", "ACTIVE", "InfiniBand"),)),
        IbDevice("uverbs1", "mlx5_1", (IbPort("1", "DOWN", "Ethernet"),)),
    )
    assert facts.rdma_without_verbs == ("mlx5_2",)
    assert facts.nccl_ib_disable is False


def test_rdma_cm_alone_is_no_verbs_device(tmp_path):
    """The lent H200 host: /dev/infiniband holds only rdma_cm. No uverbs node: nothing NCCL can open."""
    write(tmp_path, "dev/infiniband/rdma_cm", "")
    facts = collect(Paths.under(tmp_path), environ={})
    assert facts.ib_devices == () and facts.rdma_without_verbs == ()
    low_memlock = replace(facts, shm_bytes=8 * GiB, shm_free_bytes=8 * GiB, memlock_soft=64 * 1024)
    assert evaluate(low_memlock).status is Status.PASS


def test_collect_on_an_empty_tree_reports_no_shm_and_unknowns(tmp_path):
    facts = collect(Paths.under(tmp_path), environ={})
    assert facts.shm_bytes is None and facts.shm_path == str(tmp_path / "dev/shm")
    assert facts.cgroup_memory_limit is None and facts.mem_total is None and facts.cap_ipc_lock is None
    assert facts.ib_devices == () and facts.errors == {}
    assert evaluate(facts).summary.startswith(f"no {tmp_path / 'dev/shm'} (a tmpfs)")


def test_collect_reads_meminfo_capabilities_and_the_rlimit(tmp_path):
    import resource

    write(tmp_path, "proc/meminfo", "MemTotal:       24684084 kB\nMemFree:        1 kB\n")
    write(tmp_path, "proc/self/status", "Name:\tpython\nCapEff:\t0000000000004000\n")
    facts = collect(Paths.under(tmp_path), environ={"NCCL_IB_DISABLE": "1"})
    assert facts.mem_total == 24684084 * 1024
    assert facts.cap_ipc_lock is True
    assert facts.nccl_ib_disable is True
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    assert facts.memlock_soft == (None if soft == resource.RLIM_INFINITY else soft)
    assert facts.memlock_hard == (None if hard == resource.RLIM_INFINITY else hard)
    write(tmp_path, "proc/self/status", "CapEff:\t000001fffeffbfff\n")  # all but CAP_IPC_LOCK
    assert collect(Paths.under(tmp_path)).cap_ipc_lock is False


@pytest.mark.parametrize(("value", "on"), [("0", False), ("", False), ("1", True), ("2", True), ("x", False)])
def test_nccl_ib_disable_reads_like_nccls_atoi(tmp_path, value, on):
    assert collect(Paths.under(tmp_path), environ={"NCCL_IB_DISABLE": value}).nccl_ib_disable is on


def test_cgroup_v1_limit_of_a_docker_container(tmp_path):
    """Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup names /docker/<id>, but the mount
    inside the container is that cgroup itself, so the file is at the mount's root."""
    write(tmp_path, "proc/self/cgroup", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n")
    assert collect(Paths.under(tmp_path)).cgroup_memory_limit == 512 * MiB
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")  # v1's "none"
    assert collect(Paths.under(tmp_path)).cgroup_memory_limit is None


def test_cgroup_v2_limit_of_an_ancestor_applies(tmp_path):
    write(tmp_path, "proc/self/cgroup", "0::/job/step\n")
    write(tmp_path, "sys/fs/cgroup/job/memory.max", "1073741824\n")
    write(tmp_path, "sys/fs/cgroup/job/step/memory.max", "max\n")
    assert collect(Paths.under(tmp_path)).cgroup_memory_limit == GiB
    write(tmp_path, "sys/fs/cgroup/job/step/memory.max", "268435456\n")
    assert collect(Paths.under(tmp_path)).cgroup_memory_limit == 256 * MiB


# ---- collect on a real tmpfs (the kernel's own statvfs answers) --------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_real_64_mib_tmpfs_warns(tmp_path):
    with tmpfs(tmp_path / "dev/shm", "64m"):
        facts = collect(Paths.under(tmp_path), environ={})
    assert facts.shm_bytes == 64 * MiB
    r = evaluate(facts)
    assert r.status is Status.WARN and "is 64 MiB (67108864 bytes)" in r.summary


def test_real_tmpfs_filled_by_leftovers_warns_then_passes_when_removed(tmp_path):
    with tmpfs(tmp_path / "dev/shm", "1200m") as shm:
        leftover = shm / "torch_12345_leftover"
        with leftover.open("wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, 300 * MiB)
        full = evaluate(collect(Paths.under(tmp_path), environ={}))
        leftover.unlink()
        empty = evaluate(collect(Paths.under(tmp_path), environ={}))
    assert full.status is Status.WARN and "MiB free of 1.2 GiB" in full.summary
    assert empty.status is Status.PASS, empty.summary
