"""nccl: one process per visible GPU all-reduces exact sums and reports algbw/busbw as nccl-tests does.

Formulas (nccl-tests doc/PERFORMANCE.md; implemented in verify/cluster/distributed.py):
    algbw = S / t,  busbw = algbw * 2(n-1)/n  for all_reduce over n ranks.
One GPU: NCCL is still initialised (eagerly, with device_id) and reduces; busbw is 0 by definition (n = 1), so
algbw is reported and the summary says multi-GPU paths were not exercised.
No GPU: the same worker code runs on gloo with GLOO_RANKS (2) CPU processes, or as many as
options["nccl"]["gloo_ranks"] says (tests run 4 and 8, where busbw = 1.5 and 1.75 x algbw tells a wrong
factor apart). NCCL itself is then SKIPPED (it was not tested), with the gloo figures attached; wrong gloo
sums still FAIL, because the shared code path is broken.
In a multi-node job (`verify run` under torchrun or srun: see verify/cluster/job.py and
verify/cluster/jobrun.py) this process joins that job as its rank: one all-reduce over every rank of every
node, then the same sizes within each node and across nodes (one rank per node), and the transport NCCL chose
between nodes, read from its INFO log ("via NET/IB", "via NET/Socket"). Sockets where InfiniBand/RoCE devices
exist are a FAIL naming why (no /dev/infiniband in the container, no libibverbs, memlock too low,
NCCL_IB_DISABLE): the host check's collect() supplies the facts.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from verify.cluster.distributed import (
    CollectiveConfig,
    LaunchOutcome,
    RankResult,
    launch_local,
    run_single,
    run_worker,
    torchrun_env,
)
from verify.cluster.job import detect
from verify.context import Context
from verify.result import Result, Status

NAME = "nccl"
DESCRIPTION = (
    "all_reduce on one process per GPU: exact sums at 4 sizes, algbw/busbw 1 MiB..1 GiB (gloo on CPU)"
)
DEFAULT_TIMEOUT_S = 180.0
IMPORTS = ("torch",)  # imported once, before CUDA, by the fork server
EXCLUSIVE = True  # a GPU measurement: runs alone among the exclusive checks
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


_VIA = re.compile(r"via (NET/[A-Za-z][\w-]*)")
_USING = re.compile(r"Using network (\S+)")


def parse_transport(log: str) -> str | None:
    """The network transport in NCCL's INFO log: "NET/IB", "NET/Socket", a plugin's "NET/<name>", or None
    when no channel went through the network (one node: P2P/SHM only) or the log says nothing."""
    via = _VIA.findall(log)
    if via:
        kinds = sorted(set(via))
        return "NET/IB" if "NET/IB" in kinds else kinds[0]
    using = _USING.findall(log)
    return f"NET/{using[0]}" if using else None


def socket_fallback_problem(transport: str | None, facts: Any, libibverbs: bool) -> str | None:
    """Why NCCL fell back to TCP sockets between nodes although this host has InfiniBand/RoCE devices, or
    None when sockets are all there is (or NCCL did not use sockets). facts: verify.checks.host.HostFacts."""
    if transport != "NET/Socket":
        return None
    from verify.checks.host import _memlock_state, usable_ib

    if not facts.ib_devices and not facts.rdma_without_verbs:
        return None
    causes: list[str] = []
    if facts.nccl_ib_disable:
        causes.append("NCCL_IB_DISABLE is set; fix: unset NCCL_IB_DISABLE")
    if facts.rdma_without_verbs and not facts.ib_devices:
        causes.append(
            f"RDMA devices {', '.join(facts.rdma_without_verbs)} exist but /dev/infiniband is not in this "
            "container; fix: docker run --device /dev/infiniband (Slurm/pyxis: it is passed by default; "
            "Kubernetes: the RDMA device plugin)"
        )
    if not libibverbs:
        causes.append(
            "libibverbs is not installed, so NCCL cannot open the devices; fix: apt-get install "
            "libibverbs1 ibverbs-providers (rdma-core) in the image"
        )
    memlock = _memlock_state(facts)[0]
    if memlock:
        causes.append(memlock)
    if facts.ib_devices and not usable_ib(facts):
        listed = ", ".join(d.describe() for d in facts.ib_devices)
        causes.append(f"no verbs device has an ACTIVE port ({listed}); fix: check the cable/switch (ibstat)")
    if not causes:
        causes.append("NCCL's log says why (NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET)")
    return "NCCL fell back to TCP sockets between nodes although InfiniBand/RoCE devices exist: " + "; ".join(
        causes
    )


def has_libibverbs() -> bool:
    return ctypes.util.find_library("ibverbs") is not None


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

    topo = detect(os.environ) if torchrun_env() else None
    if topo is not None:
        return _run_in_job(ctx, cfg, topo, details, done)
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
        if backend == "nccl" and nprocs == 1:  # one GPU: this process is the rank (no second import)
            details["launch"] = "1 rank in the check's own process, env:// rendezvous on 127.0.0.1"
            outcome = run_single(cfg)
        else:
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


def _transport_log() -> Path | None:
    """Ask NCCL for its INIT/NET log in a file we can read (unless the user already chose NCCL_DEBUG)."""
    if "NCCL_DEBUG" in os.environ or "NCCL_DEBUG_FILE" in os.environ:
        return None
    folder = Path(tempfile.mkdtemp(prefix="verify-nccl-log-"))
    os.environ.update(
        NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET", NCCL_DEBUG_FILE=str(folder / "nccl.%h.%p.log")
    )
    return folder


def _run_in_job(ctx: Context, cfg: CollectiveConfig, topo: Any, details: dict[str, Any], done: Any) -> Result:
    """This process is one rank of a multi-node job: all-reduce over every rank, within and across nodes."""
    details["launch"] = (
        f"{topo.launcher} job: rank {topo.rank} of {topo.world_size}, node {topo.node_rank} of "
        f"{topo.nnodes}, {topo.local_world_size} ranks per node"
    )
    log_dir = _transport_log() if cfg.backend == "nccl" else None
    try:
        mine = run_worker(cfg)
    except Exception as exc:
        return done(
            Status.FAIL,
            f"rank {topo.rank} (node {topo.node_rank}): {type(exc).__name__}: {exc}; a rank that died or "
            "hangs elsewhere shows here as a timeout: the job report names it",
            {},
            details,
        )
    if cfg.backend == "gloo":
        transport = "gloo/TCP"
    elif topo.nnodes < 2:
        transport = "one node: no network"
    else:
        text = "".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("*"))) if log_dir else ""
        if log_dir is None:
            transport = "unknown (NCCL_DEBUG/NCCL_DEBUG_FILE set by the user: see its output)"
        else:  # no channel through the network: NCCL found the "nodes" on one host (P2P or shared memory)
            transport = parse_transport(text) or "P2P/SHM (no network: the nodes share a host)"
    details |= {"transport": transport, "rows": mine.rows, "intra_rows": mine.intra_rows}
    details["inter_rows"] = mine.inter_rows
    figures: dict[str, Any] = {
        "ranks": topo.world_size,
        "nodes": mine.nnodes,
        "backend": cfg.backend,
        "transport": transport,
    } | _figures(mine.rows, cfg.backend)
    for label, rows in (("intra", mine.intra_rows), ("inter", mine.inter_rows)):
        for row in rows:
            figures[f"{label}_busbw_GBps_{row['size']}"] = row["busbw_GBps"]
    problems = [f"wrong sum: {w}" for w in mine.wrong] + (
        [] if mine.sums_ok else ["another rank saw wrong sums"]
    )
    if cfg.backend == "nccl" and topo.nnodes > 1:
        from verify.checks.host import collect

        fallback = socket_fallback_problem(transport, collect(), has_libibverbs())
        if fallback:
            problems.append(fallback)
    if problems:
        return done(Status.FAIL, "; ".join(dict.fromkeys(problems)), figures, details)
    big = mine.rows[-1]
    split = ""
    if mine.intra_rows:
        split += f"; within node {mine.node} {mine.intra_rows[-1]['busbw_GBps']:g}"
    if mine.inter_rows:
        split += f"; across {mine.inter_rows[-1]['ranks']} nodes {mine.inter_rows[-1]['busbw_GBps']:g}"
    summary = (
        f"{topo.world_size} ranks on {mine.nnodes} nodes ({transport}): sums exact at "
        f"{len(cfg.check_numels)} sizes; busbw {big['busbw_GBps']:g} GB/s at {big['size']} "
        f"(algbw {big['algbw_GBps']:g}){split}"
    )
    if cfg.backend == "gloo":
        return done(Status.SKIP, f"no GPU: NCCL not tested; gloo: {summary}", figures, details)
    return done(Status.PASS, summary, figures, details)
