"""`verify sweep`: one rank of a multi-node job's sweep (verify/cluster/sweeprun.py), rank 0's report."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from verify import report as rep
from verify.cli.common import (
    UsageError,
    _count,
    _percent,
    _positive_seconds,
    _size,
    ensure_writable,
    job_topology,
)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from verify.cluster.sweep import DEFAULT_RETRIES, DEFAULT_SCALE_TOLERANCE_PCT, DEFAULT_TOLERANCE_PCT
    from verify.cluster.sweeprun import DEFAULT_SIZE, DEFAULT_TRIAL_TIMEOUT_S

    sweep = sub.add_parser(
        "sweep",
        help="find the node or link behind a slow or hung all-reduce (multi-node job)",
        description=(
            "Run as one rank of a multi-node job, started like `verify run` (srun, or torchrun on every "
            "node). Times all-reduces over groups of nodes in a few rounds: all nodes, disjoint pairs, each "
            "node of a slow pair with good partners, then halves of a slow group (bisection). Names the slow "
            "or hung node, the slow link between two nodes, or the cut between two halves; a slow figure is "
            "timed again (--retries) before it counts. Exit 0 nothing "
            "found, 1 a node or link named, 2 usage error. Rank 0 prints the verdict, writes the JSON report."
        ),
    )
    sweep.add_argument(
        "--backend",
        choices=["auto", "nccl", "gloo"],
        default="auto",
        help="nccl where this node has a GPU (auto), else gloo on the CPU",
    )
    sweep.add_argument(
        "--size",
        type=_size,
        metavar="BYTES",
        help="buffer per all-reduce, e.g. 64M (default: "
        + ", ".join(f"{k} {v >> 20}M" for k, v in DEFAULT_SIZE.items())
        + ")",
    )
    sweep.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TRIAL_TIMEOUT_S,
        metavar="S",
        help="a trial still running after S seconds hangs and is killed "
        f"(default {DEFAULT_TRIAL_TIMEOUT_S:g})",
    )
    sweep.add_argument(
        "--tolerance",
        type=_percent,
        default=DEFAULT_TOLERANCE_PCT,
        metavar="PCT",
        help="a pair this many percent below the pairs' reference (their 75th percentile busbw) is slow "
        f"(default {DEFAULT_TOLERANCE_PCT:g})",
    )
    sweep.add_argument(
        "--scale-tolerance",
        type=_percent,
        metavar="PCT",
        help="the same for groups of 3 or more nodes, whose busbw a ring over many nodes lowers (default: "
        f"{DEFAULT_SCALE_TOLERANCE_PCT:g} on nccl; on gloo only a group that fails or hangs is slow, as the "
        "CPU and not the network bounds gloo over many nodes)",
    )
    sweep.add_argument(
        "--min-busbw",
        type=float,
        default=0.0,
        metavar="GBPS",
        help="any group below this busbw (GB/s) is slow too: the floor for fleets too small for a "
        "reference, or a figure your fabric must reach",
    )
    sweep.add_argument(
        "--retries",
        type=_count,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="a group found slow is timed again up to N times and judged on its best figure, so a busy "
        "moment on a healthy link is not named (a bad node or link is slow every time; a trial that fails "
        f"or hangs is not timed again); 0 judges one timing (default {DEFAULT_RETRIES})",
    )
    sweep.add_argument(
        "--json", type=Path, default=Path("verify-sweep.json"), metavar="FILE", help="rank 0's JSON report"
    )
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace, _modules: Sequence[str]) -> int:
    topo = job_topology(os.environ)
    if topo is None or topo.nnodes < 2:
        raise UsageError(
            "verify sweep times all-reduces between nodes, so it runs as one rank of a job over 2 or more "
            "nodes; fix: start it as `verify run` is started in a job, e.g. `srun -N4 --ntasks-per-node 1 "
            "verify sweep` or `torchrun --nnodes 4 --nproc-per-node 1 ... -m verify sweep` on every node"
        )
    json_path = ensure_writable(args.json, "--json") if topo.is_leader else args.json
    from verify.cluster import sweeprun  # imports torch: only in a job

    backend = args.backend
    if backend == "auto":
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
    opts = sweeprun.SweepOptions(
        backend=backend,
        size_bytes=args.size or sweeprun.DEFAULT_SIZE[backend],
        trial_timeout_s=args.timeout,
        tolerance_pct=args.tolerance,
        scale_tolerance_pct=args.scale_tolerance
        if args.scale_tolerance is not None
        else sweeprun.default_scale_tolerance(backend),
        min_busbw_GBps=args.min_busbw,
        retries=args.retries,
    )
    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    try:
        outcome = sweeprun.run_sweep(topo, opts, lambda line: print(line, flush=True))
    except sweeprun.StoreUnreachable as exc:
        print(f"verify sweep: FAIL: {exc}", file=sys.stderr)
        return rep.EXIT_FAILED
    if outcome.sweep is None:
        return outcome.exit_code
    sweep = outcome.sweep
    report = {
        "schema": "verify-sweep/1",
        "tool_version": rep.tool_version(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - start, 1),
        "backend": opts.backend,
        "size_bytes": opts.size_bytes,
        "trial_timeout_s": opts.trial_timeout_s,
        "job": rep.job_section(topo, role="sweep"),
        "sweep": sweep.to_dict(),
        "exit_code": outcome.exit_code,
    }
    rep.write_json(report, json_path)
    word = "FOUND" if outcome.exit_code else "OK"
    print(f"verify sweep: {word}: {sweep.verdict()}", flush=True)
    print(f"JSON report: {json_path.resolve()}", flush=True)
    return outcome.exit_code
