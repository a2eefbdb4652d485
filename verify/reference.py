"""Node health: the BERT benchmark throughput a healthy GPU of each model reaches, and the 15 % rule.

A host more than TOLERANCE below its model's reference gets a WARN that names the figure, the gap and where
to look. Each entry says who measured it: `measured_by_us` is True only for runs recorded in
docs/gpu-results.md; the H100 figures come from DESIGN.md's reference section (measured by the design's
author on a lent 1xH100 80GB HBM3, not by us) and are marked so. Throughput also moves with the torch and
transformers versions, so an entry records them; a WARN on another version is a lead, not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verify import specs

TOLERANCE = 0.15


@dataclass(frozen=True)
class Reference:
    model: str  # verify.specs model name ("H200 SXM", "H100 SXM", ...)
    size: str
    seq: int
    batch: int
    precision: str
    compile: bool
    samples_per_s: float
    source: str
    measured_by_us: bool
    versions: str


_OURS = (
    "measured by us on the lent nvidia-h200 (1x H200 SXM, Firecracker VM), 2026-11-29; docs/gpu-results.md"
)
_OURS_V = "torch 2.11.0+cu130, transformers 5.17.0, driver 580.159.04"
_DESIGN = "DESIGN.md reference figures, 2026-11-22 (reported by the design doc, not measured by us)"
_DESIGN_V = "torch 2.11.0+cu130, transformers 5.17, driver 580.159.04"

# H200 eager bf16: 2310 = `verify bench bert` pinned to one CPU with taskset (plain loop pinned the same way:
# 2312 and 2348); unpinned runs on the same VM gave 1600-1870 with 5-30 % spread (launch-bound, see bench.py).
# H200 compiled/tf32/large: single unpinned runs; compiled and tf32 are far less launch-bound.
REFERENCES: tuple[Reference, ...] = (
    Reference("H200 SXM", "base", 128, 64, "bf16", False, 2310.0, _OURS, True, _OURS_V),
    Reference("H200 SXM", "base", 128, 64, "bf16", True, 2353.0, _OURS, True, _OURS_V),
    Reference("H200 SXM", "base", 128, 64, "tf32", False, 1425.0, _OURS, True, _OURS_V),
    Reference("H200 SXM", "large", 512, 16, "bf16", False, 199.0, _OURS, True, _OURS_V),
    Reference("H100 SXM", "base", 128, 64, "bf16", False, 2036.0, _DESIGN, False, _DESIGN_V),
    Reference("H100 SXM", "base", 128, 64, "bf16", True, 2766.0, _DESIGN, False, _DESIGN_V),
    Reference("H100 SXM", "base", 128, 64, "tf32", False, 1306.0, _DESIGN, False, _DESIGN_V),
    Reference("H100 SXM", "large", 512, 16, "bf16", False, 224.0, _DESIGN, False, _DESIGN_V),
)


def lookup(model: str, size: str, seq: int, batch: int, precision: str, compile: bool) -> Reference | None:
    for ref in REFERENCES:
        if (ref.model, ref.size, ref.seq, ref.batch, ref.precision, ref.compile) == (
            model,
            size,
            seq,
            batch,
            precision,
            compile,
        ):
            return ref
    return None


def deficit_message(samples_per_s: float, ref: Reference, tolerance: float = TOLERANCE) -> str | None:
    """The WARN text when samples_per_s is more than `tolerance` below ref, else None."""
    if samples_per_s >= (1.0 - tolerance) * ref.samples_per_s:
        return None
    gap = 1.0 - samples_per_s / ref.samples_per_s
    who = "measured by us" if ref.measured_by_us else "reported, not measured by us"
    return (
        f"bert-{ref.size} seq {ref.seq} batch {ref.batch} {ref.precision}"
        f"{' compiled' if ref.compile else ''}: {samples_per_s:g} samples/s is {100 * gap:.0f}% below "
        f"the {ref.model} reference {ref.samples_per_s:g} "
        f"({who}; {ref.versions}; > {100 * tolerance:.0f}% counts); look for throttling (the driver check's "
        f"throttle reasons), low clocks (nvidia-smi -q -d CLOCK,PERFORMANCE), a PCIe link below its maximum "
        f"(nvidia-smi -q -d PCIE: current vs max generation/width), or another process on the GPU"
    )


def assess(res: Any) -> str | None:
    """Compare a verify.bench.BenchResult with its reference, if one exists for that GPU and config."""
    spec = specs.lookup(res.device_name) if res.device_name != "CPU" else None
    if spec is None or res.oom_notes or (res.device_name != "CPU" and res.pinned_cpu is None):
        return None
    c = res.config
    ref = lookup(spec.model, c["size"], c["seq"], c["batch"], c["precision"], c["compile"])
    return deficit_message(res.samples_per_s, ref) if ref else None
