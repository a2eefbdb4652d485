"""All-reduce workers and their launcher, shared by the nccl check and the device scripts.

Bandwidth is reported as nccl-tests defines it (nccl-tests doc/PERFORMANCE.md, "Bandwidth"):
    algbw = S / t                      S: bytes of the buffer being reduced, t: mean time of one operation
    busbw = algbw * 2 * (n - 1) / n    for all_reduce over n ranks (a ring sends and receives 2(n-1)/n of S)
so busbw is 0 for one rank by definition, and algbw is the figure to read there. Like nccl-tests we take the
mean over the timed iterations (on NCCL more of them below 64 MiB, see iters_for, with the GPU held by a
sleep kernel while they are enqueued, see _hold_gpu), and across ranks the mean of the ranks' times, as
nccl-tests does by default (common.cu: `Allreduce(args, &deltaSec, average)` with average=1, "-a 1": the sum
over ranks divided by their number); the slowest rank's time is kept too (time_max_us: nccl-tests' "-a 3").

In a multi-node job (GROUP_RANK: the node's rank, set by torchrun and by verify for srun) the same sizes are
also timed within each node (one group per node, all nodes at once) and across nodes (one group: the first
rank of every node), so a slow network is told apart from a slow node.

A worker is one process per rank, started with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and the env:// rendezvous. `launch_local` starts them on this host; under torchrun
the check process itself is the rank (`run_worker` in-process). A hang is bounded twice: a per-operation
timeout given to init_process_group, and the launcher's wall-clock deadline, after which it kills the
workers' process groups.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from verify.forkserver import die_with_parent

MiB = 1 << 20
LAUNCHER_PID_VAR = "VERIFY_LAUNCHER_PID"  # a rank dies with the process whose pid this is (die_with_launcher)
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def busbw_factor(nranks: int) -> float:
    """nccl-tests' all_reduce bus-bandwidth factor 2(n-1)/n."""
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    return 2.0 * (nranks - 1) / nranks


def algbw_gbps(nbytes: int, seconds: float) -> float:
    """nccl-tests' algorithm bandwidth in GB/s (1e9 bytes/s)."""
    return nbytes / seconds / 1e9


def significant(value: float, digits: int = 4) -> float:
    """value rounded to `digits` significant digits: CPU (gloo) figures of 0.05 GB/s keep their precision,
    which a fixed number of decimals would round away (and busbw/algbw with them)."""
    return float(f"{value:.{digits}g}")


def size_label(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return f"{nbytes}B"


@dataclass
class CollectiveConfig:
    backend: str  # "nccl" or "gloo"
    check_numels: list[int]  # float32 element counts for exact-sum checks
    bw_bytes: list[int]  # buffer sizes for algbw/busbw
    warmup: int = 5
    iters: int = 20
    op_timeout_s: float = 60.0

    @classmethod
    def for_backend(cls, backend: str, quick: bool) -> CollectiveConfig:
        if backend == "nccl":
            top = 64 * MiB if quick else 1024 * MiB
            sizes = [s for s in (MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB, 1024 * MiB) if s <= top]
            return cls(
                "nccl", [1, 1000, (MiB // 4) + 1, 16 * MiB], sizes, warmup=5, iters=10 if quick else 20
            )
        return cls("gloo", [1, 1000, (MiB // 4) + 1], [MiB, 4 * MiB], warmup=2, iters=5)


@dataclass
class RankResult:
    rank: int
    world_size: int
    device: str
    sums_ok: bool  # every rank's sums at every size were exact
    wrong: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    node: int = 0  # this rank's node (GROUP_RANK)
    nnodes: int = 1
    intra_rows: list[dict[str, Any]] = field(default_factory=list)  # within this rank's node
    inter_rows: list[dict[str, Any]] = field(default_factory=list)  # one rank per node (local rank 0 only)


def _pattern(numel: int, device: Any) -> Any:
    """1..997 repeating: with rank-scaled copies the exact sum stays an integer < 2^24 up to 64 ranks."""
    import torch

    return (torch.arange(numel, device=device, dtype=torch.int64) % 997 + 1).to(torch.float32)


def run_worker(cfg: CollectiveConfig) -> RankResult:
    """One rank: init the process group from torchrun's variables, check exact sums, time all_reduce."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.backend == "nccl":
        # srun --gpus-per-task 1 shows each task only its own GPU: device 0, whatever the local rank
        visible = torch.cuda.device_count()
        device = torch.device("cuda", local_rank if local_rank < visible else 0)
        torch.cuda.set_device(device)
        # device_id makes NCCL create its communicator now, so a single GPU still initialises NCCL.
        dist.init_process_group(
            "nccl", timeout=timedelta(seconds=cfg.op_timeout_s), device_id=device, init_method="env://"
        )
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timedelta(seconds=cfg.op_timeout_s), init_method="env://")
    result = RankResult(rank, world, str(device), sums_ok=True)
    try:
        for numel in cfg.check_numels:
            base = _pattern(numel, device)
            x = base * (rank + 1)
            dist.all_reduce(x)
            expected = base * (world * (world + 1) // 2)
            if not torch.equal(x, expected):
                bad = int((x != expected).sum())
                result.wrong.append(f"{numel} floats: {bad} wrong on rank {rank}")
        flag = torch.tensor([0 if result.wrong else 1], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        result.sums_ok = bool(flag.item())
        for nbytes in cfg.bw_bytes:
            result.rows.append(_time_all_reduce(nbytes, cfg, world, device))
        _time_split(cfg, result, device)
    finally:
        dist.destroy_process_group()
    return result


SMALL_BYTES = 64 * MiB  # below this, one operation is short enough that more of them are timed
MAX_ITER_SCALE = 5
LAUNCH_ALLOWANCE_S = 100e-6  # generous CPU time to enqueue one all_reduce through c10d
_cycles_per_s: dict[int, float] = {}


def iters_for(nbytes: int, cfg: CollectiveConfig) -> int:
    """Timed iterations for one size: cfg.iters at 64 MiB and up, up to 5x more below on NCCL, so a 1 MiB
    measurement spans ~100 operations rather than 20 (~0.5 ms on NVLink, where one launch hiccup is 10%).
    gloo on CPU keeps cfg.iters: its small sizes already take milliseconds each."""
    if cfg.backend != "nccl":
        return cfg.iters
    scale = max(1, min(MAX_ITER_SCALE, SMALL_BYTES // max(nbytes, 1)))
    return cfg.iters * scale


def _hold_gpu(iters: int, device: Any) -> None:
    """Keep the GPU busy (a sleep kernel on the current stream, which c10d's NCCL stream waits for) while
    the CPU enqueues the timed operations, so they run back to back as nccl-tests' C loop does: at 1 MiB an
    all_reduce takes ~20 us on NVLink, about what one Python call through c10d costs, and without this the
    figure measures the CPU's launch rate instead of the bus. Skipped where torch has no sleep kernel."""
    import torch

    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        return
    index = device.index or 0
    if index not in _cycles_per_s:  # calibrate the sleep kernel's clock once per process
        probe = 1_000_000
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        sleep(probe)
        b.record()
        b.synchronize()
        _cycles_per_s[index] = probe / max(a.elapsed_time(b) / 1e3, 1e-6)
    sleep(int(_cycles_per_s[index] * (iters * LAUNCH_ALLOWANCE_S + 1e-3)))


def _time_split(cfg: CollectiveConfig, result: RankResult, device: Any) -> None:
    """Intra-node and inter-node timings: every rank learns every rank's node, then all create the same
    groups in the same order (new_group is collective) and time them."""
    import torch.distributed as dist

    node = int(os.environ.get("GROUP_RANK", "0"))
    nodes: list[Any] = [None] * result.world_size
    dist.all_gather_object(nodes, node)
    members: dict[int, list[int]] = {}
    for rank, n in enumerate(nodes):
        members.setdefault(int(n), []).append(rank)
    result.node, result.nnodes = node, len(members)
    if len(members) < 2:
        return
    intra = {n: dist.new_group(ranks) for n, ranks in sorted(members.items())}
    leaders = [ranks[0] for _, ranks in sorted(members.items())]
    inter = dist.new_group(leaders)
    if len(members[node]) > 1:
        for nbytes in cfg.bw_bytes:
            result.intra_rows.append(_time_all_reduce(nbytes, cfg, len(members[node]), device, intra[node]))
    if result.rank in leaders:
        for nbytes in cfg.bw_bytes:
            result.inter_rows.append(_time_all_reduce(nbytes, cfg, len(leaders), device, inter))
    dist.barrier()


def _time_all_reduce(
    nbytes: int, cfg: CollectiveConfig, world: int, device: Any, group: Any = None
) -> dict[str, Any]:
    """One size over `group` (default: every rank) of `world` ranks; time = mean over ranks (nccl-tests)."""
    import torch
    import torch.distributed as dist

    # 1/world everywhere: the sum is 1, so repeated in-place reductions stay finite and non-zero.
    buf = torch.full((nbytes // 4,), 1.0 / world, dtype=torch.float32, device=device)
    iters = iters_for(nbytes, cfg)
    for _ in range(cfg.warmup):
        dist.all_reduce(buf, group=group)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        dist.barrier(group=group)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _hold_gpu(iters, device)
        start.record()
        for _ in range(iters):
            dist.all_reduce(buf, group=group)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3 / iters
    else:
        dist.barrier(group=group)
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(buf, group=group)
        seconds = (time.perf_counter() - t0) / iters
    total = torch.tensor([seconds], dtype=torch.float64, device=device)
    slowest = total.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=group)
    t = float(total.item()) / world
    algbw = algbw_gbps(nbytes, t)
    return {
        "bytes": nbytes,
        "size": size_label(nbytes),
        "ranks": world,
        "time_us": significant(t * 1e6),
        "time_max_us": significant(float(slowest.item()) * 1e6),
        "algbw_GBps": significant(algbw),
        "busbw_GBps": significant(algbw * busbw_factor(world)),
        "iters": iters,
    }


# ---- launcher ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LaunchOutcome:
    results: list[RankResult]
    timed_out: bool
    returncodes: dict[int, int | None]
    stderr_tails: dict[int, str]
    wall_s: float


def start_rank(
    cfg: CollectiveConfig, env_updates: dict[str, str], folder: Path, name: str
) -> subprocess.Popen:
    """Start one worker (`python -m verify.cluster.distributed`) in its own process group, so that a deadline
    can kill it with whatever it started. Its result goes to folder/<name>.json, its output to
    folder/<name>.err. TORCHELASTIC_USE_AGENT_STORE is dropped: the worker's own rank 0 hosts its rendezvous,
    not torchrun's agent (set when the caller is itself a torchrun worker)."""
    pkg_root = str(Path(__file__).resolve().parents[2])  # the folder that holds the verify package
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_USE_AGENT_STORE"}
    env.update(env_updates)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    env[LAUNCHER_PID_VAR] = str(os.getpid())
    result = str(folder / f"{name}.json")
    command = [sys.executable, "-m", "verify.cluster.distributed", json.dumps(asdict(cfg)), result]
    with (folder / f"{name}.err").open("wb") as log:
        return subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def die_with_launcher() -> None:
    """In a rank: be SIGKILLed when the process that started it dies, however it dies (a SIGKILL from the
    runner's timeout cannot be caught, so no `finally` in the launcher runs). Where the launcher is already
    gone, leave at once."""
    launcher = os.environ.pop(LAUNCHER_PID_VAR, None)
    if launcher is None:
        return
    die_with_parent()
    if os.getppid() != int(launcher):
        os._exit(1)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a worker's whole process group (a hung NCCL or gloo call ignores gentler signals)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def read_rank(folder: Path, name: str) -> tuple[RankResult | None, str]:
    """A finished worker's result (None when it wrote none) and the tail of its output."""
    path = folder / f"{name}.json"
    result = RankResult(**json.loads(path.read_text())) if path.exists() else None
    return result, (folder / f"{name}.err").read_text(errors="replace")[-2000:]


def launch_local(
    cfg: CollectiveConfig, nprocs: int, timeout_s: float, start_ranks: list[int] | None = None
) -> LaunchOutcome:
    """Start nprocs worker processes on this host (each its own process group) and wait for them.

    start_ranks starts only some ranks (the others never join): tests use it to produce a real hang.
    At the deadline every worker's process group is killed and timed_out is set.
    """
    ranks = list(range(nprocs)) if start_ranks is None else start_ranks
    port = free_port()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="verify-nccl-") as tmp:
        tmpdir = Path(tmp)
        procs: dict[int, subprocess.Popen] = {}
        for r in ranks:
            env = {
                "RANK": str(r),
                "WORLD_SIZE": str(nprocs),
                "LOCAL_RANK": str(r),
                "LOCAL_WORLD_SIZE": str(nprocs),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            procs[r] = start_rank(cfg, env, tmpdir, f"rank{r}")
        deadline = t0 + timeout_s
        timed_out = False
        try:
            while any(p.poll() is None for p in procs.values()):
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.05)
        finally:  # the deadline, Ctrl-C or the runner's SIGTERM: no rank outlives this launcher
            for p in procs.values():
                kill_group(p)
        results, tails = [], {}
        for r in ranks:
            result, tails[r] = read_rank(tmpdir, f"rank{r}")
            if result is not None:
                results.append(result)
    return LaunchOutcome(
        results=results,
        timed_out=timed_out,
        returncodes={r: p.returncode for r, p in procs.items()},
        stderr_tails=tails,
        wall_s=time.monotonic() - t0,
    )


def run_single(cfg: CollectiveConfig) -> LaunchOutcome:
    """One rank in this very process (one GPU): NCCL is initialised and reduces as in launch_local, without
    starting a Python that imports torch again. The rendezvous is a free port on 127.0.0.1."""
    t0 = time.monotonic()
    saved = {k: os.environ.get(k) for k in (*TORCHRUN_VARS, "LOCAL_WORLD_SIZE")}
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    try:
        result = run_worker(cfg)
        code = 0
    except Exception as exc:  # reported as launch_local reports a worker's exception
        result = RankResult(0, 1, "", False, error=f"{type(exc).__name__}: {exc}")
        code = 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return LaunchOutcome([result], False, {0: code}, {0: ""}, time.monotonic() - t0)


def torchrun_env() -> bool:
    """True when this process is one rank of a torchrun (or similar env://) job it should join."""
    return all(v in os.environ for v in TORCHRUN_VARS[:2]) and all(v in os.environ for v in TORCHRUN_VARS[3:])


def _main(argv: list[str]) -> int:
    die_with_launcher()
    cfg = CollectiveConfig(**json.loads(argv[0]))
    out = Path(argv[1])
    try:
        result = run_worker(cfg)
    except Exception as exc:  # reported through the result file; the launcher turns it into a FAIL
        result = RankResult(int(os.environ.get("RANK", -1)), int(os.environ.get("WORLD_SIZE", 0)), "", False)
        result.error = f"{type(exc).__name__}: {exc}"
        out.write_text(json.dumps(asdict(result)))
        return 1
    out.write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
