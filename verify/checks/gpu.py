"""gpu: torch uses the GPUs this host has, its kernels cover their sm, compute right, and run at speed.

Order matters:
1. Presence first (verify/presence.py): GPUs present (NVML, /dev/nvidia<N>, /proc/driver/nvidia/gpus) but
   unusable by torch is a FAIL naming every cause (CPU-only wheel, CUDA_VISIBLE_DEVICES, driver too old,
   MIG without instances, CUDA's own error) - never a quiet SKIP while amp and bert "pass" on the CPU. No GPU
   at all is a SKIP, or a FAIL under --require-gpu. We do not run the CPU side of the kernel check alone:
   comparing the CPU with itself proves nothing about the GPU stack.
2. Architecture coverage BEFORE the first kernel launch, so a wheel built without the card's sm is named as
   such instead of surfacing later as "no kernel image is available for execution".
3. Kernels and ceilings, sized to the memory that is free (another process may hold most of it): smaller
   problems and a WARN that says so, never an out-of-memory crash; the sizes used are in the figures.
4. PCIe: pinned host<->device copies each way against what the GPU's link allows, the link read under load
   (verify/pcie.py: a link trained below its maximum, or copies under 60 % of it: WARN), with its NUMA node.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from verify import affinity, pcie, presence
from verify.context import Context
from verify.result import Result, Status

NAME = "gpu"
DESCRIPTION = (
    "torch uses the GPUs present, sm covered by the wheel, kernel vs CPU, matmul TFLOP/s and "
    "bandwidth vs spec"
)
DEFAULT_TIMEOUT_S = 180.0
IMPORTS = ("torch",)  # imported once, before CUDA, by the fork server
EXCLUSIVE = True  # a GPU measurement: runs alone among the exclusive checks

# Relative error bounds ||gpu - ref|| / ||ref|| against a float64 CPU reference (typical figures):
# float32 arithmetic lands far under 1e-3; TF32 near 3e-4; bf16 operands between 1e-3 and 1e-2.
BOUNDS = {"fp32": 1e-5, "tf32": 2e-3, "bf16": 1e-2}
# Below these fractions of the datasheet figure the card is slow for a reason worth a WARN (cuBLAS reaches
# ~75-80 % of the bf16 peak on Hopper, copies ~90 % of the memory bandwidth).
WARN_FRACTION = {"bf16": 0.5, "tf32": 0.5, "copy": 0.6}


# ---- problem sizes that fit in the free memory ------------------------------------------------------------

MIB = 1 << 20
# Pinned host<->device copies (verify/pcie.py judges them against the link): 256 MiB x 20 each way, 0.1 s on
# Gen5 x16; --quick 64 MiB x 10.
PINNED_MIB, PINNED_MIB_QUICK = 256, 64
MATMUL_SIZES = (8192, 4096, 2048, 1024, 512)  # n of the n x n x n products, largest first
COPY_SIZES = (1024 * MIB, 512 * MIB, 256 * MIB, 64 * MIB, 16 * MIB)
FREE_FRACTION = 0.5  # use at most half of what is free: the other process may grow, the allocator rounds up
RESERVE_BYTES = 256 * MIB  # cuBLAS workspace and the kernel check's inputs (~40 MiB), with room to spare
FIX_FREE = (
    "free the GPU: `nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv` lists what "
    "holds it"
)


def matmul_bytes(n: int) -> int:
    """Peak memory of matmul_tflops at n: two input sets of two n x n fp32 (tf32) matrices plus the output."""
    return 5 * 4 * n * n


@dataclass(frozen=True)
class WorkSize:
    matmul_n: int
    copy_bytes: int
    full_matmul_n: int
    full_copy_bytes: int

    @property
    def reduced(self) -> bool:
        return (self.matmul_n, self.copy_bytes) != (self.full_matmul_n, self.full_copy_bytes)


def work_size(free_bytes: int, quick: bool) -> WorkSize | None:
    """The largest standard sizes (the full ones unless memory is short) that fit; None if not even the
    smallest does. Standard sizes only, so figures stay comparable between runs that report the same size."""
    full_n = 4096 if quick else 8192
    full_copy = (256 if quick else 1024) * MIB
    budget = FREE_FRACTION * free_bytes - RESERVE_BYTES
    n = next((n for n in MATMUL_SIZES if n <= full_n and matmul_bytes(n) <= budget), None)
    copy = next((c for c in COPY_SIZES if c <= full_copy and 2 * c <= budget), None)
    if n is None or copy is None:
        return None
    return WorkSize(n, copy, full_n, full_copy)


def min_free_bytes() -> int:
    """The free memory below which work_size finds nothing to run."""
    need = max(matmul_bytes(MATMUL_SIZES[-1]), 2 * COPY_SIZES[-1]) + RESERVE_BYTES
    return int(need / FREE_FRACTION) + 1


# ---- architecture coverage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    ok: bool
    how: str  # "native sm_90", "sm_80 binary (same major)", "PTX compute_90 JIT", or the failure


def _parse_arch(entry: str) -> tuple[str, int, int, str] | None:
    """'sm_90a' -> ('sm', 9, 0, 'a'); 'compute_120' -> ('compute', 12, 0, ''); else None."""
    m = re.fullmatch(r"(sm|compute)_(\d+)(\d)([a-z]?)", entry.strip())
    if not m:
        return None
    return m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)


def arch_coverage(capability: tuple[int, int], arch_list: list[str]) -> Coverage:
    """Does a wheel built for arch_list run kernels on a GPU of this compute capability?

    A cubin for sm_XY runs on X.Z for Z >= Y (same major); an arch-specific sm_XYa/f only on exactly X.Y;
    PTX (compute_XY) with XY <= the capability is JIT-compiled by the driver at first use (slow start,
    no arch-specific instructions) - it runs, and we say so.
    """
    major, minor = capability
    parsed = [(e, p) for e in arch_list if (p := _parse_arch(e))]
    sms = [(e, ma, mi, suf) for e, (kind, ma, mi, suf) in parsed if kind == "sm"]
    for e, ma, mi, _suf in sms:
        if (ma, mi) == (major, minor):
            return Coverage(True, f"native {e}")
    for e, ma, mi, suf in sorted(sms, key=lambda s: -s[2]):
        if ma == major and mi <= minor and not suf:
            return Coverage(True, f"{e} binary runs on sm_{major}{minor} (same major)")
    ptx = [(e, ma, mi) for e, (kind, ma, mi, suf) in parsed if kind == "compute" and not suf]
    ptx = [(e, ma, mi) for e, ma, mi in ptx if (ma, mi) <= (major, minor)]
    if ptx:
        e = max(ptx, key=lambda t: (t[1], t[2]))[0]
        return Coverage(True, f"PTX {e} JIT-compiled by the driver (slow first start)")
    return Coverage(
        False, f"no sm_{major}{minor} kernels and no PTX <= compute_{major}{minor} in {arch_list}"
    )


# ---- the checks -------------------------------------------------------------------------------------------


def kernel_errors(device: Any) -> dict[str, float]:
    """Relative errors of real kernels on fresh random inputs against float64 CPU references.

    Outputs are poisoned with NaN before the kernel writes them, so an unwritten element fails.
    """
    import torch

    from verify.measure import float32_matmul_precision, relative_error

    seed = int.from_bytes(os.urandom(4), "little")
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(1024, 768, generator=gen, dtype=torch.float64)
    b = torch.randn(768, 512, generator=gen, dtype=torch.float64)
    x = torch.randn(1 << 20, generator=gen, dtype=torch.float64)
    ref_mm = a @ b
    ref_ew = torch.sin(x) * torch.exp(-x * x) + 0.5 * x
    errs: dict[str, float] = {}

    xd = x.to(device, torch.float32)
    ew = torch.full_like(xd, float("nan"))
    torch.add(torch.sin(xd) * torch.exp(-xd * xd), xd, alpha=0.5, out=ew)
    errs["elementwise_fp32"] = relative_error(ew, ref_ew)

    for name, dtype, precision in (
        ("fp32", torch.float32, "highest"),
        ("tf32", torch.float32, "high"),
        ("bf16", torch.bfloat16, "highest"),
    ):
        ad, bd = a.to(device, dtype), b.to(device, dtype)
        out = torch.full((1024, 512), float("nan"), device=device, dtype=dtype)
        with float32_matmul_precision(precision):
            torch.matmul(ad, bd, out=out)
        errs[f"matmul_{name}"] = relative_error(out, ref_mm)
    torch.cuda.synchronize(device)
    errs["seed"] = seed
    return errs


def _bound_for(key: str) -> float:
    return BOUNDS["fp32"] if key == "elementwise_fp32" else BOUNDS[key.removeprefix("matmul_")]


def measure_device(index: int, size: WorkSize, quick: bool) -> dict[str, Any]:
    """Kernel check and the two ceilings on one GPU, at the given sizes; the cache is emptied between
    phases so the peak is the largest phase, not their sum."""
    import torch

    from verify.measure import copy_bandwidth, matmul_tflops, pinned_copies

    device = torch.device("cuda", index)
    iters = 10 if quick else 20
    with torch.cuda.device(device):
        errs = kernel_errors(device)
        rates: dict[str, Any] = {"errors": errs}
        for key in ("bf16", "tf32"):
            torch.cuda.empty_cache()
            rates[key] = matmul_tflops(device, key, size.matmul_n, iters=iters)
        torch.cuda.empty_cache()
        rates["copy"] = copy_bandwidth(device, size.copy_bytes, iters=iters)
        torch.cuda.empty_cache()
        rates["pinned"] = pinned_copies(
            device, PINNED_MIB_QUICK * MIB if quick else PINNED_MIB * MIB, iters=iters
        )
    return rates


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def _size_gpus(gpus: list[dict[str, Any]], quick: bool) -> tuple[dict[int, WorkSize], list[str], list[str]]:
    """Pick each GPU's work size from its free memory: (sizes by index, problems, warnings)."""
    import torch

    sizes: dict[int, WorkSize] = {}
    problems: list[str] = []
    warnings: list[str] = []
    for g in gpus:
        try:
            free, total = torch.cuda.mem_get_info(g["index"])  # the first call creates the CUDA context
        except RuntimeError as exc:  # "CUDA error: out of memory": no room even for a context
            problems.append(f"GPU {g['index']} {g['name']}: {str(exc).splitlines()[0]}; fix: {FIX_FREE}")
            continue
        g["memory_free_MiB"], g["memory_total_MiB"] = free // MIB, total // MIB
        size = work_size(free, quick)
        if size is None:
            problems.append(
                f"GPU {g['index']} {g['name']} has only {free // MIB} MiB of {_gib(total)} free, under the "
                f"{min_free_bytes() // MIB} MiB the checks need (training would run out of memory); "
                f"fix: {FIX_FREE}"
            )
            continue
        sizes[g["index"]] = size
        if size.reduced:
            warnings.append(
                f"GPU {g['index']}: only {_gib(free)} of {_gib(total)} free (other processes hold the rest): "
                f"work sized down to matmul n={size.matmul_n} (full {size.full_matmul_n}) and a "
                f"{size.copy_bytes // MIB} MiB copy (full {size.full_copy_bytes // MIB}), so its figures are "
                f"not comparable with full-size runs and not judged against the spec; fix: {FIX_FREE}"
            )
    return sizes, problems, warnings


def run(ctx: Context) -> Result:
    start = time.monotonic()
    import torch

    def done(status: Status, summary: str, figures: dict, details: dict) -> Result:
        return Result(NAME, status, summary, figures, details, time.monotonic() - start)

    facts = presence.collect()
    verdict = presence.diagnose(facts, require_gpu=ctx.require_gpu)
    arch_list = list(torch.cuda.get_arch_list()) if facts.torch_count else []
    details: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "arch_list": arch_list,
        "presence": {"facts": facts.to_dict(), "verdict": verdict.to_dict()},
    }
    figures: dict[str, Any] = {"gpus": facts.torch_count}
    if facts.nvml_gpus is not None:
        figures["nvml_gpus"] = len(facts.nvml_gpus)
    if verdict.expected is not None:
        figures["expected_gpus"] = verdict.expected
    if verdict.status is not None:
        return done(verdict.status, verdict.summary, figures, details)

    from verify import specs

    count = facts.torch_count
    problems: list[str] = []
    warnings: list[str] = list(verdict.warnings)

    # Architecture first: before any kernel runs.
    gpus: list[dict[str, Any]] = []
    for i in range(count):
        cap = torch.cuda.get_device_capability(i)
        name = torch.cuda.get_device_name(i)
        cov = arch_coverage(cap, arch_list)
        gpus.append({"index": i, "name": name, "sm": f"sm_{cap[0]}{cap[1]}", "coverage": cov.how})
        if not cov.ok:
            problems.append(
                f"GPU {i} {name} is sm_{cap[0]}{cap[1]} but torch {torch.__version__} was built for "
                f"{' '.join(arch_list)}: kernels would fail with 'no kernel image is available'; "
                f"install a torch build that lists sm_{cap[0]}{cap[1]}"
            )
    details["gpus"] = gpus
    if problems:
        return done(Status.FAIL, "; ".join(problems), figures, details)

    sizes, problems, size_warnings = _size_gpus(gpus, ctx.quick)
    warnings += size_warnings
    if problems:
        return done(Status.FAIL, "; ".join(problems + warnings), figures, details)

    for g in gpus:
        size = sizes[g["index"]]
        m = measure_device(g["index"], size, ctx.quick)
        bad = {k: v for k, v in m["errors"].items() if k != "seed" and not v <= _bound_for(k)}
        g["rel_errors"] = {k: float(f"{v:.3g}") for k, v in m["errors"].items()}
        for k, v in bad.items():
            problems.append(
                f"GPU {g['index']} {g['name']}: {k} relative error {v:.2e} > bound {_bound_for(k):g}"
            )
        g["bf16_tflops"] = round(m["bf16"].tflops, 1)
        g["tf32_tflops"] = round(m["tf32"].tflops, 1)
        g["copy_GBps"] = round(m["copy"].gbps, 1)
        g["matmul_n"] = m["bf16"].n
        g["h2d_GBps"], g["d2h_GBps"] = round(m["pinned"].h2d_gbps, 1), round(m["pinned"].d2h_gbps, 1)
        bus = affinity.torch_bus_id(g["index"])
        link = pcie.read_link(bus)  # read right after the copies: the link as it is under load
        g["pcie"] = pcie.as_dict(link) or {}
        g["pcie"] |= {"bus_id": bus, "numa_node": affinity.read_locality(bus).numa_node}
        if link is not None:
            g["pcie"]["link_GBps"] = pcie.link_gbps(link.gen, link.width)
        warnings += pcie.judge(f"GPU {g['index']} {g['name']}", g["h2d_GBps"], g["d2h_GBps"], link)
        g["copy_bytes"] = m["copy"].nbytes
        g["work_reduced"] = size.reduced
        total_memory = torch.cuda.get_device_properties(g["index"]).total_memory
        spec = specs.lookup(g["name"], memory_bytes=total_memory)
        if spec:
            g["spec"] = {
                "model": spec.model,
                "bf16": spec.bf16_tflops,
                "tf32": spec.tf32_tflops,
                "mem_GBps": spec.mem_bw_gbps,
                "source": spec.source,
            }
            for key, got, peak in (
                ("bf16", g["bf16_tflops"], spec.bf16_tflops),
                ("tf32", g["tf32_tflops"], spec.tf32_tflops),
                ("copy", g["copy_GBps"], spec.mem_bw_gbps),
            ):
                g[f"{key}_pct_of_spec"] = round(100 * got / peak, 1)
                if got < WARN_FRACTION[key] * peak and not size.reduced:
                    warnings.append(
                        f"GPU {g['index']} {key} {got:g} is {100 * got / peak:.0f}% of the {spec.model} spec "
                        f"{peak:g} (< {100 * WARN_FRACTION[key]:.0f}%): check clocks, power cap, throttling"
                    )
        else:
            warnings.append(
                f"GPU {g['index']} {g['name']} ({_gib(total_memory)}) is not in verify/specs.py: "
                f"no spec comparison"
            )

    slowest = min(gpus, key=lambda g: g["bf16_tflops"])
    figures |= {
        "name": slowest["name"],
        "sm": slowest["sm"],
        "bf16_tflops": slowest["bf16_tflops"],
        "tf32_tflops": min(g["tf32_tflops"] for g in gpus),
        "copy_GBps": min(g["copy_GBps"] for g in gpus),
        "h2d_GBps": min(g["h2d_GBps"] for g in gpus),
        "d2h_GBps": min(g["d2h_GBps"] for g in gpus),
        "max_rel_err_bf16": max(g["rel_errors"]["matmul_bf16"] for g in gpus),
        "matmul_n": min(g["matmul_n"] for g in gpus),
        "copy_MiB": min(g["copy_bytes"] for g in gpus) // MIB,
    }
    for key in ("bf16_pct_of_spec", "tf32_pct_of_spec", "copy_pct_of_spec"):
        if key in slowest:
            figures[key] = slowest[key]
    details["bounds"] = BOUNDS
    if problems:
        return done(Status.FAIL, "; ".join(problems), figures, details)
    spec_txt = f" ({figures['bf16_pct_of_spec']:.0f}% of spec)" if "bf16_pct_of_spec" in figures else ""
    summary = (
        f"{count}x {slowest['name']} {slowest['sm']} ({gpus[0]['coverage']}); kernels match CPU; "
        f"bf16 {figures['bf16_tflops']:g} TFLOP/s{spec_txt}, tf32 {figures['tf32_tflops']:g}, "
        f"copy {figures['copy_GBps']:g} GB/s (matmul n={figures['matmul_n']}, copy {figures['copy_MiB']} MiB)"
        f"; pinned PCIe copies {figures['h2d_GBps']:g} GB/s to the GPU, {figures['d2h_GBps']:g} back"
    )
    if warnings:
        return done(Status.WARN, "; ".join(warnings) + " | " + summary, figures, details)
    return done(Status.PASS, summary, figures, details)
