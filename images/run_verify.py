"""`python -m images verify`: run the harness inside a built image and keep its report on the host.

GPUs are requested only when the engine has the `nvidia` runtime (the NVIDIA Container Toolkit); otherwise
the container runs on CPU and the harness skips its GPU checks with a reason. The report is copied out of
the stopped container (no bind mount, so the image's non-root user needs no write access to the host).
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound
from docker.types import DeviceRequest

from images.engine import EngineError, api_client, image_refs
from images.matrix import load_matrix

REPORT_DIR_IN_CONTAINER = "/tmp/verify-report"
REPORT_FILES = ("verify.json", "verify.xml")


@dataclass(frozen=True)
class VerifyOutcome:
    exit_code: int
    gpu: bool
    copied: tuple[Path, ...]


def engine_has_nvidia(client: docker.APIClient) -> bool:
    return "nvidia" in (client.info().get("Runtimes") or {})


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


def run_in_image(
    image: str, reports: Path, verify_args: list[str], client: docker.APIClient | None = None, out=sys.stdout
) -> VerifyOutcome:
    client = client or api_client()
    try:
        client.inspect_image(image)
    except ImageNotFound:
        raise EngineError(f"no local image {image}; fix: make build first") from None
    gpu = engine_has_nvidia(client)
    print(
        f"running `verify run` in {image} "
        + (
            "with all GPUs (nvidia runtime found)"
            if gpu
            else "on CPU only (the engine has no nvidia runtime)"
        ),
        file=out,
    )
    command = [
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
        *verify_args,
    ]
    host_config = client.create_host_config(
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None,
        shm_size="1g",  # NCCL and DataLoader workers need more than Docker's 64 MB default
    )
    container = client.create_container(image, command=command, host_config=host_config)["Id"]
    try:
        client.start(container)
        for chunk in client.logs(container, stream=True, follow=True):
            out.write(chunk.decode(errors="replace"))
            out.flush()
        exit_code = int(client.wait(container)["StatusCode"])
        copied = copy_out(client, container, f"{REPORT_DIR_IN_CONTAINER}/.", reports)
    finally:
        client.remove_container(container, force=True)
    return VerifyOutcome(exit_code, gpu, tuple(copied))


def cmd_verify(args: argparse.Namespace) -> int:
    line = load_matrix().get(args.tag)
    image, _ = image_refs(line, args.flavor)
    reports = Path(args.reports) / line.short_tag(args.flavor)
    try:
        outcome = run_in_image(image, reports, list(args.verify_args))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in outcome.copied:
        print(f"report: {path}")
    if not outcome.copied:
        print("warning: the harness wrote no report", file=sys.stderr)
    return outcome.exit_code
