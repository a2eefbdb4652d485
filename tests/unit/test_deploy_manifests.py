"""deploy/: the Kubernetes manifests against the API schema (kubernetes-validate) and checkov, offline; the
Slurm script's own consistency. The manifests have not run on a cluster here, so these checks are what
stands between an edit and a broken Job: each is also shown to fail on a manifest broken on purpose.

checkov pins packaging<24 and pytest 9 needs packaging>=24, so checkov cannot share the dev venv: it gets
its own under build/checkov-venv (made once, reused). Its tests are marked network (the first run reads
PyPI): `make test` runs them, a plain offline pytest leaves them out.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
SBATCH = REPO / "deploy" / "slurm" / "verify.sbatch"
CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = REPO / "build" / "checkov-venv"


def manifests() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [doc for path in manifests() for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    assert exe.is_file(), f"{exe} missing; fix: pip install -e '.[dev]'"
    return subprocess.run(
        [str(exe), "--strict", *map(str, paths)], capture_output=True, text=True, check=False, timeout=120
    )


def test_manifests_match_the_kubernetes_schema() -> None:
    assert [p.name for p in manifests()] == ["namespace.yaml", "reports-pvc.yaml", "verify-job.yaml"]
    proc = kubernetes_validate(*manifests())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed for resource") == 5, proc.stdout


def test_the_schema_check_fails_a_broken_job(tmp_path: Path) -> None:
    broken = tmp_path / "job.yaml"
    text = (K8S / "verify-job.yaml").read_text()
    broken.write_text(text.replace("completionMode: Indexed", "completionMode: Indexed\n  parallelizm: 2"))
    proc = kubernetes_validate(broken)
    assert proc.returncode != 0 and "parallelizm" in proc.stdout + proc.stderr, proc.stdout


def test_the_job_agrees_with_itself() -> None:
    """The fields a user edits together: nodes, GPUs per node, the rendezvous name, /dev/shm."""
    job, service = resource("Job"), resource("Service")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(env["VERIFY_NODES"])
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == int(env["VERIFY_GPUS_PER_NODE"])
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    script = container["args"][0]
    endpoint = re.search(r"--rdzv-endpoint=([\w.-]+):(\d+)", script)
    assert endpoint, script
    assert endpoint[1] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(endpoint[2]) == service["spec"]["ports"][0]["port"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert (
        volumes[mounts["/reports"]]["persistentVolumeClaim"]["claimName"]
        == resource("PersistentVolumeClaim")["metadata"]["name"]
    )
    assert "--report-dir" in script and "verify fleet" in script


@pytest.fixture(scope="module")
def checkov() -> Path:  # the tests using it are marked network: the first run reads PyPI
    """checkov in its own venv, made once under a lock (tests may run in parallel sessions)."""
    exe = CHECKOV_VENV / "bin" / "checkov"
    stamp = CHECKOV_VENV / f"installed-checkov-{CHECKOV_VERSION}"
    CHECKOV_VENV.parent.mkdir(parents=True, exist_ok=True)
    with (CHECKOV_VENV.parent / "checkov-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.is_file() and exe.is_file()):
            shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
            venv.create(CHECKOV_VENV, with_pip=True)
            pip = [str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
            package = f"checkov=={CHECKOV_VERSION}"
            proc = subprocess.run([*pip, package], capture_output=True, text=True, check=False, timeout=900)
            if proc.returncode != 0:
                pytest.fail(f"installing checkov {CHECKOV_VERSION} failed (PyPI is needed once):\n"
                            f"{proc.stderr[-2000:]}", pytrace=False)  # fmt: skip
            stamp.touch()
    return exe


def run_checkov(exe: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    # --skip-download: offline, no guidelines fetched from the vendor's API.
    return subprocess.run(
        [str(exe), "-d", str(directory), "--framework", "kubernetes", "--compact", "--skip-download"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


@pytest.mark.network
def test_checkov_passes_and_every_skip_says_why(checkov: Path) -> None:
    proc = run_checkov(checkov, K8S)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    counts = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", proc.stdout)
    assert counts and int(counts[1]) > 50 and counts[2] == "0", proc.stdout[-2000:]
    skips = {
        key: value
        for doc in documents()
        for key, value in doc["metadata"].get("annotations", {}).items()
        if key.startswith("checkov.io/skip")
    }
    assert int(counts[3]) == len(skips) == 2
    for value in skips.values():
        check, _, reason = value.partition("=")
        assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(reason.split()) >= 8, value


@pytest.mark.network
def test_checkov_fails_a_privileged_job(checkov: Path, tmp_path: Path) -> None:
    text = (K8S / "verify-job.yaml").read_text()
    weakened = text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    assert weakened != text
    (tmp_path / "verify-job.yaml").write_text(weakened)
    proc = run_checkov(checkov, tmp_path)
    assert proc.returncode == 1 and "CKV_K8S_20" in proc.stdout, proc.stdout[-3000:]


def sbatch_options() -> dict[str, str]:
    options = {}
    for line in SBATCH.read_text().splitlines():
        if match := re.fullmatch(r"#SBATCH --([\w-]+)(?:=(\S+))?", line.strip()):
            options[match[1]] = match[2] or ""
    return options


def test_sbatch_script_one_task_per_gpu_and_bounded() -> None:
    options = sbatch_options()
    assert options["ntasks-per-node"] == options["gpus-per-node"], options
    assert "no-kill" in options and "time" in options, options
    proc = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_sbatch_script_outside_slurm_or_without_a_runtime_says_what_to_set(tmp_path: Path) -> None:
    """Run for real with a job's environment but neither VERIFY_IMAGE nor VERIFY_VENV: exit 2 naming both."""
    env = {
        "PATH": os.environ["PATH"],
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_NODELIST": "node1",
        "VERIFY_REPORT_DIR": str(tmp_path / "reports"),
    }
    proc = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "VERIFY_IMAGE" in proc.stderr and "VERIFY_VENV" in proc.stderr, proc.stderr
    env["VERIFY_VENV"] = str(tmp_path / "no-venv")
    proc = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2 and "has no bin/verify; fix: " in proc.stderr, proc.stderr
    env["VERIFY_SWEEP"] = "sometimes"
    proc = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "VERIFY_SWEEP=sometimes is not auto, always or never; fix: " in proc.stderr, proc.stderr
