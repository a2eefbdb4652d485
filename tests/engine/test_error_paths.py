"""Engine and registry refusals, made for real, end as one error naming the cause and the fix; nothing is
left half-written (no tag from a failed build or push, no container from a failed verify).

The images pushed here are debian:trixie-slim under a made-up matrix line's names (seconds, not the 8 GB
image); the registries are Debian's docker-registry in read-only mode and small HTTP servers answering
401/403/500 the way a registry with auth, without write access, or with a full disk does.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from compose_fixtures import free_port

from images import dockerfile as df
from images.build import BuildError, BuildRequest, build_image
from images.engine import DISK_FULL_FIX, EngineError, engine_errors, image_refs
from images.files import write_atomically
from images.lock import parse_lock, render_lock
from images.matrix import IMAGE_NAME, ImageLine, Matrix, load_matrix
from images.registry import PushError, push_line
from images.run_verify import CONTAINER_LABEL, run_in_image

REPO = Path(__file__).resolve().parents[2]
REGISTRY_BINARY = Path("/usr/bin/docker-registry")
SMALL_IMAGE = "debian:trixie-slim"
MISSING_BASE = "pytorch-cuda-test/no-such-base:1"


# A Python no real line has: a full tag (2.8.0-cuda12.8-cudnn9-py3.13-runtime) carries no short tag, so a
# made-up line with the real line's versions would name, and at teardown untag, the real v2.8 image.
NO_REAL_PYTHON = "0.0"


def made_up_line(
    real: ImageLine, tag: str, base_image: str | None = None, python: str = NO_REAL_PYTHON
) -> ImageLine:
    return ImageLine(tag=tag, torch=real.torch, python=python, base_image=base_image or real.base_image,
                     flavors=("runtime",), packages=real.packages, pins=real.pins)  # fmt: skip


def our_tags(client: docker.DockerClient) -> set[str]:
    return {t for image in client.images.list() for t in image.tags if IMAGE_NAME in t}


@pytest.fixture
def small_image_as(docker_client: docker.DockerClient, matrix_line: ImageLine) -> Iterator[ImageLine]:
    """A made-up line whose short and full names are on the small image (removed afterwards)."""
    line = made_up_line(matrix_line, "v0.7")
    refs = image_refs(line, "runtime")
    assert not any(docker_client.images.list(name=ref) for ref in refs), f"{refs} name real images"
    for ref in refs:
        docker_client.images.get(SMALL_IMAGE).tag(ref)
    yield line
    for ref in refs:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.api.remove_image(ref, noprune=True)


@contextlib.contextmanager
def answering(status: int, headers: dict[str, str]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering every request with status; yields its host:port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = answer

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def read_only_registry(root: Path) -> Iterator[str]:
    """Debian's docker-registry in maintenance read-only mode: pulls work, pushes are refused (405)."""
    if not REGISTRY_BINARY.exists():
        pytest.fail(f"{REGISTRY_BINARY} not installed; fix: apt-get install docker-registry", pytrace=False)
    port = free_port()
    config = root / "readonly.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, "
        "maintenance: {readonly: {enabled: true}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    proc = subprocess.Popen([str(REGISTRY_BINARY), "serve", str(config)], stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "read-only registry did not start"
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


REFUSALS = {
    "auth-401": ((401, {"WWW-Authenticate": 'Basic realm="registry"'}), "fix: docker login 127.0.0.1:"),
    "forbidden-403": ((403, {}), "write access"),
    "broken-500": ((500, {}), "failed on its side"),
}


# The engine retries a failed upload 5 times with backoff (dockerd's max-upload-attempts): 50 s here.
SLOW_CASES = {"broken-500"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW_CASES else []) for c in REFUSALS]
)
def test_a_refusing_registry_names_the_fix_and_leaves_no_remote_name(
    case: str, docker_client: docker.DockerClient, small_image_as: ImageLine
) -> None:
    (status, headers), fix = REFUSALS[case]
    with answering(status, headers) as registry, pytest.raises(PushError) as failure:
        push_line(small_image_as, "runtime", registry, client=docker_client.api)
    assert fix in str(failure.value), failure.value
    assert not {t for t in our_tags(docker_client) if t.startswith(registry)}


def test_a_read_only_registry_says_it_takes_no_pushes(
    docker_client: docker.DockerClient, small_image_as: ImageLine, tmp_path: Path
) -> None:
    with read_only_registry(tmp_path) as registry, pytest.raises(PushError) as failure:
        push_line(small_image_as, "runtime", registry, client=docker_client.api)
    assert "405" in str(failure.value) and "does not accept pushes" in str(failure.value)
    assert not {t for t in our_tags(docker_client) if t.startswith(registry)}


def test_a_registry_nobody_runs_is_named_unreachable(
    docker_client: docker.DockerClient, small_image_as: ImageLine
) -> None:
    registry = f"127.0.0.1:{free_port()}"
    with pytest.raises(PushError) as failure:
        push_line(small_image_as, "runtime", registry, client=docker_client.api)
    assert "connection refused" in str(failure.value) and "cannot reach that registry" in str(failure.value)


def test_push_of_an_image_never_built_says_make_build(
    docker_client: docker.DockerClient, matrix_line: ImageLine
) -> None:
    line = made_up_line(matrix_line, "v0.6")
    with pytest.raises(EngineError) as failure:
        push_line(line, "runtime", "127.0.0.1:1", client=docker_client.api)
    assert (
        str(failure.value)
        == "no local image pytorch-cuda:v0.6; fix: make build TAG=v0.6 FLAVOR=runtime first"
    )


def test_verify_of_an_image_never_built_says_make_build_and_starts_nothing(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    with pytest.raises(EngineError) as failure:
        run_in_image(f"{IMAGE_NAME}:v0.6", tmp_path, [], client=docker_client.api, gpus="none")
    assert "no local image pytorch-cuda:v0.6; fix: make build first" in str(failure.value)
    assert not docker_client.containers.list(all=True, filters={"label": CONTAINER_LABEL})


def _absent_line(client: docker.DockerClient) -> ImageLine:
    for line in load_matrix().lines:
        if not any(client.images.list(name=ref) for ref in image_refs(line, "runtime")):
            return line
    pytest.fail("every matrix line's image is on this engine; this test needs one that is not", pytrace=False)


@pytest.mark.parametrize("command", ["verify", "push"])
def test_cli_for_an_image_never_built_exits_1_with_one_error_line(
    command: str, docker_client: docker.DockerClient
) -> None:
    line = _absent_line(docker_client)
    extra = ["--registry", "127.0.0.1:1"] if command == "push" else ["--gpus", "none"]
    result = subprocess.run(
        [sys.executable, "-m", "images", command, "--tag", line.tag, *extra],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        line_ for line_ in result.stderr.strip().splitlines() if line_.startswith("error: no local image")
    ], result.stderr
    assert "make build" in result.stderr


def test_a_full_disk_in_the_engine_names_the_disk_and_the_prune(docker_client: docker.DockerClient) -> None:
    """The engine's own ENOSPC (it writes a file into a 64 KiB tmpfs volume), through engine_errors."""
    api = docker_client.api
    volume = api.create_volume(
        driver="local", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=64k"}
    )
    host_config = api.create_host_config(binds={volume["Name"]: {"bind": "/mnt/full", "mode": "rw"}})
    container = api.create_container(SMALL_IMAGE, command=["true"], host_config=host_config)["Id"]
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        member = tarfile.TarInfo("big")
        member.size = 200_000
        tar.addfile(member, io.BytesIO(b"x" * member.size))
    try:
        with pytest.raises(EngineError) as failure, engine_errors("copying into the container"):
            api.put_archive(container, "/mnt/full", payload.getvalue())
    finally:
        api.remove_container(container, force=True)
        api.remove_volume(volume["Name"])
    message = str(failure.value)
    assert "the engine refused copying into the container" in message and "no space left on device" in message
    assert message.endswith(DISK_FULL_FIX)


def _line_tree(root: Path, line: ImageLine, lock_from: ImageLine) -> Matrix:
    """A copy of the build inputs with the made-up line's Dockerfile and lock (the real line's packages)."""
    shutil.copytree(REPO / "verify", root / "verify", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "images" / "rootfs", root / "images" / "rootfs")
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy(REPO / name, root / name)
    matrix = Matrix(lines=(line,))
    for item in df.render_all(matrix, root / "images"):
        write_atomically(item.path, item.text)
    _, entries = parse_lock(
        (REPO / "images" / lock_from.tag / "requirements.lock").read_text(), lock_from.tag
    )
    requirements = (root / "images" / line.tag / "requirements.txt").read_text()
    (root / "images" / line.tag / "requirements.lock").write_text(
        render_lock(line, "runtime", requirements, entries)
    )
    return matrix


def test_a_base_image_that_is_nowhere_is_named_with_the_fix_and_nothing_is_left(
    docker_client: docker.DockerClient, matrix_line: ImageLine, tmp_path: Path
) -> None:
    line = made_up_line(matrix_line, "v0.8", base_image=MISSING_BASE, python=matrix_line.python)
    matrix = _line_tree(tmp_path / "repo", line, matrix_line)
    tags_before = our_tags(docker_client)

    with pytest.raises(BuildError) as failure:
        build_image(BuildRequest(tag="v0.8"), matrix=matrix, client=docker_client.api,
                    log_dir=tmp_path / "logs", root=tmp_path / "repo")  # fmt: skip
    report = str(failure.value)
    assert f"the base image {MISSING_BASE} is not on this engine and could not be pulled" in report
    assert f"fix: `docker pull {MISSING_BASE}`" in report and "--base-image REF" in report
    assert "Traceback" not in report

    # Only this line's names: other work on a shared engine may tag its own images meanwhile.
    new_tags = {t for t in our_tags(docker_client) - tags_before if "v0.8" in t or "build:" in t}
    assert not new_tags, f"a failed build left tags: {new_tags}"


@contextlib.contextmanager
def engine_dies_at(marker: bytes, socket_dir: Path) -> Iterator[str]:
    """A unix-socket relay to the real engine that drops the connection when a request contains marker:
    to the client, the engine went away mid-conversation (as when dockerd stops). Yields its DOCKER_HOST."""
    engine_path = (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock").removeprefix("unix://")
    path = socket_dir / "relay.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)

    def pipe(src: socket.socket, dst: socket.socket, watch: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if watch and marker in data:
                    break
                dst.sendall(data)
        for end in (src, dst):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                engine = socket.socket(socket.AF_UNIX)
                engine.connect(engine_path)
                threading.Thread(target=pipe, args=(client, engine, True), daemon=True).start()
                threading.Thread(target=pipe, args=(engine, client, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"unix://{path}"
    finally:
        listener.close()


def test_the_engine_going_away_mid_push_says_lost_and_leaves_no_remote_name(
    docker_client: docker.DockerClient,
    small_image_as: ImageLine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not (os.environ.get("DOCKER_HOST") or "unix://").startswith("unix://"):
        pytest.skip("the relay speaks to a local engine's unix socket")
    registry = f"127.0.0.1:{free_port()}"
    with engine_dies_at(b"/push", tmp_path) as relay:
        monkeypatch.setenv("DOCKER_HOST", relay)
        with pytest.raises(EngineError) as failure:
            push_line(small_image_as, "runtime", registry)
    message = str(failure.value)
    assert f"lost the Docker engine at {relay} while the push of pytorch-cuda:v0.7" in message, message
    assert "systemctl status docker" in message
    assert not {t for t in our_tags(docker_client) if t.startswith(registry)}
