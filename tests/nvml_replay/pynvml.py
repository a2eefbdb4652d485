"""A stand-in for nvidia-ml-py's `pynvml` that answers from a recording of a real GPU host.

Why: the checks judge what NVML says (GPUs present, ECC, retired pages, MIG, throttling, PCIe, processes
holding memory). This CPU-only test machine has no NVML, and faults like uncorrected ECC errors cannot be
made on a healthy card, so tests replay what a real H200 answered (scripts/record_nvml.py wrote it) with one
field changed, and the checks run unmodified against it.

Use: put this folder first on PYTHONPATH and name the recording in NVML_REPLAY (tests/conftest.py's
`nvml_replay` fixture does both). Without NVML_REPLAY, nvmlInit fails like a host without the library.

Rules: a call is looked up by pynvml function name (plus its arguments after the handle, as the recorder
wrote them); a recorded {"nvml_error": code} is raised as NVMLError(code); a call the recording does not hold
raises NVML_ERROR_NOT_SUPPORTED, the answer NVML gives for a query a board does not support. Structures come
back as objects with attributes, as pynvml's do.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

__version__ = "replay"

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml's: NVMLError(code) is an instance of the code's subclass, `.value` is the code."""

    _subclasses: ClassVar[dict[int, type[NVMLError]]] = {}

    def __new__(cls, value: int, message: str | None = None) -> NVMLError:
        if cls is NVMLError and value in NVMLError._subclasses:
            cls = NVMLError._subclasses[value]
        return Exception.__new__(cls)

    def __init__(self, value: int, message: str | None = None) -> None:
        super().__init__(value)
        self.value = value
        self.message = message or _MESSAGES.get(value, f"NVML error {value}")

    def __str__(self) -> str:
        return self.message


def _subclass(name: str, code: int) -> type[NVMLError]:
    sub = type(name, (NVMLError,), {})
    NVMLError._subclasses[code] = sub
    return sub


NVMLError_Uninitialized = _subclass("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _subclass("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NotFound = _subclass("NVMLError_NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_DriverNotLoaded = _subclass("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _subclass("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _subclass("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _subclass("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)


class Handle:
    """A device (or MIG device) handle: the recorded answers for it."""

    def __init__(self, answers: dict[str, Any], parent: Handle | None = None) -> None:
        self.answers = answers
        self.parent = parent


_recording: dict[str, Any] | None = None


def _loaded() -> dict[str, Any]:
    if _recording is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _recording


def call_key(function: str, args: tuple[Any, ...]) -> str:
    """The key scripts/record_nvml.py stored the call under."""
    return f"{function}({','.join(repr(a) for a in args)})" if args else function


def _value(answer: Any) -> Any:
    if isinstance(answer, dict):
        if "nvml_error" in answer:
            raise NVMLError(int(answer["nvml_error"]), answer.get("message"))
        return SimpleNamespace(**{k: _value(v) for k, v in answer.items()})
    if isinstance(answer, list):
        return [_value(v) for v in answer]
    return answer


def _answer(answers: dict[str, Any], function: str, args: tuple[Any, ...]) -> Any:
    key = call_key(function, args)
    if key not in answers:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED, f"Not Supported ({key} is not in the recording)")
    return _value(answers[key])


def nvmlInit() -> None:
    global _recording
    path = os.environ.get("NVML_REPLAY")
    if not path:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "init_error" in data:  # a recording of a host whose NVML does not start
        raise NVMLError(int(data["init_error"]))
    _recording = data


def nvmlInitWithFlags(_flags: int) -> None:
    nvmlInit()


def nvmlShutdown() -> None:
    global _recording
    _loaded()
    _recording = None


def nvmlDeviceGetCount() -> int:
    return len(_loaded()["devices"])


def nvmlDeviceGetHandleByIndex(index: int) -> Handle:
    devices = _loaded()["devices"]
    if not 0 <= index < len(devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if "nvmlDeviceGetHandleByIndex" in devices[index]:  # a GPU NVML cannot open (recorded, or a test's edit)
        _value(devices[index]["nvmlDeviceGetHandleByIndex"])
    return Handle(devices[index])


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> Handle:
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for device in _loaded()["devices"]:
        if device.get("nvmlDeviceGetUUID") == wanted:
            return Handle(device)
        for mig in device.get("mig_devices", []):
            if mig.get("nvmlDeviceGetUUID") == wanted:
                return Handle(mig, Handle(device))
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetMigDeviceHandleByIndex(handle: Handle, index: int) -> Handle:
    for mig in handle.answers.get("mig_devices", []):
        if mig.get("index") == index:
            return Handle(mig, handle)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceIsMigDeviceHandle(handle: Handle) -> bool:
    return handle.parent is not None


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle: Handle) -> Handle:
    if handle.parent is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return handle.parent


class c_nvmlGpuFabricInfo_t(ctypes.Structure):
    """The structure pynvml fills in place: nvmlDeviceGetGpuFabricInfo(handle, byref(info))."""

    _fields_: ClassVar = [
        ("clusterUuid", ctypes.c_uint8 * 16),
        ("status", ctypes.c_uint),
        ("cliqueId", ctypes.c_uint32),
        ("state", ctypes.c_uint8),
    ]


def nvmlDeviceGetGpuFabricInfo(handle: Handle, info_ref: Any) -> int:
    """Fills the structure passed by reference from the recorded fields, as NVML does."""
    answer = _answer(handle.answers, "nvmlDeviceGetGpuFabricInfo", ())
    info = info_ref._obj
    info.state, info.status, info.cliqueId = int(answer.state), int(answer.status), int(answer.cliqueId)
    return NVML_SUCCESS


def __getattr__(name: str) -> Any:
    """Every other nvml* function: answered from the recording (device calls by handle, else system)."""
    if not name.startswith("nvml"):
        raise AttributeError(name)

    def replayed(*args: Any) -> Any:
        if args and isinstance(args[0], Handle):
            return _answer(args[0].answers, name, args[1:])
        return _answer(_loaded()["system"], name, args)

    replayed.__name__ = name
    return replayed
