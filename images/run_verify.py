"""`python -m images verify`: run the harness inside a built image and keep its report on the host.

A host with NVIDIA GPUs must verify on them, never silently on the CPU. So the host is probed for GPUs
(images.gpu_access), and when it has some the engine is asked for them in each way it may serve them
(`--gpus all` through the NVIDIA Container Toolkit's hook, the `nvidia` runtime, CDI), and the harness runs
with `--require-gpu`, so a container that ends up without a GPU fails instead of passing on the CPU. An
engine that refuses every way is a FAIL naming the toolkit step that is missing. A host without GPUs runs
on the CPU and says so. `--gpus all|none` overrides the probe (a remote DOCKER_HOST, a deliberate CPU run).

The report is copied out of the stopped container (no bind mount, so the image's non-root user needs no
write access to the host).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import docker
from docker.errors import APIError, ImageNotFound

from images.engine import EngineError, api_client, engine_errors, image_refs, refused
from images.gpu_access import (
    CPU_ONLY,
    GPU_MODES,
    Attempt,
    GpuWay,
    HostProbe,
    no_access_message,
    plan_gpus,
    plan_ways,
    probe_host,
)
from images.matrix import load_matrix

REPORT_DIR_IN_CONTAINER = "/tmp/verify-report"
REPORT_FILES = ("verify.json", "verify.xml")
REQUIRE_GPU_FLAG = "--require-gpu"  # `verify run`: no GPU visible is a FAIL
CONTAINER_LABEL = "org.pytorch-cuda.verify"  # on every container this module creates (tests find leftovers)


class NoGpuAccess(EngineError):
    """The host has GPUs but the engine handed none to the container; the message names the fix."""


@dataclass(frozen=True)
class VerifyOutcome:
    exit_code: int
    gpu: bool
    copied: tuple[Path, ...]
    way: str = CPU_ONLY.label  # how the container got its GPUs (a GpuWay label), or "no GPU"


def copy_out(client: docker.APIClient, container: str, src: str, dest: Path) -> list[Path]:
    """Files of one folder in a (stopped) container, written flat into dest."""
    try:
        stream, _ = client.get_archive(container, src)
    except APIError:
        return []  # the harness wrote nothing (e.g. it crashed at start): the exit code says so
    data = io.BytesIO(b"".join(stream))
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    with tarfile.open(fileobj=data) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                target = dest / Path(member.name).name
                target.write_bytes(handle.read())
                copied.append(target)
    return copied


def verify_command(verify_args: list[str], require_gpu: bool) -> list[str]:
    """`verify run` writing its reports into the container's report folder."""
    return [
        "sh",
        "-c",
        f'mkdir -p {REPORT_DIR_IN_CONTAINER} && exec "$@"',
        "verify",
        "verify",
        "run",
        "--json",
        f"{REPORT_DIR_IN_CONTAINER}/verify.json",
        "--junit",
        f"{REPORT_DIR_IN_CONTAINER}/verify.xml",
        *([REQUIRE_GPU_FLAG] if require_gpu else []),
        *verify_args,
    ]


def remote_engine() -> str | None:
    """DOCKER_HOST when it names another machine (tcp://, ssh://): the host probe cannot see its GPUs."""
    host = os.environ.get("DOCKER_HOST", "")
    return host if host and not host.startswith(("unix://", "npipe://")) else None


def _engine_words(exc: APIError) -> str:
    return str(exc.explanation or exc).strip()


def _start(
    client: docker.APIClient, image: str, command: list[str], way: GpuWay
) -> tuple[str | None, str | None]:
    """Create and start the container asking for GPUs in one way: (id, None), or (None, the engine's
    refusal) with nothing left behind. Engines refuse an unknown runtime at create, a device request no
    driver serves at start."""
    host_config = client.create_host_config(
        runtime=way.runtime,
        device_requests=[dict(request) for request in way.device_requests] or None,
        shm_size="1g",  # NCCL and DataLoader workers need more than Docker's 64 MB default
    )
    try:
        container = client.create_container(
            image,
            command=command,
            host_config=host_config,
            environment=dict(way.environment) or None,
            labels={CONTAINER_LABEL: way.key},
        )["Id"]
    except APIError as exc:
        return None, _engine_words(exc)
    try:
        client.start(container)
    except APIError as exc:
        client.remove_container(container, force=True)
        return None, _engine_words(exc)
    except BaseException:
        client.remove_container(container, force=True)
        raise
    return container, None


def run_in_image(
    image: str,
    reports: Path,
    verify_args: list[str],
    client: docker.APIClient | None = None,
    out: TextIO = sys.stdout,
    gpus: str = "auto",
    probe: HostProbe | None = None,
    ways: list[GpuWay] | None = None,
) -> VerifyOutcome:
    """Run `verify run` in image on this host's GPUs (or on the CPU where it has none). NoGpuAccess when
    the host has GPUs and the engine refuses every way; `ways` replaces the ways read from `docker info`."""
    client = client or api_client()
    with engine_errors(f"the verify run in {image}"):
        return _run_in_image(client, image, reports, verify_args, out, gpus, probe, ways)


def _run_in_image(
    client: docker.APIClient,
    image: str,
    reports: Path,
    verify_args: list[str],
    out: TextIO,
    gpus: str,
    probe: HostProbe | None,
    ways: list[GpuWay] | None,
) -> VerifyOutcome:
    try:
        client.inspect_image(image)
    except ImageNotFound:
        raise EngineError(f"no local image {image}; fix: make build first") from None
    host = probe_host(probe)
    plan = plan_gpus(gpus, host, remote_engine())
    info = client.info()
    if plan.want_gpu:
        planned, skipped = plan_ways(info)
        to_try = ways if ways is not None else planned
        skipped = [] if ways is not None else skipped
        print(f"GPUs: {plan.reason}; verify runs with {REQUIRE_GPU_FLAG}", file=out)
    else:
        to_try, skipped = [CPU_ONLY], []
        print(f"running `verify run` in {image} on CPU only: {plan.reason}", file=out)
    command = verify_command(verify_args, require_gpu=plan.want_gpu)
    refused_ways: list[Attempt] = []
    for way in to_try:
        container, said = _start(client, image, command, way)
        if container is not None:
            break
        assert said is not None
        refused_ways.append(Attempt(way, said, tried=True))
        print(f"GPUs: the engine refused {way.label}: {said}", file=out)
    else:
        if plan.want_gpu:
            raise NoGpuAccess(no_access_message(host, [*refused_ways, *skipped], info))
        raise refused("the container", refused_ways[-1].said)
    if plan.want_gpu:
        print(f"running `verify run` in {image} with all GPUs through {way.label}", file=out)
    out.flush()
    try:
        for chunk in client.logs(container, stream=True, follow=True):
            out.write(chunk.decode(errors="replace"))
            out.flush()
        exit_code = int(client.wait(container)["StatusCode"])
        copied = copy_out(client, container, f"{REPORT_DIR_IN_CONTAINER}/.", reports)
    finally:
        client.remove_container(container, force=True)
    return VerifyOutcome(exit_code, plan.want_gpu, tuple(copied), way.label)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`verify`'s own options (the CLI adds --tag/--flavor/--reports and the `verify run` arguments)."""
    parser.add_argument(
        "--gpus",
        choices=GPU_MODES,
        default="auto",
        help="auto: the host's GPUs when it has any (then required), else the CPU; all: require GPUs; "
        "none: run on the CPU (default: %(default)s)",
    )
    parser.add_argument("--probe-root", type=Path, help=argparse.SUPPRESS)  # tests: a made-up host's files


def cmd_verify(args: argparse.Namespace) -> int:
    line = load_matrix().get(args.tag)
    image, _ = image_refs(line, args.flavor)
    reports = Path(args.reports) / line.short_tag(args.flavor)
    probe = HostProbe.under(args.probe_root) if getattr(args, "probe_root", None) else None
    try:
        outcome = run_in_image(
            image, reports, list(args.verify_args), gpus=getattr(args, "gpus", "auto"), probe=probe
        )
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in outcome.copied:
        print(f"report: {path}")
    if not outcome.copied:
        print("warning: the harness wrote no report", file=sys.stderr)
    return outcome.exit_code
