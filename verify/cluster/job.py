"""Where this process stands in a multi-node job: one topology read from torchrun's or Slurm's environment.

Why one model: the CLI decides from it who runs the node-local checks (local rank 0 of each node), who
prints and writes the job report (global rank 0), and which ranks and nodes to wait for; the nccl check
builds its intra-node and inter-node groups from it. torchrun and `srun` describe the same facts with
different variables, so they are read here once and nowhere else.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (the node's rank), MASTER_ADDR and
MASTER_PORT (its agent's store). `srun` alone sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID,
SLURM_NNODES, SLURM_STEP_NODELIST (compressed, e.g. "gpu[01-03,07]") and SLURM_STEP_TASKS_PER_NODE
("4(x2)"): MASTER_ADDR is then the first host of the node list and MASTER_PORT is derived from the job id
(both only where the user has not set them). Pure functions of an environment mapping: no torch, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

SLURM_PORT_BASE = 29500  # MASTER_PORT under srun: SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN
SLURM_PORT_SPAN = 1000
TORCHRUN_REQUIRED = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SLURM_REQUIRED = ("SLURM_PROCID", "SLURM_NTASKS")


class JobError(ValueError):
    """The environment says "a job" but not consistently; the message names the variable and the fix."""


@dataclass(frozen=True)
class Topology:
    launcher: str  # "torchrun" or "slurm"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    nnodes: int
    master_addr: str
    master_port: int
    hosts: tuple[str, ...] = ()  # Slurm's node list, expanded (empty under torchrun)
    job_id: str = ""

    @property
    def is_leader(self) -> bool:
        """Global rank 0: prints the table and writes the job's report."""
        return self.rank == 0

    @property
    def is_node_leader(self) -> bool:
        """Local rank 0: runs this node's local checks and writes the node's report."""
        return self.local_rank == 0

    def torch_env(self) -> dict[str, str]:
        """The variables torch's env:// rendezvous and the nccl check read (what torchrun would set)."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "GROUP_RANK": str(self.node_rank),
            "VERIFY_NNODES": str(self.nnodes),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "launcher": self.launcher,
            "rank": self.rank,
            "world_size": self.world_size,
            "local_rank": self.local_rank,
            "local_world_size": self.local_world_size,
            "node_rank": self.node_rank,
            "nnodes": self.nnodes,
            "master_addr": self.master_addr,
            "master_port": self.master_port,
        }


# ---- Slurm's hostlist syntax -------------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets: "a[1,2],b" -> ["a[1,2]", "b"]."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise JobError(f"hostlist {text!r}: ']' without '['")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise JobError(f"hostlist {text!r}: '[' without ']'")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _expand_one(item: str) -> list[str]:
    """One hostlist item, any number of bracket groups: "r[1-2]-n[01-02]" -> 4 names, zero padding kept."""
    open_at = item.find("[")
    if open_at < 0:
        return [item]
    close_at = item.index("]", open_at)
    prefix, body, rest = item[:open_at], item[open_at + 1 : close_at], item[close_at + 1 :]
    numbers: list[str] = []
    for piece in body.split(","):
        match = _RANGE.match(piece.strip())
        if not match:
            raise JobError(f"hostlist item {item!r}: {piece!r} is not N or N-M")
        lo, hi = match.group(1), match.group(2) or match.group(1)
        if int(hi) < int(lo):
            raise JobError(f"hostlist item {item!r}: range {piece!r} runs backwards")
        width = len(lo) if lo.startswith("0") else 0
        numbers.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    tails = _expand_one(rest)
    return [f"{prefix}{n}{tail}" for n in numbers for tail in tails]


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host list as host names, in order: "node[01-03,07],login" ->
    ["node01", "node02", "node03", "node07", "login"] (what `scontrol show hostnames` prints)."""
    return [host for item in _split_top(text) for host in _expand_one(item)]


def expand_tasks_per_node(text: str) -> list[int]:
    """SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE: "4(x2),3" -> [4, 4, 3]."""
    counts: list[int] = []
    for piece in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", piece)
        if not match:
            raise JobError(f"tasks per node {text!r}: {piece!r} is not N or N(xK)")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


# ---- reading the environment -------------------------------------------------------------------------------


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None:
        if default is None:
            raise JobError(f"{name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise JobError(f"{name}={value!r} is not a whole number") from None


def _torchrun(env: Mapping[str, str]) -> Topology:
    world = _int(env, "WORLD_SIZE")
    local_world = _int(env, "LOCAL_WORLD_SIZE", 1)
    if local_world < 1 or world % local_world:
        raise JobError(
            f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local_world}: verify needs the same "
            "number of ranks on every node; fix: torchrun --nproc-per-node M on every node"
        )
    rank = _int(env, "RANK")
    local_rank = _int(env, "LOCAL_RANK", 0)
    node_rank = _int(env, "GROUP_RANK", rank // local_world)
    return Topology(
        launcher="torchrun",
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=node_rank,
        nnodes=world // local_world,
        master_addr=env["MASTER_ADDR"],
        master_port=_int(env, "MASTER_PORT"),
        job_id=env.get("TORCHELASTIC_RUN_ID", ""),
    )


def _slurm(env: Mapping[str, str]) -> Topology:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise JobError(
            "SLURM_PROCID is set but no SLURM_STEP_NODELIST/SLURM_JOB_NODELIST: cannot find the first node; "
            "fix: start verify with srun, or set MASTER_ADDR"
        )
    hosts = tuple(expand_hostlist(nodelist))
    world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS"))
    nnodes = _int(env, "SLURM_STEP_NUM_NODES", _int(env, "SLURM_NNODES", len(hosts)))
    node_rank = _int(env, "SLURM_NODEID", 0)
    per_node_text = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if per_node_text:
        per_node = expand_tasks_per_node(per_node_text)
        local_world = per_node[node_rank] if node_rank < len(per_node) else per_node[-1]
    else:
        local_world = max(1, world // max(nnodes, 1))
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "0"
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:
        port = SLURM_PORT_BASE + (int(job_id) if job_id.isdigit() else 0) % SLURM_PORT_SPAN
    return Topology(
        launcher="slurm",
        rank=_int(env, "SLURM_PROCID"),
        world_size=world,
        local_rank=_int(env, "SLURM_LOCALID", 0),
        local_world_size=local_world,
        node_rank=node_rank,
        nnodes=nnodes,
        master_addr=env.get("MASTER_ADDR") or hosts[0],
        master_port=port,
        hosts=hosts,
        job_id=job_id,
    )


def detect(env: Mapping[str, str]) -> Topology | None:
    """The job this process is one rank of, or None for a plain single-host run.

    torchrun's variables win over Slurm's (torchrun started by srun, one task per node, is a torchrun job).
    A Slurm step of one task (srun -n1 verify run, or verify run inside an sbatch script) is no job.
    """
    if all(name in env for name in TORCHRUN_REQUIRED):
        return _torchrun(env)
    if all(name in env for name in SLURM_REQUIRED):
        topo = _slurm(env)
        return topo if topo.world_size > 1 else None
    return None


def validate(topo: Topology) -> str | None:
    """What is inconsistent in a topology (a rank outside the world, ...), or None."""
    if not 0 <= topo.rank < topo.world_size:
        return f"rank {topo.rank} is outside a world of {topo.world_size}"
    if not 0 <= topo.local_rank < topo.local_world_size:
        return f"local rank {topo.local_rank} is outside {topo.local_world_size} ranks per node"
    if not 0 <= topo.node_rank < topo.nnodes:
        return f"node rank {topo.node_rank} is outside {topo.nnodes} nodes"
    if topo.local_world_size * topo.nnodes != topo.world_size:
        return (
            f"{topo.nnodes} nodes x {topo.local_world_size} ranks per node != world size {topo.world_size}: "
            "verify needs the same number of ranks on every node; fix: srun --ntasks-per-node M / "
            "torchrun --nproc-per-node M"
        )
    return None
