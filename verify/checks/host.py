"""host: will GPU training work on this host or in this container, beyond the GPU itself?

Two limits that Docker sets low by default break training jobs far from where they are set, with messages
that do not name the cause; this check names them before a job starts. No torch import: it reads a few files.

Rules (each WARN names the value and the fix; exit code stays 0):
- shared memory usable by this process under 1 GiB (the `--shm-size=1g` NCCL's troubleshooting guide asks
  for in containers). DataLoader workers hand batches over as shared-memory tensors and die with "bus error"
  when /dev/shm is full; NCCL's shared-memory transport fails with "failed to extend /dev/shm/nccl-...".
  What limits it, in the order reported: /dev/shm missing; /dev/shm smaller than 1 GiB (a plain
  `docker run` gives 64 MiB); the cgroup memory limit under 1 GiB (tmpfs pages are charged to the cgroup,
  so a big /dev/shm in a small container ends in the OOM killer); under 1 GiB free (files left behind).
- locked-memory limit (RLIMIT_MEMLOCK, soft) below the machine's RAM where NCCL would use an
  InfiniBand/RoCE device: its IB transport registers (pins) buffers with ibv_reg_mr, which the kernel
  counts against this limit, and fails with "Cannot allocate memory". NVIDIA's guide asks for unlimited
  (`--ulimit memlock=-1`); a finite limit at least the size of RAM can never be reached, so it passes too.
  Not judged when the process has CAP_IPC_LOCK (the kernel then ignores the limit) or NCCL_IB_DISABLE is
  set. "A device NCCL would use" means what libibverbs can open: a /dev/infiniband/uverbsN node (rdma_cm and
  umad nodes alone are not verbs devices), and, where sysfs tells, at least one port ACTIVE (NCCL skips
  others). RDMA devices in sysfs without a uverbs node (hardware not passed into the container) are
  reported, not judged: NCCL then uses TCP sockets between nodes, which matters only across nodes.
PASS otherwise, with the figures (bytes) in `figures`.

`collect(paths)` reads the files; `evaluate(facts)` judges (pure). `Paths.under(root)` points every path
at a directory tree so tests read real files, and `Context.options["host"]["root"]` does the same for a
whole `verify` run (a chroot's view, or a test's fake sysfs); the rlimit and NCCL_IB_DISABLE are this
process's own.
"""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify.context import Context
from verify.result import Result, Status

NAME = "host"
DESCRIPTION = "/dev/shm size, cgroup memory limit, memlock limit where InfiniBand/RoCE devices exist"
DEFAULT_TIMEOUT_S = 30.0
IMPORTS = ()  # nothing heavy: its fork server is a plain Python
EXCLUSIVE = False  # runs beside the GPU measurements: reads /proc and /sys

GiB = 1024**3
MiB = 1024**2
SHM_MIN_BYTES = 1 * GiB
CAP_IPC_LOCK = 14  # linux/capability.h
# cgroup v1 writes "no limit" as the largest page-aligned long (9223372036854771712): this big means none.
CGROUP_UNLIMITED_FROM = 1 << 60

SHM_FIX = "docker run --shm-size 8g (compose: shm_size: 8gb) or --ipc host (compose: ipc: host)"
MEMLOCK_FIX = (
    "docker run --ulimit memlock=-1 (compose: ulimits: {memlock: -1}); on a host: "
    "'* soft memlock unlimited' and '* hard memlock unlimited' in /etc/security/limits.conf, "
    "LimitMEMLOCK=infinity for a systemd service (dockerd's own limit is what containers inherit)"
)


@dataclass(frozen=True)
class Paths:
    """Where collect() reads. Defaults are the live system; `under(root)` re-roots all of them."""

    shm: Path = Path("/dev/shm")
    dev_infiniband: Path = Path("/dev/infiniband")
    sys_infiniband: Path = Path("/sys/class/infiniband")
    sys_infiniband_verbs: Path = Path("/sys/class/infiniband_verbs")
    cgroup_fs: Path = Path("/sys/fs/cgroup")
    proc_self: Path = Path("/proc/self")
    meminfo: Path = Path("/proc/meminfo")

    @classmethod
    def under(cls, root: Path) -> Paths:
        default = cls()
        return cls(**{key: root / value.relative_to("/") for key, value in asdict(default).items()})


@dataclass(frozen=True)
class IbPort:
    port: str
    state: str  # "ACTIVE", "DOWN", ... (sysfs writes "4: ACTIVE"; the number is dropped)
    link_layer: str | None  # "InfiniBand" or "Ethernet" (RoCE)


@dataclass(frozen=True)
class IbDevice:
    """One verbs device: its /dev/infiniband/uverbsN node and, where sysfs tells, its name and ports."""

    uverbs: str
    ibdev: str | None = None
    ports: tuple[IbPort, ...] = ()

    @property
    def usable(self) -> bool:
        """NCCL opens only devices with an ACTIVE port; unknown ports (no sysfs) count as usable."""
        return not self.ports or any(p.state == "ACTIVE" for p in self.ports)

    def describe(self) -> str:
        ports = ", ".join(f"port {p.port} {p.state} {p.link_layer or ''}".rstrip() for p in self.ports)
        return f"{self.ibdev or self.uverbs} ({self.uverbs}{', ' + ports if ports else ''})"


@dataclass(frozen=True)
class HostFacts:
    shm_path: str = "/dev/shm"
    shm_bytes: int | None = None  # None: no /dev/shm
    shm_free_bytes: int | None = None
    cgroup_memory_limit: int | None = None  # None: no limit found
    mem_total: int | None = None  # /proc/meminfo MemTotal, bytes
    memlock_soft: int | None = None  # None: unlimited
    memlock_hard: int | None = None
    cap_ipc_lock: bool | None = None  # None: unknown
    ib_devices: tuple[IbDevice, ...] = ()
    rdma_without_verbs: tuple[str, ...] = ()  # sysfs RDMA devices with no uverbs node here
    nccl_ib_disable: bool = False
    errors: dict[str, str] = field(default_factory=dict)  # files that exist but could not be read


# ---- collecting --------------------------------------------------------------------------------------------


def _read(path: Path, errors: dict[str, str]) -> str | None:
    """A small text file's content; None when absent; a read error is recorded, never raised."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        errors[str(path)] = f"{type(exc).__name__}: {exc}"
        return None


def _rlimit(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else int(value)


def _mem_total(paths: Paths, errors: dict[str, str]) -> int | None:
    for line in (_read(paths.meminfo, errors) or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024  # the kernel writes kB (KiB)
    return None


def _cap_ipc_lock(paths: Paths, errors: dict[str, str]) -> bool | None:
    for line in (_read(paths.proc_self / "status", errors) or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
            except (IndexError, ValueError):
                return None
    return None


def _cgroup_memory_limit(paths: Paths, errors: dict[str, str]) -> int | None:
    """The smallest memory limit on this process's cgroup and its ancestors (v2 memory.max, v1
    memory.limit_in_bytes). Inside a container the mount's root is the container's own cgroup, so the walk
    up the path from /proc/self/cgroup finds it there."""
    limits: list[int] = []
    for line in (_read(paths.proc_self / "cgroup", errors) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            bases = [(paths.cgroup_fs, "memory.max"), (paths.cgroup_fs / "unified", "memory.max")]
        elif "memory" in controllers.split(","):
            bases = [(paths.cgroup_fs / controllers, "memory.limit_in_bytes")]
        else:
            continue
        chain = [Path(rel.lstrip("/")), *Path(rel.lstrip("/")).parents]
        for base, name in bases:
            for step in chain:
                text = _read(base / step / name, errors)
                if text is not None and text.isdigit() and int(text) < CGROUP_UNLIMITED_FROM:
                    limits.append(int(text))
    return min(limits) if limits else None


def _ib_ports(paths: Paths, ibdev: str, errors: dict[str, str]) -> tuple[IbPort, ...]:
    ports_dir = paths.sys_infiniband / ibdev / "ports"
    if not ports_dir.is_dir():
        return ()
    ports = []
    for port in sorted(ports_dir.iterdir(), key=lambda p: p.name):
        state = _read(port / "state", errors) or "UNKNOWN"
        ports.append(IbPort(port.name, state.split(":")[-1].strip(), _read(port / "link_layer", errors)))
    return tuple(ports)


def _ib_devices(paths: Paths, errors: dict[str, str]) -> tuple[tuple[IbDevice, ...], tuple[str, ...]]:
    """(verbs devices this process can open, sysfs RDMA devices without a uverbs node here)."""
    nodes = sorted(paths.dev_infiniband.glob("uverbs*")) if paths.dev_infiniband.is_dir() else []
    devices = []
    for node in nodes:
        ibdev = _read(paths.sys_infiniband_verbs / node.name / "ibdev", errors)
        ports = _ib_ports(paths, ibdev, errors) if ibdev else ()
        devices.append(IbDevice(node.name, ibdev, ports))
    in_sysfs = sorted(p.name for p in paths.sys_infiniband.iterdir()) if paths.sys_infiniband.is_dir() else []
    opened = {d.ibdev for d in devices}
    return tuple(devices), tuple(name for name in in_sysfs if name not in opened)


def _flag(value: str | None) -> bool:
    """NCCL reads its integer switches with atoi: set and non-zero means on."""
    try:
        return int((value or "0").strip() or "0") != 0
    except ValueError:
        return False


def collect(paths: Paths | None = None, environ: dict[str, str] | None = None) -> HostFacts:
    paths = paths or Paths()
    env = os.environ if environ is None else environ
    errors: dict[str, str] = {}
    shm_bytes = shm_free = None
    if paths.shm.is_dir():
        try:
            st = os.statvfs(paths.shm)
            shm_bytes, shm_free = st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail
        except OSError as exc:
            errors[str(paths.shm)] = f"{type(exc).__name__}: {exc}"
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    devices, without = _ib_devices(paths, errors)
    return HostFacts(
        shm_path=str(paths.shm),
        shm_bytes=shm_bytes,
        shm_free_bytes=shm_free,
        cgroup_memory_limit=_cgroup_memory_limit(paths, errors),
        mem_total=_mem_total(paths, errors),
        memlock_soft=_rlimit(soft),
        memlock_hard=_rlimit(hard),
        cap_ipc_lock=_cap_ipc_lock(paths, errors),
        ib_devices=devices,
        rdma_without_verbs=without,
        nccl_ib_disable=_flag(env.get("NCCL_IB_DISABLE")),
        errors=errors,
    )


# ---- judging -----------------------------------------------------------------------------------------------


def size_text(value: int | None) -> str:
    """Bytes for people: 67108864 -> '64 MiB', 8589934592 -> '8.0 GiB', None -> 'unlimited'."""
    if value is None:
        return "unlimited"
    if value >= GiB:
        return f"{value / GiB:.1f} GiB"
    if value >= MiB:
        return f"{value / MiB:.0f} MiB"
    return f"{value // 1024} KiB"


def _shm_problem(f: HostFacts) -> str | None:
    why = (
        "DataLoader workers pass batches as shared-memory tensors and die with 'bus error', and NCCL's "
        "shared-memory transport fails ('failed to extend /dev/shm/nccl-...')"
    )
    if f.shm_bytes is None:
        return f"no {f.shm_path} (a tmpfs): {why}; fix: {SHM_FIX} (not --ipc none)"
    if f.shm_bytes < SHM_MIN_BYTES:
        return (
            f"{f.shm_path} is {size_text(f.shm_bytes)} ({f.shm_bytes} bytes), under 1 GiB "
            f"(Docker's default is 64 MiB): {why}; fix: {SHM_FIX}"
        )
    limit = f.cgroup_memory_limit
    if limit is not None and limit < SHM_MIN_BYTES:
        return (
            f"{f.shm_path} is {size_text(f.shm_bytes)} but the cgroup memory limit is {size_text(limit)} "
            f"({limit} bytes) and shared memory counts against it: workers are OOM-killed before it "
            "holds 1 GiB; fix: raise the limit: docker run --memory 16g (compose: mem_limit: 16g)"
        )
    if f.shm_free_bytes is not None and f.shm_free_bytes < SHM_MIN_BYTES:
        return (
            f"{f.shm_path} has {size_text(f.shm_free_bytes)} free of {size_text(f.shm_bytes)}, under 1 GiB: "
            f"{why}; fix: free it (ls -la {f.shm_path}: segments of running or crashed jobs) or enlarge it: "
            f"{SHM_FIX}"
        )
    return None


def usable_ib(f: HostFacts) -> list[IbDevice]:
    return [d for d in f.ib_devices if d.usable]


def _memlock_state(f: HostFacts) -> tuple[str | None, str]:
    """(problem or None, the line that says why the memlock limit does or does not matter here)."""
    soft = f"memlock {size_text(f.memlock_soft)}"
    devices = usable_ib(f)
    if not devices:
        if f.ib_devices:
            listed = ", ".join(d.describe() for d in f.ib_devices)
            return None, f"{soft}; RDMA devices without an ACTIVE port ({listed}): not used by NCCL"
        note = f"{soft}; no InfiniBand/RoCE verbs device (/dev/infiniband/uverbs*)"
        if f.rdma_without_verbs:
            note += (
                f"; RDMA devices {', '.join(f.rdma_without_verbs)} exist but are not passed in: NCCL uses "
                "TCP sockets between nodes (docker run --device /dev/infiniband to use them)"
            )
        return None, note
    listed = ", ".join(d.describe() for d in devices)
    if f.nccl_ib_disable:
        return None, f"{soft}; NCCL_IB_DISABLE is set, so NCCL does not use {listed}"
    if f.cap_ipc_lock:
        return None, f"{soft}; CAP_IPC_LOCK held (the limit does not apply) with {listed}"
    if f.memlock_soft is None or (f.mem_total is not None and f.memlock_soft >= f.mem_total):
        return None, f"{soft} with {listed}"
    hard = "" if f.memlock_hard == f.memlock_soft else f", hard limit {size_text(f.memlock_hard)}"
    problem = (
        f"locked-memory limit (ulimit -l) is {size_text(f.memlock_soft)} ({f.memlock_soft} bytes{hard}) "
        f"with InfiniBand/RoCE device {listed}: NCCL's IB transport pins its buffers (ibv_reg_mr) and "
        f"fails with 'Cannot allocate memory' at this limit; unlimited is required; fix: {MEMLOCK_FIX}"
    )
    return problem, f"{soft} with {listed}"


def evaluate(f: HostFacts) -> Result:
    """The verdict from collected facts (pure)."""
    figures: dict[str, Any] = {
        "shm_bytes": f.shm_bytes,
        "shm_free_bytes": f.shm_free_bytes,
        "cgroup_memory_limit_bytes": f.cgroup_memory_limit,
        "memlock_soft_bytes": "unlimited" if f.memlock_soft is None else f.memlock_soft,
        "memlock_hard_bytes": "unlimited" if f.memlock_hard is None else f.memlock_hard,
        "ib_devices": len(f.ib_devices),
        "ib_devices_usable": len(usable_ib(f)),
    }
    details: dict[str, Any] = asdict(f)
    problems = [p for p in (_shm_problem(f), _memlock_state(f)[0]) if p]
    if problems:
        return Result(NAME, Status.WARN, "; ".join(problems), figures, details)
    shm = f"{f.shm_path} {size_text(f.shm_bytes)} ({size_text(f.shm_free_bytes)} free)"
    limit = f.cgroup_memory_limit
    memory = "no cgroup memory limit" if limit is None else f"cgroup memory limit {size_text(limit)}"
    return Result(NAME, Status.PASS, f"{shm}; {memory}; {_memlock_state(f)[1]}", figures, details)


def run(ctx: Context) -> Result:
    root = (ctx.options.get(NAME) or {}).get("root")
    return evaluate(collect(Paths.under(Path(root)) if root else Paths()))
