"""Which NVIDIA driver a CUDA runtime needs, so `driver` says "upgrade to X", not a cryptic CUDA error.

Source: NVIDIA CUDA Toolkit Release Notes, table "CUDA Toolkit and Corresponding Driver Versions"
(Linux x86_64, GA release of each toolkit line; https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/),
and the CUDA Compatibility guide, "Minor Version Compatibility"
(https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html).

Two levels of "works":
- full support: driver >= the toolkit's own minimum below. Everything in that CUDA release works.
- minor-version compatibility (CUDA 11+): within one major family, a runtime runs on an older driver down to
  the family's floor (11.x >= 450.80.02, 12.x >= 525.60.13, 13.x >= 580.65.06) "with a limited feature set":
  PTX built by the newer toolkit cannot be JIT-compiled by the older driver, and APIs newer than the driver
  return cudaErrorCallRequiresNewerDriver. PyTorch ships SASS for the GPUs it supports, so ordinary training
  usually runs, but torch.compile/Triton kernels and custom extensions may not. `driver` WARNs in that band.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# CUDA toolkit line (major.minor) -> minimum Linux x86_64 driver of its GA release.
MIN_DRIVER: dict[str, str] = {
    "11.0": "450.36.06",
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
    "13.1": "590.44.01",
}

# CUDA major -> the oldest driver that still runs any runtime of that major (minor-version compatibility).
MINOR_COMPAT_FLOOR: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


class VersionError(ValueError):
    """A version string we cannot read (names the value)."""


def parse_version(text: str) -> tuple[int, ...]:
    """'570.124.06' -> (570, 124, 6). Numeric, so 570.124 > 570.26 (a string compare gets that wrong)."""
    if not re.fullmatch(r"\d+(\.\d+)*", text.strip()):
        raise VersionError(f"not a dotted numeric version: {text!r}")
    return tuple(int(part) for part in text.strip().split("."))


def cuda_line(version: str) -> str:
    """'12.8.1' or '12.8' -> '12.8' (the table is keyed by toolkit line)."""
    parts = parse_version(version)
    if len(parts) < 2:
        raise VersionError(f"CUDA version needs major.minor: {version!r}")
    return f"{parts[0]}.{parts[1]}"


def cuda_from_nvml(value: int) -> str:
    """NVML and cudaDriverGetVersion encode 12.8 as 12080 -> '12.8'."""
    if value <= 0:
        raise VersionError(f"not an encoded CUDA version: {value!r}")
    return f"{value // 1000}.{(value % 1000) // 10}"


def min_driver_for(cuda: str) -> str | None:
    """The minimum driver for a CUDA line, or None when the line is newer than this table."""
    return MIN_DRIVER.get(cuda_line(cuda))


@dataclass(frozen=True)
class Verdict:
    """How a driver fits a runtime: 'ok', 'minor_compat' (WARN), 'too_old' (FAIL)."""

    level: str
    reason: str
    min_driver: str | None


def check_driver(driver: str, runtime_cuda: str, driver_cuda: str | None = None) -> Verdict:
    """Judge `driver` (e.g. '570.124.06') for a CUDA runtime ('12.8').

    driver_cuda is what NVML says the driver supports ('12.8'); it decides when the runtime is newer than
    MIN_DRIVER knows, so a table that lags a release never fails a good host.
    """
    have = parse_version(driver)
    runtime = cuda_line(runtime_cuda)
    need = min_driver_for(runtime)
    if need is not None:
        if have >= parse_version(need):
            return Verdict("ok", f"driver {driver} >= {need}, the minimum for CUDA {runtime}", need)
    elif driver_cuda is not None and parse_version(cuda_line(driver_cuda)) >= parse_version(runtime):
        return Verdict("ok", f"driver {driver} supports CUDA {driver_cuda} >= runtime {runtime}", None)

    wanted = f">= {need}" if need else f"that supports CUDA {runtime}"
    upgrade = f"upgrade the NVIDIA driver to {need} or newer" if need else f"upgrade to a driver {wanted}"
    major = parse_version(runtime)[0]
    floor = MINOR_COMPAT_FLOOR.get(major)
    if floor is not None and have >= parse_version(floor):
        return Verdict(
            "minor_compat",
            f"driver {driver} is older than CUDA {runtime} needs ({wanted}) and runs it only through "
            f"CUDA minor-version compatibility (>= {floor} for {major}.x): PTX JIT and newer CUDA APIs fail, "
            f"so torch.compile/Triton and extensions may break; fix: {upgrade}",
            need,
        )
    return Verdict(
        "too_old",
        f"driver {driver} is too old for CUDA {runtime}: it needs a driver {wanted}; "
        f"fix: {upgrade}, or use an image built for an older CUDA",
        need,
    )
