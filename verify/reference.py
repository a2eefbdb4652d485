"""Node health: the BERT throughput a healthy GPU of each model reaches, and the 15 % rule.

Only a GPU-BOUND setting judges the GPU. At bert-base seq 128 batch 64 eager bf16 the step is bound by the
host CPU that launches its kernels (on the lent 16-vCPU H200 VM: 1531 / 2306 / 1814 samples/s over three
repeats of one process), so a slow host CPU would read as "GPU throttling". Those launch-bound figures stay
in the table as benchmarks of the host (`gpu_bound=False`): `verify bench bert` shows them, nothing WARNs on
them. A host more than TOLERANCE below a GPU-bound reference gets a WARN that names the figure, the gap and
where to look.

Each entry says who measured it, when, where, how and with which versions. `recorded_in` names the file
holding the raw log of the run (None where the figure is reported, not recorded here). Throughput also moves
with the torch and transformers versions; a WARN on other versions is a lead, not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verify import specs

TOLERANCE = 0.15


@dataclass(frozen=True)
class Provenance:
    measured_by: str  # who; "us" = this project's own runs
    when: str
    where: str
    how: str
    versions: str
    recorded_in: str | None = None  # the file with the raw log, if this repository holds one


@dataclass(frozen=True)
class Reference:
    model: str  # verify.specs model name ("H200 SXM", "H100 SXM", ...)
    size: str
    seq: int
    batch: int
    precision: str
    compile: bool
    samples_per_s: float
    gpu_bound: bool  # True: the GPU decides the figure (judged); False: the host CPU does (shown only)
    origin: Provenance
    note: str = ""  # how this one figure was taken, where it differs from origin.how

    @property
    def measured_by_us(self) -> bool:
        return self.origin.measured_by == "us"

    def provenance(self) -> str:
        o = self.origin
        who = "measured by us" if self.measured_by_us else f"reported by {o.measured_by}, not measured by us"
        how = f"{o.how}; {self.note}" if self.note else o.how
        rec = f"; {o.recorded_in}" if o.recorded_in else ""
        return f"{who} on {o.where}, {o.when}, {how}; {o.versions}{rec}"


_H200_VM = "the lent nvidia-h200 (1x H200 SXM, 16-vCPU Firecracker VM)"
H200_2026_12_01 = Provenance(
    "us",
    "2026-12-01",
    _H200_VM,
    "`verify bench bert` (pinned to one core, bf16 autocast + SDPA, fused AdamW, 3 repeats x 30 steps)",
    "torch 2.11.0+cu130, transformers 5.17.0, driver 580.159.04",
    "docs/gpu-results.md",
)
H200_2026_11_29 = Provenance(
    "us",
    "2026-11-29",
    _H200_VM,
    "`verify bench bert`, unpinned",
    "torch 2.11.0+cu130, transformers 5.17.0, driver 580.159.04",
    "docs/gpu-results.md",
)
H100_DESIGN = Provenance(
    "the project, before its GPU logs were kept in docs/ (no raw log here)",
    "2026-11-22",
    "a lent 1x H100 80GB HBM3",
    "a plain training loop",
    "torch 2.11.0+cu130, transformers 5.17, driver 580.159.04",
)

REFERENCES: tuple[Reference, ...] = (
    # GPU-bound: judged. s128 b256 repeats 2833.6 / 2830.4 / 2828.4 (spread 0.2 %, 30.9 % of the bf16 matmul
    # peak measured in the same run; peak memory 23.0 GiB); s512 b32 621.5 / 621.4 / 621.7 (0.05 %, 12.3 GiB).
    Reference("H200 SXM", "base", 128, 256, "bf16", False, 2830.0, True, H200_2026_12_01),
    Reference("H200 SXM", "base", 512, 32, "bf16", False, 621.5, True, H200_2026_12_01),
    # Launch-bound (the host CPU decides): shown by `verify bench bert`, never judged.
    Reference(
        "H200 SXM",
        "base",
        128,
        64,
        "bf16",
        False,
        2310.0,
        False,
        H200_2026_11_29,
        "pinned with taskset -c 5, 5 x 100 steps (unpinned: 1600-1870 with 5-30 % spread)",
    ),
    Reference("H200 SXM", "base", 128, 64, "bf16", True, 2353.0, False, H200_2026_11_29),
    Reference("H200 SXM", "base", 128, 64, "tf32", False, 1425.0, False, H200_2026_11_29),
    Reference("H200 SXM", "large", 512, 16, "bf16", False, 199.0, False, H200_2026_11_29, "spread 5.1 %"),
    Reference("H100 SXM", "base", 128, 64, "bf16", False, 2036.0, False, H100_DESIGN),
    Reference("H100 SXM", "base", 128, 64, "bf16", True, 2766.0, False, H100_DESIGN, "torch.compile"),
    Reference("H100 SXM", "base", 128, 64, "tf32", False, 1306.0, False, H100_DESIGN),
    Reference("H100 SXM", "large", 512, 16, "bf16", False, 224.0, False, H100_DESIGN),
)


def lookup(model: str, size: str, seq: int, batch: int, precision: str, compile: bool) -> Reference | None:
    key = (model, size, seq, batch, precision, compile)
    for ref in REFERENCES:
        if (ref.model, ref.size, ref.seq, ref.batch, ref.precision, ref.compile) == key:
            return ref
    return None


def deficit_message(samples_per_s: float, ref: Reference, tolerance: float = TOLERANCE) -> str | None:
    """The WARN text when samples_per_s is more than `tolerance` below ref, else None."""
    if samples_per_s >= (1.0 - tolerance) * ref.samples_per_s:
        return None
    gap = 1.0 - samples_per_s / ref.samples_per_s
    return (
        f"bert-{ref.size} seq {ref.seq} batch {ref.batch} {ref.precision}"
        f"{' compiled' if ref.compile else ''}: {samples_per_s:g} samples/s is {100 * gap:.0f}% below "
        f"the {ref.model} reference {ref.samples_per_s:g} "
        f"({ref.provenance()}; > {100 * tolerance:.0f}% counts; a GPU-bound setting, so the GPU decides); "
        f"look for throttling (the driver check's throttle reasons), low clocks (nvidia-smi -q -d "
        f"CLOCK,PERFORMANCE), a PCIe link below its maximum (nvidia-smi -q -d PCIE: current vs max "
        f"generation/width), or another process on the GPU (nvidia-smi)"
    )


def comparable(res: Any) -> tuple[Reference | None, str]:
    """The reference a verify.bench.BenchResult can be compared with, or None and why not."""
    if res.device_name == "CPU":
        return None, "a CPU run"
    spec = specs.lookup(res.device_name, getattr(res, "device_memory_bytes", None))
    if spec is None:
        return None, f"{res.device_name} is not in verify/specs.py"
    c = res.config
    if res.oom_notes or c["batch"] != res.requested_batch:
        return None, f"batch {c['batch']} is not the setting asked for (memory): a different setting"
    ref = lookup(spec.model, c["size"], c["seq"], c["batch"], c["precision"], c["compile"])
    if ref is None:
        return None, f"no {spec.model} reference for this setting"
    return ref, ""


def assess(res: Any) -> str | None:
    """The WARN text when a GPU-bound result is more than TOLERANCE below its reference, else None."""
    ref, _why = comparable(res)
    if ref is None or not ref.gpu_bound:
        return None
    return deficit_message(res.samples_per_s, ref)


def describe(res: Any) -> str | None:
    """One line placing a result next to its reference (judged or not), for `verify bench bert`."""
    ref, why = comparable(res)
    if ref is None:
        return f"not compared with a reference: {why}" if res.device_name != "CPU" else None
    ratio = res.samples_per_s / ref.samples_per_s
    if ref.gpu_bound:
        return (
            f"{100 * ratio:.0f}% of the {ref.model} reference {ref.samples_per_s:g} samples/s (GPU-bound, "
            f"judged: > {100 * TOLERANCE:.0f}% below WARNs; {ref.provenance()})"
        )
    return (
        f"{100 * ratio:.0f}% of the {ref.model} figure {ref.samples_per_s:g} samples/s for this setting "
        f"(launch-bound: the host CPU decides, so not judged; {ref.provenance()})"
    )
