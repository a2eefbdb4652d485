"""Datasheet peaks per GPU model, so measured figures can be read as "x % of what the card can do".

A spec is only worth having if it is the right card's, so matching is exact: an entry's `pattern` must match
the WHOLE device name (torch's `get_device_name` and NVML's `nvmlDeviceGetName` print the same string; a
leading "NVIDIA " is optional), and where the caller passes the card's total memory it must agree with the
entry's datasheet capacity. "NVIDIA GH200 480GB" is therefore not an H200, "NVIDIA H20" is nothing we know,
a MIG slice ("NVIDIA H100 80GB HBM3 MIG 1g.10gb": a fraction of the SMs) has no spec, and a name that
matches while the memory contradicts it gives None, never a wrong spec. An unknown card gives None: no
guessing from a family name.

Every figure is the vendor's DENSE number (no 2:4 structured sparsity); where a datasheet gives only the
sparse figure we halve it and say so in `source`. Tensor-core figures for GeForce cards are the ones
"with FP32 accumulate" (what bf16/fp16 training uses), which is half the "FP16 accumulate" figure
the marketing pages print.
These are leads, not ceilings we promise: cuBLAS reaches about 75-80 % of the bf16 figure on Hopper.

Device names (what the driver prints): "NVIDIA H100 80GB HBM3" is the SXM5 board, "NVIDIA H100 PCIe" the
80 GB PCIe card, "NVIDIA H100 NVL" the 94 GB card; "NVIDIA H200" the SXM board (141 GB; NVML reports
150754820096 B = 140.4 GiB on the lent H200), "NVIDIA H200 NVL" the PCIe card; "NVIDIA GH200 480GB" the
Grace Hopper superchip with 96 GB HBM3 (480 GB is the Grace CPU's LPDDR5X), "NVIDIA GH200 144G HBM3e" the
one with 144 GB HBM3e (CUDA reports 153008209920 B = 142.5 GiB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 2**30
# The driver reports a little less than the datasheet's "GB" (ECC and driver reservations: 140.4 GiB for the
# H200's 141 GB, 45.0 GiB for an L40S's 48 GB with ECC on), and torch a little less than NVML.
MEMORY_LOW, MEMORY_HIGH = 0.90, 1.03


@dataclass(frozen=True)
class GpuSpec:
    model: str  # our canonical name
    pattern: str  # regex for the WHOLE device name (case-insensitive; a leading "NVIDIA " is optional)
    bf16_tflops: float  # dense BF16 tensor-core peak (FP32 accumulate)
    fp16_tflops: float  # dense FP16 tensor-core peak (FP32 accumulate)
    tf32_tflops: float  # dense TF32 tensor-core peak
    fp32_tflops: float  # plain FP32 (CUDA cores, no tensor cores)
    mem_bw_gbps: float  # memory bandwidth in GB/s (1e9 bytes/s)
    memory_gb: float  # the datasheet's memory capacity ("80GB"), compared as GiB within MEMORY_LOW..HIGH
    source: str
    note: str = ""

    def name_matches(self, device_name: str) -> bool:
        return re.fullmatch(self.pattern, normalize_name(device_name), flags=re.IGNORECASE) is not None

    def memory_matches(self, memory_bytes: int) -> bool:
        gib = memory_bytes / GIB
        return MEMORY_LOW * self.memory_gb <= gib <= MEMORY_HIGH * self.memory_gb


_H100_SRC = "NVIDIA H100 Tensor Core GPU datasheet (dense = half the sparsity figure)"
_H200_SRC = "NVIDIA H200 Tensor Core GPU datasheet (dense = half the sparsity figure)"
_GH200_SRC = "NVIDIA GH200 Grace Hopper Superchip datasheet (dense = half the sparsity figure)"
_A100_SRC = "NVIDIA A100 Tensor Core GPU datasheet"

SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("H200 SXM", r"H200", 989.5, 989.5, 494.5, 67.0, 4800, 141, _H200_SRC, "'NVIDIA H200'"),
    GpuSpec("H200 NVL", r"H200 NVL", 835.5, 835.5, 417.5, 60.0, 4800, 141, _H200_SRC),
    GpuSpec(
        "GH200 96GB HBM3", r"GH200 480GB", 989.5, 989.5, 494.5, 67.0, 4000, 96, _GH200_SRC, "Hopper + Grace"
    ),
    GpuSpec("GH200 144GB HBM3e", r"GH200 144G HBM3e", 989.5, 989.5, 494.5, 67.0, 4900, 144, _GH200_SRC),
    GpuSpec("H100 SXM", r"H100 80GB HBM3", 989.5, 989.5, 494.5, 67.0, 3350, 80, _H100_SRC, "SXM5 board"),
    GpuSpec("H100 PCIe", r"H100 PCIe", 756.5, 756.5, 378.0, 51.0, 2000, 80, _H100_SRC),
    GpuSpec("H100 NVL", r"H100 NVL", 835.5, 835.5, 417.5, 60.0, 3900, 94, _H100_SRC),
    GpuSpec("A100 SXM 80GB", r"A100-SXM4-80GB", 312.0, 312.0, 156.0, 19.5, 2039, 80, _A100_SRC),
    GpuSpec("A100 SXM 40GB", r"A100-SXM4-40GB", 312.0, 312.0, 156.0, 19.5, 1555, 40, _A100_SRC),
    GpuSpec("A100 PCIe 80GB", r"A100 80GB PCIe", 312.0, 312.0, 156.0, 19.5, 1935, 80, _A100_SRC),
    GpuSpec("A100 PCIe 40GB", r"A100-PCIE-40GB", 312.0, 312.0, 156.0, 19.5, 1555, 40, _A100_SRC),
    GpuSpec(
        "L40S",
        r"L40S",
        362.05,
        362.05,
        183.0,
        91.6,
        864,
        48,
        "NVIDIA L40S GPU datasheet (dense = half the sparsity figure)",
    ),
    GpuSpec(
        "RTX 4090",
        r"GeForce RTX 4090",
        165.2,
        165.2,
        82.6,
        82.6,
        1008,
        24,
        "NVIDIA Ada GPU Architecture whitepaper, appendix A (FP32-accumulate figures)",
    ),
    GpuSpec(
        "RTX 5090",
        r"GeForce RTX 5090",
        209.5,
        209.5,
        104.8,
        104.8,
        1792,
        32,
        "NVIDIA RTX Blackwell GPU Architecture whitepaper (FP32-accumulate figures)",
    ),
)


def normalize_name(device_name: str) -> str:
    """The device name without surrounding/doubled spaces and without the optional leading "NVIDIA "."""
    name = " ".join(device_name.split())
    return re.sub(r"^NVIDIA ", "", name, flags=re.IGNORECASE)


def lookup(device_name: str, memory_bytes: int | None = None) -> GpuSpec | None:
    """The spec of the card with this exact device name (and, when given, this total memory), else None.

    memory_bytes: torch's `get_device_properties(i).total_memory` or NVML's memory total. A name whose
    memory contradicts its entry (another variant of the board, a MIG slice, a renamed card) gives None.
    """
    for spec in SPECS:
        if spec.name_matches(device_name):
            if memory_bytes is not None and not spec.memory_matches(memory_bytes):
                return None
            return spec
    return None


def peak_tflops(spec: GpuSpec, precision: str) -> float:
    """The peak that matches a training precision: bf16, fp16, tf32 or fp32."""
    table = {
        "bf16": spec.bf16_tflops,
        "fp16": spec.fp16_tflops,
        "tf32": spec.tf32_tflops,
        "fp32": spec.fp32_tflops,
    }
    if precision not in table:
        raise ValueError(f"precision {precision!r} has no spec peak; use one of {sorted(table)}")
    return table[precision]
