"""Are there NVIDIA GPUs here, and if torch cannot use them, why not?

A verdict that passes while the GPU is not used is the worst bug `verify` can have: with CUDA_VISIBLE_DEVICES
empty, a CPU-only torch wheel or a hidden device, torch quietly runs on the CPU and every check "passes".
So the gpu check first asks two independent witnesses:

- present: NVML lists N > 0 GPUs, or (NVML unusable, e.g. a container whose NVIDIA_DRIVER_CAPABILITIES lacks
  `utility`, so libnvidia-ml is not mounted) /dev/nvidia<N> device nodes or /proc/driver/nvidia/gpus/<bus id>
  entries exist;
- usable: torch sees as many CUDA devices as CUDA_VISIBLE_DEVICES should expose (`visible_devices`, CUDA's
  rules on NVML's device list).

Present but not usable is a FAIL that names every cause that applies, most fundamental first, each with its
fix. Absent is a SKIP, or a FAIL when the run requires a GPU (--require-gpu, VERIFY_REQUIRE_GPU=1).

`collect()` gathers the facts (NVML, device nodes, environment, torch); `diagnose()` judges them and is pure,
so every rule is unit-tested on recorded NVML data. VERIFY_HOST_ROOT (default /) is where /dev and
/proc/driver/nvidia are read: a GPU's device node cannot be made without the driver, so tests point it at a
temp dir holding a file named dev/nvidia0.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify import compat, nvml
from verify.result import Status

# The driver branch from which CUDA enumerates one MIG device per GPU instance, next to non-MIG GPUs.
MIG_MULTI_DRIVER_MAJOR = 570
MAX_MIG_DEVICES = 64  # "CUDA supports at most 64 MIG instances across all GPUs"
NO_GPU_REQUESTS = ("void", "none", "")  # NVIDIA_VISIBLE_DEVICES values for which the toolkit mounts no GPU
GIVE_GPUS = (
    "give the container GPUs: `docker run --gpus all ...` (NVIDIA Container Toolkit), "
    "`--device nvidia.com/gpu=all` (CDI) or `-e NVIDIA_VISIBLE_DEVICES=all` with the nvidia runtime"
)
CUDA_WHEEL = (
    "install a CUDA build of torch, e.g. "
    "`pip install torch --index-url https://download.pytorch.org/whl/cu128`, "
    "or run inside a pytorch-cuda image"
)


# ---- facts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigDevice:
    uuid: str
    gpu_instance: int | None  # GPU instance id on its parent
    compute_instance: int | None  # compute instance id within the GPU instance


@dataclass(frozen=True)
class NvmlGpu:
    index: int
    uuid: str | None  # None: not known (NVML unusable; the GPU was counted from device nodes)
    name: str
    mig_enabled: bool = False
    mig_devices: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class Facts:
    """What the host, the environment and torch say; JSON-able through asdict (the check's details)."""

    nvml_gpus: tuple[NvmlGpu, ...] | None  # None: NVML unusable, see nvml_error
    nvml_error: str | None
    driver_version: str | None  # NVML's, else the kernel module's (/proc/driver/nvidia/version)
    device_nodes: tuple[str, ...]  # /dev/nvidia<N>
    proc_gpus: tuple[str, ...]  # /proc/driver/nvidia/gpus/<bus id>
    cuda_visible_devices: str | None
    nvidia_visible_devices: str | None
    nvidia_driver_capabilities: str | None
    in_container: bool
    torch_version: str
    torch_cuda: str | None  # torch.version.cuda; None for a CPU-only build
    torch_count: int  # torch.cuda.device_count()
    cuda_error: str | None = None  # torch.cuda.init()'s error when torch sees no device

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- CUDA's enumeration rules (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class CudaDevice:
    gpu: int  # NVML index of the (parent) GPU
    mig_uuid: str | None = None  # set for a MIG device
    gpu_instance: int | None = None

    def label(self) -> str:
        return f"GPU {self.gpu}" if self.mig_uuid is None else f"{self.mig_uuid} (on GPU {self.gpu})"


@dataclass(frozen=True)
class Visibility:
    """The devices CUDA exposes, and the CUDA_VISIBLE_DEVICES entry where it stopped reading, if any."""

    devices: tuple[CudaDevice, ...]
    stopped_at: str | None = None  # the first entry that names no (new) device
    why: str = ""  # why that entry stops the list
    ignored: tuple[str, ...] = ()  # the entries after it, which CUDA never reads
    notes: tuple[str, ...] = field(default=())  # MIG limits that dropped devices
    repeated: bool = False  # stopped at a device named twice: CUDA then exposes none at all


def _driver_major(driver_version: str | None) -> int | None:
    try:
        return compat.parse_version(driver_version)[0] if driver_version else None
    except compat.VersionError:
        return None


def _devices_of(gpu: NvmlGpu) -> list[CudaDevice]:
    """What a whole GPU contributes: itself, or in MIG mode one MIG device (the first compute instance) per
    GPU instance; a MIG-mode GPU without MIG devices contributes nothing CUDA can run on."""
    if not gpu.mig_enabled:
        return [CudaDevice(gpu.index)]
    out: list[CudaDevice] = []
    seen: set[int] = set()
    for mig in gpu.mig_devices:
        if mig.gpu_instance is not None and mig.gpu_instance in seen:
            continue
        if mig.gpu_instance is not None:
            seen.add(mig.gpu_instance)
        out.append(CudaDevice(gpu.index, mig.uuid, mig.gpu_instance))
    return out


def _resolve(entry: str, gpus: tuple[NvmlGpu, ...]) -> tuple[list[CudaDevice] | None, str]:
    """One CUDA_VISIBLE_DEVICES entry -> its devices, or None and why it names no device."""
    legacy = re.fullmatch(r"MIG-(GPU-[0-9a-fA-F-]+)/(\d+)/(\d+)", entry)
    if legacy:  # MIG-<GPU-UUID>/<GPU instance>/<compute instance>, the form drivers before R470 read
        parent, gi, ci = legacy.group(1).lower(), int(legacy.group(2)), int(legacy.group(3))
        for gpu in gpus:
            for mig in gpu.mig_devices:
                if (gpu.uuid or "").lower() == parent and (mig.gpu_instance, mig.compute_instance) == (
                    gi,
                    ci,
                ):
                    return [CudaDevice(gpu.index, mig.uuid, gi)], ""
        return None, "names no MIG device (no such GPU, GPU instance or compute instance)"
    if entry.upper().startswith("MIG-"):
        hits = [
            CudaDevice(g.index, m.uuid, m.gpu_instance)
            for g in gpus
            for m in g.mig_devices
            if m.uuid.lower().startswith(entry.lower())
        ]
        if len(hits) == 1:
            return hits, ""
        return None, "is a prefix of several MIG device UUIDs" if hits else "names no MIG device"
    if entry.upper().startswith("GPU-"):
        found = [g for g in gpus if g.uuid and g.uuid.lower().startswith(entry.lower())]
        if len(found) == 1:
            return _devices_of(found[0]), ""
        if any(g.uuid is None for g in gpus):
            return None, "cannot be matched: NVML is unusable, so no GPU UUID is known"
        return None, "is a prefix of several GPU UUIDs" if found else "names no GPU UUID"
    number = re.match(r"[+-]?\d+", entry)  # CUDA reads an ordinal like strtoul: "1abc" is 1
    if number:
        ordinal = int(number.group())
        if ordinal < 0:
            return None, "is negative (CUDA's way to hide this and every later entry)"
        if ordinal < len(gpus):
            return _devices_of(gpus[ordinal]), ""
        return None, f"names no GPU (ordinals here: {_ordinal_range(len(gpus))})"
    return None, "is neither an ordinal nor a GPU-/MIG- UUID"


def _ordinal_range(count: int) -> str:
    return "none" if count == 0 else "0" if count == 1 else f"0..{count - 1}"


def _mig_limits(devices: list[CudaDevice], driver_version: str | None) -> tuple[list[CudaDevice], list[str]]:
    """CUDA's MIG limits: from R570 one compute instance per GPU instance and at most 64 MIG devices;
    before R570 a single MIG device per process, and no non-MIG GPU once a MIG device is enumerated."""
    migs = [d for d in devices if d.mig_uuid is not None]
    if not migs:
        return devices, []
    major = _driver_major(driver_version)
    if major is not None and major < MIG_MULTI_DRIVER_MAJOR:
        if len(devices) > 1:
            note = (
                f"driver {driver_version} (< R{MIG_MULTI_DRIVER_MAJOR}) lets a CUDA process use one MIG "
                f"device and then no other GPU: only {migs[0].mig_uuid}"
            )
            return [migs[0]], [note]
        return devices, []
    out: list[CudaDevice] = []
    seen: set[tuple[int, int]] = set()
    notes: list[str] = []
    for d in devices:
        if d.mig_uuid is not None and d.gpu_instance is not None:
            if (d.gpu, d.gpu_instance) in seen:
                notes.append(
                    f"{d.mig_uuid} shares GPU instance {d.gpu_instance} with an earlier entry: not used"
                )
                continue
            seen.add((d.gpu, d.gpu_instance))
        out.append(d)
    mig_seen = 0
    capped: list[CudaDevice] = []
    for d in out:
        if d.mig_uuid is not None:
            mig_seen += 1
            if mig_seen > MAX_MIG_DEVICES:
                continue
        capped.append(d)
    if mig_seen > MAX_MIG_DEVICES:
        notes.append(
            f"CUDA uses at most {MAX_MIG_DEVICES} MIG devices; {mig_seen - MAX_MIG_DEVICES} not used"
        )
    return capped, notes


def visible_devices(cvd: str | None, gpus: tuple[NvmlGpu, ...], driver_version: str | None) -> Visibility:
    """The devices CUDA exposes for this CUDA_VISIBLE_DEVICES on these GPUs (NVML order).

    CUDA's rules (CUDA Programming Guide, "CUDA Environment Variables", CUDA_VISIBLE_DEVICES): unset -> every
    device; empty -> none; entries are ordinals or (unique prefixes of) UUIDs, and "if an invalid index is
    encountered, only devices with indices that appear before the invalid index in the list are visible"
    ("7,0" hides everything, "0,7" keeps GPU 0). A device named twice ("0,0", or an ordinal and its UUID)
    hides everything: cudaGetDeviceCount then fails with "invalid device ordinal" (seen on an H200, driver
    580.159.04, CUDA 13.0: torch saw no GPU; torch's own parser assumes the same).

    MIG (NVIDIA Multi-Instance GPU User Guide, "MIG Device Names" > "CUDA Device Enumeration",
    https://docs.nvidia.com/datacenter/tesla/mig-user-guide/mig-device-names.html):
    - a MIG device is named MIG-<UUID> (drivers >= R470) or MIG-<GPU-UUID>/<GPU instance>/<compute
      instance> (drivers < R470; accepted here for any driver);
    - from CUDA 12/R570 CUDA enumerates one compute instance per GPU instance, across GPU instances and next
      to non-MIG GPUs, at most 64 MIG devices; with CUDA_VISIBLE_DEVICES unset "CUDA will pick one from each
      GPU instance"; two listed compute instances of one GPU instance -> one is used;
    - before R570 (CUDA 11/R450 .. CUDA 12/R525): a process enumerates a single MIG device, and no non-MIG
      GPU once a MIG device is enumerated.
    A MIG-mode GPU named by ordinal or GPU UUID is read as its MIG devices, one per GPU instance (the guide
    does not say; this is the "unset" rule applied to that GPU). An unknown driver is taken as >= R570.
    """
    if cvd is None:
        chosen = [d for g in gpus for d in _devices_of(g)]
        devices, notes = _mig_limits(chosen, driver_version)
        return Visibility(tuple(devices), notes=tuple(notes))
    if not cvd.strip():
        return Visibility(())
    entries = [e.strip() for e in cvd.split(",")]
    chosen = []
    stopped_at, why, ignored = None, "", ()
    for pos, entry in enumerate(entries):
        found, why = _resolve(entry, gpus)
        if found is not None:
            repeated = [d for d in found if d in chosen]
            if repeated:  # CUDA refuses the whole list, not only this entry
                why = f"repeats {repeated[0].label()}"
                return Visibility((), entry, why, tuple(entries[pos + 1 :]), repeated=True)
        if found is None:
            stopped_at, ignored = entry, tuple(entries[pos + 1 :])
            break
        chosen.extend(found)
    devices, notes = _mig_limits(chosen, driver_version)
    return Visibility(tuple(devices), stopped_at, why, ignored, tuple(notes))


def valid_ids(gpus: tuple[NvmlGpu, ...]) -> str:
    """The ids CUDA_VISIBLE_DEVICES accepts here, for a message: '0 = GPU-b360... (NVIDIA H200)'."""
    parts = []
    for g in gpus:
        text = f"{g.index} = {g.uuid} ({g.name}" if g.uuid else f"{g.index} ({g.name}"
        if g.mig_enabled:
            migs = ", ".join(m.uuid for m in g.mig_devices) or "no MIG devices"
            text += f"; MIG: {migs}"
        parts.append(text + ")")
    return "; ".join(parts) or "none"


# ---- the verdict (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    key: (
        str  # cpu_only_torch, driver_capabilities, driver_too_old, mig_without_devices, cuda_visible_devices,
    )
    #           nvidia_visible_devices, cuda_error, count_mismatch, no_gpu
    message: str  # the cause, the value, the fix

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Verdict:
    """status None: torch sees the devices it should; the gpu check goes on to measure them."""

    status: Status | None
    summary: str
    causes: tuple[Cause, ...] = ()
    warnings: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    expected: int | None = None  # devices CUDA should expose; None when NVML is unusable

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = None if self.status is None else self.status.value
        return data


def evidence(facts: Facts) -> list[str]:
    """Why we believe GPUs are present (empty: none are)."""
    out = []
    if facts.nvml_gpus:
        names = sorted({g.name for g in facts.nvml_gpus})
        out.append(f"NVML lists {len(facts.nvml_gpus)} GPU(s) ({', '.join(names)})")
    if facts.device_nodes:
        out.append(f"device nodes {' '.join(facts.device_nodes)}")
    if facts.proc_gpus:
        out.append(f"/proc/driver/nvidia/gpus has {' '.join(facts.proc_gpus)}")
    return out


def _host_gpus(facts: Facts) -> tuple[NvmlGpu, ...]:
    """NVML's GPUs, or as many UUID-less stand-ins as device nodes / proc entries show."""
    if facts.nvml_gpus is not None:
        return facts.nvml_gpus
    count = max(len(facts.device_nodes), len(facts.proc_gpus))
    return tuple(NvmlGpu(i, None, "UUID unknown: NVML unusable") for i in range(count))


def _lacks(capabilities: str | None, wanted: str) -> bool:
    if capabilities is None:
        return False
    caps = {c.strip() for c in capabilities.split(",")}
    return "all" not in caps and wanted not in caps


def _cvd_cause(facts: Facts, gpus: tuple[NvmlGpu, ...], seen: Visibility) -> Cause | None:
    cvd = facts.cuda_visible_devices
    if cvd is None or seen.devices:
        return None
    fix = f"fix: unset CUDA_VISIBLE_DEVICES or set it to ids that exist here: {valid_ids(gpus)}"
    if not cvd.strip():
        return Cause(
            "cuda_visible_devices", f"CUDA_VISIBLE_DEVICES is set but empty, which hides every GPU; {fix}"
        )
    if seen.stopped_at is None:
        return None  # the entries name MIG-mode GPUs without MIG devices: _mig_cause says so
    if seen.repeated:
        return Cause(
            "cuda_visible_devices",
            f"CUDA_VISIBLE_DEVICES={cvd!r}: entry {seen.stopped_at!r} {seen.why}, and a device named twice "
            f"makes CUDA expose none at all ('invalid device ordinal'); {fix}",
        )
    rest = f" (so CUDA never reads {', '.join(repr(e) for e in seen.ignored)})" if seen.ignored else ""
    first = "its first entry" if cvd.split(",")[0].strip() == seen.stopped_at else "entry"
    return Cause(
        "cuda_visible_devices",
        f"CUDA_VISIBLE_DEVICES={cvd!r}: {first} {seen.stopped_at!r} {seen.why}, and CUDA stops at the first "
        f"bad entry{rest}, which leaves no GPU visible; {fix}",
    )


def _mig_cause(gpus: tuple[NvmlGpu, ...]) -> Cause | None:
    empty = [g for g in gpus if g.mig_enabled and not g.mig_devices]
    if not empty or any(not g.mig_enabled or g.mig_devices for g in gpus):
        return None
    ids = ",".join(str(g.index) for g in empty)
    return Cause(
        "mig_without_devices",
        f"GPU(s) {ids} are in MIG mode with no MIG device, so CUDA has nothing to run on; "
        f"fix: create GPU and compute instances (`sudo nvidia-smi mig -i {ids} -cgi <profile> -C`) "
        f"or leave MIG mode "
        f"(`sudo nvidia-smi -i {ids} -mig 0`)",
    )


def _driver_cause(facts: Facts) -> Cause | None:
    if facts.torch_cuda and facts.driver_version:
        try:
            verdict = compat.check_driver(facts.driver_version, facts.torch_cuda)
        except compat.VersionError:
            verdict = None
        if verdict is not None and verdict.level == "too_old":
            return Cause("driver_too_old", verdict.reason)
    error = (facts.cuda_error or "").lower()
    if "insufficient" in error or "too old" in error:
        return Cause(
            "driver_too_old",
            f"CUDA says the driver is too old for torch's CUDA {facts.torch_cuda} ({facts.cuda_error}); "
            f"fix: upgrade the NVIDIA driver, or use an image built for an older CUDA",
        )
    return None


def _unusable_causes(facts: Facts, gpus: tuple[NvmlGpu, ...], seen: Visibility) -> list[Cause]:
    """Every cause that applies when GPUs are present and torch sees none, most fundamental first."""
    causes: list[Cause] = []
    if facts.torch_cuda is None:
        causes.append(
            Cause(
                "cpu_only_torch",
                f"torch {facts.torch_version} is a CPU-only build (torch.version.cuda is None); "
                f"fix: {CUDA_WHEEL}",
            )
        )
    if facts.in_container and _lacks(facts.nvidia_driver_capabilities, "compute"):
        caps = facts.nvidia_driver_capabilities
        causes.append(
            Cause(
                "driver_capabilities",
                f"NVIDIA_DRIVER_CAPABILITIES={caps!r} lacks 'compute', so the NVIDIA Container Toolkit "
                f"did not mount libcuda; fix: start the container with "
                f"-e NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            )
        )
    for cause in (_driver_cause(facts), _mig_cause(gpus), _cvd_cause(facts, gpus, seen)):
        if cause is not None:
            causes.append(cause)
    if facts.torch_cuda is not None and (not causes or facts.cuda_error):
        error = facts.cuda_error or "torch.cuda.device_count() is 0 without an error"
        fix = "" if causes else "; fix: check `nvidia-smi` and the kernel log (`sudo dmesg | grep -i nvrm`)"
        causes.append(Cause("cuda_error", f"CUDA says: {error}{fix}"))
    return causes


def diagnose(facts: Facts, require_gpu: bool) -> Verdict:
    """Present and usable -> status None (measure); present, torch sees none or too few -> FAIL with every
    cause; absent -> SKIP, or FAIL when a GPU is required."""
    seen_evidence = evidence(facts)
    gpus = _host_gpus(facts)
    seen = visible_devices(facts.cuda_visible_devices, gpus, facts.driver_version)
    expected = len(seen.devices) if facts.nvml_gpus is not None else None
    nvml_note = f" (NVML unusable: {facts.nvml_error})" if facts.nvml_gpus is None else ""
    if facts.nvml_gpus is None and facts.in_container and _lacks(facts.nvidia_driver_capabilities, "utility"):
        nvml_note = (
            f" (NVML unusable: {facts.nvml_error}; NVIDIA_DRIVER_CAPABILITIES="
            f"{facts.nvidia_driver_capabilities!r} lacks 'utility', so libnvidia-ml is not mounted)"
        )

    if facts.torch_count > 0:
        warnings = [*seen.notes]
        if facts.nvml_gpus is None:
            warnings.append(f"device count not compared with NVML ({facts.nvml_error})")
        if seen.stopped_at is not None and seen.devices:
            warnings.append(
                f"CUDA_VISIBLE_DEVICES={facts.cuda_visible_devices!r}: entry {seen.stopped_at!r} {seen.why}; "
                f"CUDA stops there and exposes only {', '.join(d.label() for d in seen.devices)}; "
                f"fix: list only ids that exist here: {valid_ids(gpus)}"
            )
        if expected is not None and facts.torch_count != expected:
            cause = Cause(
                "count_mismatch",
                f"torch sees {facts.torch_count} GPU(s) but NVML lists {len(gpus)} and "
                f"CUDA_VISIBLE_DEVICES={facts.cuda_visible_devices!r} should expose {expected} "
                f"({', '.join(d.label() for d in seen.devices) or 'none'}); fix: check CUDA_VISIBLE_DEVICES "
                f"against the ids here: {valid_ids(gpus)}",
            )
            return Verdict(
                Status.FAIL, cause.message, (cause,), tuple(warnings), tuple(seen_evidence), expected
            )
        return Verdict(None, "", (), tuple(warnings), tuple(seen_evidence), expected)

    if seen_evidence:
        causes = _unusable_causes(facts, gpus, seen)
        summary = f"GPUs present ({'; '.join(seen_evidence)}){nvml_note} but torch sees none: " + "; ".join(
            c.message for c in causes
        )
        return Verdict(Status.FAIL, summary, tuple(causes), (), tuple(seen_evidence), expected)

    if facts.torch_cuda is None:
        torch_says = f"torch {facts.torch_version} is a CPU-only build"
    else:
        torch_says = facts.cuda_error or "torch.cuda.device_count() is 0"
    host_says = (
        f"none on this host either: NVML: {facts.nvml_error or 'lists 0 GPUs'}, "
        f"no /dev/nvidia<N> device node, no /proc/driver/nvidia/gpus entry"
    )
    causes = []
    nvd = facts.nvidia_visible_devices
    if nvd is not None and nvd.strip().lower() in NO_GPU_REQUESTS:
        causes.append(
            Cause(
                "nvidia_visible_devices",
                f"NVIDIA_VISIBLE_DEVICES={nvd!r} asks the NVIDIA Container Toolkit for no GPU, so a "
                f"container started with it gets none",
            )
        )
    if facts.torch_cuda is None:
        causes.append(Cause("cpu_only_torch", torch_says))
    reason = "; ".join(
        [f"torch.cuda.is_available() is False ({torch_says})", host_says]
        + [c.message for c in causes if c.key != "cpu_only_torch"]
    )
    if require_gpu:
        cause = Cause(
            "no_gpu", f"no GPU found but --require-gpu (or VERIFY_REQUIRE_GPU=1) requires one: {reason}"
        )
        fix = f"; fix: {GIVE_GPUS}; on a bare host install the NVIDIA driver"
        return Verdict(Status.FAIL, cause.message + fix, (cause, *causes), (), (), expected)
    summary = f"no GPU: {reason} (--require-gpu makes this a FAIL)"
    return Verdict(Status.SKIP, summary, tuple(causes), (), (), expected)


# ---- collecting -------------------------------------------------------------------------------------------


def host_root() -> Path:
    return Path(os.environ.get("VERIFY_HOST_ROOT") or "/")


def _mig_devices(nv: Any, handle: Any) -> tuple[MigDevice, ...]:
    try:
        slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))
    except nv.NVMLError:
        return ()
    out = []
    for _slot, mig in nvml.mig_handles(nv, handle, slots):
        ids: list[int | None] = []
        for function in ("nvmlDeviceGetGpuInstanceId", "nvmlDeviceGetComputeInstanceId"):
            try:
                ids.append(int(getattr(nv, function)(mig)))
            except (nv.NVMLError, AttributeError):
                ids.append(None)
        out.append(MigDevice(nvml.text(nv.nvmlDeviceGetUUID(mig)), ids[0], ids[1]))
    return tuple(out)


def _nvml_gpu(nv: Any, index: int) -> NvmlGpu:
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    mig_enabled = False
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
        mig_enabled = current == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)
    except nv.NVMLError:  # NOT_SUPPORTED: a GPU without MIG
        pass
    return NvmlGpu(
        index=index,
        uuid=nvml.text(nv.nvmlDeviceGetUUID(handle)),
        name=nvml.text(nv.nvmlDeviceGetName(handle)),
        mig_enabled=mig_enabled,
        mig_devices=_mig_devices(nv, handle) if mig_enabled else (),
    )


def collect_nvml() -> tuple[tuple[NvmlGpu, ...] | None, str | None, str | None]:
    """(GPUs, why NVML is unusable, driver version) as NVML answers."""
    try:
        with nvml.session() as nv:
            try:
                driver = nvml.text(nv.nvmlSystemGetDriverVersion())
                return tuple(_nvml_gpu(nv, i) for i in range(nv.nvmlDeviceGetCount())), None, driver
            except nv.NVMLError as exc:
                return None, f"NVML query failed: {exc}", None
    except nvml.NvmlUnavailable as exc:
        return None, str(exc), None


def _kernel_driver_version(root: Path) -> str | None:
    try:
        first = (root / "proc/driver/nvidia/version").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    found = re.search(r"\s(\d{3,}\.\d+(?:\.\d+)?)\s", first + " ")
    return found.group(1) if found else None


def collect_host(root: Path) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(/dev/nvidia<N> nodes, /proc/driver/nvidia/gpus entries, in a container) under root."""
    dev = root / "dev"
    try:
        nodes = sorted(p.name for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
    except OSError:
        nodes = []
    try:
        proc = sorted(p.name for p in (root / "proc/driver/nvidia/gpus").iterdir())
    except OSError:
        proc = []
    in_container = (root / ".dockerenv").exists() or (root / "run/.containerenv").exists()
    return tuple(f"/dev/{n}" for n in sorted(nodes, key=lambda n: int(n[6:]))), tuple(proc), in_container


def collect_torch() -> tuple[str, str | None, int, str | None]:
    """(torch version, its CUDA, device count, CUDA's own init error when it sees no device)."""
    import torch

    cuda = torch.version.cuda
    count = torch.cuda.device_count() if cuda else 0
    error = None
    if cuda and count == 0:
        try:
            torch.cuda.init()
        except Exception as exc:  # CUDA's words: "No CUDA GPUs are available", "driver ... insufficient"
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
    return torch.__version__, cuda, count, error


def collect(root: Path | None = None) -> Facts:
    root = root or host_root()
    gpus, nvml_error, driver = collect_nvml()
    nodes, proc, in_container = collect_host(root)
    version, cuda, count, error = collect_torch()
    return Facts(
        nvml_gpus=gpus,
        nvml_error=nvml_error,
        driver_version=driver or _kernel_driver_version(root),
        device_nodes=nodes,
        proc_gpus=proc,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        nvidia_visible_devices=os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        nvidia_driver_capabilities=os.environ.get("NVIDIA_DRIVER_CAPABILITIES"),
        in_container=in_container,
        torch_version=version,
        torch_cuda=cuda,
        torch_count=count,
        cuda_error=error,
    )
