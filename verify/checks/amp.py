"""amp: mixed precision works as the autocast policy promises, trains, and stays close to fp32.

What it proves, per precision (bf16 everywhere autocast supports it; fp16 with GradScaler on CUDA):
  1. dtypes follow PyTorch's autocast policy: linear/matmul run in the low precision; on CUDA softmax,
     log_softmax, layer_norm and the losses run in float32; on the CPU the losses do (CPU autocast leaves
     softmax/layer_norm in their input type, so those are not asserted there).
  2. a small MLP trained for STEPS steps under autocast has a loss that falls -- every loss finite and the
     last strictly below LOSS_DROP (0.8) x the first, so a flat loss (nothing learned) or a rising one
     (divergence) FAILs --, float32 master grads, and (fp16) a GradScaler that did not skip every step.
     Measured on a 2-core CPU (bf16, torch 2.13): 2.316 -> 1.004 after 3 steps, 0.0 after 30; lr 0 stays
     at 2.316 (FAIL), lr 100 ends at ~1.1e3 (FAIL), lr 1e4 gives NaN (FAIL).
  3. the autocast forward matches a float32 forward of the same weights within a stated tolerance,
     ||amp - fp32|| / ||fp32||: bf16 <= 1e-2 (8 mantissa bits), fp16 <= 5e-3 (11 mantissa bits; the
     headroom over ~1e-3 covers the float16 rounding of the inputs and weights as well as the products).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from verify.context import Context
from verify.result import Result, Status

NAME = "amp"
DESCRIPTION = "autocast bf16 (and fp16 + GradScaler on CUDA): dtype policy, falling loss, parity with fp32"
DEFAULT_TIMEOUT_S = 120.0
# Imported once, before CUDA, by the fork server. torch._dynamo: the first optimizer step imports it (with
# sympy and torch.distributed), 5-9 s in every forked child on the lent H100 where the venv has no .pyc.
IMPORTS = ("torch", "torch._dynamo")
EXCLUSIVE = True  # a GPU measurement: runs alone among the exclusive checks

TOLERANCE = {"bf16": 1e-2, "fp16": 5e-3}
STEPS = 30
LR = 3e-3  # AdamW
LOSS_DROP = 0.8  # "falls": the last loss strictly below 0.8 x the first (at least 20 % lower)
RERUN_FIX = (
    "fix: rerun `verify run --only amp`; if it repeats, this device's low-precision arithmetic is wrong: "
    "check the driver (`verify run --only driver`) and the GPU's health (`nvidia-smi -q -d ECC`)"
)
TORCH_FIX = "fix: use the image's own torch (`verify run --only env` compares it with the image's manifest)"


@dataclass
class PrecisionOutcome:
    precision: str
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def expected_policy(device_type: str) -> dict[str, str]:
    """op -> 'low' or 'float32' as PyTorch's autocast op lists say for that device type."""
    policy = {"linear": "low", "matmul": "low", "mse_loss": "float32", "cross_entropy": "float32"}
    if device_type == "cuda":
        policy |= {"softmax": "float32", "log_softmax": "float32", "layer_norm": "float32"}
    return policy


def policy_problems(observed: dict[str, Any], policy: dict[str, str], low: Any) -> list[str]:
    """Each op whose observed output dtype is not what the policy says ('low' -> low, else float32)."""
    import torch

    low_name = str(low).removeprefix("torch.")
    problems = []
    for op, want in policy.items():
        want_dtype = low if want == "low" else torch.float32
        if observed[op] != want_dtype:
            problems.append(
                f"{op} gave {observed[op]} under {low_name} autocast, policy says {want_dtype}; {TORCH_FIX}"
            )
    return problems


def loss_problem(losses: Sequence[float], precision: str, drop: float = LOSS_DROP) -> str | None:
    """None when the loss fell: at least 2 losses, every one finite, and the last strictly below drop x the
    first. A flat run (lr 0: nothing learned) and a rising one (divergence) are problems, as is NaN/inf."""
    if not 0 < drop < 1:
        raise ValueError(f"drop must be in (0, 1), got {drop}")
    n = len(losses)
    if n < 2:
        return f"{precision} training recorded {n} loss(es); a falling loss needs at least 2"
    for step, value in enumerate(losses, start=1):
        if not math.isfinite(value):
            return (
                f"{precision} loss became {value} at step {step} of {n} (first {losses[0]:.4g}); {RERUN_FIX}"
            )
    first, last = losses[0], losses[-1]
    if first <= 0:  # cross-entropy of an untrained model is ~ln(classes); "x first" needs it positive
        return f"{precision} first loss is {first:.4g}; a falling loss needs a positive start; {RERUN_FIX}"
    if last < drop * first:
        return None
    if last == first:
        how = (
            f"did not change: {first:.4g} at every step of {n}"
            if len(set(losses)) == 1
            else f"ended where it started: {first:.4g} -> {last:.4g} over {n} steps"
        )
    elif last > first:
        how = f"rose: {first:.4g} -> {last:.4g} over {n} steps"
    else:
        how = f"fell too little: {first:.4g} -> {last:.4g} over {n} steps ({last / first:.2f}x)"
    return f"{precision} loss {how}; it must end below {drop:g}x the first; {RERUN_FIX}"


def _observed_dtypes(device: Any, low: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    x = torch.randn(16, 64, device=device)
    lin = torch.nn.Linear(64, 64).to(device)
    target = torch.randint(0, 64, (16,), device=device)
    with torch.autocast(device_type=device.type, dtype=low):
        # Low-precision inputs (y, y2): with a float32 operand, type promotion alone would give float32
        # and hide an op that autocast failed to cast up.
        y, y2 = lin(x), lin(x.flip(0))
        return {
            "linear": y.dtype,
            "matmul": (x @ x.T).dtype,
            "softmax": torch.softmax(y, dim=-1).dtype,
            "log_softmax": torch.log_softmax(y, dim=-1).dtype,
            "layer_norm": F.layer_norm(y, (64,)).dtype,
            "mse_loss": F.mse_loss(y, y2).dtype,
            "cross_entropy": F.cross_entropy(y, target).dtype,
        }


def _model(device: Any) -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512),
        torch.nn.GELU(),
        torch.nn.LayerNorm(512),
        torch.nn.Linear(512, 512),
        torch.nn.GELU(),
        torch.nn.Linear(512, 10),
    ).to(device)


@dataclass
class TrainRun:
    losses: list[float]
    grad_dtypes: set[str]
    grad_scale: float | None  # fp16 only


def train(model: Any, x: Any, y: Any, precision: str, *, steps: int = STEPS, lr: float = LR) -> TrainRun:
    """Train model on (x, y) under autocast for `steps` AdamW steps at `lr` (fp16 through GradScaler).

    steps and lr are parameters so that tests can make a loss that cannot fall (lr 0) or diverges (huge lr).
    """
    import torch
    import torch.nn.functional as F

    device = x.device
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    losses: list[float] = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=low):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
    grad_dtypes = {str(p.grad.dtype) for p in model.parameters() if p.grad is not None}
    scale = float(scaler.get_scale()) if precision == "fp16" else None
    return TrainRun(losses, grad_dtypes, scale)


def check_precision(device: Any, precision: str, *, steps: int = STEPS, lr: float = LR) -> PrecisionOutcome:
    """Run the three checks of the module docstring for one precision on one device (steps, lr: see train)."""
    import torch

    from verify.measure import float32_matmul_precision, relative_error

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    outcome = PrecisionOutcome(precision)

    outcome.problems += policy_problems(_observed_dtypes(device, low), expected_policy(device.type), low)

    # Data a small MLP can learn: labels from a fixed random linear map of the inputs.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(512, 256, generator=gen).to(device)
    y = (x @ torch.randn(256, 10, generator=gen).to(device)).argmax(dim=1)

    # Parity: the same weights, the same inputs, fp32 (true fp32, no TF32) against autocast.
    model = _model(device)
    with torch.no_grad(), float32_matmul_precision("highest"):
        ref = model(x)
        with torch.autocast(device_type=device.type, dtype=low):
            amp_out = model(x)
    err = relative_error(amp_out.float(), ref)
    outcome.figures[f"{precision}_rel_err"] = float(f"{err:.3g}")
    if not err <= TOLERANCE[precision]:
        outcome.problems.append(
            f"{precision} output differs from fp32 by {err:.2e} (relative), "
            f"over the {TOLERANCE[precision]:g} bound; {RERUN_FIX}"
        )

    # Training: finite, falling loss; fp32 master gradients; fp16 through GradScaler.
    run = train(model, x, y, precision, steps=steps, lr=lr)
    if run.grad_dtypes != {"torch.float32"}:
        outcome.problems.append(
            f"gradients are {sorted(run.grad_dtypes)}, expected float32 master grads; {TORCH_FIX}"
        )
    if run.losses:
        outcome.figures[f"{precision}_loss_first"] = round(run.losses[0], 4)
        outcome.figures[f"{precision}_loss_last"] = round(run.losses[-1], 4)
    problem = loss_problem(run.losses, precision)
    if problem:
        outcome.problems.append(problem)
    if run.grad_scale is not None:
        outcome.figures["fp16_grad_scale"] = run.grad_scale
        if not math.isfinite(run.grad_scale) or run.grad_scale <= 0:
            outcome.problems.append(f"GradScaler scale is {run.grad_scale}; {RERUN_FIX}")
    return outcome


def run(ctx: Context) -> Result:
    start = time.monotonic()
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        where = torch.cuda.get_device_name(0)
        precisions = ["bf16"] if torch.cuda.is_bf16_supported() else []
        precisions.append("fp16")  # every GPU torch's CUDA builds support (sm >= 5.0) has fp16 arithmetic
    else:
        device = torch.device("cpu")
        where = "CPU (no GPU)"
        precisions = ["bf16"]

    outcomes = [check_precision(device, p) for p in precisions]
    figures: dict[str, Any] = {"device": where}
    for o in outcomes:
        figures |= o.figures
    problems = [p for o in outcomes for p in o.problems]
    details = {
        "tolerance": {p: TOLERANCE[p] for p in precisions},
        "policy_checked": expected_policy(device.type),
        "steps": STEPS,
        "lr": LR,
        "loss_rule": f"every loss finite and the last < {LOSS_DROP:g} x the first",
    }
    duration = time.monotonic() - start
    if problems:
        return Result(NAME, Status.FAIL, "; ".join(problems), figures, details, duration)
    errs = ", ".join(f"{p} {figures[f'{p}_rel_err']:.1e} <= {TOLERANCE[p]:g}" for p in precisions)
    skipped = "" if device.type == "cuda" else "; fp16+GradScaler not run (CPU)"
    if device.type == "cuda" and "bf16" not in precisions:
        skipped = "; bf16 not run (GPU has no bf16 support)"
    summary = f"{where}: {'+'.join(precisions)} dtypes ok, loss falls, vs fp32 {errs}{skipped}"
    return Result(NAME, Status.PASS, summary, figures, details, duration)
