"""Does this host have NVIDIA GPUs, and in which ways can a Docker engine hand them to a container?

`make verify` must never go green on the CPU of a machine that has GPUs. Inferring GPUs from the engine's
configuration (a runtime named `nvidia` in `docker info`) misses the two other ways an engine serves them,
so the host itself is probed (device nodes, the driver's /proc entries, `nvidia-smi -L`) and the engine is
then asked in each way it may serve GPUs, one after the other:

1. `--gpus all`: a DeviceRequest for capability `gpu`, which dockerd serves through the NVIDIA Container
   Toolkit's hook (dockerd registers that device driver at start-up when `nvidia-container-runtime-hook` is
   on its PATH). First, because it is Docker's own GPU interface, the one Compose's device reservations use,
   and what `make verify` asked for before the other ways were added.
2. the `nvidia` runtime, when `docker info` lists it (`nvidia-ctk runtime configure`), with
   NVIDIA_VISIBLE_DEVICES=all.
3. CDI `--device nvidia.com/gpu=all` (Docker 25+ with CDI enabled; `docker info` then lists CDI spec
   dirs): a DeviceRequest with driver `cdi`, the form the docker CLI sends for a CDI device name.

An engine refuses a way it cannot serve when the container is created or started; the caller catches that
and tries the next. This module holds the probe (injectable: paths and the nvidia-smi command) and the
pure rules (which ways, what to say), without docker-py, so the probe also runs on a bare GPU host;
images.run_verify makes the engine calls.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GPU_MODES = ("auto", "all", "none")
INSTALL_GUIDE = "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
CDI_DEVICE = "nvidia.com/gpu=all"
NO_DRIVER_FOR_GPU = "could not select device driver"  # dockerd: no device driver serves the request


@dataclass(frozen=True)
class HostProbe:
    """Where to look for GPUs. Tests point it at a folder they fill, since the probe only checks names."""

    dev_dir: Path = Path("/dev")
    proc_gpus_dir: Path = Path("/proc/driver/nvidia/gpus")
    nvidia_smi: str | None = "nvidia-smi"  # command name or path; None: do not run it
    nvidia_smi_timeout_s: float = 20.0

    @classmethod
    def under(cls, root: Path) -> HostProbe:
        """The probe with / moved to root and no nvidia-smi (whose answer a test could not control)."""
        return cls(dev_dir=root / "dev", proc_gpus_dir=root / "proc/driver/nvidia/gpus", nvidia_smi=None)


@dataclass(frozen=True)
class HostGpus:
    """What the probe found: evidence of GPUs (paths, nvidia-smi lines) and what it looked at."""

    evidence: tuple[str, ...]
    looked_at: tuple[str, ...]

    @property
    def found(self) -> bool:
        return bool(self.evidence)

    def describe(self) -> str:
        return ", ".join(self.evidence) if self.found else "none: " + "; ".join(self.looked_at)


def probe_host(probe: HostProbe | None = None) -> HostGpus:
    """/dev/nvidia[0-9]* (one node per GPU; nvidiactl and nvidia-uvm do not count), the driver's per-GPU
    folders under /proc, and `nvidia-smi -L` when installed. Any one of them is evidence of a GPU."""
    probe = probe or HostProbe()
    evidence: list[str] = [str(p) for p in sorted(probe.dev_dir.glob("nvidia[0-9]*"))]
    looked = [f"{probe.dev_dir}/nvidia[0-9]*: {'found' if evidence else 'absent'}"]
    try:
        gpu_dirs = sorted(probe.proc_gpus_dir.iterdir()) if probe.proc_gpus_dir.is_dir() else []
    except OSError:
        gpu_dirs = []
    evidence += [str(p) for p in gpu_dirs]
    looked.append(f"{probe.proc_gpus_dir}/*: {'found' if gpu_dirs else 'absent'}")
    if probe.nvidia_smi is not None:
        smi_evidence, smi_note = _nvidia_smi_gpus(probe.nvidia_smi, probe.nvidia_smi_timeout_s)
        evidence += smi_evidence
        looked.append(smi_note)
    return HostGpus(tuple(evidence), tuple(looked))


def _nvidia_smi_gpus(command: str, timeout_s: float) -> tuple[list[str], str]:
    path = shutil.which(command)
    if path is None:
        return [], f"`{command} -L`: not installed"
    try:
        proc = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return [], f"`{command} -L`: no answer within {timeout_s:.0f} s"
    except OSError as exc:
        return [], f"`{command} -L`: cannot run ({exc})"
    gpus = [line.strip() for line in proc.stdout.splitlines() if line.startswith("GPU ")]
    if proc.returncode == 0 and gpus:
        return [f"nvidia-smi -L: {line}" for line in gpus], f"`{command} -L`: {len(gpus)} GPU(s)"
    said = (proc.stdout + proc.stderr).strip().splitlines()
    return [], f"`{command} -L`: exit {proc.returncode}, no GPU listed ({said[0] if said else 'no output'})"


@dataclass(frozen=True)
class GpuWay:
    """One way of asking the engine for every GPU: the container settings that make up the request."""

    key: str  # "hook" | "runtime" | "cdi" | "cpu"
    label: str  # as a user would say it
    runtime: str | None = None
    device_requests: tuple[Mapping[str, Any], ...] = ()  # docker.types.DeviceRequest keyword arguments
    environment: Mapping[str, str] = field(default_factory=dict)


HOOK = GpuWay(
    "hook",
    "`--gpus all` (the NVIDIA Container Toolkit's hook)",
    device_requests=({"count": -1, "capabilities": [["gpu"]]},),
)
RUNTIME = GpuWay(
    "runtime", "the `nvidia` runtime", runtime="nvidia", environment={"NVIDIA_VISIBLE_DEVICES": "all"}
)
CDI = GpuWay(
    "cdi",
    f"CDI `--device {CDI_DEVICE}`",
    device_requests=({"driver": "cdi", "device_ids": [CDI_DEVICE]},),
)
# No GPU, even where the engine's default runtime is `nvidia` (the image sets NVIDIA_VISIBLE_DEVICES=all).
CPU_ONLY = GpuWay("cpu", "no GPU", environment={"NVIDIA_VISIBLE_DEVICES": "void"})


@dataclass(frozen=True)
class Attempt:
    """A way that did not give GPUs: refused by the engine (its words) or not tried (and why)."""

    way: GpuWay
    said: str
    tried: bool


def plan_ways(info: Mapping[str, Any]) -> tuple[list[GpuWay], list[Attempt]]:
    """The ways to try, in order, for an engine's `docker info`, and those left out with the reason."""
    ways, skipped = [HOOK], []
    runtimes = sorted(info.get("Runtimes") or {})
    if "nvidia" in runtimes:
        ways.append(RUNTIME)
    else:
        skipped.append(
            Attempt(RUNTIME, f"not listed by `docker info` (Runtimes: {', '.join(runtimes)})", False)
        )
    if info.get("CDISpecDirs"):
        ways.append(CDI)
    elif "CDISpecDirs" in info:
        skipped.append(
            Attempt(CDI, "CDI is off in this engine (`docker info` lists no CDI spec dirs)", False)
        )
    else:
        version = info.get("ServerVersion", "unknown")
        skipped.append(Attempt(CDI, f"this engine (Docker {version}) predates CDI (Docker 25+)", False))
    return ways, skipped


@dataclass(frozen=True)
class GpuPlan:
    want_gpu: bool
    reason: str


def plan_gpus(mode: str, host: HostGpus, remote_engine: str | None = None) -> GpuPlan:
    """auto: GPUs exactly when the host shows some; all / none: the user's word, e.g. for a remote engine
    whose host this probe cannot see (remote_engine: DOCKER_HOST when it is not a local socket)."""
    if mode not in GPU_MODES:
        raise ValueError(f"--gpus {mode!r}: expected one of {', '.join(GPU_MODES)}")
    if mode == "none":
        return GpuPlan(False, "--gpus none (GPUS=none) asked for the CPU; GPU checks will SKIP")
    if mode == "all":
        found = f"this host shows {host.describe()}" if host.found else "the host probe found none"
        return GpuPlan(True, f"--gpus all (GPUS=all) requires GPUs ({found})")
    if host.found:
        return GpuPlan(True, f"this host has NVIDIA GPUs ({host.describe()})")
    reason = (
        f"this host shows no NVIDIA GPU ({'; '.join(host.looked_at)}), so the GPU checks will SKIP; "
        "on a GPU host whose devices this probe cannot see, require them: make verify GPUS=all"
    )
    if remote_engine:
        reason += f" (the engine is at {remote_engine}: this probe looked at this machine, not the engine's)"
    return GpuPlan(False, reason)


def no_access_message(host: HostGpus, attempts: Sequence[Attempt], info: Mapping[str, Any]) -> str:
    """The FAIL for a GPU host whose engine handed no GPU to the container: each way and what the engine
    said, the cause, and the NVIDIA Container Toolkit step that is missing."""
    wanted = f"the host has NVIDIA GPUs ({host.describe()})" if host.found else "--gpus all requires GPUs"
    lines = [
        f"{wanted} but the Docker engine gives a container none of them:",
        *(f"  - {a.way.label}: {'refused: ' if a.tried else ''}{a.said}" for a in attempts),
    ]
    by_key = {a.way.key: a for a in attempts}
    if _toolkit_absent(by_key.get("hook"), by_key.get("runtime")):
        lines += [
            "cause: the NVIDIA Container Toolkit is not installed, or dockerd was not restarted after it was "
            "(dockerd serves `--gpus` only when it found nvidia-container-runtime-hook at start-up)",
            f"fix: install the toolkit (add NVIDIA's package repository, see {INSTALL_GUIDE}; then "
            "`sudo apt-get install -y nvidia-container-toolkit` or `sudo dnf install -y "
            "nvidia-container-toolkit`), then `sudo nvidia-ctk runtime configure --runtime=docker && "
            "sudo systemctl restart docker`",
        ]
    else:
        lines.append(
            "cause: the NVIDIA Container Toolkit is there but could not set up the GPUs (the engine's "
            "words above); fix: run `nvidia-container-cli info` and `nvidia-smi` on the host to see why "
            "(driver not loaded, driver and toolkit libraries that do not match), then "
            "`sudo systemctl restart docker`"
        )
    lines += _cdi_lines(by_key.get("cdi"), info)
    lines.append(
        "to verify on the CPU on purpose: make verify GPUS=none (python -m images verify --gpus none)"
    )
    return "\n".join(lines)


def _toolkit_absent(hook: Attempt | None, runtime: Attempt | None) -> bool:
    """The engine knows no GPU driver (`--gpus` refused for want of one) and no `nvidia` runtime."""
    no_hook = hook is not None and hook.tried and NO_DRIVER_FOR_GPU in hook.said
    no_runtime = runtime is None or not runtime.tried or "unknown runtime" in runtime.said.lower()
    return no_hook and no_runtime


def _cdi_lines(cdi: Attempt | None, info: Mapping[str, Any]) -> list[str]:
    generate = "`sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    enable = (
        "enable CDI in dockerd (`sudo nvidia-ctk runtime configure --runtime=docker --cdi.enabled`, which "
        'sets "features": {"cdi": true} in /etc/docker/daemon.json) and `sudo systemctl restart docker`'
    )
    if cdi is not None and cdi.tried:
        if f'{NO_DRIVER_FOR_GPU} "cdi"' in cdi.said:
            return [f"CDI: dockerd has CDI off; fix: {generate}, then {enable}"]
        dirs = ", ".join(info.get("CDISpecDirs") or []) or "the CDI spec dirs"
        return [
            f"CDI: no spec in {dirs} gives {CDI_DEVICE}; fix: {generate} "
            f"(`nvidia-ctk cdi list` must then show {CDI_DEVICE})"
        ]
    major = _major(info.get("ServerVersion"))
    if major is not None and major < 25:
        return []  # CDI needs Docker 25+: the attempt's line says so
    return [f"or with CDI: {generate}, then {enable}"]


def _major(version: object) -> int | None:
    head = str(version or "").split(".")[0]
    return int(head) if head.isdigit() else None
