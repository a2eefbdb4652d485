"""CPU pinning picks a core on the GPU's NUMA node: real temporary sysfs trees, real affinity syscalls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from verify import affinity

H200_BUS = "0000:00:06.0"  # the lent H200, as sysfs names it


def make_sysfs(root: Path, bus_id: str, numa_node: str, local_cpulist: str) -> Path:
    """A /sys with one PCI device, laid out as the kernel does (values end in a newline)."""
    dev = root / "bus" / "pci" / "devices" / bus_id
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text(f"{numa_node}\n")
    (dev / "local_cpulist").write_text(f"{local_cpulist}\n")
    return root


@pytest.mark.parametrize(
    ("given", "sysfs"),
    [
        ("00000000:00:06.0", "0000:00:06.0"),  # NVML
        ("0000:00:06.0", "0000:00:06.0"),  # CUDA / sysfs
        ("00000000:1B:00.0", "0000:1b:00.0"),  # NVML prints hex in upper case
        ("00000001:C1:00.0", "0001:c1:00.0"),
    ],
)
def test_bus_ids_are_written_as_sysfs_does(given, sysfs):
    assert affinity.sysfs_bus_id(given) == sysfs


def test_a_bus_id_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match=r"not domain:bus:device\.function"):
        affinity.sysfs_bus_id("GPU-b360bc59")


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-15", set(range(16))), ("0-3,8,10-11\n", {0, 1, 2, 3, 8, 10, 11}), ("5", {5}), ("", set())],
)
def test_cpulists_parse_and_format_back(text, cpus):
    assert affinity.parse_cpulist(text) == cpus
    if cpus:
        assert affinity.parse_cpulist(affinity.format_cpulist(cpus)) == cpus
    assert affinity.format_cpulist({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"


def test_two_socket_host_pins_on_the_gpus_node(tmp_path):
    # A 2-socket host: the GPU hangs off node 1 (CPUs 32-63 and their hyperthreads 96-127).
    root = make_sysfs(tmp_path, "0000:c1:00.0", "1", "32-63,96-127")
    loc = affinity.read_locality("00000000:C1:00.0", root)
    assert (loc.bus_id, loc.numa_node, loc.problem) == ("0000:c1:00.0", 1, None)
    choice = affinity.choose_cpu(set(range(128)), loc)
    assert choice.cpu in loc.local_cpus and choice.cpu == 96
    assert "NUMA node 1" in choice.why and "32-63,96-127" in choice.why


def test_only_the_allowed_part_of_the_node_is_used(tmp_path):
    # The container may use CPUs 0-7 and 40-47 only: the choice is in the intersection.
    root = make_sysfs(tmp_path, "0000:c1:00.0", "1", "32-63")
    loc = affinity.read_locality("0000:c1:00.0", root)
    allowed = set(range(8)) | set(range(40, 48))
    choice = affinity.choose_cpu(allowed, loc)
    assert choice.cpu in set(range(40, 48))
    assert "8 of them allowed" in choice.why


def test_node_not_allowed_falls_back_and_says_so(tmp_path):
    root = make_sysfs(tmp_path, "0000:c1:00.0", "1", "32-63")
    choice = affinity.choose_cpu(set(range(16)), affinity.read_locality("0000:c1:00.0", root))
    assert choice.cpu == 8  # the old rule: the middle allowed CPU
    assert "none of GPU 0000:c1:00.0's NUMA node 1 CPUs (32-63) is allowed" in choice.why
    assert "taskset" in choice.why


def test_numa_node_minus_one_is_no_numa_information(tmp_path):
    # What the lent H200 VM reports: numa_node -1, local_cpulist 0-15, 16 CPUs.
    root = make_sysfs(tmp_path, H200_BUS, "-1", "0-15")
    loc = affinity.read_locality("00000000:00:06.0", root)
    assert loc.numa_node is None and loc.problem is None
    choice = affinity.choose_cpu(set(range(16)), loc)
    assert choice.cpu == 8
    assert "numa_node -1" in choice.why and "no NUMA information" in choice.why


def test_missing_device_or_bus_id_falls_back_with_the_reason(tmp_path):
    loc = affinity.read_locality(H200_BUS, tmp_path)  # an empty /sys
    assert loc.problem is not None and "numa_node" in loc.problem
    choice = affinity.choose_cpu({2, 3, 4}, loc)
    assert choice.cpu == 3 and "not readable" in choice.why
    unknown = affinity.choose_cpu({2, 3, 4}, affinity.read_locality(None, tmp_path))
    assert unknown.cpu == 3 and "bus id is unknown" in unknown.why


def test_one_allowed_cpu_is_not_pinned():
    choice = affinity.choose_cpu({5}, affinity.Locality(H200_BUS, 0, frozenset({5})))
    assert choice.cpu is None and "only run on CPU(s) 5" in choice.why


def test_this_hosts_sysfs_reads_without_error():
    # The real /sys of this machine: any PCI device there reads as a Locality (no GPU needed).
    devices = Path("/sys/bus/pci/devices")
    if not devices.exists() or not any(devices.iterdir()):
        pytest.skip("this machine shows no PCI devices in /sys")
    first = sorted(devices.iterdir())[0].name
    loc = affinity.read_locality(first)
    assert loc.problem is None and loc.local_cpus


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least 2 allowed CPUs to pin to one")
def test_pin_near_really_pins_to_the_node_and_restores(tmp_path):
    before = frozenset(os.sched_getaffinity(0))
    node_cpu = max(before)  # put the "GPU" on the node of the last allowed CPU
    root = make_sysfs(tmp_path, "0000:c1:00.0", "1", str(node_cpu))
    try:
        pinned = affinity.pin_near("00000000:C1:00.0", root)
        assert pinned is not None and pinned.restore == before
        assert pinned.choice.cpu == node_cpu and os.sched_getaffinity(0) == {node_cpu}
    finally:
        affinity.set_all_threads(before)
    assert os.sched_getaffinity(0) == before


def test_nvml_bus_id_from_the_recorded_h200(nvml_replay):
    nvml_replay("h200-idle")
    # torch prints the UUID without "GPU-"; NVML's answer is in NVML's format, sysfs_bus_id makes it sysfs's
    bus = affinity.nvml_bus_id("b360bc59-811c-f617-4d21-e808a2fbf02a")
    assert bus == "00000000:00:06.0" and affinity.sysfs_bus_id(bus) == H200_BUS
    assert affinity.nvml_bus_id("GPU-00000000-0000-0000-0000-000000000000") is None
