"""bert: a BERT masked-LM training step runs, and runs as fast as this GPU model should.

GPU: bert-base, seq 128, batch 64, bf16 autocast, SDPA, fused AdamW (the configuration of the reference
table in verify/reference.py), 3 repeats. CPU: a tiny config (2 layers, hidden 128) in fp32, so the whole
path (model, loss, backward, optimizer, timing, FLOP count) is exercised without a GPU.
Options (ctx.options["bert"]): size, seq, batch, precision, steps, warmup, repeats, compile.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

from verify.context import Context
from verify.result import Result, Status

NAME = "bert"
DESCRIPTION = "BERT training step: samples/s, TFLOP/s, MFU vs spec and vs measured bf16 peak, memory"
DEFAULT_TIMEOUT_S = 300.0


def config_for(ctx: Context, cuda: bool) -> Any:
    from verify.bench import BenchConfig

    if cuda:
        cfg = BenchConfig(size="base", seq=128, batch=64, precision="bf16", steps=40, warmup=10, repeats=3)
        if ctx.quick:
            cfg.steps, cfg.warmup = 10, 5
    else:
        cfg = BenchConfig(size="tiny", seq=64, batch=8, precision="fp32", steps=3, warmup=2, repeats=3)
    for key, value in ctx.options.get("bert", {}).items():
        if not hasattr(cfg, key):
            raise ValueError(f"option bert.{key} is unknown; use one of {', '.join(asdict(cfg))}")
        setattr(cfg, key, value)
    return cfg


def run(ctx: Context) -> Result:
    start = time.monotonic()
    import torch

    from verify import bench, reference

    def done(status: Status, summary: str, figures: dict, details: dict) -> Result:
        return Result(NAME, status, summary, figures, details, time.monotonic() - start)

    cuda = torch.cuda.is_available()
    try:
        cfg = config_for(ctx, cuda)
    except ValueError as exc:
        return done(Status.FAIL, str(exc), {}, {})
    problems = cfg.validate()
    if problems:
        return done(Status.FAIL, "; ".join(p.replace("--", "bert.") for p in problems), {}, {})
    res = bench.run_benchmark(cfg)
    c = res.config
    figures: dict[str, Any] = {
        "samples_per_s": res.samples_per_s,
        "tokens_per_s": res.tokens_per_s,
        "tflops": res.tflops,
        "spread_pct": round(100 * res.spread, 2),
        "batch": c["batch"],
    }
    for key in ("mfu_spec", "mfu_measured_bf16"):
        value = getattr(res, key)
        if value is not None:
            figures[f"{key}_pct"] = round(100 * value, 1)
    if res.measured_bf16_tflops is not None:
        figures["measured_bf16_tflops"] = res.measured_bf16_tflops
    if res.peak_mem_gib is not None:
        figures["peak_mem_gib"] = res.peak_mem_gib
    details = asdict(res)
    what = f"bert-{c['size']} seq {c['seq']} batch {c['batch']} {c['precision']} on {res.device_name}"
    if not (math.isfinite(res.loss_first) and math.isfinite(res.loss_last)):
        return done(
            Status.FAIL, f"{what}: loss is not finite ({res.loss_first} -> {res.loss_last})", figures, details
        )
    mfu = ""
    if res.mfu_spec is not None:
        mfu += f", MFU {figures['mfu_spec_pct']:g}% of spec"
    if res.mfu_measured_bf16 is not None:
        mfu += f", {figures['mfu_measured_bf16_pct']:g}% of measured bf16 peak"
    summary = (
        f"{what}: {res.samples_per_s:g} samples/s (spread {figures['spread_pct']:g}%), "
        f"{res.tflops:g} TFLOP/s{mfu}"
    )
    if res.oom_notes:
        summary += "; " + "; ".join(res.oom_notes)
    if not cuda:
        summary += " (CPU: tiny config, path test only)"
    health = reference.assess(res)
    if health:
        return done(Status.WARN, health, figures, details)
    return done(Status.PASS, summary, figures, details)
