"""An arm64 image built here under QEMU user emulation, through `make build PLATFORM=linux/arm64`'s code.

A line built for linux/arm64 (matrix `platforms`) has a lock with each wheel's sha256 for both machines.
The whole v2.15 venv is ~4 GB of CUDA wheels, longer to install under emulation than CI has, so this builds
the real image of that line with its lock cut to three packages (uv, packaging, and setuptools, which the
project stage builds the verify wheel with), each with both hashes: `images.build.build_image` with
`platform="linux/arm64"` from the arm64 Debian base that .ci/run makes (scripts/make_base_image.sh --arch
arm64), every stage of the committed Dockerfile (apt, the venv, the services, the project), and the index
over plain HTTP (scripts/http_index_mirror.py: containers here reach PyPI only through the proxy's CA).
pip installs the lock's uv entry cut out by the Dockerfile's own command: a cut that kept one hash fails on
arm64, the first hash being x86_64's wheel. The image must be tagged v2.15-arm64, be arm64, run aarch64
code (its Python, its uv: an x86_64 uv would still run on this host, natively), and its entrypoint must work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from images.build import BuildRequest, build_image
from images.dockerfile import lock_name, requirements_name
from images.lock import lock_platforms, parse_lock, render_lock
from images.matrix import ImageLine, load_matrix

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import http_index_mirror  # noqa: E402

pytestmark = pytest.mark.slow

BASE = os.environ.get("ARM64_BASE_IMAGE", "pytorch-cuda-base:trixie-slim-arm64")
KEPT = ("packaging", "setuptools", "uv")
# Run in the image: its machine, packaging's version, uv's version, and the machine uv's ELF is built for.
PROBE = """
import platform, subprocess, sys, packaging
elf = open(sys.prefix + "/bin/uv", "rb").read(20)
machine = {183: "aarch64", 62: "x86_64"}.get(int.from_bytes(elf[18:20], "little"), "other")
uv = subprocess.run([sys.prefix + "/bin/uv", "--version"], capture_output=True, text=True).stdout.split()[1]
print(platform.machine(), packaging.__version__, uv, machine)
"""


@pytest.fixture(scope="module")
def arm64_base(docker_client: docker.DockerClient) -> str:
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file():
        pytest.skip("no QEMU user emulation for arm64 here: apt-get install qemu-user-static binfmt-support")
    try:
        arch = docker_client.images.get(BASE).attrs["Architecture"]
    except docker.errors.ImageNotFound:
        pytest.skip(f"no {BASE}: scripts/make_base_image.sh --arch arm64 {BASE} trixie makes it")
    assert arch == "arm64", f"{BASE} is {arch}, not arm64"
    return BASE


@pytest.fixture(scope="module")
def mirror_url(docker_client: docker.DockerClient) -> Iterator[str]:
    gateway = docker_client.api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"]
    server = http_index_mirror.start(port=0)
    yield f"http://{gateway}:{server.server_address[1]}/simple"
    server.shutdown()


def reduced_root(root: Path, line: ImageLine) -> dict[str, str]:
    """A copy of the working tree whose `line` requires and locks only KEPT (with every platform's hash);
    returns their locked versions."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    folder = root / "images" / line.tag
    lock_text = (folder / lock_name("runtime")).read_text()
    assert lock_platforms(lock_text) == ("linux/amd64", "linux/arm64")
    kept = [e for e in parse_lock(lock_text, "lock")[1] if e.key in KEPT]
    assert [e.key for e in kept] == list(KEPT)
    assert all(len(e.hashes) == 2 for e in kept if e.key == "uv"), "uv needs its x86_64 and aarch64 wheels"
    requirements = "".join(f"{e.name}=={e.version}\n" for e in kept)
    (folder / requirements_name("runtime")).write_text(requirements)
    (folder / lock_name("runtime")).write_text(render_lock(line, "runtime", requirements, kept))
    return {e.key: e.version for e in kept}


def test_make_build_platform_arm64_builds_a_working_arm64_image_under_emulation(
    docker_client: docker.DockerClient, arm64_base: str, mirror_url: str, tmp_path: Path
) -> None:
    line = next(line for line in load_matrix().lines if "linux/arm64" in line.platforms)
    root = tmp_path / "repo"
    versions = reduced_root(root, line)
    request = BuildRequest(
        tag=line.tag, platform="linux/arm64", base_image=arm64_base, index_url=mirror_url, no_cache=True
    )
    result = build_image(request, root=root, log_dir=tmp_path / "logs")
    short = f"pytorch-cuda:{line.tag}-arm64"
    try:
        assert result.tags[0] == short and result.tags[1].endswith("-runtime-arm64"), result.tags
        image = docker_client.images.get(short)
        assert (image.attrs["Os"], image.attrs["Architecture"]) == ("linux", "arm64")
        out = docker_client.containers.run(
            short, ["python", "-c", PROBE], platform="linux/arm64", remove=True
        ).decode()
        assert out.split() == ["aarch64", versions["packaging"], versions["uv"], "aarch64"], out
        # the entrypoint (tini, then the user's name for an arbitrary UID) and the verify CLI, on aarch64
        said = docker_client.containers.run(
            short, ["bash", "-c", "uname -m; whoami; verify --version"], user="12345:12345",
            platform="linux/arm64", remove=True,
        ).decode()  # fmt: skip
        assert said.split()[:2] == ["aarch64", "pytorch"] and "verify" in said, said
    finally:
        for ref in result.tags:
            docker_client.images.remove(ref, force=True)
        for deps in docker_client.images.list(f"pytorch-cuda-deps:{line.tag}-arm64"):
            docker_client.images.remove(deps.id, force=True)
