"""`verify sweep` as one rank of a multi-node job: the rounds of verify.cluster.sweep, timed for real.

Protocol, through the job's store (verify.cluster.jobrun.Store: torchrun's agent store, or rank 0's under
srun):
  1. The first rank of each node posts "sweep-node": its host name and the address the other nodes reach it
     at. Rank 0 (the coordinator) waits for every node (deadline: SLACK_S); a node that never comes is named.
  2. Each round, rank 0 posts "sweep-round/<r>": the groups of nodes to time at once. In every group the
     first rank of each member node starts one worker process (verify.cluster.distributed: the exact-sum
     check and one timed all-reduce size) with the group's own rendezvous: the group's first node picks a
     free port and posts it. A worker still running at the trial's deadline is killed with its process
     group: the trial "timed out" (a hang costs one deadline, never the sweep).
  3. Each member posts its trial's outcome; rank 0 waits for them (the trial's deadline + SLACK_S), names
     a node that never answers as dead or hung (it is left out of later rounds), and plans the next round.
  4. Rank 0 posts "sweep-done" with the exit code, prints the verdict and writes the JSON report. The other
     ranks of every node only wait for "sweep-done".
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify.cluster.distributed import CollectiveConfig, MiB, free_port, kill_group, read_rank, start_rank
from verify.cluster.job import Topology
from verify.cluster.jobrun import SLACK_S, Store, StoreUnreachable
from verify.cluster.sweep import (
    DEFAULT_RETRIES,
    DEFAULT_SCALE_TOLERANCE_PCT,
    DEFAULT_TOLERANCE_PCT,
    Sweep,
    Trial,
)

__all__ = ["DEFAULT_SIZE", "DEFAULT_TRIAL_TIMEOUT_S", "StoreUnreachable", "SweepOptions", "run_sweep"]

DEFAULT_TRIAL_TIMEOUT_S = 120.0
DEFAULT_SIZE = {"nccl": 256 * MiB, "gloo": 4 * MiB}  # NCCL: near peak busbw between nodes; gloo: a few ms


@dataclass(frozen=True)
class SweepOptions:
    backend: str  # "nccl" or "gloo"
    size_bytes: int
    trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT
    scale_tolerance_pct: float = DEFAULT_SCALE_TOLERANCE_PCT
    min_busbw_GBps: float = 0.0
    retries: int = DEFAULT_RETRIES
    slack_s: float = SLACK_S  # added to every wait between nodes; at most the trial timeout

    def __post_init__(self) -> None:
        object.__setattr__(self, "slack_s", min(self.slack_s, self.trial_timeout_s))

    def collective(self) -> CollectiveConfig:
        base = CollectiveConfig.for_backend(self.backend, quick=True)
        return CollectiveConfig(
            self.backend,
            check_numels=[1000],
            bw_bytes=[self.size_bytes],
            warmup=base.warmup,
            iters=base.iters,
            op_timeout_s=self.trial_timeout_s,
        )

    @property
    def round_wait_s(self) -> float:
        """How long a node waits for the next round: the coordinator's whole round, with margin."""
        return self.trial_timeout_s + 5 * self.slack_s


def default_scale_tolerance(backend: str) -> float:
    """NCCL's busbw over many nodes stays near a pair's (that is what busbw is for); gloo's on the CPU does
    not (measured: 4 ranks at 0.29 GB/s beside pairs at 0.63 on one 2-core host), so there only a group that
    fails or hangs counts (100%: any figure passes)."""
    return DEFAULT_SCALE_TOLERANCE_PCT if backend == "nccl" else 100.0


def local_address(toward: str) -> str:
    """This node's address as other nodes reach it: the source address of the route toward the store's
    host (no packet is sent), else what the host name resolves to. On the store's own host that route is
    the loopback (and Debian's /etc/hosts maps the host name to 127.0.1.1): see reachable_address."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((toward, 9))
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def reachable_address(mine: str, others: Sequence[str]) -> str:
    """`mine`, unless it is a loopback address and another node's is not: then the source address of the
    route toward that node, the interface it reaches this one through (a loopback address named node 0 bad
    in every trial it hosted)."""
    if not is_loopback(mine):
        return mine
    for other in others:
        if not is_loopback(other):
            found = local_address(other)
            if not is_loopback(found):
                return found
    return mine


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run_trial(
    store: Store,
    opts: SweepOptions,
    round_no: int,
    index: int,
    group: Sequence[int],
    me: int,
    addresses: dict[int, str],
) -> dict[str, Any]:
    """This node's part of one group's all-reduce: {"busbw_GBps": ...} or {"error": why}."""
    key = f"sweep-port/{round_no}"
    if group[0] == me:
        port = free_port()
        store.post(key, index, port)
    else:
        port = store.wait(key, index, time.monotonic() + opts.slack_s)
        if port is None:
            return {"error": f"node {group[0]} never opened the trial's rendezvous"}
    env = {
        "RANK": str(group.index(me)),
        "WORLD_SIZE": str(len(group)),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": "0",  # one group: no intra/inter-node split inside a trial
        "MASTER_ADDR": addresses[group[0]],
        "MASTER_PORT": str(port),
    }
    with tempfile.TemporaryDirectory(prefix="verify-sweep-") as tmp:
        folder = Path(tmp)
        proc = start_rank(opts.collective(), env, folder, "trial")
        try:  # the worker's start-up (python, torch) gets the slack on top of the trial's own timeout
            proc.wait(timeout=opts.trial_timeout_s + opts.slack_s)
        except subprocess.TimeoutExpired:  # a hang
            kill_group(proc)
            _, tail = read_rank(folder, "trial")
            said = f" (its last words: {_last_line(tail)})" if tail.strip() else ""
            return {"error": f"timed out after {opts.trial_timeout_s + opts.slack_s:g} s{said}"}
        result, tail = read_rank(folder, "trial")
    if result is None:
        return {"error": f"the worker exited with {proc.returncode}: {_last_line(tail)}"}
    if result.error:
        return {"error": result.error.splitlines()[0][:300]}
    if result.wrong or not result.sums_ok:
        return {"error": "wrong sums: " + "; ".join(result.wrong or ["on another node"])}
    row = result.rows[0]
    return {"busbw_GBps": row["busbw_GBps"], "algbw_GBps": row["algbw_GBps"], "time_us": row["time_us"]}


def _trial(round_no: int, phase: str, nodes: tuple[int, ...], got: dict[int, Any]) -> Trial:
    """One group's outcome from what its members posted: the figure, or every member's error."""
    figures = [got[n]["busbw_GBps"] for n in nodes if n in got and "busbw_GBps" in got[n]]
    errors = [f"node {n}: {got[n]['error']}" for n in nodes if n in got and "error" in got[n]]
    silent = [f"node {n}: no answer" for n in nodes if n not in got]
    if figures and not errors and not silent:
        return Trial(round_no, phase, nodes, figures[0])
    return Trial(round_no, phase, nodes, None, "; ".join(errors + silent))


@dataclass
class SweepOutcome:
    sweep: Sweep | None  # rank 0 only
    exit_code: int


def run_sweep(topo: Topology, opts: SweepOptions, say: Callable[[str], None]) -> SweepOutcome:
    """This rank's share of the sweep (see the module docstring)."""
    store = Store(topo, connect_timeout_s=opts.slack_s * 2)
    if not topo.is_node_leader:
        bound = (topo.nnodes + 8) * opts.round_wait_s
        done = store.wait("sweep-done", 0, time.monotonic() + bound)
        return SweepOutcome(None, 1 if done is None else int(done["exit_code"]))
    me = topo.node_rank
    store.post("sweep-node", me, {"host": socket.gethostname(), "address": local_address(topo.master_addr)})
    if topo.is_leader:
        return _coordinate(store, topo, opts, say)
    return SweepOutcome(None, _take_part(store, topo, opts))


def _take_part(store: Store, topo: Topology, opts: SweepOptions) -> int:
    """A node other than rank 0's: time its groups until rank 0 says the sweep is done."""
    me, round_no = topo.node_rank, 1
    while True:
        plan = store.wait("sweep-round", round_no, time.monotonic() + opts.round_wait_s + opts.slack_s)
        if plan is None:
            return 1  # rank 0 is gone: it names nothing more, and this node cannot either
        if plan.get("done"):
            return int(plan["exit_code"])
        addresses = {int(k): v for k, v in plan["addresses"].items()}
        for index, group in enumerate(plan["groups"]):
            if me in group:
                outcome = run_trial(store, opts, round_no, index, group, me, addresses)
                store.post(f"sweep-trial/{round_no}", me, outcome)
        round_no += 1


def _coordinate(store: Store, topo: Topology, opts: SweepOptions, say: Callable[[str], None]) -> SweepOutcome:
    everyone = list(range(topo.nnodes))
    joined, missing = store.gather("sweep-node", everyone, time.monotonic() + opts.slack_s * 2)
    names = {n: str(joined[n]["host"]) for n in joined}
    addresses = {n: str(joined[n]["address"]) for n in joined}
    if topo.node_rank in addresses:
        others = [a for n, a in addresses.items() if n != topo.node_rank]
        addresses[topo.node_rank] = reachable_address(addresses[topo.node_rank], others)
    sweep = Sweep(
        everyone,
        names=names,
        tolerance_pct=opts.tolerance_pct,
        scale_tolerance_pct=opts.scale_tolerance_pct,
        min_busbw_GBps=opts.min_busbw_GBps,
        retries=opts.retries,
    )
    sweep.dead.update(dict.fromkeys(missing, f"never joined the sweep within {opts.slack_s * 2:g} s"))
    say(
        f"sweep: {len(joined)} of {topo.nnodes} nodes, {opts.backend} all-reduce of "
        f"{opts.size_bytes / MiB:g} MiB, trial timeout {opts.trial_timeout_s:g} s"
        + ("" if opts.scale_tolerance_pct < 100 else "; groups of 3+ nodes judged on hangs and errors only")
    )
    while (plan := sweep.next_round()) is not None:
        round_no, started, again = sweep.round, time.monotonic(), sweep.retiming
        groups = [list(nodes) for _, nodes in plan]
        store.post(
            "sweep-round",
            round_no,
            {"groups": groups, "addresses": {str(k): v for k, v in addresses.items()}},
        )
        for index, group in enumerate(groups):
            if topo.node_rank in group:
                outcome = run_trial(store, opts, round_no, index, group, topo.node_rank, addresses)
                store.post(f"sweep-trial/{round_no}", topo.node_rank, outcome)
        members = sorted({n for g in groups for n in g})
        deadline = started + opts.trial_timeout_s + 3 * opts.slack_s  # from the round's start: one deadline
        got, silent = store.gather(f"sweep-trial/{round_no}", members, deadline)
        trials = [_trial(round_no, phase, nodes, got) for phase, nodes in plan]
        waited = f"no answer within {opts.trial_timeout_s + 3 * opts.slack_s:g} s of round {round_no}"
        sweep.record(trials, dict.fromkeys(silent, f"{waited}: it died or hangs"))
        kind = f"{plan[0][0]}, slow before: timed again" if again else plan[0][0]
        say(f"round {round_no} ({kind}): " + ", ".join(_line(sweep, t) for t in trials))
    exit_code = 1 if sweep.findings() else 0
    store.post("sweep-round", sweep.round + 1, {"done": True, "exit_code": exit_code})
    store.post("sweep-done", 0, {"exit_code": exit_code})
    if store.hosting:  # this process hosts the store: let the others read "done" before it goes
        time.sleep(1.0)
    return SweepOutcome(sweep, exit_code)


def _line(sweep: Sweep, trial: Trial) -> str:
    mark = " SLOW" if sweep.reference_GBps() is not None and sweep.is_bad(trial) else ""
    return f"{sweep.group_name(trial.nodes)} {sweep.describe(trial)}{mark}"
