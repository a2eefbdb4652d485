"""topology: does this node have the shape it should: every GPU, every NVLink, the NVSwitch fabric, its ports?

A node that lost a GPU, an NVLink or an InfiniBand port still runs jobs, slower or on fewer GPUs, and every
single-GPU check passes on it; cluster health tools catch these by comparing the node with what it should
be. No torch: NVML (verify/nvml.py) and sysfs.

Rules:
- fewer GPUs than expected: FAIL. Expected is `--expect-gpus N`, else the GPUs Slurm gave this job on this
  node (SLURM_GPUS_ON_NODE); with neither, the count is reported, not judged. Counted by NVML, or where NVML
  is unavailable by /proc/driver/nvidia/gpus entries, else /dev/nvidia<N> nodes (the source is named). A GPU
  in MIG mode counts as its MIG devices (as Slurm's GRES counts them); one NVML cannot open FAILs by name.
- the NVIDIA driver loaded but NVML not starting (a driver upgraded without a reboot): FAIL on a host, WARN
  in a container (where the library may only be missing: the driver check names that).
- NVLink: on a GPU with some links active and others not (NVML per link): FAIL naming the links down. A GPU
  with none active uses no NVLink (a PCIe card, a single-GPU VM): reported.
- the GPU fabric (NVSwitch systems, NVML's fabric info): registration not complete (not started, in
  progress) or completed with an error: FAIL naming nvidia-fabricmanager; CUDA fails with error 802
  ("system not yet initialized") on such a GPU. A GPU without fabric support: reported.
- InfiniBand/RoCE ports (/sys/class/infiniband/*/ports/*): physically up but not ACTIVE (INIT: no subnet
  manager has configured it): FAIL; down: WARN (an uncabled spare port looks the same: say how many ports
  to expect with `--expect-ib-ports`: fewer ACTIVE InfiniBand ports is then a FAIL; Ethernet/RoCE ports are
  not counted there); `link_downed` above zero: WARN; with `--state-dir DIR`, any error counter that rose
  since the last run that kept its counters there: WARN naming the counters and the rise.
  Rate and the other error counters are reported.
`options["topology"]`: `expect_gpus`, `expect_ib_ports`, `state_dir`, `root` (read sysfs, /proc and /dev
under another tree: a test's or a chroot's, as the host check does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify import nvml, presence
from verify.checks import host
from verify.context import Context
from verify.result import Result, Status

NAME = "topology"
DESCRIPTION = "GPU count vs expected, NVLink per link, NVSwitch fabric registration, InfiniBand/RoCE ports"
DEFAULT_TIMEOUT_S = 30.0
IMPORTS = ()  # NVML and sysfs: no torch
EXCLUSIVE = False

NVLINK_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS
FABRIC_STATES = {0: "not supported", 1: "not started", 2: "in progress", 3: "completed"}
FABRIC_FIX = (
    "start the fabric manager: systemctl enable --now nvidia-fabricmanager (its version must equal the "
    "driver's); journalctl -u nvidia-fabricmanager says why it stopped"
)
IB_COUNTERS = ("link_downed", "link_error_recovery", "symbol_error", "port_rcv_errors")
SLURM_GPUS_ENV = "SLURM_GPUS_ON_NODE"


@dataclass(frozen=True)
class GpuLinks:
    index: int
    name: str | None
    nvlinks: tuple[int, ...] = ()  # per present link: 1 active, 0 not (links NVML has no answer for: absent)
    fabric_state: int | None = None  # FABRIC_STATES; None: NVML has no fabric info for it
    fabric_status: int | None = None  # an nvmlReturn_t: 0 is success
    mig_devices: int | None = None  # MIG mode on: its MIG devices (each one GPU to Slurm's GRES); off: None
    error: str | None = None  # NVML could not open or query this GPU (not counted)

    @property
    def counts_as(self) -> int:
        """How many GPUs this one is to a scheduler: 0 when NVML cannot open it, its MIG devices under MIG."""
        if self.error is not None:
            return 0
        return self.mig_devices if self.mig_devices is not None else 1


@dataclass(frozen=True)
class Port:
    device: str
    port: str
    state: str  # ACTIVE, DOWN, INIT, ARMED
    phys_state: str  # LinkUp, Disabled, Polling, ...
    rate: str | None
    link_layer: str | None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.device} port {self.port}"


@dataclass(frozen=True)
class TopologyFacts:
    gpu_count: int
    count_source: str  # "NVML", "/proc/driver/nvidia/gpus", "/dev/nvidia<N>" or "none"
    nvml_error: str | None = None
    driver_loaded: bool = False  # /proc/driver/nvidia/gpus or /dev/nvidia<N> exist
    in_container: bool = False
    gpus: tuple[GpuLinks, ...] = ()
    ports: tuple[Port, ...] = ()
    expect_gpus: int | None = None
    expect_source: str | None = None  # "--expect-gpus" or SLURM_GPUS_ON_NODE
    expect_ib_ports: int | None = None
    # With a state folder (--state-dir): each port's error counters that rose since the last run there,
    # {port name: {counter: increase}}, and when that run was.
    counter_rises: dict[str, dict[str, int]] = field(default_factory=dict)
    previous_run: str | None = None
    state_error: str | None = None  # the state folder could not be read or written


# ---- collecting --------------------------------------------------------------------------------------------


def _gpu_links(nv: Any, index: int) -> GpuLinks:
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    try:
        name = nvml.text(nv.nvmlDeviceGetName(handle))
    except nv.NVMLError:
        name = None
    states = []
    for link in range(NVLINK_MAX_LINKS):
        try:
            states.append(int(nv.nvmlDeviceGetNvLinkState(handle, link)))
        except nv.NVMLError:
            continue  # a link this GPU does not have (INVALID_ARGUMENT) or no NVLink at all (NOT_SUPPORTED)
    try:
        state, status = nvml.fabric_info(nv, handle) or (None, None)
    except nv.NVMLError:  # NOT_SUPPORTED: no fabric (PCIe cards, GPUs before Hopper, most VMs)
        state = status = None
    return GpuLinks(index, name, tuple(states), state, status, _mig_devices(nv, handle))


def _mig_devices(nv: Any, handle: Any) -> int | None:
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
    except nv.NVMLError:
        return None  # NOT_SUPPORTED: a GPU without MIG
    if current != getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1):
        return None
    try:
        slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
    except nv.NVMLError:
        return 0
    return sum(1 for _ in nvml.mig_handles(nv, handle, slots))


def _one_gpu(nv: Any, index: int) -> GpuLinks:
    """One GPU's links; a GPU NVML cannot open (fallen off the bus: "Unknown Error", "GPU is lost") is kept
    with its error, so it is named instead of hiding the others."""
    try:
        return _gpu_links(nv, index)
    except nv.NVMLError as exc:
        return GpuLinks(index, None, error=f"{type(exc).__name__}: {exc}")


def _nvml_gpus() -> tuple[tuple[GpuLinks, ...] | None, str | None]:
    try:
        with nvml.session() as nv:
            try:
                return tuple(_one_gpu(nv, i) for i in range(nv.nvmlDeviceGetCount())), None
            except nv.NVMLError as exc:
                return None, f"NVML query failed: {exc}"
    except nvml.NvmlUnavailable as exc:
        return None, str(exc)


def _counter(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _ports(sys_infiniband: Path) -> tuple[Port, ...]:
    if not sys_infiniband.is_dir():
        return ()
    found = []
    for device in sorted(sys_infiniband.iterdir()):
        ports_dir = device / "ports"
        if not ports_dir.is_dir():
            continue
        for port in sorted(ports_dir.iterdir(), key=lambda p: (len(p.name), p.name)):
            errors: dict[str, str] = {}

            def read(name: str, port: Path = port, errors: dict[str, str] = errors) -> str:
                return (host._read(port / name, errors) or "UNKNOWN").split(":")[-1].strip()

            counters = {
                name: value
                for name in IB_COUNTERS
                if (value := _counter(port / "counters" / name)) is not None
            }
            rate = host._read(port / "rate", errors)
            found.append(
                Port(
                    device.name,
                    port.name,
                    read("state"),
                    read("phys_state"),
                    rate,
                    host._read(port / "link_layer", errors),
                    counters,
                )
            )
    return tuple(found)


def _expected(
    options: dict[str, Any], environ: dict[str, str] | os._Environ[str]
) -> tuple[int | None, str | None]:
    if options.get("expect_gpus") is not None:
        return int(options["expect_gpus"]), "--expect-gpus"
    value = (environ.get(SLURM_GPUS_ENV) or "").strip()
    if value.isdigit():
        return int(value), SLURM_GPUS_ENV
    return None, None


def collect(
    options: dict[str, Any], environ: dict[str, str] | os._Environ[str] | None = None
) -> TopologyFacts:
    env = os.environ if environ is None else environ
    root = Path(options["root"]) if options.get("root") else presence.host_root()
    paths = host.Paths.under(root)
    gpus, nvml_error = _nvml_gpus()
    nodes, proc, in_container = presence.collect_host(root)
    if gpus is not None:
        count, source = sum(g.counts_as for g in gpus), "NVML"
    else:
        if proc:
            count, source = len(proc), "/proc/driver/nvidia/gpus"
        elif nodes:
            count, source = len(nodes), "/dev/nvidia<N>"
        else:
            count, source = 0, "none"
    expect, expect_source = _expected(options, env)
    ib = options.get("expect_ib_ports")
    return TopologyFacts(
        gpu_count=count,
        count_source=source,
        nvml_error=nvml_error,
        driver_loaded=bool(proc or nodes),
        in_container=in_container,
        gpus=gpus or (),
        ports=_ports(paths.sys_infiniband),
        expect_gpus=expect,
        expect_source=expect_source,
        expect_ib_ports=int(ib) if ib is not None else None,
    )


# ---- judging -----------------------------------------------------------------------------------------------


def _gpu_problems(gpu: GpuLinks) -> list[str]:
    fails = []
    label = f"GPU {gpu.index} ({gpu.name})" if gpu.name else f"GPU {gpu.index}"
    if gpu.error is not None:
        return [
            f"{label}: NVML cannot open it ({gpu.error}): a GPU that fell off the bus or hung answers so; "
            "fix: the xid check and nvidia-smi say more; reboot, and if it stays, reseat or replace it"
        ]
    active = sum(gpu.nvlinks)
    if 0 < active < len(gpu.nvlinks):
        down = [str(i) for i, s in enumerate(gpu.nvlinks) if not s]
        fails.append(
            f"{label}: {len(down)} of {len(gpu.nvlinks)} NVLinks down (links {', '.join(down)}): traffic to "
            "the other GPUs is slower or fails; fix: reset the GPU (nvidia-smi -r) or reboot, then "
            "nvidia-smi nvlink -s; if a link stays down, the GPU, baseboard or NVSwitch needs service"
        )
    if gpu.fabric_state in (1, 2):
        fails.append(
            f"{label}: GPU fabric registration {FABRIC_STATES[gpu.fabric_state]}: CUDA fails with error 802 "
            f"'system not yet initialized' until it completes; fix: {FABRIC_FIX}"
        )
    elif gpu.fabric_state == 3 and gpu.fabric_status not in (None, 0):
        fails.append(
            f"{label}: GPU fabric registration completed with error (NVML status {gpu.fabric_status}); "
            f"fix: {FABRIC_FIX}"
        )
    return fails


def _port_problems(f: TopologyFacts) -> tuple[list[str], list[str]]:
    fails: list[str] = []
    warns: list[str] = []
    for port in f.ports:
        if port.state != "ACTIVE" and port.phys_state == "LinkUp":
            fails.append(
                f"{port.name} is physically up but {port.state}: no subnet manager has configured it; fix: "
                "run a subnet manager on the fabric (opensm, or the switch's) and check it sees this port"
            )
        elif port.state != "ACTIVE" and f.expect_ib_ports is None:
            warns.append(
                f"{port.name} is {port.state} ({port.phys_state}): NCCL will not use it; fix: check the "
                "cable and the switch port, or say how many ports to expect with --expect-ib-ports N"
            )
        rose = f.counter_rises.get(port.name)
        if rose:
            grew = ", ".join(f"{name} +{value}" for name, value in sorted(rose.items()))
            warns.append(
                f"{port.name}: error counters rose since the last run ({f.previous_run}): {grew}; fix: check "
                "the cable and transceiver (ibstat, perfquery) and the switch port; watch if they keep rising"
            )
        downed = port.counters.get("link_downed", 0)
        if downed:
            warns.append(
                f"{port.name}: the link went down {downed} time(s) since its counters were cleared "
                "(a flapping link); fix: check the cable and transceiver, then clear the counters"
            )
    # Counted: InfiniBand ports only, so an ACTIVE Ethernet (RoCE, storage) port cannot stand in for a
    # compute rail that is down; RoCE ports are judged one by one above and reported.
    ib = [p for p in f.ports if (p.link_layer or "InfiniBand") == "InfiniBand"]
    active = sum(1 for p in ib if p.state == "ACTIVE")
    if f.expect_ib_ports is not None and active < f.expect_ib_ports:
        down = ", ".join(f"{p.name} {p.state}" for p in ib if p.state != "ACTIVE") or "none found"
        fails.append(
            f"{active} InfiniBand port(s) ACTIVE, {f.expect_ib_ports} expected (--expect-ib-ports); "
            f"not active: {down}; fix: check the cables, the switch ports and the subnet manager"
        )
    return fails, warns


def evaluate(f: TopologyFacts) -> Result:
    """The verdict from collected facts (pure)."""
    figures: dict[str, Any] = {
        "gpu_count": f.gpu_count,
        "nvlinks_active": sum(sum(g.nvlinks) for g in f.gpus),
        "nvlinks": sum(len(g.nvlinks) for g in f.gpus),
        "ib_ports": len(f.ports),
        "ib_ports_active": sum(1 for p in f.ports if p.state == "ACTIVE"),
    }
    if f.expect_gpus is not None:
        figures["expect_gpus"] = f.expect_gpus
    details: dict[str, Any] = asdict(f)
    fails: list[str] = []
    warns: list[str] = []
    if f.nvml_error and f.driver_loaded:
        line = (
            f"the NVIDIA driver is loaded ({f.count_source}) but NVML cannot start ({f.nvml_error}): no GPU "
            "health can be read; fix: after a driver upgrade (an NVML/RM version mismatch) reboot; else "
            "reinstall the driver"
        )
        if f.in_container:  # the container may just lack libnvidia-ml: the driver check names that
            warns.append(line + "; in a container: NVIDIA_DRIVER_CAPABILITIES must include utility")
        else:
            fails.append(line)
    if f.expect_gpus is not None and f.gpu_count < f.expect_gpus:
        why = f" (NVML: {f.nvml_error})" if f.nvml_error else ""
        fails.append(
            f"{f.gpu_count} GPU(s) found by {f.count_source}{why}, {f.expect_gpus} expected "
            f"({f.expect_source}): a GPU is missing or fell off the bus; fix: nvidia-smi and the xid check "
            "say which; reboot, and if it stays missing, reseat or replace it"
        )
    for gpu in f.gpus:
        fails += _gpu_problems(gpu)
    port_fails, port_warns = _port_problems(f)
    fails += port_fails
    warns += port_warns
    if f.state_error:
        warns.append(
            f"error counters not compared with the last run: {f.state_error}; fix: a writable --state-dir"
        )
    if fails:
        return Result(NAME, Status.FAIL, "; ".join(fails + warns), figures, details)
    if warns:
        return Result(NAME, Status.WARN, "; ".join(warns), figures, details)
    if f.gpu_count == 0 and not f.ports and f.expect_gpus is None:
        why = f" ({f.nvml_error})" if f.nvml_error else ""
        return Result(
            NAME, Status.SKIP, f"no GPU{why} and no InfiniBand/RoCE port: nothing to check", figures, details
        )
    return Result(NAME, Status.PASS, _summary(f), figures, details)


def _summary(f: TopologyFacts) -> str:
    expected = f" ({f.expect_source} {f.expect_gpus})" if f.expect_gpus is not None else ""
    parts = [f"{f.gpu_count} GPU(s) by {f.count_source}{expected}"]
    links = [g for g in f.gpus if g.nvlinks and sum(g.nvlinks)]
    if links:
        parts.append(f"NVLink {sum(sum(g.nvlinks) for g in links)} links active on {len(links)} GPU(s)")
    elif f.gpus:
        parts.append("no NVLink in use")
    fabric = [g for g in f.gpus if g.fabric_state == 3]
    if fabric:
        parts.append(f"fabric registered on {len(fabric)} GPU(s)")
    if f.ports:
        rates = sorted({p.rate for p in f.ports if p.rate})
        active = sum(1 for p in f.ports if p.state == "ACTIVE")
        of = "" if active == len(f.ports) else f" of {len(f.ports)}"  # the rest as --expect-ib-ports allows
        parts.append(f"{active}{of} IB/RoCE port(s) ACTIVE ({', '.join(rates)})")
    else:
        parts.append("no InfiniBand/RoCE port")
    return "; ".join(parts)


COUNTERS_FILE = "ib-counters.json"


def compare_counters(
    ports: tuple[Port, ...], state_dir: Path
) -> tuple[dict[str, dict[str, int]], str | None]:
    """The rises of each port's error counters since the last run that kept them in `state_dir`, then this
    run's counters kept there (written whole, then renamed). A counter that went down was cleared: no rise."""
    path = state_dir / COUNTERS_FILE
    try:
        previous = json.loads(path.read_text())
        before, at = previous["ports"], previous.get("at")
    except (OSError, ValueError, KeyError, TypeError):
        before, at = {}, None
    rises: dict[str, dict[str, int]] = {}
    for port in ports:
        old = before.get(port.name) if isinstance(before, dict) else None
        if not isinstance(old, dict):
            continue
        grew = {
            name: value - old[name]
            for name, value in port.counters.items()
            if isinstance(old.get(name), int) and value > old[name]
        }
        if grew:
            rises[port.name] = grew
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"at": now, "ports": {p.name: p.counters for p in ports}}))
    tmp.replace(path)
    return rises, at


def run(ctx: Context) -> Result:
    options = ctx.options.get(NAME) or {}
    facts = collect(options)
    if options.get("state_dir") and facts.ports:
        try:
            rises, at = compare_counters(facts.ports, Path(options["state_dir"]))
        except OSError as exc:  # the figures stand; say why nothing was compared
            why = f"{options['state_dir']}: {exc.strerror or exc}"
            facts = dataclasses.replace(facts, state_error=why)
        else:
            facts = dataclasses.replace(facts, counter_rises=rises, previous_run=at)
    return evaluate(facts)
