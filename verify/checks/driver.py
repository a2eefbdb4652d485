"""driver: is the NVIDIA driver new enough for this CUDA runtime, and are the GPUs healthy right now?

Asked of NVML (the driver's own management library), not of CUDA, so it still answers when CUDA cannot
initialise. Collecting (`collect`, NVML calls) is kept apart from judging (`evaluate`, pure), so every rule
is unit-tested on plain data and the NVML path is exercised for real on a GPU host.

Rules (the per-GPU ones and why each is FAIL or WARN are in verify/gpu_health.py):
- driver older than the runtime's minimum (verify/compat.py): FAIL naming the minimum; inside CUDA
  minor-version compatibility: WARN (works with limits; see compat.py). `verify gate` does not compare
  (`options["driver"]["compare_runtime"]` False): the torch beside it is the health check's, not the jobs'.
- uncorrected ECC errors since the driver loaded, pages pending retirement, a failed row remapping: FAIL.
- a row remapping pending, other processes holding GPU memory, clocks held down by heat or power: WARN.
- PCIe link below its maximum: reported, not judged. MIG mode and MIG devices: reported.
- an NVML query the GPU does not support: recorded as "not supported", never a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from verify import compat, gpu_health, nvml
from verify.context import Context
from verify.result import Result, Status

NAME = "driver"
DESCRIPTION = "NVIDIA driver vs the CUDA runtime; per GPU memory, ECC, MIG, throttling, temperature, power"
DEFAULT_TIMEOUT_S = 60.0
IMPORTS = ()  # NVML, and torch's CUDA version read from its version.py: no torch import (the gate's tier)
EXCLUSIVE = False  # runs beside the GPU measurements: NVML queries: no GPU work

# nvmlClocksEventReason* / nvmlClocksThrottleReason* bits (nvml.h).
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}


def decode_throttle(mask: int) -> list[str]:
    """The reason bitmask as names, lowest bit first; unknown bits as 'bit_0x...'."""
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_BITS)
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append(f"bit_{bit:#x}")
        bit <<= 1
    return names


def _mib(value: int | None) -> int | None:
    return None if value is None else int(value) // (1024 * 1024)


def _mode(value: Any) -> Any:
    """NVML (current, pending) enable states -> 'enabled'/'disabled' for the current one."""
    if isinstance(value, list | tuple) and value:
        return "enabled" if value[0] else "disabled"
    return value


def _memory_errors(q: nvml.Probe, nv: Any, handle: Any, ecc_mode: Any) -> dict[str, Any]:
    """ECC counters (volatile: since the driver loaded; aggregate: lifetime), pending page retirement
    (Kepler to Volta) and the row remapper (Ampere+). Judged in verify/gpu_health.py."""
    volatile: Any = nvml.NOT_SUPPORTED
    aggregate: Any = nvml.NOT_SUPPORTED
    if ecc_mode == "enabled":
        total, uncorrected = "nvmlDeviceGetTotalEccErrors", nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        volatile = q("ecc_uncorrected_volatile", total, handle, uncorrected, nv.NVML_VOLATILE_ECC)
        aggregate = q("ecc_uncorrected_aggregate", total, handle, uncorrected, nv.NVML_AGGREGATE_ECC)
    pending = q("retired_pages_pending", "nvmlDeviceGetRetiredPagesPendingStatus", handle)
    rows = q("remapped_rows", "nvmlDeviceGetRemappedRows", handle)
    if isinstance(rows, list | tuple) and len(rows) == 4:  # (corrRows, uncRows, isPending, failureOccurred)
        rows = dict(zip(("correctable", "uncorrectable", "pending", "failure"), map(int, rows), strict=True))
        rows["pending"], rows["failure"] = bool(rows["pending"]), bool(rows["failure"])
    return {
        "ecc_uncorrected_volatile": volatile,
        "ecc_uncorrected_aggregate": aggregate,
        "retired_pages_pending": bool(pending) if isinstance(pending, int) else pending,
        "remapped_rows": rows,
    }


def _processes(q: nvml.Probe, nv: Any, handle: Any, host_pids: bool) -> Any:
    """Processes with memory on this GPU: [{pid, name, used_MiB, kinds, this_process}], largest first.

    Compute and graphics lists merged by pid. `this_process` marks verify's own (the rules do not count it
    as another). Names and our own pid only where NVML's pids are ours (nvml.in_host_pid_namespace): in a
    container the same number is another process or none.
    """
    found: dict[int, dict[str, Any]] = {}
    answer: Any = nvml.NOT_SUPPORTED
    for kind, function in (
        ("compute", "nvmlDeviceGetComputeRunningProcesses"),
        ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
    ):
        procs = q(f"processes_{kind}", function, handle)
        if not isinstance(procs, list):
            answer = procs if answer == nvml.NOT_SUPPORTED else answer
            continue
        answer = None
        for proc in procs:
            used = getattr(proc, "usedGpuMemory", None)  # None: NVML cannot tell (pynvml's mapping)
            entry = found.setdefault(int(proc.pid), {"pid": int(proc.pid), "used_MiB": None, "kinds": []})
            entry["kinds"].append(kind)
            if isinstance(used, int):
                entry["used_MiB"] = max(entry["used_MiB"] or 0, _mib(used) or 0)
    if answer is not None:  # neither list answered: "not supported" or None (an error, recorded)
        return answer
    rows = sorted(found.values(), key=lambda p: -(p["used_MiB"] or 0))
    for row in rows:
        row["name"] = nvml.process_name(nv, row["pid"]) if host_pids else None
        row["this_process"] = host_pids and row["pid"] == os.getpid()
    return rows


def _mig_devices(q: nvml.Probe, nv: Any, handle: Any) -> list[dict[str, Any]]:
    """The MIG devices on a GPU in MIG mode: what CUDA sees instead of the GPU itself."""
    slots = q("mig_device_slots", "nvmlDeviceGetMaxMigDeviceCount", handle)
    devices = []
    for slot, mig in nvml.mig_handles(nv, handle, slots if isinstance(slots, int) else 0):
        mem = q(f"mig{slot}.memory", "nvmlDeviceGetMemoryInfo", mig)
        devices.append(
            {
                "slot": slot,
                "name": q(f"mig{slot}.name", "nvmlDeviceGetName", mig),
                "uuid": q(f"mig{slot}.uuid", "nvmlDeviceGetUUID", mig),
                "memory_total_MiB": _mib(mem.total) if hasattr(mem, "total") else mem,
                "gpu_instance_id": q(f"mig{slot}.gpu_instance_id", "nvmlDeviceGetGpuInstanceId", mig),
                "compute_instance_id": q(
                    f"mig{slot}.compute_instance_id", "nvmlDeviceGetComputeInstanceId", mig
                ),
            }
        )
    return devices


def _gpu(probe: nvml.Probe, nv: Any, index: int, host_pids: bool) -> dict[str, Any]:
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    q = probe
    mem = q("memory", "nvmlDeviceGetMemoryInfo", handle)
    cc = q("compute_capability", "nvmlDeviceGetCudaComputeCapability", handle)
    pci = q("pci_bus_id", "nvmlDeviceGetPciInfo", handle)
    mask = q.first(
        "throttle",
        ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"),
        handle,
    )
    ecc_mode = _mode(q("ecc_mode", "nvmlDeviceGetEccMode", handle))
    mig_mode = _mode(q("mig_mode", "nvmlDeviceGetMigMode", handle))
    power = q("power_W", "nvmlDeviceGetPowerUsage", handle)
    limit = q("power_limit_W", "nvmlDeviceGetEnforcedPowerLimit", handle)
    gpu: dict[str, Any] = {
        "index": index,
        "name": q("name", "nvmlDeviceGetName", handle),
        "uuid": q("uuid", "nvmlDeviceGetUUID", handle),
        "serial": q("serial", "nvmlDeviceGetSerial", handle),  # the board's, what an RMA asks for
        "pci_bus_id": nvml.text(pci.busId) if hasattr(pci, "busId") else pci,
        "memory_total_MiB": _mib(mem.total) if hasattr(mem, "total") else mem,
        "memory_used_MiB": _mib(mem.used) if hasattr(mem, "used") else mem,
        "memory_free_MiB": _mib(mem.free) if hasattr(mem, "free") else mem,
        "processes": _processes(q, nv, handle, host_pids),
        "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, tuple | list) else cc,
        "ecc_mode": ecc_mode,
        **_memory_errors(q, nv, handle, ecc_mode),
        "mig_mode": mig_mode,
        "mig_devices": _mig_devices(q, nv, handle) if mig_mode == "enabled" else [],
        "persistence_mode": {1: "enabled", 0: "disabled"}.get(
            q("persistence_mode", "nvmlDeviceGetPersistenceMode", handle), nvml.NOT_SUPPORTED
        ),
        "throttle_mask": mask,
        "throttle_reasons": decode_throttle(mask) if isinstance(mask, int) else mask,
        "temperature_C": q("temperature_C", "nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU),
        "power_W": round(power / 1000, 1) if isinstance(power, int) else power,
        "power_limit_W": round(limit / 1000, 1) if isinstance(limit, int) else limit,
        "sm_clock_MHz": q("sm_clock_MHz", "nvmlDeviceGetClockInfo", handle, nv.NVML_CLOCK_SM),
        "sm_clock_max_MHz": q("sm_clock_max_MHz", "nvmlDeviceGetMaxClockInfo", handle, nv.NVML_CLOCK_SM),
        "pcie": {
            "gen": q("pcie.gen", "nvmlDeviceGetCurrPcieLinkGeneration", handle),
            "gen_max": q("pcie.gen_max", "nvmlDeviceGetMaxPcieLinkGeneration", handle),
            "gen_gpu_max": q("pcie.gen_gpu_max", "nvmlDeviceGetGpuMaxPcieLinkGeneration", handle),
            "width": q("pcie.width", "nvmlDeviceGetCurrPcieLinkWidth", handle),
            "width_max": q("pcie.width_max", "nvmlDeviceGetMaxPcieLinkWidth", handle),
        },
    }
    return gpu


def collect() -> dict[str, Any]:
    """Everything NVML says about the driver and each GPU. Raises nvml.NvmlUnavailable."""
    host_pids = nvml.in_host_pid_namespace()
    with nvml.session() as nv:
        probe = nvml.Probe(nv)
        cuda_int = probe("cuda_driver_version", "nvmlSystemGetCudaDriverVersion_v2")
        if not isinstance(cuda_int, int):
            cuda_int = probe("cuda_driver_version", "nvmlSystemGetCudaDriverVersion")
        info: dict[str, Any] = {
            "driver_version": probe("driver_version", "nvmlSystemGetDriverVersion"),
            "driver_cuda": compat.cuda_from_nvml(cuda_int)
            if isinstance(cuda_int, int) and cuda_int > 0
            else None,
            "nvml_version": probe("nvml_version", "nvmlSystemGetNVMLVersion"),
            "host_pid_namespace": host_pids,
            "gpus": [],
        }
        count = probe("device_count", "nvmlDeviceGetCount")
        for index in range(count if isinstance(count, int) else 0):
            gpu_probe = nvml.Probe(nv)
            try:
                gpu = _gpu(gpu_probe, nv, index, host_pids is True)
            except nv.NVMLError as exc:  # the handle itself failed (e.g. GPU lost): a fact about this GPU
                gpu = {"index": index, "name": None}
                gpu_probe.errors["handle"] = str(exc)
            gpu["nvml_errors"] = gpu_probe.errors
            info["gpus"].append(gpu)
        info["nvml_errors"] = probe.errors
    return info


TORCH_CUDA_LINE = re.compile(r"^cuda\s*(?::[^=]*)?=\s*(?:'([^']*)'|\"([^\"]*)\"|None)", re.MULTILINE)


def runtime_cuda() -> str | None:
    """The CUDA runtime torch was built with ('12.8'), None for a CPU build or without torch.

    Read from torch/version.py (generated at torch's build: `cuda: Optional[str] = '12.8'`) instead of
    importing torch, which takes seconds: this check belongs to the torch-free tier (`verify gate`). A broken
    torch is the env check's finding; here it only means "nothing to compare"."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        try:
            text = (Path(location) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        match = TORCH_CUDA_LINE.search(text)
        if match:
            return match.group(1) or match.group(2) or None
    return None


def _gpus_line(gpus: list[dict[str, Any]]) -> str:
    counts = Counter(str(g.get("name")) for g in gpus)
    parts = []
    for name, count in counts.items():
        first = next(g for g in gpus if str(g.get("name")) == name)
        mem = first.get("memory_total_MiB")
        cc = first.get("compute_capability")
        extra = ", ".join(x for x in (f"{mem} MiB" if isinstance(mem, int) else "", f"cc {cc}") if x)
        parts.append(f"{count}x {name} ({extra})")
    for gpu in gpus:  # what CUDA will see instead of a GPU in MIG mode
        migs = gpu.get("mig_devices") or []
        if migs:
            names = ", ".join(str(m.get("name")) for m in migs)
            parts.append(f"GPU{gpu['index']} in MIG mode: {len(migs)} MIG devices ({names})")
    return "; ".join(parts)


def _figures(gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat numbers a machine compares: the first GPU's identity, per-GPU memory, maxima and totals."""
    first = gpus[0]
    figures: dict[str, Any] = {
        "gpu_name": first.get("name"),
        "gpu_memory_MiB": first.get("memory_total_MiB"),
        "compute_capability": first.get("compute_capability"),
    }
    for gpu in gpus:
        for key in ("memory_free_MiB", "memory_used_MiB"):
            if isinstance(gpu.get(key), int):
                figures[f"gpu{gpu['index']}_{key}"] = gpu[key]
    temps = [g["temperature_C"] for g in gpus if isinstance(g.get("temperature_C"), int)]
    if temps:
        figures["temperature_max_C"] = max(temps)
    ecc = [g["ecc_uncorrected_volatile"] for g in gpus if isinstance(g.get("ecc_uncorrected_volatile"), int)]
    if ecc:
        figures["ecc_uncorrected_total"] = sum(ecc)
    procs = [
        p
        for g in gpus
        if isinstance(g.get("processes"), list)
        for p in g["processes"]
        if not p.get("this_process")
    ]
    figures["other_processes"] = len(procs)
    figures["other_processes_MiB"] = sum(p["used_MiB"] for p in procs if isinstance(p.get("used_MiB"), int))
    migs = sum(len(g.get("mig_devices") or []) for g in gpus)
    if migs:
        figures["mig_devices"] = migs
    return figures


NO_TORCH_CUDA = "torch is a CPU build or missing"
NOT_COMPARED = "not compared in verify gate: each job brings its own CUDA runtime"


def evaluate(info: dict[str, Any], runtime: str | None, no_runtime: str = NO_TORCH_CUDA) -> Result:
    """The verdict from collected NVML facts and torch's CUDA runtime (pure); `no_runtime` says why there is
    no runtime to compare when `runtime` is None."""
    gpus: list[dict[str, Any]] = [dict(g) for g in info.get("gpus") or []]
    driver = info.get("driver_version")
    details: dict[str, Any] = {**info, "runtime_cuda": runtime}
    figures: dict[str, Any] = {
        "driver_version": driver,
        "driver_cuda": info.get("driver_cuda"),
        "runtime_cuda": runtime,
        "gpu_count": len(gpus),
    }
    if not gpus:
        return Result(
            NAME, Status.SKIP, f"NVIDIA driver {driver} loaded but NVML sees no GPU", figures, details
        )

    fails: list[str] = []
    warns: list[str] = []
    if runtime is None:
        compat_line = f"no CUDA runtime to compare ({no_runtime})"
    elif not isinstance(driver, str):
        compat_line = "driver version unreadable"
        warns.append(f"NVML did not report the driver version ({info.get('nvml_errors')})")
    else:
        verdict = compat.check_driver(driver, runtime, info.get("driver_cuda"))
        figures["min_driver"] = verdict.min_driver
        details["compat"] = {
            "level": verdict.level,
            "reason": verdict.reason,
            "min_driver": verdict.min_driver,
        }
        compat_line = f"driver {driver} (CUDA {info.get('driver_cuda')}) for runtime {runtime}"
        if verdict.level == "too_old":
            fails.append(verdict.reason)
        elif verdict.level == "minor_compat":
            warns.append(verdict.reason)

    host_pids = info.get("host_pid_namespace") is True
    for gpu in gpus:
        found = gpu_health.judge(gpu, host_pids)
        gpu["fails"] = found.fails  # per GPU, so `verify fleet` can follow a card across reports
        fails += found.fails
        warns += found.warns
        if found.notes:
            gpu["pcie_note"] = "; ".join(found.notes)
    figures.update(_figures(gpus))
    details["gpus"] = gpus

    if fails:
        return Result(NAME, Status.FAIL, "; ".join(fails + warns), figures, details)
    if warns:
        return Result(NAME, Status.WARN, "; ".join(warns), figures, details)
    return Result(NAME, Status.PASS, f"{compat_line}; {_gpus_line(gpus)}", figures, details)


def run(ctx: Context) -> Result:
    try:
        info = collect()
    except nvml.NvmlUnavailable as exc:
        kernel = nvml.kernel_driver_version()
        details = {"reason": str(exc), "proc_driver_version": kernel, "gpus": []}
        if exc.driver_present:  # a driver is loaded but we cannot ask it: say so, do not hide it as a skip
            return Result(
                NAME,
                Status.WARN,
                f"an NVIDIA kernel driver is loaded but {exc}; in a container set "
                "NVIDIA_DRIVER_CAPABILITIES to include 'utility' (libnvidia-ml), or install nvidia-ml-py",
                details=details,
            )
        return Result(NAME, Status.SKIP, f"no NVIDIA driver ({exc})", details=details)
    if (ctx.options.get(NAME) or {}).get("compare_runtime", True) is False:
        return evaluate(info, None, NOT_COMPARED)
    return evaluate(info, runtime_cuda())
