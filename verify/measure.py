"""Shared GPU timing: CUDA events, warm-up, median; the two ceilings (bf16/tf32 matmul, device copy).

The rules: time device work with events (never a host clock without a sync),
warm up so that handle creation and autotuning stay out of the numbers, take the median of many timed runs,
rotate input sets so that repeated runs do not measure the L2 cache, and never time zeros (they run faster).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: the relative width of the repeats; 0.0 for a single value."""
    if len(values) < 2:
        return 0.0
    mid = median(values)
    return (max(values) - min(values)) / mid if mid else float("inf")


def relative_error(out: Any, ref: Any) -> float:
    """||out - ref|| / ||ref|| in float64 on the CPU; NaN anywhere gives inf (NaN never passes)."""
    import torch

    o = out.detach().to("cpu", torch.float64)
    r = ref.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(o).all()):
        return float("inf")
    denom = float(torch.linalg.vector_norm(r))
    return float(torch.linalg.vector_norm(o - r)) / (denom if denom else 1.0)


def cuda_median_ms(fn: Callable[[int], object], warmup: int, iters: int) -> float:
    """Median per-call time in ms of fn(i) on the current CUDA stream, each call between its own events."""
    import torch

    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        fn(i)
        ends[i].record()
    torch.cuda.synchronize()
    return median([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)])


@contextmanager
def float32_matmul_precision(mode: str):
    """Temporarily set torch's float32 matmul precision ("highest" = true fp32, "high" = TF32)."""
    import torch

    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@dataclass
class MatmulRate:
    dtype: str
    n: int
    median_ms: float
    tflops: float


def matmul_tflops(device: Any, dtype: str, n: int, warmup: int = 5, iters: int = 20) -> MatmulRate:
    """n x n x n matrix products on random inputs (2 rotating sets); dtype 'bf16', 'fp16' or 'tf32'."""
    import torch

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32}[dtype]
    gen = torch.Generator(device=device).manual_seed(1234)
    sets = [
        (
            torch.randn(n, n, device=device, dtype=torch_dtype, generator=gen),
            torch.randn(n, n, device=device, dtype=torch_dtype, generator=gen),
        )
        for _ in range(2)
    ]
    out = torch.empty(n, n, device=device, dtype=torch_dtype)

    def step(i: int) -> None:
        a, b = sets[i % len(sets)]
        torch.matmul(a, b, out=out)

    with float32_matmul_precision("high" if dtype == "tf32" else "highest"):
        ms = cuda_median_ms(step, warmup, iters)
    return MatmulRate(dtype=dtype, n=n, median_ms=ms, tflops=2.0 * n**3 / (ms * 1e-3) / 1e12)


@dataclass
class CopyRate:
    nbytes: int
    median_ms: float
    gbps: float  # (bytes read + bytes written) / time, in 1e9 bytes/s


def copy_bandwidth(device: Any, nbytes: int, warmup: int = 3, iters: int = 20) -> CopyRate:
    """A device-to-device copy of nbytes of random data; counts bytes read plus bytes written."""
    import torch

    numel = nbytes // 4
    src = torch.randn(numel, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = cuda_median_ms(lambda _i: dst.copy_(src), warmup, iters)
    if not torch.equal(dst, src):
        raise RuntimeError("device-to-device copy produced wrong data")
    return CopyRate(nbytes=numel * 4, median_ms=ms, gbps=2.0 * numel * 4 / (ms * 1e-3) / 1e9)


@dataclass
class PinnedCopies:
    nbytes: int
    h2d_gbps: float  # bytes / time, in 1e9 bytes/s, as nvbandwidth and bandwidthTest report
    d2h_gbps: float


def pinned_copies(device: Any, nbytes: int, warmup: int = 3, iters: int = 20) -> PinnedCopies:
    """Host-to-device and device-to-host copies between pinned host memory and the GPU, each timed over
    `iters` copies between two CUDA events (one direction at a time, so each owns the link)."""
    import torch

    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def rate(dst: Any, src: Any) -> float:
        for _ in range(warmup):
            dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            dst.copy_(src, non_blocking=True)
        end.record()
        end.synchronize()
        return nbytes * iters / (start.elapsed_time(end) * 1e-3) / 1e9

    with torch.cuda.device(device):
        h2d = rate(dev, host)
        d2h = rate(host, dev)
    return PinnedCopies(nbytes=nbytes, h2d_gbps=h2d, d2h_gbps=d2h)
