"""Which CPU a GPU benchmark pins itself to: one on the GPU's own NUMA node, and why.

WHY pin at all: an eager training loop is bound by the one CPU thread that launches kernels; thread
migrations between cores cost ~30 % on the lent H200 VM (docs/gpu-results.md). WHY that node: on a
multi-socket host a core on the other socket adds a hop to every launch and every host<->device copy.

The kernel tells us the locality: /sys/bus/pci/devices/<bus id>/numa_node (-1 = no NUMA information, as on
a one-node VM) and .../local_cpulist. Bus ids are written as sysfs does, "0000:00:06.0" (domain 4 hex digits,
lower case); NVML prints "00000000:00:06.0". Collecting (`read_locality`, `torch_bus_id`) is kept apart from
choosing (`choose_cpu`, pure) so the rule is tested on real temporary sysfs trees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYS_ROOT = Path("/sys")


@dataclass(frozen=True)
class Locality:
    """What sysfs says about one PCI device: its NUMA node (None when unknown) and its local CPUs."""

    bus_id: str | None
    numa_node: int | None
    local_cpus: frozenset[int] | None
    problem: str | None = None  # why the locality is unknown, in words


@dataclass(frozen=True)
class CpuChoice:
    cpu: int | None  # None: do not pin
    why: str


def sysfs_bus_id(bus_id: str) -> str:
    """NVML's "00000000:00:06.0" or CUDA's "0000:00:06.0" as sysfs names it: "0000:00:06.0", lower case."""
    parts = bus_id.strip().lower().split(":")
    if len(parts) != 3:
        raise ValueError(f"PCI bus id {bus_id!r} is not domain:bus:device.function")
    domain, bus, devfn = parts
    return f"{int(domain, 16):04x}:{bus}:{devfn}"


def parse_cpulist(text: str) -> frozenset[int]:
    """The kernel's CPU list format, "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(cpus)


def format_cpulist(cpus: set[int] | frozenset[int]) -> str:
    """{0, 1, 2, 3, 8} -> "0-3,8" (the kernel's format, for messages)."""
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def read_locality(bus_id: str | None, sys_root: Path = SYS_ROOT) -> Locality:
    """numa_node and local_cpulist of a PCI device from sysfs (sys_root is injectable for tests)."""
    if bus_id is None:
        return Locality(None, None, None, "the GPU's PCI bus id is unknown")
    try:
        bid = sysfs_bus_id(bus_id)
    except ValueError as exc:
        return Locality(bus_id, None, None, str(exc))
    dev = sys_root / "bus" / "pci" / "devices" / bid
    try:
        node = int((dev / "numa_node").read_text().strip())
        local = parse_cpulist((dev / "local_cpulist").read_text())
    except (OSError, ValueError) as exc:
        return Locality(bid, None, None, f"{dev} is not readable ({type(exc).__name__}: {exc})")
    return Locality(bid, node if node >= 0 else None, local, None)


def fallback_cpu(allowed: set[int] | frozenset[int]) -> int:
    """Without NUMA information: the middle allowed CPU, away from CPU 0 (it takes most interrupts)."""
    return sorted(allowed)[len(allowed) // 2]


def choose_cpu(allowed: set[int] | frozenset[int], loc: Locality) -> CpuChoice:
    """The CPU to pin to, given the CPUs this process may use and the GPU's locality, with the reason."""
    if len(allowed) < 2:
        return CpuChoice(None, f"not pinned: this process may only run on CPU(s) {format_cpulist(allowed)}")
    if loc.problem is not None:
        cpu = fallback_cpu(allowed)
        return CpuChoice(cpu, f"CPU {cpu}, the middle allowed CPU: no NUMA information ({loc.problem})")
    if loc.numa_node is None:
        cpu = fallback_cpu(allowed)
        return CpuChoice(
            cpu,
            f"CPU {cpu}, the middle allowed CPU: GPU {loc.bus_id} reports numa_node -1 (no NUMA information: "
            f"one node, or the platform does not say)",
        )
    near = set(allowed) & set(loc.local_cpus or ())
    if not near:
        cpu = fallback_cpu(allowed)
        return CpuChoice(
            cpu,
            f"CPU {cpu}, the middle allowed CPU: none of GPU {loc.bus_id}'s NUMA node {loc.numa_node} CPUs "
            f"({format_cpulist(loc.local_cpus or frozenset())}) is allowed to this process "
            f"({format_cpulist(allowed)}); allow one (taskset, cpuset) to keep launches on the GPU's node",
        )
    cpu = fallback_cpu(near)
    return CpuChoice(
        cpu,
        f"CPU {cpu}, on GPU {loc.bus_id}'s NUMA node {loc.numa_node} (local CPUs "
        f"{format_cpulist(loc.local_cpus or frozenset())}; {len(near)} of them allowed to this process)",
    )


def torch_bus_id(device: Any) -> str | None:
    """The PCI bus id of a torch CUDA device: from its properties, else from NVML by the device's UUID."""
    import torch

    props = torch.cuda.get_device_properties(device)
    ids = [getattr(props, f"pci_{k}_id", None) for k in ("domain", "bus", "device")]
    if all(isinstance(i, int) for i in ids):
        return f"{ids[0]:04x}:{ids[1]:02x}:{ids[2]:02x}.0"
    uuid = str(getattr(props, "uuid", "") or "")
    return nvml_bus_id(uuid) if uuid else None


def nvml_bus_id(uuid: str) -> str | None:
    """NVML's bus id for a GPU UUID ("GPU-..." or bare, as torch prints it); None where NVML cannot say."""
    try:
        import pynvml
    except ImportError:
        return None
    wanted = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver library, or no permission: NVML cannot say
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(wanted)
        bus = pynvml.nvmlDeviceGetPciInfo(handle).busId
        return bus.decode() if isinstance(bus, bytes) else str(bus)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def set_all_threads(cpus: set[int] | frozenset[int]) -> None:
    """sched_setaffinity for every thread of this process (taskset's effect, after the threads exist)."""
    task = Path("/proc/self/task")
    for tid in [int(t.name) for t in task.iterdir()] if task.exists() else [0]:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that exited meanwhile
            continue


@dataclass(frozen=True)
class Pinned:
    choice: CpuChoice
    restore: frozenset[int]  # the CPU set to put back afterwards


def pin_near(bus_id: str | None, sys_root: Path = SYS_ROOT) -> Pinned | None:
    """Pin every thread to the CPU choose_cpu picks for this GPU; None where the OS cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = frozenset(os.sched_getaffinity(0))
    choice = choose_cpu(allowed, read_locality(bus_id, sys_root))
    if choice.cpu is not None:
        set_all_threads({choice.cpu})
    return Pinned(choice, allowed)
