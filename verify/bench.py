"""The BERT training benchmark behind `verify bench bert` and the `bert` check.

One step = forward + backward + optimizer step of BertForMaskedLM built from a BertConfig (no downloads),
SDPA attention, fused AdamW on CUDA, autocast for bf16/fp16 (fp16 through GradScaler). The loop is the plain
one a person would write: no per-step synchronisation, no .item() inside the timed region, CUDA events around
each repeat of N steps (METHOD.md: warm-up first, median over repeats, rotate input batches, no zeros).
An out-of-memory error halves the batch and says so. FLOPs per step: verify/flops.py (FORMULA).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from verify import flops, specs

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "base": {
        "num_hidden_layers": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "large": {
        "num_hidden_layers": 24,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}
PRECISIONS = ("bf16", "fp16", "fp32", "tf32")
MAX_SEQ = 512  # BERT's position embeddings
N_BATCHES = 4  # input batches rotated through the loop
MASK_FRACTION = 0.15

T = TypeVar("T")


@dataclass
class BenchConfig:
    size: str = "base"
    seq: int = 128
    batch: int = 64
    precision: str = "bf16"
    steps: int = 50  # timed steps per repeat (eager BERT is launch-bound: short repeats are noisy)
    warmup: int = 10
    repeats: int = 3
    compile: bool = False
    device: str = "auto"  # "auto" -> cuda when available, else cpu
    measure_peak: bool = True  # time a bf16 matmul in the same run for MFU vs measured peak
    pin_cpu: bool = True  # on CUDA, pin every thread of this process to one CPU (see pin_to_one_cpu)

    def validate(self) -> list[str]:
        """Problems with the config, each naming the option, the value and the fix."""
        errors = []
        if self.size not in SIZES:
            errors.append(f"--size {self.size!r} is unknown; use one of {', '.join(SIZES)}")
        if self.precision not in PRECISIONS:
            errors.append(f"--precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if not 1 <= self.seq <= MAX_SEQ:
            errors.append(f"--seq {self.seq} is out of range; BERT takes 1..{MAX_SEQ} tokens")
        for name in ("batch", "steps", "repeats"):
            if getattr(self, name) < 1:
                errors.append(f"--{name} {getattr(self, name)} must be at least 1")
        if self.warmup < 1:
            errors.append(f"--warmup {self.warmup} must be at least 1 (the first step includes set-up)")
        return errors


@dataclass
class BenchResult:
    config: dict[str, Any]
    requested_batch: int
    device_name: str
    attn_implementation: str
    oom_notes: list[str]
    step_ms: list[float]  # per repeat: mean ms per step
    samples_per_s: float  # median over repeats
    samples_per_s_repeats: list[float]
    spread: float  # (max - min) / median of samples/s over repeats
    tokens_per_s: float
    flops_per_step: int
    tflops: float
    first_step_s: float  # the first warm-up step: set-up, autotuning, and torch.compile when --compile
    warmup_s: float
    loss_first: float
    loss_last: float
    peak_mem_gib: float | None
    pinned_cpu: int | None = None
    spec_model: str | None = None
    spec_peak_tflops: float | None = None
    mfu_spec: float | None = None
    measured_bf16_tflops: float | None = None
    mfu_measured_bf16: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    formula: str = flops.FORMULA


def halve_on_oom(
    fn: Callable[[int], T], batch: int, is_oom: Callable[[BaseException], bool]
) -> tuple[T, int, list[str]]:
    """Call fn(batch); on an out-of-memory error halve the batch and retry, down to 1. Says what it did."""
    notes: list[str] = []
    while True:
        try:
            return fn(batch), batch, notes
        except Exception as exc:
            if not is_oom(exc) or batch == 1:
                raise
            notes.append(f"batch {batch} ran out of memory; halved to {batch // 2}")
            batch //= 2
            gc.collect()
            _empty_cache()


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


def _set_affinity_all_threads(cpus: set[int]) -> None:
    import os
    from pathlib import Path

    task = Path("/proc/self/task")
    for tid in [int(t.name) for t in task.iterdir()] if task.exists() else [0]:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # a thread that exited meanwhile
            continue


def pin_to_one_cpu() -> tuple[int, set[int]] | None:
    """Pin every thread of this process to one CPU of its allowed set; returns (cpu, the set to restore).

    WHY: eager BERT on a GPU is bound by the CPU thread that launches kernels. On the lent H200 VM,
    `taskset -c 5` raised the plain loop from ~1700 to ~2330 samples/s (docs/gpu-results.md): thread
    migrations between cores cost ~30 %. Only for CUDA runs: CPU compute wants all its cores.
    """
    import os

    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = set(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    cpu = sorted(allowed)[len(allowed) // 2]  # away from CPU 0, which usually takes the interrupts
    _set_affinity_all_threads({cpu})
    return cpu, allowed


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def build_model(cfg: BenchConfig, device: Any) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=30522, max_position_embeddings=MAX_SEQ, attn_implementation="sdpa", **SIZES[cfg.size]
    )
    return BertForMaskedLM(config).to(device).train()


def make_batches(cfg: BenchConfig, batch: int, vocab: int, device: Any) -> list[tuple[Any, Any]]:
    """N_BATCHES random batches; labels are the input ids at 15 % of the positions, -100 elsewhere."""
    import torch

    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(N_BATCHES):
        ids = torch.randint(0, vocab, (batch, cfg.seq), generator=gen)
        masked = torch.rand(batch, cfg.seq, generator=gen) < MASK_FRACTION
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        out.append((ids.to(device), labels.to(device)))
    return out


def make_step(model: Any, cfg: BenchConfig, device: Any) -> Callable[[tuple[Any, Any]], Any]:
    """The training step: autocast forward, backward (scaled for fp16), optimizer step, zero grads."""
    import torch

    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    fwd = torch.compile(model) if cfg.compile else model

    def step(batch: tuple[Any, Any]) -> Any:
        ids, labels = batch
        with torch.autocast(device.type, dtype=low or torch.float32, enabled=low is not None):
            loss = fwd(input_ids=ids, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_run(cfg: BenchConfig, batch: int, device: Any) -> dict[str, Any]:
    """Build, warm up and time at one batch size (the unit halve_on_oom retries)."""
    import torch

    model = build_model(cfg, device)
    step = make_step(model, cfg, device)
    batches = make_batches(cfg, batch, model.config.vocab_size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    loss_first = float(step(batches[0]).detach())  # the first step syncs on purpose: set-up and compile time
    first_step_s = time.perf_counter() - t0
    for i in range(1, cfg.warmup):
        step(batches[i % N_BATCHES])
    _sync(device)
    warmup_s = time.perf_counter() - t0
    step_ms: list[float] = []
    loss = None
    for _ in range(cfg.repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(cfg.steps):
                loss = step(batches[i % N_BATCHES])
            end.record()
            end.synchronize()
            step_ms.append(start.elapsed_time(end) / cfg.steps)
        else:
            t = time.perf_counter()
            for i in range(cfg.steps):
                loss = step(batches[i % N_BATCHES])
            step_ms.append((time.perf_counter() - t) * 1e3 / cfg.steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "model_config": model.config,
        "attn": str(model.config._attn_implementation),
        "step_ms": step_ms,
        "first_step_s": first_step_s,
        "warmup_s": warmup_s,
        "loss_first": loss_first,
        "loss_last": float(loss.detach()) if loss is not None else math.nan,
        "peak_mem_gib": peak,
    }


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """Run the benchmark; raises ValueError for a bad config (validate() first for friendly messages)."""
    import torch
    import transformers

    from verify.measure import float32_matmul_precision, matmul_tflops, median, spread

    problems = cfg.validate()
    if problems:
        raise ValueError("; ".join(problems))
    device = resolve_device(cfg.device)
    pin = pin_to_one_cpu() if cfg.pin_cpu and device.type == "cuda" else None
    pinned = pin[0] if pin else None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    measured_peak = None
    try:
        if device.type == "cuda" and cfg.measure_peak:
            measured_peak = matmul_tflops(device, "bf16", 8192, warmup=3, iters=10).tflops
        with float32_matmul_precision("high" if cfg.precision == "tf32" else "highest"):
            run, batch, notes = halve_on_oom(lambda b: _timed_run(cfg, b, device), cfg.batch, _is_oom)
    finally:
        if pin:  # leave the process as we found it (the check runs alone, but a library caller may not)
            _set_affinity_all_threads(pin[1])
    per_step = flops.train_step_flops(flops.shape_of(run["model_config"]), batch, cfg.seq)
    sps = [batch / (ms / 1e3) for ms in run["step_ms"]]
    sps_median = median(sps)
    tflops = per_step * sps_median / batch / 1e12
    spec = specs.lookup(device_name) if device.type == "cuda" else None
    peak = specs.peak_tflops(spec, cfg.precision) if spec else None
    return BenchResult(
        config=asdict(replace(cfg, batch=batch)),
        requested_batch=cfg.batch,
        device_name=device_name,
        attn_implementation=run["attn"],
        oom_notes=notes,
        step_ms=[round(ms, 3) for ms in run["step_ms"]],
        samples_per_s=round(sps_median, 1),
        samples_per_s_repeats=[round(s, 1) for s in sps],
        spread=round(spread(sps), 4),
        tokens_per_s=round(sps_median * cfg.seq, 0),
        flops_per_step=per_step,
        tflops=float(f"{tflops:.4g}"),
        first_step_s=round(run["first_step_s"], 2),
        warmup_s=round(run["warmup_s"], 2),
        loss_first=round(run["loss_first"], 4),
        loss_last=round(run["loss_last"], 4),
        peak_mem_gib=round(run["peak_mem_gib"], 2) if run["peak_mem_gib"] is not None else None,
        pinned_cpu=pinned,
        spec_model=spec.model if spec else None,
        spec_peak_tflops=peak,
        mfu_spec=round(tflops / peak, 4) if peak else None,
        measured_bf16_tflops=round(measured_peak, 1) if measured_peak else None,
        mfu_measured_bf16=round(tflops / measured_peak, 4) if measured_peak else None,
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": str(torch.version.cuda),
        },
    )


# ---- CLI: `verify bench bert` --------------------------------------------------------------------------


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `verify bench bert` (verify/cli.py makes the subcommand and calls run_bench)."""
    d = BenchConfig()
    parser.add_argument(
        "--size", choices=list(SIZES), default=d.size, help="model size (default: %(default)s)"
    )
    parser.add_argument("--seq", type=int, default=d.seq, help="sequence length (default: %(default)s)")
    parser.add_argument(
        "--batch", type=int, default=d.batch, help="sequences per step (default: %(default)s)"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="default: %(default)s")
    parser.add_argument(
        "--steps", type=int, default=d.steps, help="timed steps per repeat (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=int, default=d.warmup, help="warm-up steps (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=d.repeats, help="timed repeats (default: %(default)s)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (warm-up reported apart)"
    )
    parser.add_argument("--device", default=d.device, help="cuda, cuda:N, cpu or auto (default: %(default)s)")
    parser.add_argument("--no-peak", action="store_true", help="skip the bf16 matmul peak measurement")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU (CUDA runs)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the result as JSON")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        size=args.size,
        seq=args.seq,
        batch=args.batch,
        precision=args.precision,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        compile=args.compile,
        device=args.device,
        measure_peak=not args.no_peak,
        pin_cpu=not args.no_pin,
    )


def format_table(res: BenchResult) -> Any:
    from rich.table import Table

    c = res.config
    title = (
        f"BERT-{c['size']} seq {c['seq']} batch {c['batch']} {c['precision']}"
        f"{' compiled' if c['compile'] else ''} on {res.device_name} ({res.attn_implementation} attention)"
    )
    table = Table(title=title)
    table.add_column("repeat")
    table.add_column("ms/step", justify="right")
    table.add_column("samples/s", justify="right")
    for i, (ms, sps) in enumerate(zip(res.step_ms, res.samples_per_s_repeats, strict=True), 1):
        table.add_row(str(i), f"{ms:.2f}", f"{sps:.1f}")
    table.add_section()
    table.add_row("median", "", f"{res.samples_per_s:.1f}")
    return table


def summary_lines(res: BenchResult) -> list[str]:
    lines = [
        f"samples/s {res.samples_per_s:g} (spread {100 * res.spread:.1f}% over {len(res.step_ms)} repeats), "
        f"tokens/s {res.tokens_per_s:g}, {res.tflops:g} TFLOP/s",
        f"FLOPs/step {res.flops_per_step:.4g} by {res.formula}",
    ]
    if res.mfu_spec is not None:
        lines.append(
            f"MFU {100 * res.mfu_spec:.1f}% of the {res.spec_model} {res.config['precision']} spec "
            f"{res.spec_peak_tflops:g} TFLOP/s (verify/specs.py)"
        )
    if res.mfu_measured_bf16 is not None:
        lines.append(
            f"MFU {100 * res.mfu_measured_bf16:.1f}% of the bf16 matmul peak measured in this run "
            f"({res.measured_bf16_tflops:g} TFLOP/s, 8192^3)"
        )
    if res.peak_mem_gib is not None:
        lines.append(f"peak memory {res.peak_mem_gib:g} GiB")
    lines.append(
        f"first step {res.first_step_s:g} s{' (torch.compile warm-up)' if res.config['compile'] else ''}, "
        f"warm-up total {res.warmup_s:g} s; loss {res.loss_first:g} -> {res.loss_last:g}"
    )
    if res.pinned_cpu is not None:
        lines.append(f"pinned to CPU {res.pinned_cpu} (launch-bound loop; --no-pin to disable)")
    lines.extend(res.oom_notes)
    return lines


def run_bench(args: argparse.Namespace) -> int:
    """`verify bench bert`: 0 on success, 1 when the run failed, 2 for bad options."""
    cfg = config_from_args(args)
    problems = cfg.validate()
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    from rich.console import Console

    from verify import reference

    console = Console()
    try:
        res = run_benchmark(cfg)
    except Exception as exc:
        print(f"error: the benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    console.print(format_table(res))
    for line in summary_lines(res):
        console.print(line, highlight=False)
    health = reference.assess(res)
    if health:
        console.print(f"WARN: {health}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2) + "\n")
        console.print(f"wrote {args.json}", highlight=False)
    finite = math.isfinite(res.loss_first) and math.isfinite(res.loss_last)
    if not finite:
        print(f"error: loss is not finite ({res.loss_first} -> {res.loss_last})", file=sys.stderr)
    return 0 if finite else 1
