"""Record what NVML answers on this host, as JSON the test suite can replay (tests/nvml_replay).

    python3 scripts/record_nvml.py > h200.json        # on a GPU host (nvidia-ml-py installed)

Why: the driver and gpu checks judge NVML's answers (ECC, retired pages, MIG, throttling, PCIe, other
processes). Faults like uncorrected ECC errors cannot be made on purpose on a healthy card, so the tests
replay a real recording with one field changed, and say so.

Format: {"recorded": {...}, "system": {CALL: ANSWER}, "devices": [{CALL: ANSWER, "mig_devices": [...]}]}.
CALL is the pynvml function name, with its extra arguments after the handle as "(a,b)" when it takes
any; ANSWER is the value (ctypes structures as dicts of their fields, lists as lists) or
{"nvml_error": CODE, "message": TEXT} when NVML refused the call.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
from typing import Any

import pynvml as nv

# (function, extra arguments after the handle). Constants by value so the replay needs no pynvml.
DEVICE_CALLS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("nvmlDeviceGetName", ()),
    ("nvmlDeviceGetUUID", ()),
    ("nvmlDeviceGetBrand", ()),
    ("nvmlDeviceGetArchitecture", ()),
    ("nvmlDeviceGetMemoryInfo", ()),
    ("nvmlDeviceGetCudaComputeCapability", ()),
    ("nvmlDeviceGetPciInfo", ()),
    ("nvmlDeviceGetCurrentClocksEventReasons", ()),
    ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),
    ("nvmlDeviceGetEccMode", ()),
    ("nvmlDeviceGetTotalEccErrors", (1, 0)),  # uncorrected, volatile
    ("nvmlDeviceGetTotalEccErrors", (1, 1)),  # uncorrected, aggregate
    ("nvmlDeviceGetRetiredPagesPendingStatus", ()),
    ("nvmlDeviceGetRemappedRows", ()),
    ("nvmlDeviceGetMigMode", ()),
    ("nvmlDeviceGetMaxMigDeviceCount", ()),
    ("nvmlDeviceGetPersistenceMode", ()),
    ("nvmlDeviceGetTemperature", (0,)),  # NVML_TEMPERATURE_GPU
    ("nvmlDeviceGetPowerUsage", ()),
    ("nvmlDeviceGetEnforcedPowerLimit", ()),
    ("nvmlDeviceGetClockInfo", (1,)),  # NVML_CLOCK_SM
    ("nvmlDeviceGetMaxClockInfo", (1,)),
    ("nvmlDeviceGetCurrPcieLinkGeneration", ()),
    ("nvmlDeviceGetMaxPcieLinkGeneration", ()),
    ("nvmlDeviceGetCurrPcieLinkWidth", ()),
    ("nvmlDeviceGetMaxPcieLinkWidth", ()),
    ("nvmlDeviceGetGpuMaxPcieLinkGeneration", ()),
    ("nvmlDeviceGetComputeRunningProcesses", ()),
    ("nvmlDeviceGetGraphicsRunningProcesses", ()),
    ("nvmlDeviceGetNumaNodeId", ()),
    ("nvmlDeviceGetCpuAffinity", (4,)),  # 4 x 64-bit words of CPU mask
    ("nvmlDeviceGetComputeMode", ()),
    ("nvmlDeviceGetSerial", ()),
    *((("nvmlDeviceGetNvLinkState", (link,))) for link in range(18)),  # NVML_NVLINK_MAX_LINKS
    *((("nvmlDeviceGetNvLinkVersion", (link,))) for link in range(18)),
)
MIG_CALLS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("nvmlDeviceGetName", ()),
    ("nvmlDeviceGetUUID", ()),
    ("nvmlDeviceGetMemoryInfo", ()),
    ("nvmlDeviceGetGpuInstanceId", ()),
    ("nvmlDeviceGetComputeInstanceId", ()),
)
SYSTEM_CALLS: tuple[str, ...] = (
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlSystemGetNVMLVersion",
)


def call_key(function: str, args: tuple[Any, ...]) -> str:
    return f"{function}({','.join(repr(a) for a in args)})" if args else function


def plain(value: Any) -> Any:
    """ctypes structures, bytes and sequences as JSON values."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    fields = getattr(value, "_fields_", None)
    if fields is not None:
        return {name: plain(getattr(value, name)) for name, *_ in fields}
    if hasattr(value, "__dict__"):
        return {k: plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


def answer(function: str, *args: Any) -> Any:
    fn = getattr(nv, function, None)
    if fn is None:
        return {"nvml_error": 13, "message": f"{function} not in this nvidia-ml-py"}
    try:
        return plain(fn(*args))
    except nv.NVMLError as exc:
        return {"nvml_error": getattr(exc, "value", -1), "message": str(exc)}
    except TypeError as exc:  # a call whose signature this nvidia-ml-py changed: record it, go on
        return {"nvml_error": -1, "message": f"TypeError: {exc}"}


def fabric(handle: Any) -> Any:
    """The fabric registration (NVSwitch systems), recorded as the structure's fields: pynvml wants the
    structure passed in, so it cannot go through answer()."""
    import ctypes

    if not hasattr(nv, "c_nvmlGpuFabricInfo_t"):
        return {"nvml_error": 13, "message": "nvmlDeviceGetGpuFabricInfo not in this nvidia-ml-py"}
    info = nv.c_nvmlGpuFabricInfo_t()
    try:
        nv.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))
    except nv.NVMLError as exc:
        return {"nvml_error": getattr(exc, "value", -1), "message": str(exc)}
    return plain(info)


def record_calls(handle: Any, calls: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[str, Any]:
    return {call_key(f, a): answer(f, handle, *a) for f, a in calls}


def main() -> int:
    nv.nvmlInit()
    try:
        system = {name: answer(name) for name in SYSTEM_CALLS}
        devices = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            device = record_calls(handle, DEVICE_CALLS)
            device["nvmlDeviceGetGpuFabricInfo"] = fabric(handle)
            procs = [
                proc
                for key in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")
                if isinstance(device.get(key), list)
                for proc in device[key]
            ]
            for proc in procs:
                if isinstance(proc, dict) and "pid" in proc:
                    key = call_key("nvmlSystemGetProcessName", (proc["pid"],))
                    system[key] = answer("nvmlSystemGetProcessName", proc["pid"])
            migs = []
            count = device.get("nvmlDeviceGetMaxMigDeviceCount")
            for mig_index in range(count if isinstance(count, int) else 0):
                try:
                    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)
                except nv.NVMLError:
                    continue  # no MIG device in this slot
                migs.append({"index": mig_index, **record_calls(mig, MIG_CALLS)})
            device["mig_devices"] = migs
            devices.append(device)
    finally:
        nv.nvmlShutdown()
    recorded = {
        "host": socket.gethostname(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nvidia_ml_py": getattr(nv, "__version__", None),
    }
    json.dump({"recorded": recorded, "system": system, "devices": devices}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
