"""An arm64 image built here under QEMU user emulation, through `make build PLATFORM=linux/arm64`'s code.

A line built for linux/arm64 (matrix `platforms`) has a lock with each wheel's sha256 for both machines. The
whole v2.15 venv is ~4 GB of CUDA wheels, longer to install under emulation than CI has, so this builds the
real image of that line with its lock cut to seven small packages (KEPT), each with every platform's hash:
`images.build.build_image` with `platform="linux/arm64"` from the arm64 Debian base that .ci/run makes
(scripts/make_base_image.sh --arch arm64), every stage of the committed Dockerfile (apt, the venv, the
services, the project), and the index over plain HTTP (scripts/http_index_mirror.py: containers here reach
PyPI only through the proxy's CA). pip installs the lock's uv entry cut out by the Dockerfile's own command: a
cut that kept one hash fails on arm64, the first hash being x86_64's wheel. The image must be tagged
v2.15-arm64, be arm64, run aarch64 code (its Python, its uv: an x86_64 uv would still run on this host,
natively), and its entrypoint must work. The same line built for amd64 then goes with it to the real registry
as one multi-platform index (`push --multi-platform`), and pulling the index for each platform must give back
that platform's image. These builds use the line's real tags (pytorch-cuda:v2.15, v2.15-arm64), and remove
them at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from images.build import BuildRequest, BuildResult, build_image
from images.dockerfile import lock_name, requirements_name
from images.lock import lock_platforms, parse_lock, render_lock
from images.manifest_index import LIST_TYPE
from images.matrix import ImageLine, load_matrix
from images.registry import push_platforms

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

BASE = os.environ.get("ARM64_BASE_IMAGE", "pytorch-cuda-base:trixie-slim-arm64")
# uv and packaging (the probe below), setuptools (the project stage builds the verify wheel with it), rich
# and what it needs (the verify CLI imports it): the lock's entries, in its order
KEPT = ("markdown-it-py", "mdurl", "packaging", "pygments", "rich", "setuptools", "uv")
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


@dataclass
class Reduced:
    line: ImageLine
    root: Path
    versions: dict[str, str]


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> Reduced:
    line = next(line for line in load_matrix().lines if "linux/arm64" in line.platforms)
    root = tmp_path_factory.mktemp("repo")
    return Reduced(line, root, reduced_root(root, line))


def _build(
    docker_client: docker.DockerClient, reduced: Reduced, request: BuildRequest, logs: Path
) -> Iterator[BuildResult]:
    """Build, yield, remove the image's tags. The deps image stays, as the v2.8 build's does: the next run's
    layer cache (the apt step alone takes minutes under emulation; its inputs never name the test's
    index, so only the venv and later steps are built again)."""
    result = build_image(request, root=reduced.root, log_dir=logs)
    yield result
    for ref in result.tags:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(ref, force=True)


@pytest.fixture(scope="module")
def arm64_image(
    docker_client: docker.DockerClient,
    arm64_base: str,
    mirror_url: str,
    reduced: Reduced,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BuildResult]:
    """`make build TAG=v2.15 PLATFORM=linux/arm64 BASE_IMAGE=<arm64 base>` of the reduced line."""
    request = BuildRequest(
        tag=reduced.line.tag, platform="linux/arm64", base_image=arm64_base, index_url=mirror_url
    )
    yield from _build(docker_client, reduced, request, tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def amd64_image(
    docker_client: docker.DockerClient,
    mirror_url: str,
    reduced: Reduced,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BuildResult]:
    """The same line for linux/amd64 (natively), to stand beside the arm64 image in one index."""
    request = BuildRequest(tag=reduced.line.tag, index_url=mirror_url)
    yield from _build(docker_client, reduced, request, tmp_path_factory.mktemp("logs"))


def test_make_build_platform_arm64_builds_a_working_arm64_image_under_emulation(
    docker_client: docker.DockerClient, reduced: Reduced, arm64_image: BuildResult
) -> None:
    short = f"pytorch-cuda:{reduced.line.tag}-arm64"
    assert arm64_image.tags[0] == short and arm64_image.tags[1].endswith("-runtime-arm64"), arm64_image.tags
    image = docker_client.images.get(short)
    assert (image.attrs["Os"], image.attrs["Architecture"]) == ("linux", "arm64")
    out = docker_client.containers.run(short, ["python", "-c", PROBE], platform="linux/arm64", remove=True)
    versions = reduced.versions
    assert out.decode().split() == ["aarch64", versions["packaging"], versions["uv"], "aarch64"], out
    # the entrypoint (tini, then a name for an arbitrary UID) and the verify CLI, on aarch64
    said = docker_client.containers.run(
        short, ["bash", "-c", "uname -m; whoami; verify --version"], user="12345:12345",
        platform="linux/arm64", remove=True,
    ).decode()  # fmt: skip
    assert said.split()[:2] == ["aarch64", "pytorch"] and "verify" in said, said


def test_both_platforms_push_as_one_index_and_each_pulls_back_as_its_own(
    docker_client: docker.DockerClient,
    reduced: Reduced,
    arm64_image: BuildResult,
    amd64_image: BuildResult,
    local_registry: str,
) -> None:
    multi = push_platforms(reduced.line, "runtime", local_registry, client=docker_client.api)
    remote = f"{local_registry}/pytorch-cuda:{reduced.line.tag}"
    assert [p.ref for p in multi.images] == [f"{remote}-amd64", f"{remote}-arm64"]
    assert multi.index_refs[0] == remote and multi.index_refs[1].endswith("-runtime")
    index = requests.get(
        f"http://{local_registry}/v2/pytorch-cuda/manifests/{reduced.line.tag}",
        headers={"Accept": LIST_TYPE},
        timeout=30,
    ).json()
    assert [(m["platform"]["architecture"], m["digest"]) for m in index["manifests"]] == [
        ("amd64", multi.images[0].digest),
        ("arm64", multi.images[1].digest),
    ]
    try:
        for platform, built in (("linux/arm64", arm64_image), ("linux/amd64", amd64_image)):
            for ref in [*multi.index_refs, *(p.ref for p in multi.images)]:
                with contextlib.suppress(docker.errors.ImageNotFound):
                    docker_client.images.remove(ref)
            pulled = docker_client.images.pull(remote, platform=platform)
            assert pulled.attrs["Architecture"] == platform.split("/")[1]
            assert pulled.id == built.image_id, f"{platform}: pulled {pulled.id}, built {built.image_id}"
    finally:
        for ref in [*multi.index_refs, *(p.ref for p in multi.images)]:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(ref)
