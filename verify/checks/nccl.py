"""nccl: one process per visible GPU all-reduces exact sums and reports algbw/busbw as nccl-tests does.

Formulas (nccl-tests doc/PERFORMANCE.md; implemented in verify/distributed.py):
    algbw = S / t,  busbw = algbw * 2(n-1)/n  for all_reduce over n ranks.
One GPU: NCCL is still initialised (eagerly, with device_id) and reduces; busbw is 0 by definition (n = 1), so
algbw is reported and the summary says multi-GPU paths were not exercised.
No GPU: the same worker code runs on gloo with GLOO_RANKS (2) CPU processes, or as many as
options["nccl"]["gloo_ranks"] says (tests run 4 and 8, where busbw = 1.5 and 1.75 x algbw tells a wrong
factor apart). NCCL itself is then SKIPPED (it was not tested), with the gloo figures attached; wrong gloo
sums still FAIL, because the shared code path is broken.
Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) this process joins that job as its rank:
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 $(which verify) run --only nccl
"""

from __future__ import annotations

import os
import time
from typing import Any

from verify.context import Context
from verify.distributed import (
    CollectiveConfig,
    LaunchOutcome,
    RankResult,
    launch_local,
    run_worker,
    torchrun_env,
)
from verify.result import Result, Status

NAME = "nccl"
DESCRIPTION = (
    "all_reduce on one process per GPU: exact sums at 4 sizes, algbw/busbw 1 MiB..1 GiB (gloo on CPU)"
)
DEFAULT_TIMEOUT_S = 180.0
MARGIN_S = 10.0  # the launcher gives up this long before the runner's own timeout, to report what hung
GLOO_RANKS = 2  # CPU processes for the gloo path: 2 is the smallest ring; more only cost time on small hosts


def _figures(rows: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for row in rows:
        figures[f"{backend}_algbw_GBps_{row['size']}"] = row["algbw_GBps"]
        figures[f"{backend}_busbw_GBps_{row['size']}"] = row["busbw_GBps"]
    return figures


def evaluate(outcome: LaunchOutcome, nprocs: int, timeout_s: float) -> tuple[list[str], RankResult | None]:
    """The problems a launch shows (timeouts, crashes, wrong sums) and rank 0's result if there is one."""
    problems: list[str] = []
    if outcome.timed_out:
        missing = sorted(set(range(nprocs)) - {r.rank for r in outcome.results})
        problems.append(
            f"all_reduce hung: killed the workers after {timeout_s:.0f}s; ranks {missing} never finished"
        )
    for r in outcome.results:
        if r.error:
            problems.append(f"rank {r.rank}: {r.error}")
        for w in r.wrong:
            problems.append(f"wrong sum: {w}")
    for rank, code in outcome.returncodes.items():
        if (
            code not in (0, None)
            and not outcome.timed_out
            and not any(r.rank == rank for r in outcome.results)
        ):
            tail = outcome.stderr_tails.get(rank, "").strip().splitlines()[-1:]
            problems.append(f"rank {rank} exited with {code}: {' '.join(tail)}")
    rank0 = next((r for r in outcome.results if r.rank == 0), None)
    if rank0 is None and not problems:
        problems.append("rank 0 wrote no result")
    return problems, rank0


def gloo_ranks(opts: dict[str, Any]) -> int | str:
    """The number of gloo processes options["nccl"]["gloo_ranks"] asks for (default GLOO_RANKS), or the
    problem with the value: one rank moves no data, so fewer than 2 cannot exercise the collective path."""
    value = opts.get("gloo_ranks", GLOO_RANKS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        return f"gloo_ranks is {value!r}; fix: give a whole number of processes >= 2 (default {GLOO_RANKS})"
    return value


def run(ctx: Context) -> Result:
    start = time.monotonic()
    import torch
    import torch.distributed as dist

    opts = ctx.options.get("nccl", {})
    total = float(opts.get("timeout_s") or ctx.timeout_s or DEFAULT_TIMEOUT_S)
    timeout_s = max(5.0, total - MARGIN_S)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend = "nccl" if gpus else "gloo"
    cfg = CollectiveConfig.for_backend(backend, ctx.quick)
    cfg.op_timeout_s = min(cfg.op_timeout_s, timeout_s)

    def done(status: Status, summary: str, figures: dict, details: dict) -> Result:
        return Result(NAME, status, summary, figures, details, time.monotonic() - start)

    details: dict[str, Any] = {
        "formula": "algbw = bytes / mean time per op; busbw = algbw * 2(n-1)/n "
        "(nccl-tests doc/PERFORMANCE.md)",
        "backend": backend,
        "check_numels": cfg.check_numels,
        "nccl_env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")},
    }
    if backend == "nccl" and not dist.is_nccl_available():
        return done(
            Status.FAIL,
            f"torch {torch.__version__} sees {gpus} GPU(s) but was built without NCCL",
            {},
            details,
        )
    if backend == "nccl":
        details["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))

    if torchrun_env():
        nprocs = int(os.environ["WORLD_SIZE"])
        details["launch"] = f"joined torchrun job as rank {os.environ['RANK']} of {nprocs}"
        try:
            mine = run_worker(cfg)
        except Exception as exc:
            return done(Status.FAIL, f"rank {os.environ['RANK']}: {type(exc).__name__}: {exc}", {}, details)
        problems, rank0 = (
            (
                [f"wrong sum: {w}" for w in mine.wrong]
                + ([] if mine.sums_ok else ["another rank saw wrong sums"])
            ),
            mine,
        )
    else:
        wanted = gpus or gloo_ranks(opts)
        if isinstance(wanted, str):
            return done(Status.FAIL, wanted, {}, details)
        nprocs = wanted
        details["launch"] = f"{nprocs} local processes, env:// rendezvous on 127.0.0.1"
        outcome = launch_local(cfg, nprocs, timeout_s)
        details["wall_s"] = round(outcome.wall_s, 2)
        problems, rank0 = evaluate(outcome, nprocs, timeout_s)
        if problems:
            details["stderr_tails"] = outcome.stderr_tails

    rows = rank0.rows if rank0 else []
    details["rows"] = rows
    figures: dict[str, Any] = {"ranks": nprocs, "backend": backend} | _figures(rows, backend)
    if problems:
        return done(Status.FAIL, "; ".join(dict.fromkeys(problems)), figures, details)

    sizes = len(cfg.check_numels)
    if backend == "gloo":
        summary = (
            f"no GPU: NCCL not tested; the collective path ran on gloo with {nprocs} processes: "
            f"sums correct at {sizes} sizes"
        )
        return done(Status.SKIP, summary, figures, details)
    big = rows[-1]
    if nprocs == 1:
        summary = (
            f"1 GPU: NCCL {details['nccl_version']} initialised, sums exact at {sizes} sizes; "
            f"all_reduce {big['time_us']:g} us at {big['size']} (one rank moves no data: busbw is 0 by "
            f"definition, algbw only measures the call); multi-GPU not exercised"
        )
    else:
        summary = (
            f"{nprocs} ranks, NCCL {details['nccl_version']}: sums exact at {sizes} sizes; "
            f"busbw {big['busbw_GBps']:g} GB/s at {big['size']} (algbw {big['algbw_GBps']:g})"
        )
    return done(Status.PASS, summary, figures, details)
