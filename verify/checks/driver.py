"""driver: is the NVIDIA driver new enough for this CUDA runtime, and are the GPUs healthy right now?

Asked of NVML (the driver's own management library), not of CUDA, so it still answers when CUDA cannot
initialise. Collecting (`collect`, NVML calls) is kept apart from judging (`evaluate`, pure), so every rule
is unit-tested on plain data and the NVML path is exercised for real on a GPU host.

Rules:
- driver older than the runtime's minimum (verify/compat.py): FAIL naming the minimum; inside CUDA
  minor-version compatibility: WARN (works with limits; see compat.py).
- volatile uncorrected ECC errors > 0 on a GPU: FAIL (memory returned wrong data since the driver loaded).
- clocks held down by thermal, power-brake or hardware slowdown: WARN (benchmarks will read low).
  Idle, application clocks, sync boost and the software power cap are normal operation and only reported.
- PCIe link below its maximum: reported, not judged (GPUs drop link speed when idle).
- an NVML query the GPU does not support: recorded as "not supported", never a failure.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from verify import compat, nvml
from verify.context import Context
from verify.result import Result, Status

NAME = "driver"
DESCRIPTION = "NVIDIA driver vs the CUDA runtime; per GPU memory, ECC, MIG, throttling, temperature, power"
DEFAULT_TIMEOUT_S = 60.0

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
# The reasons that mean "this GPU is being held back by heat or power delivery" (WARN).
WARN_THROTTLE = frozenset(
    {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)


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


def _gpu(probe: nvml.Probe, nv: Any, index: int) -> dict[str, Any]:
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
    ecc = q("ecc_mode", "nvmlDeviceGetEccMode", handle)
    ecc_errors: Any = nvml.NOT_SUPPORTED
    if _mode(ecc) == "enabled":
        ecc_errors = q(
            "ecc_uncorrected_volatile",
            "nvmlDeviceGetTotalEccErrors",
            handle,
            nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nv.NVML_VOLATILE_ECC,
        )
    power = q("power_W", "nvmlDeviceGetPowerUsage", handle)
    limit = q("power_limit_W", "nvmlDeviceGetEnforcedPowerLimit", handle)
    gpu: dict[str, Any] = {
        "index": index,
        "name": q("name", "nvmlDeviceGetName", handle),
        "uuid": q("uuid", "nvmlDeviceGetUUID", handle),
        "pci_bus_id": nvml.text(pci.busId) if hasattr(pci, "busId") else pci,
        "memory_total_MiB": _mib(mem.total) if hasattr(mem, "total") else mem,
        "memory_used_MiB": _mib(mem.used) if hasattr(mem, "used") else mem,
        "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, tuple | list) else cc,
        "ecc_mode": _mode(ecc),
        "ecc_uncorrected_volatile": ecc_errors,
        "mig_mode": _mode(q("mig_mode", "nvmlDeviceGetMigMode", handle)),
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
            "width": q("pcie.width", "nvmlDeviceGetCurrPcieLinkWidth", handle),
            "width_max": q("pcie.width_max", "nvmlDeviceGetMaxPcieLinkWidth", handle),
        },
    }
    return gpu


def collect() -> dict[str, Any]:
    """Everything NVML says about the driver and each GPU. Raises nvml.NvmlUnavailable."""
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
            "gpus": [],
        }
        count = probe("device_count", "nvmlDeviceGetCount")
        for index in range(count if isinstance(count, int) else 0):
            gpu_probe = nvml.Probe(nv)
            try:
                gpu = _gpu(gpu_probe, nv, index)
            except nv.NVMLError as exc:  # the handle itself failed (e.g. GPU lost): a fact about this GPU
                gpu = {"index": index, "name": None}
                gpu_probe.errors["handle"] = str(exc)
            gpu["nvml_errors"] = gpu_probe.errors
            info["gpus"].append(gpu)
        info["nvml_errors"] = probe.errors
    return info


def runtime_cuda() -> str | None:
    """The CUDA runtime torch was built with ('12.8'), None for a CPU build or without torch."""
    try:
        import torch
    except Exception:  # a broken torch is the env check's finding; here it only means "nothing to compare"
        return None
    return torch.version.cuda


def _gpu_problems(gpu: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(fail reasons, warn reasons) for one GPU."""
    label = f"GPU{gpu['index']}"
    fails: list[str] = []
    warns: list[str] = []
    errors = gpu.get("nvml_errors") or {}
    if any("lost" in message.lower() for message in errors.values()):
        fails.append(f"{label} is lost to the driver ({'; '.join(errors.values())}); fix: reset or reboot")
    elif errors:
        failed = ", ".join(f"{field} ({message})" for field, message in sorted(errors.items()))
        warns.append(f"{label}: NVML could not read {failed}")
    ecc = gpu.get("ecc_uncorrected_volatile")
    if isinstance(ecc, int) and ecc > 0:
        fails.append(
            f"{label} has {ecc} uncorrected ECC errors since the driver loaded; fix: drain and reset it"
        )
    reasons = gpu.get("throttle_reasons")
    if isinstance(reasons, list):
        held = [r for r in reasons if r in WARN_THROTTLE]
        if held:
            temp = gpu.get("temperature_C")
            warns.append(f"{label} clocks held down: {', '.join(held)} (temperature {temp} C)")
    return fails, warns


def _pcie_note(gpu: dict[str, Any]) -> str | None:
    pcie = gpu.get("pcie") or {}
    values = [pcie.get(key) for key in ("gen", "gen_max", "width", "width_max")]
    if not all(isinstance(v, int) for v in values):
        return None
    gen, gen_max, width, width_max = values
    if gen < gen_max or width < width_max:
        return f"PCIe link gen{gen} x{width} of gen{gen_max} x{width_max} now (GPUs lower it when idle)"
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
    return "; ".join(parts)


def evaluate(info: dict[str, Any], runtime: str | None) -> Result:
    """The verdict from collected NVML facts and torch's CUDA runtime (pure)."""
    gpus: list[dict[str, Any]] = info.get("gpus") or []
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
        compat_line = "no CUDA runtime to compare (torch is a CPU build or missing)"
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

    for gpu in gpus:
        gpu_fails, gpu_warns = _gpu_problems(gpu)
        fails += gpu_fails
        warns += gpu_warns
        note = _pcie_note(gpu)
        if note:
            gpu["pcie_note"] = note

    first = gpus[0]
    figures.update(
        {
            "gpu_name": first.get("name"),
            "gpu_memory_MiB": first.get("memory_total_MiB"),
            "compute_capability": first.get("compute_capability"),
        }
    )
    temps = [g["temperature_C"] for g in gpus if isinstance(g.get("temperature_C"), int)]
    if temps:
        figures["temperature_max_C"] = max(temps)
    ecc = [g["ecc_uncorrected_volatile"] for g in gpus if isinstance(g.get("ecc_uncorrected_volatile"), int)]
    if ecc:
        figures["ecc_uncorrected_total"] = sum(ecc)
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
    return evaluate(info, runtime_cuda())
