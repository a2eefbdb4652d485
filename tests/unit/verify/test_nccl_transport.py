"""The transport NCCL chose between nodes, read from its INFO log, and the FAIL when it fell back to sockets
although InfiniBand/RoCE devices exist. Log lines are NCCL's own format (NCCL_DEBUG=INFO, SUBSYS=INIT,NET)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from verify.checks.host import HostFacts, IbDevice, IbPort, Paths, collect
from verify.checks.nccl import parse_transport, socket_fallback_problem
from verify.cluster.distributed import CollectiveConfig, MiB, iters_for

IB_LOG = """\
gpu07:2211:2290 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB ib0:10.0.0.7<0>
gpu07:2211:2290 [0] NCCL INFO Using network IB
gpu07:2211:2290 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
gpu07:2211:2290 [0] NCCL INFO Channel 00/0 : 7[7] -> 8[0] [send] via NET/IB/0
gpu07:2211:2290 [0] NCCL INFO Channel 00/0 : 15[7] -> 0[0] [receive] via NET/IB/0
"""
SOCKET_LOG = """\
gpu07:2211:2290 [0] NCCL INFO NET/IB : No device found.
gpu07:2211:2290 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.7<0>
gpu07:2211:2290 [0] NCCL INFO Using network Socket
gpu07:2211:2290 [0] NCCL INFO Channel 00/0 : 1[1] -> 2[0] [send] via NET/Socket/0
"""
ACTIVE_IB = IbDevice("uverbs0", "mlx5_0", (IbPort("1", "ACTIVE", "InfiniBand"),))
GiB = 1 << 30


def test_ib_channels():
    assert parse_transport(IB_LOG) == "NET/IB"


def test_socket_channels():
    assert parse_transport(SOCKET_LOG) == "NET/Socket"


def test_plugin_transport_is_named():
    assert parse_transport("NCCL INFO Channel 00/0 : 1[1] -> 2[0] [send] via NET/AWS_Libfabric/0") == (
        "NET/AWS_Libfabric"
    )


def test_network_without_channels_falls_back_to_the_using_line():
    assert parse_transport("x NCCL INFO Using network Socket\n") == "NET/Socket"


def test_no_network_in_the_log():
    assert parse_transport("NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n") is None


def _facts(**changes) -> HostFacts:
    base = HostFacts(mem_total=64 * GiB, memlock_soft=None, memlock_hard=None, ib_devices=(ACTIVE_IB,))
    return dataclasses.replace(base, **changes)


def test_ib_in_use_is_fine():
    assert socket_fallback_problem("NET/IB", _facts(), libibverbs=True) is None


def test_sockets_on_a_host_without_rdma_are_fine():
    assert socket_fallback_problem("NET/Socket", _facts(ib_devices=()), libibverbs=False) is None


def test_sockets_with_rdma_devices_not_passed_into_the_container(tmp_path):
    # a real sysfs-like tree: the host's RDMA device is listed, but /dev/infiniband is not in the container
    (tmp_path / "sys/class/infiniband/mlx5_0").mkdir(parents=True)
    facts = collect(Paths.under(tmp_path), environ={})
    assert facts.rdma_without_verbs == ("mlx5_0",) and not facts.ib_devices
    problem = socket_fallback_problem("NET/Socket", facts, libibverbs=True)
    assert "fell back to TCP sockets" in problem and "/dev/infiniband" in problem
    assert "--device /dev/infiniband" in problem


def test_sockets_without_libibverbs():
    problem = socket_fallback_problem("NET/Socket", _facts(), libibverbs=False)
    assert "libibverbs" in problem and "apt-get install" in problem


def test_sockets_with_a_low_memlock_limit():
    problem = socket_fallback_problem("NET/Socket", _facts(memlock_soft=64 * MiB), libibverbs=True)
    assert "ulimit -l" in problem and "64 MiB" in problem


def test_sockets_because_nccl_ib_disable():
    problem = socket_fallback_problem("NET/Socket", _facts(nccl_ib_disable=True), libibverbs=True)
    assert "unset NCCL_IB_DISABLE" in problem


def test_sockets_with_every_prerequisite_in_place_still_fail_and_point_at_the_log():
    problem = socket_fallback_problem("NET/Socket", _facts(), libibverbs=True)
    assert problem and "NCCL_DEBUG=INFO" in problem


def test_real_memlock_limit_of_this_process_flips_the_verdict():
    """The fault made for real: a child with `ulimit -l 64` collects its own limit."""
    import json
    import subprocess
    import sys

    code = (
        "import json, resource; from verify.checks.host import collect; "
        "f = collect(); print(json.dumps(f.memlock_soft))"
    )
    out = subprocess.run(
        ["bash", "-c", f"ulimit -S -l 64 && {sys.executable} -c '{code}'"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    soft = json.loads(out.stdout)
    assert soft == 64 * 1024
    assert "ulimit -l) is 64 KiB" in socket_fallback_problem("NET/Socket", _facts(memlock_soft=soft), True)
    assert "ulimit -l" not in socket_fallback_problem("NET/Socket", _facts(memlock_soft=None), True)


@pytest.mark.parametrize(("nbytes", "iters"), [(MiB, 100), (4 * MiB, 100), (16 * MiB, 80), (64 * MiB, 20)])
def test_nccl_times_more_iterations_at_small_sizes(nbytes, iters):
    assert iters_for(nbytes, CollectiveConfig.for_backend("nccl", quick=False)) == iters
    assert iters_for(nbytes, CollectiveConfig.for_backend("gloo", quick=False)) == 5
