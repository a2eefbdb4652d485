"""The host check inside the real v2.8 image, in containers started the ways users start them.

A plain `docker run` gives /dev/shm 64 MiB: verify must WARN naming --shm-size; `--shm-size 2g` passes; a
2 GiB /dev/shm in a 512 MiB container (`--memory 512m`) cannot hold 1 GiB of shared tensors and WARNs
naming the memory limit; `--ipc none` leaves no /dev/shm at all. `make verify` (images/run_verify.py) asks
for 1 GiB and must pass. And the WARN is no guess: a DataLoader whose workers hand over 128 MiB batches
dies with "Bus error" in exactly the container where verify warns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest

from images.run_verify import run_in_image

MiB = 1024**2
GiB = 1024**3
MARK = "--- host result ---"
SCRIPT = f"verify run --only host --json /tmp/host.json; echo '{MARK}'; cat /tmp/host.json"


def host_result(client: docker.DockerClient, image: str, **run_options: Any) -> tuple[int, dict, str]:
    """(verify's exit code, the host result, the table) of `verify run --only host` in a new container."""
    container = client.containers.run(image, ["sh", "-c", SCRIPT], detach=True, **run_options)
    try:
        status = container.wait(timeout=120)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert MARK in logs, logs[-3000:]
    table, report_text = logs.split(MARK, 1)
    report = json.loads(report_text)
    (result,) = report["results"]
    assert status["StatusCode"] == 0, logs[-3000:]  # verify's report was printed last: cat's code
    return int(report["exit_code"]), result, table


def test_dockers_default_64m_shm_warns_naming_shm_size(docker_client, built_image):
    code, r, table = host_result(docker_client, built_image, shm_size="64m")
    assert code == 0  # a WARN does not fail the run
    assert r["status"] == "warn", r["summary"]
    assert r["figures"]["shm_bytes"] == 64 * MiB
    assert "/dev/shm is 64 MiB (67108864 bytes), under 1 GiB" in r["summary"]
    assert "--shm-size 8g" in r["summary"] and "ipc: host" in r["summary"]
    assert "WARN" in table


def test_2g_shm_passes_with_the_figures(docker_client, built_image):
    code, r, _ = host_result(docker_client, built_image, shm_size="2g")
    assert code == 0
    assert r["status"] == "pass", r["summary"]
    assert r["figures"]["shm_bytes"] == 2 * GiB
    assert r["summary"].startswith("/dev/shm 2.0 GiB (2.0 GiB free); no cgroup memory limit; memlock ")
    assert r["details"]["cap_ipc_lock"] is False  # Docker's default capabilities leave it out


def test_2g_shm_in_a_512m_container_warns_naming_the_memory_limit(docker_client, built_image):
    code, r, _ = host_result(docker_client, built_image, shm_size="2g", mem_limit="512m")
    assert code == 0
    assert r["status"] == "warn", r["summary"]
    assert r["figures"]["cgroup_memory_limit_bytes"] == 512 * MiB
    assert "cgroup memory limit is 512 MiB" in r["summary"] and "--memory 16g" in r["summary"]


def test_no_shm_at_all_warns(docker_client, built_image):
    code, r, _ = host_result(docker_client, built_image, ipc_mode="none")
    assert code == 0
    assert r["status"] == "warn", r["summary"]
    assert r["figures"]["shm_bytes"] is None
    assert r["summary"].startswith("no /dev/shm (a tmpfs)") and "not --ipc none" in r["summary"]


def test_make_verify_gives_enough_shm(docker_client, built_image, tmp_path: Path):
    outcome = run_in_image(built_image, tmp_path, ["--only", "host"], client=docker_client.api)
    report = json.loads((tmp_path / "verify.json").read_text())
    (r,) = report["results"]
    assert outcome.exit_code == 0
    assert r["status"] == "pass", r["summary"]
    assert r["figures"]["shm_bytes"] >= GiB


DATALOADER = """
import torch
from torch.utils.data import DataLoader, Dataset
class Batches(Dataset):
    def __len__(self): return 8
    def __getitem__(self, i): return torch.ones(32 * 1024 * 1024)  # 128 MiB through /dev/shm
try:
    print("dataloader:", sum(1 for _ in DataLoader(Batches(), batch_size=1, num_workers=2)), "batches")
except RuntimeError as exc:  # the worker's own error is the one this exception was raised from
    print("dataloader failed:", " <- ".join(str(e).splitlines()[0] for e in (exc, exc.__context__) if e))
"""


@pytest.mark.parametrize(("shm", "status"), [("64m", "warn"), ("2g", "pass")])
def test_warn_matches_a_real_dataloader_failing(docker_client, built_image, shm, status):
    _, r, _ = host_result(docker_client, built_image, shm_size=shm)
    out = docker_client.containers.run(
        built_image, ["python", "-c", DATALOADER], shm_size=shm, remove=True, stderr=False
    ).decode(errors="replace")
    assert r["status"] == status, r["summary"]
    if status == "warn":
        assert "dataloader failed: DataLoader worker (pid" in out and "Bus error" in out, out[-2000:]
    else:
        assert "dataloader: 8 batches" in out, out[-2000:]
