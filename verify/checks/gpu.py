"""gpu: torch sees the GPUs NVML sees, its kernels cover their sm, compute right, and run at speed.

Order matters: the architecture coverage is checked BEFORE the first kernel launch, so a wheel built
without the card's sm is named as such instead of surfacing later as
"no kernel image is available for execution".

No GPU -> SKIP. We do not run the CPU side of the kernel check alone: comparing the CPU with itself proves
nothing about the GPU stack, and an honest SKIP with CUDA's own reason is what a person needs to read.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from verify.context import Context
from verify.result import Result, Status

NAME = "gpu"
DESCRIPTION = (
    "torch sees the GPUs, sm covered by the wheel, kernel vs CPU, matmul TFLOP/s and bandwidth vs spec"
)
DEFAULT_TIMEOUT_S = 180.0

# Relative error bounds ||gpu - ref|| / ||ref|| against a float64 CPU reference (METHOD.md's figures):
# float32 arithmetic lands far under 1e-3; TF32 near 3e-4; bf16 operands between 1e-3 and 1e-2.
BOUNDS = {"fp32": 1e-5, "tf32": 2e-3, "bf16": 1e-2}
# Below these fractions of the datasheet figure the card is slow for a reason worth a WARN (cuBLAS reaches
# ~75-80 % of the bf16 peak on Hopper, copies ~90 % of the memory bandwidth).
WARN_FRACTION = {"bf16": 0.5, "tf32": 0.5, "copy": 0.6}


# ---- CUDA_VISIBLE_DEVICES -------------------------------------------------------------------------------


def visible_nvml_indices(cvd: str | None, uuids: list[str]) -> list[int]:
    """The NVML indices CUDA will expose for this CUDA_VISIBLE_DEVICES value.

    CUDA's rules: unset -> every device; entries are indices or (prefixes of) UUIDs ("GPU-...", "MIG-...");
    parsing stops at the first entry that names no device (the rest is ignored, not an error); we also stop
    at a repeated device, which CUDA does not expose twice. An empty value hides every device.
    """
    if cvd is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for raw in cvd.split(","):
        entry = raw.strip()
        index: int | None = None
        if re.fullmatch(r"\d+", entry):
            index = int(entry) if int(entry) < len(uuids) else None
        elif entry:
            matches = [i for i, u in enumerate(uuids) if u.lower().startswith(entry.lower())]
            index = matches[0] if len(matches) == 1 else None
        if index is None or index in chosen:
            break
        chosen.append(index)
    return chosen


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


def _no_gpu_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    try:
        torch.cuda.init()
    except (
        Exception
    ) as exc:  # CUDA's own words: "Found no NVIDIA driver", "CUDA driver version is insufficient"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return "torch.cuda.device_count() is 0"


def nvml_uuids() -> tuple[list[str] | None, str]:
    """Every GPU's UUID in NVML order, or None and why NVML could not be read."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return None, f"nvmlInit failed: {exc}"
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            u = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append(u.decode() if isinstance(u, bytes) else u)
        return out, ""
    finally:
        pynvml.nvmlShutdown()


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


def measure_device(index: int, quick: bool) -> dict[str, Any]:
    """Kernel check and the two ceilings on one GPU."""
    import torch

    from verify.measure import copy_bandwidth, matmul_tflops

    device = torch.device("cuda", index)
    with torch.cuda.device(device):
        errs = kernel_errors(device)
        n = 4096 if quick else 8192
        iters = 10 if quick else 20
        bf16 = matmul_tflops(device, "bf16", n, iters=iters)
        tf32 = matmul_tflops(device, "tf32", n, iters=iters)
        copy = copy_bandwidth(device, (256 if quick else 1024) << 20, iters=iters)
    return {"errors": errs, "bf16": bf16, "tf32": tf32, "copy": copy}


def run(ctx: Context) -> Result:
    start = time.monotonic()
    import torch

    def done(status: Status, summary: str, figures: dict, details: dict) -> Result:
        return Result(NAME, status, summary, figures, details, time.monotonic() - start)

    arch_list = list(torch.cuda.get_arch_list())
    details: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "arch_list": arch_list,
    }
    if not torch.cuda.is_available():
        return done(
            Status.SKIP, f"no GPU: torch.cuda.is_available() is False ({_no_gpu_reason()})", {}, details
        )

    from verify import specs

    problems: list[str] = []
    warnings: list[str] = []
    count = torch.cuda.device_count()
    uuids, nvml_why = nvml_uuids()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    figures: dict[str, Any] = {"gpus": count}
    if uuids is None:
        warnings.append(f"device count not compared with NVML ({nvml_why})")
    else:
        expected = visible_nvml_indices(cvd, uuids)
        figures["nvml_gpus"] = len(uuids)
        details["nvml_visible_indices"] = expected
        if len(expected) != count:
            problems.append(
                f"torch sees {count} GPU(s) but NVML has {len(uuids)} and CUDA_VISIBLE_DEVICES={cvd!r} "
                f"makes {len(expected)} visible"
            )

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

    for g in gpus:
        m = measure_device(g["index"], ctx.quick)
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
        g["copy_bytes"] = m["copy"].nbytes
        spec = specs.lookup(g["name"])
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
                if got < WARN_FRACTION[key] * peak:
                    warnings.append(
                        f"GPU {g['index']} {key} {got:g} is {100 * got / peak:.0f}% of the {spec.model} spec "
                        f"{peak:g} (< {100 * WARN_FRACTION[key]:.0f}%): check clocks, power cap, throttling"
                    )
        else:
            warnings.append(f"GPU {g['index']} {g['name']} is not in verify/specs.py: no spec comparison")

    slowest = min(gpus, key=lambda g: g["bf16_tflops"])
    figures |= {
        "name": slowest["name"],
        "sm": slowest["sm"],
        "bf16_tflops": slowest["bf16_tflops"],
        "tf32_tflops": min(g["tf32_tflops"] for g in gpus),
        "copy_GBps": min(g["copy_GBps"] for g in gpus),
        "max_rel_err_bf16": max(g["rel_errors"]["matmul_bf16"] for g in gpus),
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
        f"copy {figures['copy_GBps']:g} GB/s"
    )
    if warnings:
        return done(Status.WARN, "; ".join(warnings) + " | " + summary, figures, details)
    return done(Status.PASS, summary, figures, details)
