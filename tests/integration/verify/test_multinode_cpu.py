"""`verify run` as a 2-node x 2-rank job on this CPU host (gloo), with real processes: two torchrun agents
with c10d rendezvous, and four plain processes given the environment `srun` gives its tasks.

What must hold: one table in all the output, the job report written by rank 0 only, one report per node in
--report-dir, busbw/algbw = 2(n-1)/n, and a rank that dies or hangs makes the job FAIL naming it, in time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.verify.srun_env import srun_task, without_launchers
from verify.cluster.distributed import busbw_factor

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 20  # --timeout: per check, and the slack of every wait between ranks
FAULT_TIMEOUT_S = 12  # the same where a rank fails: every wait is bounded by it, so the test is that fast
TABLE_HEADER = "figures / reason"

pytestmark = pytest.mark.timeout(150)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = without_launchers()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "200"
    return env


def _verify_args(tmp: Path, timeout_s: int = TIMEOUT_S) -> list[str]:
    return [
        "-m",
        "verify",
        "run",
        "--only",
        "env,nccl",
        "--timeout",
        str(timeout_s),
        "--report-dir",
        str(tmp / "nodes"),
        "--json",
        str(tmp / "job.json"),
    ]


def _slurm_procs(tmp: Path, timeout_s: int = TIMEOUT_S) -> dict[int, subprocess.Popen[str]]:
    """Four tasks on two 'nodes' as srun starts them: SLURM_* only, no torchrun, no MASTER_ADDR."""
    port = _port()
    procs = {}
    for rank in range(4):
        env = _env() | srun_task(rank, tasks=4, nodes=2, job_id=77, port=port)
        procs[rank] = subprocess.Popen(
            [sys.executable, *_verify_args(tmp, timeout_s)],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    return procs


def _finish(procs: dict[int, subprocess.Popen[str]], timeout: float) -> dict[int, tuple[int, str]]:
    out = {}
    for key, proc in procs.items():
        text, _ = proc.communicate(timeout=timeout)
        out[key] = (proc.returncode, text)
    return out


def _assert_good_job(tmp: Path, outputs: list[str], launcher: str) -> None:
    joined = "\n".join(outputs)
    assert joined.count(TABLE_HEADER) == 1, f"expected one table in all output:\n{joined[-4000:]}"
    report = json.loads((tmp / "job.json").read_text())
    assert report["job"]["role"] == "job" and report["job"]["launcher"] == launcher
    assert (report["job"]["world_size"], report["job"]["nnodes"]) == (4, 2)
    assert report["job"]["missing_ranks"] == [] and report["job"]["missing_nodes"] == []
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["nodes"]["status"] == "pass", by_name["nodes"]
    nccl = by_name["nccl"]
    assert nccl["status"] == "skip", nccl  # gloo on CPU: NCCL itself untested
    assert nccl["details"]["transport"] == "gloo/TCP"
    assert nccl["details"]["per_rank"] == {str(r): "skip" for r in range(4)}
    for key, n in (("rows", 4), ("intra_rows", 2), ("inter_rows", 2)):
        rows = nccl["details"][key]
        assert rows, key
        for row in rows:
            assert row["ranks"] == n
            assert row["busbw_GBps"] / row["algbw_GBps"] == pytest.approx(busbw_factor(n), rel=2e-3), row
    nodes = sorted((tmp / "nodes").glob("*.json"))
    assert [p.name[:8] for p in nodes] == ["node0000", "node0001"]
    for index, path in enumerate(nodes):
        node = json.loads(path.read_text())
        assert node["job"]["role"] == "node" and node["job"]["node_rank"] == index
        assert [r["name"] for r in node["results"]] == ["env", "nccl"]
    assert sorted(n["report"] for n in report["job"]["nodes"]) == [str(p.resolve()) for p in nodes]


def test_torchrun_two_agents_c10d(tmp_path):
    endpoint = f"127.0.0.1:{_port()}"
    agents = {}
    for node in (0, 1):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "2",
            "--node-rank",
            str(node),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            endpoint,
            "--rdzv-id",
            "verify-test",
            "--max-restarts",
            "0",
            *_verify_args(tmp_path),
        ]
        agents[node] = subprocess.Popen(
            cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    results = _finish(agents, timeout=120)
    assert [code for code, _ in results.values()] == [0, 0], results
    _assert_good_job(tmp_path, [text for _, text in results.values()], "torchrun")


def test_srun_environment_without_torchrun(tmp_path):
    results = _finish(_slurm_procs(tmp_path), timeout=120)
    assert [code for code, _ in results.values()] == [0, 0, 0, 0], results
    _assert_good_job(tmp_path, [text for _, text in results.values()], "slurm")
    assert "rank 3/4 (node 1) done" in results[3][1]


def test_a_rank_that_dies_fails_the_job_naming_it(tmp_path):
    procs = _slurm_procs(tmp_path, FAULT_TIMEOUT_S)
    time.sleep(1.0)  # rank 3 (not a node leader) is connecting or waiting for node 1's local checks
    os.killpg(procs[3].pid, signal.SIGKILL)
    start = time.monotonic()
    results = _finish({r: p for r, p in procs.items() if r != 3}, timeout=120)
    assert time.monotonic() - start < 3 * FAULT_TIMEOUT_S + 15
    assert results[0][0] == 1, results[0][1]
    report = json.loads((tmp_path / "job.json").read_text())
    nccl = next(r for r in report["results"] if r["name"] == "nccl")
    assert nccl["status"] == "fail" and "rank 3 (node 1)" in nccl["summary"], nccl["summary"]
    assert report["job"]["missing_ranks"] == [3]
    assert report["exit_code"] == 1
    assert len(list((tmp_path / "nodes").glob("*.json"))) == 2  # both nodes' leaders still reported
    assert all(code == 1 for code, _ in results.values())  # every rank learns the job failed


def _nccl_child(pid: int, deadline: float) -> int:
    """The pid of the nccl check's process under `verify run` pid: a child of one of its fork servers, named
    "verify:nccl" (or, without fork servers, `python -m verify.worker verify.checks.nccl ...`)."""
    while time.monotonic() < deadline:
        parents: dict[int, int] = {}
        found: dict[int, bytes] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes() + (entry / "comm").read_bytes()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = cmd
        for child, cmd in found.items():
            if b"verify:nccl" in cmd or b"verify.checks.nccl" in cmd:
                ancestor = parents.get(child)
                while ancestor not in (None, 0, 1, pid):
                    ancestor = parents.get(ancestor)
                if ancestor == pid:
                    return child
        time.sleep(0.1)
    raise AssertionError("the nccl check never started")


def test_a_rank_that_hangs_in_the_all_reduce_fails_the_job_in_time(tmp_path):
    procs = _slurm_procs(tmp_path, FAULT_TIMEOUT_S)
    child = _nccl_child(procs[3].pid, time.monotonic() + 90)
    os.kill(child, signal.SIGSTOP)  # rank 3 hangs inside the collective
    start = time.monotonic()
    try:
        results = _finish(procs, timeout=120)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - start < 3 * FAULT_TIMEOUT_S + 15
    assert results[0][0] == 1
    report = json.loads((tmp_path / "job.json").read_text())
    nccl = next(r for r in report["results"] if r["name"] == "nccl")
    assert nccl["status"] == "fail"
    assert "rank 3 (node 1): timed out" in nccl["summary"], nccl["summary"]
    assert nccl["details"]["per_rank"]["3"] == "fail"


def test_rank_0_killed_mid_job_gives_the_others_a_clear_line_not_a_traceback(tmp_path):
    """Under srun rank 0's `verify run` hosts the job's store: when it dies, every other rank says so in one
    line and exits 1 (it used to end in a DistNetworkError traceback), and node 1 still writes its report."""
    procs = _slurm_procs(tmp_path, FAULT_TIMEOUT_S)
    node1 = tmp_path / "nodes"
    deadline = time.monotonic() + 90
    # Kill rank 0 once node 1's leader has connected and is into its local checks: its fork servers run.
    while not _has_forkserver(procs[2].pid):
        assert time.monotonic() < deadline, "rank 2 never started its local checks"
        assert procs[0].poll() is None, procs[0].communicate()[0]
        time.sleep(0.1)
    os.killpg(procs[0].pid, signal.SIGKILL)
    results = _finish({r: p for r, p in procs.items() if r != 0}, timeout=120)
    for rank, (code, text) in results.items():
        assert code == 1, (rank, text)
        assert "Traceback" not in text, (rank, text)
        # rank 2 was connected (its local checks ran); a slower rank may not have reached the store yet
        said = [
            f"verify: FAIL: rank {rank} lost the job's store",
            f"verify: FAIL: rank {rank} could not reach",
        ]
        assert any(line in text for line in said[: 1 if rank == 2 else 2]), (rank, text)
        assert "rank 0" in text.split("verify: FAIL:", 1)[1], (rank, text)
    reports = [p.name[:8] for p in node1.glob("*.json")]
    assert reports == ["node0001"], reports
    node = json.loads(next(node1.glob("*.json")).read_text())
    assert [r["name"] for r in node["results"]] == ["env", "nccl"], node["results"]
    assert node["results"][0]["status"] == "pass"
    assert node["results"][1]["status"] == "fail", node["results"][1]


def _has_forkserver(pid: int) -> bool:
    """Whether process `pid` has started a `verify.forkserver` child (it is running its local checks)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"verify.forkserver" in cmdline:
            return True
    return False
