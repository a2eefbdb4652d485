"""The real v2.8 runtime image: what is inside equals what the matrix promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from images.engine import image_refs
from images.matrix import ImageLine
from images.run_verify import run_in_image

pytestmark = pytest.mark.slow

PROBE = """
import json, torch
print(json.dumps({
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(),
    "nccl": list(torch.cuda.nccl.version()),
}))
"""


def run(client: docker.DockerClient, image: str, *command: str) -> str:
    return client.containers.run(image, list(command), remove=True).decode()


def test_torch_cuda_cudnn_nccl_equal_the_matrix_pins(
    docker_client: docker.DockerClient, built_image: str, matrix_line: ImageLine
) -> None:
    found = json.loads(run(docker_client, built_image, "python", "-c", PROBE).strip().splitlines()[-1])
    pins = matrix_line.pins
    assert pins is not None
    assert found["torch"].split("+")[0] == matrix_line.torch
    assert found["cuda"] == pins.cuda
    # cuDNN 9 reports major*10000 + minor*100 + patch; the pin has a fourth (build) part.
    major, minor, patch = (int(x) for x in pins.cudnn.split(".")[:3])
    assert found["cudnn"] == major * 10000 + minor * 100 + patch
    assert ".".join(str(x) for x in found["nccl"]) == pins.nccl


def test_labels_and_manifest_match_the_matrix(
    docker_client: docker.DockerClient, built_image: str, matrix_line: ImageLine
) -> None:
    image = docker_client.images.get(built_image)
    labels = image.labels
    for key, value in matrix_line.labels("runtime").items():
        assert labels.get(key) == value, key
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert len(labels["org.opencontainers.image.revision"].split("-")[0]) in (40, 7) or (
        labels["org.opencontainers.image.revision"] == "unknown"
    )
    manifest = json.loads(run(docker_client, built_image, "cat", "/etc/pytorch-cuda/manifest.json"))
    assert manifest == json.loads(json.dumps(matrix_line.manifest("runtime")))
    # The full tag names the same image as the short alias.
    short, full = image_refs(matrix_line, "runtime")
    assert short == built_image
    assert docker_client.images.get(full).id == image.id


def test_default_user_is_not_root_and_workdir_is_workspace(
    docker_client: docker.DockerClient, built_image: str
) -> None:
    config = docker_client.images.get(built_image).attrs["Config"]
    assert config["User"] not in ("", "0", "root", "0:0")
    uid, gid, cwd = run(docker_client, built_image, "sh", "-c", "id -u; id -g; pwd").split()
    assert (uid, gid, cwd) == ("1000", "1000", "/workspace")
    assert "/opt/venv/bin" in config["Env"][0] or any(
        e.startswith("PATH=/opt/venv/bin") for e in config["Env"]
    )
    assert "NVIDIA_VISIBLE_DEVICES=all" in config["Env"]


def test_verify_run_inside_exits_0_with_gpu_checks_skipped(
    docker_client: docker.DockerClient, built_image: str, tmp_path: Path
) -> None:
    """`make verify` on a host without GPUs: CPU paths pass, GPU checks skip saying so, exit 0."""
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the nvidia runtime; the GPU path is tested by tests/gpu")
    outcome = run_in_image(built_image, tmp_path, ["--quick"], client=docker_client.api)
    assert outcome.gpu is False
    report = json.loads((tmp_path / "verify.json").read_text())
    assert outcome.exit_code == 0, json.dumps(report.get("results"), indent=1)[:4000]
    assert (tmp_path / "verify.xml").exists()
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["gpu"]["status"] == "skip" and "no GPU" in by_name["gpu"]["summary"]
    assert by_name["env"]["status"] in ("pass", "warn")
    assert report["exit_code"] == 0


def test_make_verify_cli_copies_the_report_and_returns_verifys_exit_code(
    built_image: str, tmp_path: Path
) -> None:
    """What `make verify TAG=v2.8` runs, end to end: says CPU or GPU, copies JSON and JUnit, exit code."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "images", "verify", "--tag", "v2.8", "--reports", str(tmp_path),
         "--", "--quick", "--only", "env,gpu"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cpu_line = "on CPU only: this host shows no NVIDIA GPU"
    assert cpu_line in proc.stdout or "with all GPUs through" in proc.stdout
    report = json.loads((tmp_path / "v2.8" / "verify.json").read_text())
    assert [r["name"] for r in report["results"]] == ["env", "gpu"]
    assert (tmp_path / "v2.8" / "verify.xml").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "images", "verify", "--tag", "v2.8", "--reports", str(tmp_path),
         "--", "--only", "nope"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2  # verify's own usage-error code comes through
