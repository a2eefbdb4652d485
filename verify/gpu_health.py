"""The driver check's rules for one GPU: facts NVML reported in, findings (FAIL / WARN / note) out. Pure.

Each finding names the GPU (index, PCI bus id, UUID), the value, what it means and the fix, because the
person reading it is often not the one who can reset a GPU, and "GPU0" alone is ambiguous across hosts.

Memory errors (NVIDIA, "GPU Memory Error Management", docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/, and
"Dynamic Page Retirement", docs.nvidia.com/deploy/dynamic-page-retirement/):
- volatile uncorrected ECC errors > 0: FAIL. Memory returned data it could not correct since the driver
  loaded; a reset clears the counter, errors that come back mean bad memory.
- aggregate (lifetime) uncorrected ECC errors: reported, not judged. The count never goes down, and on Ampere
  and newer the row remapper repairs the rows behind it, so a healthy, repaired GPU would FAIL for life.
  Whether the repairs ran out is what `failureOccurred` below says.
- pages pending retirement (Kepler to Volta; Ampere+ answers "not supported", as the H200 did): FAIL. The
  retirement takes effect only when the driver reloads.
- row remapping failed (Ampere+, `failureOccurred`): FAIL. A bank ran out of spare rows; NVIDIA's RMA policy
  covers it: drain the node and RMA the GPU.
- row remapping pending (`isPending`): WARN, not FAIL. NVIDIA: the remap happens at the next GPU reset, and
  "even with the flag set, unaffected applications can continue running without affecting accuracy and
  performance, and new workloads can be launched" (Error Recovery and Response Flags). So results here are
  right; the fix is a reset when the GPU is idle.

Other processes holding memory: WARN when one holds >= HELD_WARN_MIB. Below that are display servers and
processes that only opened a CUDA context; a job's tensors take more, and such a process shares the memory
and the SMs with everything verify measures. NVML's `used` also counts the driver's own reserve (615 MiB on
the idle H200 recording, tests/nvml_replay/recordings/h200-idle.json, with no process), so `used` alone is not
a holder. Memory used beyond what the listed processes hold, when it reaches UNLISTED_WARN_MIB (over 3x that
reserve), is reported as held by processes NVML does not show (not checked under MIG, where instances
reserve memory of their own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HELD_WARN_MIB = 1024
UNLISTED_WARN_MIB = 2048  # over 3x the driver reserve measured on the idle H200 (615 MiB)
PROCESS_QUERY = "nvidia-smi --query-compute-apps=pid,name,used_memory --format=csv"

# The clock-event reasons that mean "held back by heat or power delivery" (WARN); the rest (idle,
# application clocks, sync boost, the software power cap) are normal operation and only reported.
WARN_THROTTLE = frozenset(
    {"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)


@dataclass(frozen=True)
class Findings:
    fails: list[str]
    warns: list[str]
    notes: list[str]


def label(gpu: dict[str, Any]) -> str:
    """'GPU0 (00000000:00:06.0, GPU-b360bc59-...)': what nvidia-smi -i, CUDA_VISIBLE_DEVICES and RMA need."""
    ids = [str(gpu[key]) for key in ("pci_bus_id", "uuid") if isinstance(gpu.get(key), str)]
    return f"GPU{gpu['index']}" + (f" ({', '.join(ids)})" if ids else "")


def gib(mib: int | float) -> str:
    return f"{mib / 1024:.1f} GiB"


def _ecc(gpu: dict[str, Any], where: str) -> list[str]:
    count = gpu.get("ecc_uncorrected_volatile")
    if not (isinstance(count, int) and count > 0):
        return []
    return [
        f"{where} has {count} uncorrected ECC errors since the driver loaded: its memory returned data it "
        f"could not correct, so results computed on it may be wrong; fix: stop its jobs and reset it "
        f"(nvidia-smi -r -i {gpu['index']}) or reboot; if the errors come back, drain the node and RMA "
        "the GPU"
    ]


def _retired_pages(gpu: dict[str, Any], where: str) -> list[str]:
    if gpu.get("retired_pages_pending") is not True:
        return []
    return [
        f"{where} has memory pages pending retirement: pages that failed ECC stay in use until the driver "
        f"reloads; fix: stop its jobs and reload the NVIDIA driver or reboot the node "
        f"(nvidia-smi -q -d PAGE_RETIREMENT -i {gpu['index']} lists them)"
    ]


def _row_remap(gpu: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    rows = gpu.get("remapped_rows")
    if not isinstance(rows, dict):
        return [], []
    counts = (
        f"{rows.get('uncorrectable')} rows remapped for uncorrectable and {rows.get('correctable')} for "
        "correctable errors"
    )
    query = f"nvidia-smi -q -d ROW_REMAPPER -i {gpu['index']}"
    fails, warns = [], []
    if rows.get("failure"):
        fails.append(
            f"{where}: a memory row remapping failed ({counts}): a memory bank has no spare rows left; "
            f"fix: drain the node and RMA the GPU (attach `{query}`)"
        )
    if rows.get("pending"):
        warns.append(
            f"{where} has a memory row remapping pending ({counts}); running work is unaffected, and it "
            f"takes effect at the next GPU reset; fix: when the GPU is idle, nvidia-smi -r -i {gpu['index']} "
            "(or reboot)"
        )
    return fails, warns


def _processes(gpu: dict[str, Any], where: str, host_pids: bool) -> list[str]:
    """One WARN naming every other process holding >= HELD_WARN_MIB, or memory held by unlisted ones."""
    total = gpu.get("memory_total_MiB")
    used = gpu.get("memory_used_MiB")
    procs = [p for p in gpu.get("processes") or [] if isinstance(p, dict)]
    free = (
        f"{gib(total - used)} of {gib(total)} free"
        if isinstance(total, int) and isinstance(used, int)
        else ""
    )
    held = [
        p
        for p in procs
        if isinstance(p.get("used_MiB"), int) and p["used_MiB"] >= HELD_WARN_MIB and not p.get("this_process")
    ]
    if held:
        held.sort(key=lambda p: -p["used_MiB"])
        names = ", ".join(_process_text(p, host_pids) for p in held)
        pids = " and ".join(str(p["pid"]) for p in held)
        where_to_look = f"`{PROCESS_QUERY}`" + ("" if host_pids else " on the host (pids are the host's)")
        return [
            f"{where}: other processes hold GPU memory: {names}; {free}. verify's checks share the GPU with "
            f"them, so figures read low and large batches can run out of memory; fix: see {where_to_look}, "
            f"stop pid {pids} or pick a free GPU with CUDA_VISIBLE_DEVICES=<index or UUID>"
        ]
    if gpu.get("mig_mode") == "enabled" or not (isinstance(total, int) and isinstance(used, int)):
        return []  # under MIG, instances reserve memory of their own: `used` is no sign of other processes
    listed = sum(p["used_MiB"] for p in procs if isinstance(p.get("used_MiB"), int))
    unlisted = used - listed
    if unlisted >= UNLISTED_WARN_MIB:
        return [
            f"{where}: {gib(unlisted)} of GPU memory is in use by no process NVML lists (another container, "
            f"VM or user it does not show); {free}; fix: on the host run `{PROCESS_QUERY}` and stop the "
            "holder, or pick a free GPU with CUDA_VISIBLE_DEVICES=<index or UUID>"
        ]
    return []


def _process_text(proc: dict[str, Any], host_pids: bool) -> str:
    if not host_pids:
        name = "name not readable here: the pid is in the host's pid namespace, not this container's"
    else:
        name = proc.get("name") or "name unknown"
    return f"pid {proc['pid']} ({name}) {gib(proc['used_MiB'])}"


def _throttle(gpu: dict[str, Any], where: str) -> list[str]:
    reasons = gpu.get("throttle_reasons")
    if not isinstance(reasons, list):
        return []
    held = [r for r in reasons if r in WARN_THROTTLE]
    if not held:
        return []
    return [
        f"{where} clocks held down: {', '.join(held)} (temperature {gpu.get('temperature_C')} C, power "
        f"{gpu.get('power_W')} of {gpu.get('power_limit_W')} W), so benchmarks read low; fix: check the "
        f"cooling and power supply (nvidia-smi -q -d PERFORMANCE,TEMPERATURE,POWER -i {gpu['index']})"
    ]


def _mig(gpu: dict[str, Any], where: str) -> list[str]:
    if gpu.get("mig_mode") != "enabled" or gpu.get("mig_devices"):
        return []
    i = gpu["index"]
    return [
        f"{where} is in MIG mode with no MIG device, so CUDA cannot run on it; fix: create instances "
        f"(sudo nvidia-smi mig -i {i} -cgi <profile> -C; nvidia-smi mig -lgip lists the profiles) or turn "
        f"MIG off (sudo nvidia-smi -i {i} -mig 0, then reset the GPU)"
    ]


def _nvml_errors(gpu: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    errors = gpu.get("nvml_errors") or {}
    if any("lost" in message.lower() for message in errors.values()):
        return [f"{where} is lost to the driver ({'; '.join(errors.values())}); fix: reset it or reboot"], []
    if errors:
        failed = ", ".join(f"{field} ({message})" for field, message in sorted(errors.items()))
        return [], [f"{where}: NVML could not read {failed}"]
    return [], []


def pcie_note(gpu: dict[str, Any]) -> str | None:
    """Reported, never judged: GPUs lower the link when idle, and in a VM the slot NVML sees is virtual."""
    pcie = gpu.get("pcie") or {}
    values = [pcie.get(key) for key in ("gen", "gen_max", "width", "width_max")]
    gpu_max = pcie.get("gen_gpu_max")
    notes = []
    if all(isinstance(v, int) for v in values):
        gen, gen_max, width, width_max = values
        if gen < gen_max or width < width_max:
            notes.append(
                f"PCIe link gen{gen} x{width} of gen{gen_max} x{width_max} now (GPUs lower it when idle)"
            )
        if isinstance(gpu_max, int) and gen_max < gpu_max:
            notes.append(
                f"the slot caps the link at gen{gen_max}, the GPU supports gen{gpu_max} (check the slot, "
                "riser and BIOS PCIe setting)"
            )
    return "; ".join(notes) or None


def judge(gpu: dict[str, Any], host_pids: bool = True) -> Findings:
    """Every rule for one GPU. host_pids: NVML's pids are this process's own (not inside a container)."""
    where = label(gpu)
    fails, warns = _nvml_errors(gpu, where)
    fails += _ecc(gpu, where) + _retired_pages(gpu, where)
    remap_fails, remap_warns = _row_remap(gpu, where)
    fails += remap_fails
    warns += remap_warns + _processes(gpu, where, host_pids) + _mig(gpu, where) + _throttle(gpu, where)
    note = pcie_note(gpu)
    return Findings(fails, warns, [note] if note else [])
