"""`verify run` as one rank of a multi-node job: who runs what, who waits for whom, and for how long.

Protocol (every wait has a deadline, so a dead or hung rank never hangs the job; rank 0 names the missing):
  1. Local rank 0 of each node runs the node's local checks (every selected check but nccl); the other
     local ranks run none. Each rank then posts "ready".
  2. Rank 0 waits for every rank's "ready" (at most the local checks' summed timeouts + SLACK_S), then posts
     "go" with the ranks that never came. Every rank waits for "go" just as long (+ SLACK_S).
  3. Every rank runs the nccl check (one all-reduce over all ranks of all nodes) unless a rank is missing:
     then nccl FAILs naming it without starting a collective that could only hang.
  4. Each rank posts its nccl result; local rank 0 writes the node's report (--report-dir) and posts it.
  5. Rank 0 gathers the nccl results and node reports (deadline: the nccl timeout + SLACK_S), writes the job's
     report, prints the one table, and posts "done" with the exit code; the others exit with that code.
The messages travel through a TCPStore: torchrun's agent store under torchrun, one hosted by rank 0's
`verify run` at MASTER_ADDR:MASTER_PORT under srun (the nccl check then joins it as torchrun's workers do,
TORCHELASTIC_USE_AGENT_STORE=True).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from verify.cluster.job import Topology
from verify.context import Context
from verify.result import Result, Status
from verify.runner import CheckSpec, Progress, effective_timeout, run_checks

SLACK_S = 30.0  # added to every wait: process start, torch import, store round trips (at most --timeout)
POLL_S = 0.2
NCCL = "nccl"


class StoreUnreachable(RuntimeError):
    """The job's store could not be reached or hosted (the message says where and the fix)."""


class StoreLost(StoreUnreachable):
    """The job's store went away mid-job: under srun rank 0's `verify run` hosts it, so rank 0 is gone."""


class Store:
    """The job's message board: JSON values under "verify/<key>/<rank>", read with deadlines."""

    def __init__(self, topo: Topology, connect_timeout_s: float) -> None:
        import torch.distributed as dist

        # under torchrun its agent hosts the store; under srun rank 0's `verify run` does
        self.hosting = topo.is_leader and topo.launcher == "slurm"
        try:
            self._tcp = dist.TCPStore(
                topo.master_addr,
                topo.master_port,
                topo.world_size,
                is_master=self.hosting,
                timeout=timedelta(seconds=connect_timeout_s),
                wait_for_workers=False,
            )
        except (RuntimeError, OSError) as exc:  # DistNetworkError is a RuntimeError
            verb = "host" if self.hosting else "reach"
            raise StoreUnreachable(
                f"rank {topo.rank} could not {verb} the job's store at {topo.master_addr}:{topo.master_port} "
                f"within {connect_timeout_s:.0f} s ({type(exc).__name__}: {str(exc).splitlines()[0]}): "
                "rank 0 died, never started, or the port is taken or blocked; fix: see rank 0's output, "
                "or set MASTER_PORT to a free port (the same on every rank)"
            ) from None
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self._prefix = f"verify/{attempt}"
        self._where = f"{topo.master_addr}:{topo.master_port}"
        self._rank = topo.rank
        self._host = "rank 0's `verify run`" if topo.launcher == "slurm" else "torchrun's agent on node 0"

    def _key(self, key: str, who: int) -> str:
        return f"{self._prefix}/{key}/{who}"

    def _lost(self, exc: Exception, doing: str) -> StoreLost:
        return StoreLost(
            f"rank {self._rank} lost the job's store at {self._where} while {doing} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}): "
            f"{self._host} hosts it, so it died or was interrupted; fix: see rank 0's output (its node's "
            "report, if it wrote one, says why), then rerun the job"
        )

    def post(self, key: str, who: int, value: Any) -> None:
        try:
            self._tcp.set(self._key(key, who), json.dumps(value))
        except (RuntimeError, OSError) as exc:  # DistNetworkError, DistStoreError: RuntimeErrors
            raise self._lost(exc, f"posting {key!r}") from None

    def gather(self, key: str, who: Sequence[int], deadline: float) -> tuple[dict[int, Any], list[int]]:
        """The values posted by `who` before the deadline, and who never posted."""
        got: dict[int, Any] = {}
        while True:
            for w in who:
                try:
                    if w not in got and self._tcp.check([self._key(key, w)]):
                        got[w] = json.loads(self._tcp.get(self._key(key, w)))
                except (RuntimeError, OSError) as exc:
                    raise self._lost(exc, f"waiting for {key!r}") from None
            if len(got) == len(who) or time.monotonic() > deadline:
                return got, [w for w in who if w not in got]
            time.sleep(POLL_S)

    def wait(self, key: str, who: int, deadline: float) -> Any | None:
        got, _ = self.gather(key, [who], deadline)
        return got.get(who)


@dataclass
class JobOutcome:
    """What one rank ends with: its node's local results, its nccl result and (rank 0) the job's view."""

    local: list[Result]
    nccl: Result | None
    interrupted: bool
    node_report: Path | None = None
    missing_ranks: list[int] = field(default_factory=list)
    missing_nodes: list[int] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    rank_results: dict[int, dict[str, Any]] = field(default_factory=dict)
    exit_code: int | None = None  # set on non-leaders from rank 0's "done"


def prepare_env(topo: Topology) -> None:
    """Export the topology as torchrun would, so the nccl check's process joins the same job."""
    os.environ.update(topo.torch_env())
    if topo.launcher == "slurm":  # rank 0's `verify run` hosts the store; the check connects to it
        os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "True"


def node_report_name(topo: Topology, hostname: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in hostname)
    return f"node{topo.node_rank:04d}-{safe}.json"


def missing_result(who: Sequence[int], topo: Topology, what: str, waited_s: float) -> Result:
    """nccl's FAIL when ranks never reached it: naming them and their nodes."""
    per_node = topo.local_world_size
    names = ", ".join(f"rank {r} (node {r // per_node})" for r in who)
    return Result(
        NCCL,
        Status.FAIL,
        f"{names} never {what} within {waited_s:.0f} s: the rank died or hangs; its node's log and report "
        f"say why; fix the node and rerun (the all-reduce was not started: it could only hang)",
        details={"missing_ranks": list(who)},
    )


def merge_nccl(
    mine: Result, per_rank: dict[int, dict[str, Any]], missing: list[int], topo: Topology
) -> Result:
    """The job-wide nccl result: rank 0's figures; FAIL naming every rank that failed or sent nothing."""
    problems: list[str] = []
    for rank in sorted(per_rank):
        other = Result.from_dict(per_rank[rank])
        if rank != topo.rank and other.status is Status.FAIL:
            problems.append(f"rank {rank} (node {rank // topo.local_world_size}): {other.summary}")
    if missing:
        names = ", ".join(f"{r} (node {r // topo.local_world_size})" for r in missing)
        problems.append(f"ranks {names} sent no nccl result (died or hung)")
    details = dict(mine.details) | {
        "per_rank": {str(r): per_rank[r]["status"] for r in sorted(per_rank)},
        "missing_ranks": missing,
    }
    if not problems:
        return Result(mine.name, mine.status, mine.summary, mine.figures, details, mine.duration_s)
    head = [mine.summary] if mine.status is Status.FAIL else []
    return Result(
        mine.name, Status.FAIL, "; ".join(head + problems)[:2000], mine.figures, details, mine.duration_s
    )


def nodes_result(
    nodes: list[dict[str, Any]], missing_nodes: list[int], topo: Topology, report_dir: Path | None
) -> Result:
    """One line for the whole job: every node reported, and which node's local checks failed."""
    problems = [
        f"node {n['node_rank']} ({n['hostname']}): {', '.join(n['failed'])} failed "
        f"(see {n['report'] or 'its log'})"
        for n in nodes
        if n["failed"]
    ]
    if missing_nodes:
        problems.append(
            f"nodes {missing_nodes} sent no report: their local rank 0 died or hung; fix the node and rerun"
        )
    figures = {"nodes": topo.nnodes, "ranks_per_node": topo.local_world_size, "reported": len(nodes)}
    details = {"nodes": nodes, "missing_nodes": missing_nodes}
    if problems:
        return Result("nodes", Status.FAIL, "; ".join(problems)[:2000], figures, details)
    where = f"; node reports in {report_dir}" if report_dir else ""
    return Result(
        "nodes",
        Status.PASS,
        f"{topo.nnodes} nodes x {topo.local_world_size} ranks ({topo.launcher}) all reported{where}",
        figures,
        details,
    )


def run_job(
    specs: Sequence[CheckSpec],
    ctx: Context,
    topo: Topology,
    timeout_override_s: float | None,
    progress: Progress | None,
    write_node_report: Callable[[list[Result]], Path | None],
) -> JobOutcome:
    """Run this rank's share of the job (see the module docstring); rank 0 also gathers everyone's."""
    local_specs = [s for s in specs if s.name != NCCL]
    nccl_specs = [s for s in specs if s.name == NCCL]
    slack = min(SLACK_S, timeout_override_s) if timeout_override_s else SLACK_S
    local_budget = sum(effective_timeout(s, timeout_override_s) for s in local_specs) + slack
    nccl_budget = sum(effective_timeout(s, timeout_override_s) for s in nccl_specs) + slack
    prepare_env(topo)
    store = Store(topo, connect_timeout_s=local_budget)
    outcome_store[0] = store  # kept until the process ends: under srun rank 0's store serves everyone
    everyone = list(range(topo.world_size))

    local: list[Result] = []
    interrupted = False
    if topo.is_node_leader and local_specs:
        ran = run_checks(local_specs, ctx, timeout_override_s, progress)
        local, interrupted = ran.results, ran.interrupted
    nccl: Result | None = None
    outcome = JobOutcome(local=local, nccl=None, interrupted=interrupted)
    if topo.is_node_leader and local_specs:
        # Written now and again at the end: a job that dies before then (srun aborts a step whose launch
        # failed on another node) still leaves this node's own findings for `verify fleet`.
        pending = Result(NCCL, Status.SKIP, "not finished: the job ended before this node's all-reduce did")
        write_node_report([*local, pending] if nccl_specs else local)
    try:
        store.post("ready", topo.rank, {"host": socket.gethostname(), "node": topo.node_rank})

        t_ready = time.monotonic()
        if topo.is_leader:
            _, missing = store.gather("ready", everyone, t_ready + local_budget)
            store.post("go", 0, {"missing": missing})
        else:
            go = store.wait("go", 0, t_ready + local_budget + slack)
            missing = [0] if go is None else list(go["missing"])

        if nccl_specs:
            if missing:
                nccl = missing_result(missing, topo, "reached the all-reduce", time.monotonic() - t_ready)
            else:
                ran = run_checks(nccl_specs, ctx, timeout_override_s, progress if topo.is_leader else None)
                nccl, interrupted = ran.results[0], interrupted or ran.interrupted
            store.post("nccl", topo.rank, nccl.to_dict())

        outcome.nccl, outcome.interrupted = nccl, interrupted
        t_done = time.monotonic()
        if topo.is_node_leader:
            outcome.node_report = write_node_report(local + ([nccl] if nccl else []))
            failed = [r.name for r in local if r.status is Status.FAIL]
            store.post(
                "node",
                topo.node_rank,
                {
                    "node_rank": topo.node_rank,
                    "hostname": socket.gethostname(),
                    "report": str(outcome.node_report) if outcome.node_report else None,
                    "failed": failed,
                    "summary": {s.value: sum(1 for r in local if r.status is s) for s in Status},
                },
            )
    except StoreLost:
        # Rank 0 is gone. This node's own findings still count: its leader writes the node report (for
        # `verify fleet`) before the CLI prints why the job cannot finish.
        if topo.is_node_leader and outcome.node_report is None:
            lost = Result(NCCL, Status.FAIL, "not finished: the job's store (rank 0) went away mid-job")
            outcome.node_report = write_node_report([*local, nccl or lost] if nccl_specs else local)
        raise
    if topo.is_leader:
        deadline = t_done + nccl_budget
        if nccl_specs:  # a rank that never came to "ready" cannot post: it is missing already
            came = [r for r in everyone if r not in missing]
            outcome.rank_results, late = store.gather("nccl", came, deadline)
            outcome.missing_ranks = sorted(set(missing) | set(late))
        got, outcome.missing_nodes = store.gather("node", list(range(topo.nnodes)), deadline)
        outcome.nodes = [got[n] for n in sorted(got)]
    else:
        done = store.wait("done", 0, t_done + nccl_budget + slack)
        outcome.exit_code = 1 if done is None else int(done["exit_code"])
    return outcome


outcome_store: list[Store | None] = [None]


def announce_done(exit_code: int) -> None:
    """Rank 0: tell the waiting ranks the job's exit code, then give them a moment to read it."""
    store = outcome_store[0]
    if store is None:
        return
    store.post("done", 0, {"exit_code": exit_code})
    if store.hosting:  # this process hosts the store: let the waiting ranks read "done" before it goes
        time.sleep(5 * POLL_S)
