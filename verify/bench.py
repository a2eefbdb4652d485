"""The BERT training benchmark behind `verify bench bert` and the `bert` check.

One step = forward + backward + optimizer step of BertForMaskedLM built from a BertConfig (no downloads),
SDPA attention, fused AdamW on CUDA, autocast for bf16/fp16 (fp16 through GradScaler). The loop is the plain
one a person would write: no per-step synchronisation, no .item() inside the timed region, CUDA events around
each repeat of N steps (verify/measure.py's rules: warm-up first, median over repeats, rotate input batches,
no zeros).
Before the run the batch is sized to the GPU memory that is free (another process may hold most of it):
a batch whose estimated need (`estimate_train_bytes`) does not fit is halved up front, and an out-of-memory
error during the run still halves it; both are said. FLOPs per step: verify/flops.py (FORMULA).

GPU-bound vs launch-bound: the default (bert-base, seq 128, batch 256, bf16) keeps the GPU busy ~90 ms per
step on an H200, far above the ~30 ms the host CPU needs to launch a step's kernels, so the figure judges the
GPU; batch 64 is launch-bound on a 16-vCPU VM (the host CPU decides: 1531-2306 samples/s across repeats
of one process there) and is kept as a benchmark of the host, not judged against a reference.
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

from verify import affinity, flops, specs

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
VOCAB = 30522  # bert-base-uncased's vocabulary
FIT_MARGIN = 1.10  # fit a batch only if 1.1 x its estimated need ...
FIT_RESERVE = 512 * 2**20  # ... plus this (allocator slack, cuBLAS workspaces) is free

T = TypeVar("T")


@dataclass
class BenchConfig:
    size: str = "base"
    seq: int = 128
    batch: int = 256  # GPU-bound on an H200 (batch 64 is launch-bound there: the host CPU decides)
    precision: str = "bf16"
    steps: int = 30  # timed steps per repeat
    warmup: int = 10
    repeats: int = 3
    compile: bool = False
    device: str = "auto"  # "auto" -> cuda when available, else cpu
    measure_peak: bool = True  # time a bf16 matmul in the same run for MFU vs measured peak
    pin_cpu: bool = True  # on CUDA, pin every thread to one CPU on the GPU's NUMA node (verify/affinity.py)
    fit_memory: bool = True  # on CUDA, size the batch to the free GPU memory before the run

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
    pin_reason: str | None = None  # which CPU and why (NUMA node of the GPU, or why not known)
    fit_notes: list[str] = field(default_factory=list)  # a batch taken smaller up front, and why
    peak_note: str | None = None  # why the matmul peak is missing, where it is
    device_memory_bytes: int | None = None  # torch's total_memory of the GPU (for the spec lookup)
    free_memory_gib: float | None = None  # free GPU memory before the run (torch.cuda.mem_get_info)
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


def params_count(size: str) -> int:
    """Parameters of BertForMaskedLM at this size (the decoder is tied to the word embeddings)."""
    sz = SIZES[size]
    shape = flops.BertShape(sz["num_hidden_layers"], sz["hidden_size"], sz["intermediate_size"], VOCAB)
    return flops.matmul_params(shape) + MAX_SEQ * sz["hidden_size"]


def estimate_train_bytes(size: str, seq: int, batch: int, precision: str) -> int:
    """Peak GPU memory of one training step, estimated from the shape (for sizing, not for reporting).

    static: fp32 weights + grads + AdamW's two moments = 16 B/param, +2 B for autocast's bf16/fp16 copies.
    per token: 34*h bytes per layer for half-precision activations (Korthikanti et al. 2022, with fused
    attention), ~66*h in fp32/tf32; the MLM head's logits over the vocabulary, their fp32 log-softmax and
    gradients: 16 B (half) / 12 B (fp32) per vocabulary entry. Checked against the peaks measured on the
    H200 (tests/unit/verify/test_bench.py): it is 2-24 % above them.
    """
    low = precision in ("bf16", "fp16")
    sz = SIZES[size]
    static = params_count(size) * (18 if low else 16)
    per_token = sz["num_hidden_layers"] * sz["hidden_size"] * (34 if low else 66) + VOCAB * (
        16 if low else 12
    )
    return static + batch * seq * per_token


def fit_batch(batch: int, free_bytes: int, need: Callable[[int], int]) -> int | None:
    """The largest of batch, batch/2, batch/4, ... down to 1 whose need (with margin) fits; None if none."""
    while batch >= 1:
        if FIT_MARGIN * need(batch) + FIT_RESERVE <= free_bytes:
            return batch
        if batch == 1:
            return None
        batch //= 2
    return None


class DoesNotFit(RuntimeError):
    """Not even batch 1 fits in the free GPU memory: the message names the figures and the fix."""


def _fit_to_free_memory(cfg: BenchConfig, device: Any) -> tuple[int, list[str], float]:
    """The batch to run given free GPU memory, the notes saying why it is smaller, free GiB."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()  # torch's own cached blocks count as used in mem_get_info
    free, total = torch.cuda.mem_get_info(device)
    gib = 2**30

    def need(b: int) -> int:
        return estimate_train_bytes(cfg.size, cfg.seq, b, cfg.precision)

    holders = (
        "other processes hold the rest (see `nvidia-smi --query-compute-apps=pid,process_name,used_memory "
        "--format=csv`); stop them or choose a free GPU with CUDA_VISIBLE_DEVICES"
    )
    batch = fit_batch(cfg.batch, free, need)
    if batch is None:
        raise DoesNotFit(
            f"bert-{cfg.size} seq {cfg.seq} {cfg.precision} does not fit: batch 1 needs about "
            f"{need(1) / gib:.1f} GiB but only {free / gib:.1f} of {total / gib:.1f} GiB is free; {holders}"
        )
    notes = []
    if batch < cfg.batch:
        notes.append(
            f"batch {cfg.batch} needs about {need(cfg.batch) / gib:.1f} GiB but only {free / gib:.1f} of "
            f"{total / gib:.1f} GiB is free ({holders}); ran batch {batch} instead"
        )
    return batch, notes, free / gib


def pin_to_one_cpu(bus_id: str | None, sys_root: Path = affinity.SYS_ROOT) -> affinity.Pinned | None:
    """Pin every thread of this process to one CPU on the GPU's NUMA node (verify/affinity.py says why).

    WHY: eager BERT on a GPU is bound by the CPU thread that launches kernels. On the lent H200 VM,
    `taskset -c 5` raised the plain loop at batch 64 from ~1700 to ~2330 samples/s (docs/gpu-results.md):
    thread migrations between cores cost ~30 %. Only for CUDA runs: CPU compute wants all its cores.
    """
    return affinity.pin_near(bus_id, sys_root)


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
    # Made on the device itself: the random init of bert-base's 110 M weights on the one CPU this process is
    # pinned to took seconds of a 10-step quick run; on the GPU it takes milliseconds.
    with device:
        return BertForMaskedLM(config).train()


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
    cuda = device.type == "cuda"
    pin = pin_to_one_cpu(affinity.torch_bus_id(device)) if cfg.pin_cpu and cuda else None
    device_name = torch.cuda.get_device_name(device) if cuda else "CPU"
    memory = torch.cuda.get_device_properties(device).total_memory if cuda else None
    measured_peak = None
    fit_notes: list[str] = []
    peak_note = None
    free_gib = None
    try:
        if cuda and cfg.measure_peak:
            try:
                measured_peak = matmul_tflops(device, "bf16", 8192, warmup=3, iters=10).tflops
            except torch.OutOfMemoryError:
                peak_note = "the bf16 matmul peak was not measured: its 384 MiB did not fit in GPU memory"
        first_batch = cfg.batch
        if cuda and cfg.fit_memory:
            first_batch, notes_fit, free_gib = _fit_to_free_memory(cfg, device)
            fit_notes += notes_fit
        with float32_matmul_precision("high" if cfg.precision == "tf32" else "highest"):
            run, batch, notes = halve_on_oom(lambda b: _timed_run(cfg, b, device), first_batch, _is_oom)
    finally:
        if pin:  # leave the process as we found it (the check runs alone, but a library caller may not)
            affinity.set_all_threads(pin.restore)
    per_step = flops.train_step_flops(flops.shape_of(run["model_config"]), batch, cfg.seq)
    sps = [batch / (ms / 1e3) for ms in run["step_ms"]]
    sps_median = median(sps)
    tflops = per_step * sps_median / batch / 1e12
    spec = specs.lookup(device_name, memory) if cuda else None
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
        pinned_cpu=pin.choice.cpu if pin else None,
        pin_reason=pin.choice.why if pin else None,
        fit_notes=fit_notes,
        peak_note=peak_note,
        device_memory_bytes=memory,
        free_memory_gib=round(free_gib, 2) if free_gib is not None else None,
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
    """Options of `verify bench bert` (verify/cli/bench.py makes the subcommand and calls run_bench)."""
    d = BenchConfig()
    parser.epilog = (
        "The default setting (bert-base, seq 128, batch 256, bf16) is GPU-bound: its samples/s judge the GPU "
        "and are compared with verify/reference.py (WARN when more than 15% below). Smaller batches such as "
        "--batch 64 are launch-bound on small hosts (the host CPU decides); they are shown next to their "
        "figure where one is recorded, never judged. The batch is first sized to the free GPU memory; a "
        "smaller batch than asked is a different setting and is not compared."
    )
    parser.add_argument(
        "--size", choices=list(SIZES), default=d.size, help="model size (default: %(default)s)"
    )
    parser.add_argument("--seq", type=int, default=d.seq, help="sequence length (default: %(default)s)")
    parser.add_argument(
        "--batch",
        type=int,
        default=d.batch,
        help="sequences per step (default: %(default)s, GPU-bound: judged against the reference table; "
        "64 is launch-bound on small hosts, a benchmark of the host CPU, never judged)",
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
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the process to one CPU of the GPU's NUMA node (CUDA)",
    )
    parser.add_argument(
        "--no-fit",
        action="store_true",
        help="run --batch even where the free GPU memory looks too small (an out-of-memory still halves it)",
    )
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
        fit_memory=not args.no_fit,
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
    if res.pin_reason is not None:
        lines.append(f"pinned: {res.pin_reason} (--no-pin to disable)")
    lines.extend(res.fit_notes)
    lines.extend(res.oom_notes)
    if res.peak_note:
        lines.append(res.peak_note)
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
    else:
        info = reference.describe(res)
        if info:
            console.print(info, highlight=False)
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2) + "\n")
        console.print(f"wrote {args.json}", highlight=False)
    finite = math.isfinite(res.loss_first) and math.isfinite(res.loss_last)
    if not finite:
        print(f"error: loss is not finite ({res.loss_first} -> {res.loss_last})", file=sys.stderr)
    return 0 if finite else 1
