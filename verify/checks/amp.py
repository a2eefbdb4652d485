"""amp: mixed precision works as the autocast policy promises, trains, and stays close to fp32.

What it proves, per precision (bf16 everywhere autocast supports it; fp16 with GradScaler on CUDA):
  1. dtypes follow PyTorch's autocast policy: linear/matmul run in the low precision; on CUDA softmax,
     log_softmax, layer_norm and the losses run in float32; on the CPU the losses do (CPU autocast leaves
     softmax/layer_norm in their input type, so those are not asserted there).
  2. a small MLP trained for a few steps under autocast has a finite loss that falls, float32 master grads,
     and (fp16) a GradScaler that did not skip every step.
  3. the autocast forward matches a float32 forward of the same weights within a stated tolerance,
     ||amp - fp32|| / ||fp32||: bf16 <= 1e-2 (8 mantissa bits), fp16 <= 5e-3 (11 mantissa bits; the
     headroom over ~1e-3 covers the float16 rounding of the inputs and weights as well as the products).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from verify.context import Context
from verify.result import Result, Status

NAME = "amp"
DESCRIPTION = "autocast bf16 (and fp16 + GradScaler on CUDA): dtype policy, falling loss, parity with fp32"
DEFAULT_TIMEOUT_S = 120.0

TOLERANCE = {"bf16": 1e-2, "fp16": 5e-3}
STEPS = 30
LOSS_DROP = 0.8  # the last loss must be below 80 % of the first


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


def _observed_dtypes(device: Any, low: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    x = torch.randn(16, 64, device=device)
    lin = torch.nn.Linear(64, 64).to(device)
    target = torch.randint(0, 64, (16,), device=device)
    with torch.autocast(device_type=device.type, dtype=low):
        y = lin(x)
        return {
            "linear": y.dtype,
            "matmul": (x @ x.T).dtype,
            "softmax": torch.softmax(y, dim=-1).dtype,
            "log_softmax": torch.log_softmax(y, dim=-1).dtype,
            "layer_norm": F.layer_norm(y, (64,)).dtype,
            "mse_loss": F.mse_loss(y, x).dtype,
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


def check_precision(device: Any, precision: str) -> PrecisionOutcome:
    """Run the three checks of the module docstring for one precision on one device."""
    import torch
    import torch.nn.functional as F

    from verify.measure import float32_matmul_precision, relative_error

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    outcome = PrecisionOutcome(precision)
    low_name = str(low).removeprefix("torch.")

    observed = _observed_dtypes(device, low)
    for op, want in expected_policy(device.type).items():
        want_dtype = low if want == "low" else torch.float32
        if observed[op] != want_dtype:
            outcome.problems.append(
                f"{op} gave {observed[op]} under {low_name} autocast, policy says {want_dtype}"
            )

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
            f"over the {TOLERANCE[precision]:g} bound"
        )

    # Training: finite, falling loss; fp32 master gradients; fp16 through GradScaler.
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    losses: list[float] = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=low):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
    grad_dtypes = {p.grad.dtype for p in model.parameters() if p.grad is not None}
    if grad_dtypes != {torch.float32}:
        outcome.problems.append(
            f"gradients are {sorted(map(str, grad_dtypes))}, expected float32 master grads"
        )
    first, last = losses[0], losses[-1]
    outcome.figures[f"{precision}_loss_first"] = round(first, 4)
    outcome.figures[f"{precision}_loss_last"] = round(last, 4)
    if not all(map(_finite, losses)):
        outcome.problems.append(f"{precision} loss is not finite: {losses}")
    elif not last < LOSS_DROP * first:
        outcome.problems.append(
            f"{precision} loss did not fall: {first:.4f} -> {last:.4f} over {STEPS} steps "
            f"(needs < {LOSS_DROP:g}x)"
        )
    if precision == "fp16":
        scale = float(scaler.get_scale())
        outcome.figures["fp16_grad_scale"] = scale
        if not _finite(scale) or scale <= 0:
            outcome.problems.append(f"GradScaler scale is {scale}")
    return outcome


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


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
