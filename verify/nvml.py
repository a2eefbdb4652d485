"""Thin NVML access (nvidia-ml-py, `import pynvml`) for the checks that ask the driver about GPUs.

Two things it adds to pynvml: a session that says WHY NVML is unavailable (no library, no driver, no package),
and `Probe`, which records a query a GPU does not support as the value "not supported" (many queries are
unsupported on some boards, under MIG or in VMs; that is a fact to report, never a failure), while a real
error is kept per field so the check can judge it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NOT_SUPPORTED = "not supported"
PROC_DRIVER_VERSION = Path("/proc/driver/nvidia/version")


class NvmlUnavailable(Exception):
    """NVML is unusable here; str(exc) says why, `driver_present` whether a kernel driver is loaded."""

    def __init__(self, reason: str, driver_present: bool) -> None:
        super().__init__(reason)
        self.driver_present = driver_present


def kernel_driver_version() -> str | None:
    """The loaded kernel module's first line (e.g. 'NVRM version: ... 580.95.05 ...'), or None."""
    try:
        return PROC_DRIVER_VERSION.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def session() -> Iterator[Any]:
    """nvmlInit() ... nvmlShutdown(); yields the pynvml module. Raises NvmlUnavailable with the reason."""
    present = kernel_driver_version() is not None
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)", present) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
            reason = "NVML not found"
        elif isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
            reason = "NVML: driver not loaded"
        else:
            reason = f"NVML init failed: {exc}"
        raise NvmlUnavailable(reason, present) from None
    try:
        yield pynvml
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def text(value: Any) -> Any:
    """Old nvidia-ml-py returns bytes for names and versions; new returns str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class Probe:
    """Call NVML functions by name; unsupported -> NOT_SUPPORTED, other errors -> None plus errors[field]."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.errors: dict[str, str] = {}
        self._unsupported_codes = {
            getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3),
            getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13),
        }

    def __call__(self, field: str, function: str, *args: Any) -> Any:
        fn = getattr(self.nvml, function, None)
        if fn is None:  # this nvidia-ml-py predates the function
            return NOT_SUPPORTED
        try:
            return text(fn(*args))
        except self.nvml.NVMLError as exc:
            if getattr(exc, "value", None) in self._unsupported_codes:
                return NOT_SUPPORTED
            self.errors[field] = str(exc)
            return None

    def first(self, field: str, functions: tuple[str, ...], *args: Any) -> Any:
        """The first of several API generations that this driver and nvidia-ml-py support."""
        value: Any = NOT_SUPPORTED
        for function in functions:
            value = self(field, function, *args)
            if value != NOT_SUPPORTED:
                return value
        return value


# The inode of the kernel's initial pid namespace (PROC_PID_INIT_INO, include/linux/proc_ns.h). The driver
# is not pid-namespace aware: NVML reports the pids of that namespace, even inside a container.
INITIAL_PID_NAMESPACE = "pid:[4026531836]"


def in_host_pid_namespace(link: Path = Path("/proc/self/ns/pid")) -> bool | None:
    """True when NVML's pids are ours (not in a container's pid namespace); None when unknown.

    Inside a container the same number names another process or none, so a name looked up for it
    (nvmlSystemGetProcessName reads this namespace's /proc) would be a guess.
    """
    try:
        return str(link.readlink()) == INITIAL_PID_NAMESPACE
    except OSError:
        return None


def process_name(nvml: Any, pid: int) -> str | None:
    """The process's name as NVML reads it, None when it cannot (exited, no permission): never a failure."""
    try:
        return text(nvml.nvmlSystemGetProcessName(pid)) or None
    except nvml.NVMLError:
        return None


def mig_handles(nv: Any, handle: Any, slots: int) -> Iterator[tuple[int, Any]]:
    """(slot, handle) of each MIG device in a GPU's first `slots` slots, skipping empty ones (NOT_FOUND)."""
    for slot in range(slots):
        try:
            yield slot, nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nv.NVMLError:
            continue


def fabric_info(nv: Any, handle: Any) -> tuple[int, int] | None:
    """(state, status) of the GPU's fabric registration (NVSwitch systems), None where this nvidia-ml-py has
    no such call. pynvml wants the structure passed in (nvmlDeviceGetGpuFabricInfo(handle, byref(info))).
    Raises pynvml's NVMLError as NVML does (NOT_SUPPORTED on GPUs without a fabric)."""
    import ctypes

    struct = getattr(nv, "c_nvmlGpuFabricInfo_t", None)
    if struct is None or not hasattr(nv, "nvmlDeviceGetGpuFabricInfo"):
        return None
    info = struct()
    nv.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))
    return int(info.state), int(info.status)
