"""`make verify` against the real engine: a GPU host whose engine cannot hand over GPUs FAILs, a CPU host
runs on the CPU.

This engine has no NVIDIA runtime, no toolkit hook and no CDI, like a GPU host where the NVIDIA Container
Toolkit is missing. The host side is made up: a folder holding an empty file `dev/nvidia0`. That is honest
because the host probe only looks for the name (it never opens the node), and what these tests check is
the real engine's answer to each way of asking for GPUs, and that `make verify` turns it into exit 1 with
the toolkit step named, no traceback and no container left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from images.gpu_access import CDI, HOOK, RUNTIME, HostProbe
from images.run_verify import CONTAINER_LABEL, NoGpuAccess, run_in_image

REPO = Path(__file__).resolve().parents[2]
TINY_IMAGE = "debian:trixie-slim"  # the refusal comes at create/start: the command never runs


def fake_gpu_host(root: Path) -> Path:
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "nvidia0").touch()
    return root


def verify_containers(client: docker.DockerClient) -> list[str]:
    return [c.id for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL})]


@pytest.fixture
def tiny_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(TINY_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{TINY_IMAGE} is not in this engine; fix: docker pull {TINY_IMAGE}")
    return TINY_IMAGE


def test_this_engine_refuses_each_way_and_verify_names_the_toolkit(
    docker_client: docker.DockerClient, tiny_image: str, tmp_path: Path
) -> None:
    """All three ways asked for real (the `ways` argument overrides what `docker info` offers)."""
    before = verify_containers(docker_client)
    probe = HostProbe.under(fake_gpu_host(tmp_path / "host"))
    with pytest.raises(NoGpuAccess) as failed:
        run_in_image(
            tiny_image, tmp_path / "r", [], client=docker_client.api, probe=probe, ways=[HOOK, RUNTIME, CDI]
        )
    message = str(failed.value)
    assert 'could not select device driver "" with capabilities: [[gpu]]' in message  # --gpus all
    assert "Unknown runtime specified nvidia" in message  # --runtime nvidia, refused at create
    assert 'could not select device driver "cdi"' in message  # --device nvidia.com/gpu=all
    assert "NVIDIA Container Toolkit is not installed" in message
    assert "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker" in message
    assert verify_containers(docker_client) == before


def test_the_plan_from_docker_info_fails_the_same_way(
    docker_client: docker.DockerClient, tiny_image: str, tmp_path: Path
) -> None:
    before = verify_containers(docker_client)
    probe = HostProbe.under(fake_gpu_host(tmp_path / "host"))
    with pytest.raises(NoGpuAccess) as failed:
        run_in_image(tiny_image, tmp_path / "r", [], client=docker_client.api, probe=probe)
    message = str(failed.value)
    assert "/dev/nvidia0" in message and "sudo apt-get install -y nvidia-container-toolkit" in message
    assert "the `nvidia` runtime: not listed by `docker info`" in message
    assert verify_containers(docker_client) == before


def test_a_cpu_host_runs_the_container_without_gpus(
    docker_client: docker.DockerClient, tiny_image: str, tmp_path: Path
) -> None:
    """The same engine, no GPU on the host: the container starts (its command, `verify`, is not in the
    tiny image: exit 127), with no device request and NVIDIA_VISIBLE_DEVICES=void."""
    empty = tmp_path / "host"
    empty.mkdir()
    before = verify_containers(docker_client)
    outcome = run_in_image(
        tiny_image, tmp_path / "r", [], client=docker_client.api, probe=HostProbe.under(empty)
    )
    assert (outcome.gpu, outcome.way, outcome.exit_code) == (False, "no GPU", 127)
    assert verify_containers(docker_client) == before


def _images_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "images", "verify", "--tag", "v2.8", *args],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
def test_make_verify_on_a_gpu_host_without_the_toolkit_exits_1(
    docker_client: docker.DockerClient, built_image: str, tmp_path: Path
) -> None:
    """What `make verify` runs, on a host with GPUs (auto) and as the GPU CI job runs it (GPUS=all)."""
    before = verify_containers(docker_client)
    host = fake_gpu_host(tmp_path / "host")
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = {
        "error: the host has NVIDIA GPUs": ["--probe-root", str(host)],
        "error: --gpus all requires GPUs": ["--gpus", "all", "--probe-root", str(empty)],
    }
    for opening, args in runs.items():
        proc = _images_verify("--reports", str(tmp_path / "reports"), *args, "--", "--quick")
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        assert opening in proc.stderr
        assert "but the Docker engine gives a container none of them" in proc.stderr
        assert "nvidia-ctk runtime configure --runtime=docker" in proc.stderr
        assert "verify runs with --require-gpu" in proc.stdout
        assert not (tmp_path / "reports").exists()  # nothing ran, no report
    assert verify_containers(docker_client) == before


@pytest.mark.slow
def test_make_verify_on_a_cpu_host_runs_on_cpu_and_says_why(
    docker_client: docker.DockerClient, built_image: str, tmp_path: Path
) -> None:
    empty = tmp_path / "host"
    empty.mkdir()
    proc = _images_verify(
        "--reports",
        str(tmp_path / "reports"),
        "--probe-root",
        str(empty),
        "--",
        "--quick",
        "--only",
        "env,gpu",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on CPU only: this host shows no NVIDIA GPU" in proc.stdout
    assert f"{empty}/dev/nvidia[0-9]*: absent" in proc.stdout
    report = json.loads((tmp_path / "reports" / "v2.8" / "verify.json").read_text())
    gpu = next(r for r in report["results"] if r["name"] == "gpu")
    assert gpu["status"] == "skip"
