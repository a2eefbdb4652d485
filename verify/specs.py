"""Datasheet peaks per GPU model, so measured figures can be read as "x % of what the card can do".

Every figure is the vendor's DENSE number (no 2:4 structured sparsity); where a datasheet gives only the
sparse figure we halve it and say so in `source`. Tensor-core figures for GeForce cards are the ones
"with FP32 accumulate" (what bf16/fp16 training uses), which is half the "FP16 accumulate" figure
the marketing pages print.
These are leads, not ceilings we promise: cuBLAS reaches about 75-80 % of the bf16 figure on Hopper.

Sources (named per entry in `source`):
  H100/H200: NVIDIA H100 Tensor Core GPU datasheet; NVIDIA H200 Tensor Core GPU datasheet (nvidia.com).
  A100:      NVIDIA A100 Tensor Core GPU datasheet.
  L40S:      NVIDIA L40S GPU datasheet.
  RTX 4090:  NVIDIA Ada GPU Architecture whitepaper, Appendix A (GeForce RTX 4090).
  RTX 5090:  NVIDIA RTX Blackwell GPU Architecture whitepaper (GeForce RTX 5090).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    model: str  # our canonical name
    pattern: str  # regex matched (case-insensitive, search) against torch/NVML's device name
    bf16_tflops: float  # dense BF16 tensor-core peak (FP32 accumulate)
    fp16_tflops: float  # dense FP16 tensor-core peak (FP32 accumulate)
    tf32_tflops: float  # dense TF32 tensor-core peak
    fp32_tflops: float  # plain FP32 (CUDA cores, no tensor cores)
    mem_bw_gbps: float  # memory bandwidth in GB/s (1e9 bytes/s)
    source: str
    note: str = ""


_H100_SRC = "NVIDIA H100 Tensor Core GPU datasheet (dense = half the sparsity figure)"
_H200_SRC = "NVIDIA H200 Tensor Core GPU datasheet (dense = half the sparsity figure)"
_A100_SRC = "NVIDIA A100 Tensor Core GPU datasheet"

# Order matters: the first matching pattern wins, so specific names come before general ones.
SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("H200 NVL", r"H200 NVL", 835.5, 835.5, 417.5, 60.0, 4800, _H200_SRC),
    GpuSpec(
        "H200 SXM", r"H200", 989.5, 989.5, 494.5, 67.0, 4800, _H200_SRC, "nvidia-smi names it 'NVIDIA H200'"
    ),
    GpuSpec("H100 NVL", r"H100 NVL", 835.5, 835.5, 417.5, 60.0, 3900, _H100_SRC),
    GpuSpec("H100 PCIe", r"H100 PCIe", 756.5, 756.5, 378.0, 51.0, 2000, _H100_SRC),
    GpuSpec("H100 SXM", r"H100", 989.5, 989.5, 494.5, 67.0, 3350, _H100_SRC, "e.g. 'NVIDIA H100 80GB HBM3'"),
    GpuSpec("A100 SXM 80GB", r"A100[- ]SXM4?[- ]80GB", 312.0, 312.0, 156.0, 19.5, 2039, _A100_SRC),
    GpuSpec("A100 SXM 40GB", r"A100[- ]SXM4?[- ]40GB", 312.0, 312.0, 156.0, 19.5, 1555, _A100_SRC),
    GpuSpec("A100 PCIe 80GB", r"A100 80GB PCIe", 312.0, 312.0, 156.0, 19.5, 1935, _A100_SRC),
    GpuSpec("A100 PCIe 40GB", r"A100[- ]PCIE[- ]40GB", 312.0, 312.0, 156.0, 19.5, 1555, _A100_SRC),
    GpuSpec(
        "L40S",
        r"L40S",
        362.05,
        362.05,
        183.0,
        91.6,
        864,
        "NVIDIA L40S GPU datasheet (dense = half the sparsity figure)",
    ),
    GpuSpec(
        "RTX 4090",
        r"RTX 4090",
        165.2,
        165.2,
        82.6,
        82.6,
        1008,
        "NVIDIA Ada GPU Architecture whitepaper, appendix A (FP32-accumulate figures)",
    ),
    GpuSpec(
        "RTX 5090",
        r"RTX 5090",
        209.5,
        209.5,
        104.8,
        104.8,
        1792,
        "NVIDIA RTX Blackwell GPU Architecture whitepaper (FP32-accumulate figures)",
    ),
)


def lookup(device_name: str) -> GpuSpec | None:
    """The spec for a device name as torch or NVML prints it, or None for a card not in the table."""
    for spec in SPECS:
        if re.search(spec.pattern, device_name, flags=re.IGNORECASE):
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
