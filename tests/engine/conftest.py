"""Fixtures for tests against a real Docker engine: the client, the real v2.8 image, a local registry.

`built_image` builds the REAL v2.8 runtime image from the matrix through images.build (CUDA wheels from
PyPI) once per session; the compose tests use it too. The build gets an extra CA bundle (this host's
bundle, which the TLS-inspecting proxy needs, plus a CA made for the tests) and a package index URL with a
credential in it, both picked up the way `python -m images build` picks up the host's pip settings
(PIP_CERT, a pip.conf), so tests/engine/test_layers.py can prove neither reaches any layer of the image.
Both are kept under build/engine-test/ so that a second local session hits the layer cache; CI starts fresh.

No engine: in CI (env CI set) every engine test fails loudly; elsewhere they skip, saying why.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from images.build import BuildRequest, BuildResult, add_parsers, build_image, request_from_cli
from images.matrix import ImageLine, load_matrix
from images.pipconfig import HostPipSettings

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import http_index_mirror  # noqa: E402

STATE_DIR = REPO / "build" / "engine-test"
HOST_CA_BUNDLE = Path(os.environ.get("CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt")
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")  # where a proxy's private CA is installed
TEST_TAG = "v2.8"
REGISTRY_BINARY = Path("/usr/bin/docker-registry")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/engine needs the engine: mark it so `-m 'not engine'` deselects it."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.engine)


def no_engine(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a Docker engine but {reason}; fix: .ci/run starts dockerd", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=3600)
        client.ping()
    except docker.errors.DockerException as exc:
        no_engine(str(exc))
    yield client
    client.close()


@dataclass(frozen=True)
class BuildSecrets:
    """What the build was given and the image must not contain."""

    ca_bundle: Path  # the file passed as --extra-ca-cert
    private_pems: tuple[bytes, ...]  # PEM bodies of CAs that are not public roots (the test's, the proxy's)
    credential: str  # the password inside the index URL
    index_url: str


def _pem_bodies(data: bytes) -> list[bytes]:
    """Base64 body of each certificate: what a leaked copy of the PEM file would contain."""
    bodies = []
    for block in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        body = block.split(b"-----END CERTIFICATE-----")[0]
        bodies.append(b"".join(body.split()))
    return bodies


def _make_test_ca(directory: Path) -> Path:
    cert = directory / "test-ca.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", f"/CN=pytorch-cuda engine-test CA {secrets.token_hex(6)}",
             "-keyout", str(directory / "test-ca.key"), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
    return cert


@pytest.fixture(scope="session")
def build_secrets() -> BuildSecrets:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if not HOST_CA_BUNDLE.is_file():
        pytest.fail(f"CA bundle {HOST_CA_BUNDLE} not found; fix: set CA_BUNDLE to a PEM file", pytrace=False)
    test_ca = _make_test_ca(STATE_DIR)
    bundle = STATE_DIR / "extra-ca.pem"
    bundle.write_bytes(HOST_CA_BUNDLE.read_bytes() + b"\n" + test_ca.read_bytes())
    private = [*_pem_bodies(test_ca.read_bytes())]
    for crt in sorted(LOCAL_CA_DIR.glob("*.crt")):
        private += _pem_bodies(crt.read_bytes())
    token_file = STATE_DIR / "credential"
    if not token_file.exists():
        token_file.write_text(f"pct-{secrets.token_hex(16)}")
    credential = token_file.read_text().strip()
    # PyPI ignores basic auth on its simple API, so a real credential-carrying URL still installs.
    index_url = f"https://ci-user:{credential}@pypi.org/simple"
    return BuildSecrets(bundle, tuple(private), credential, index_url)


@pytest.fixture(scope="session")
def matrix_line() -> ImageLine:
    return load_matrix().get(TEST_TAG)


@pytest.fixture(scope="session")
def build_request(build_secrets: BuildSecrets) -> tuple[BuildRequest, HostPipSettings | None]:
    """`python -m images build --tag v2.8` on a host whose pip already knows the index and the CA.

    No flag names them: the credentialed index URL comes from a pip.conf named by PIP_CONFIG_FILE and the
    CA bundle from PIP_CERT, read by the same code as the CLI's, so the layer scan covers secrets picked up
    from the host. The request equals the one the flags would give, so the deps image is reused.
    """
    conf = STATE_DIR / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {build_secrets.index_url}\nextra-index-url =\n")
    env = {
        "PIP_CONFIG_FILE": str(conf),
        "PIP_CERT": str(build_secrets.ca_bundle),
        "HOME": str(STATE_DIR),
        "XDG_CONFIG_DIRS": str(STATE_DIR / "no-xdg"),
    }
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    request, host = request_from_cli(parser.parse_args(["build", "--tag", TEST_TAG]), env)
    expected = (build_secrets.index_url, None, build_secrets.ca_bundle)
    if (request.index_url, request.extra_index_url, request.extra_ca) != expected:
        pytest.fail(
            f"this host's pip configuration changed the test build's index/CA ({host}); fix: look at "
            "/etc/pip.conf and /etc/xdg/pip/pip.conf ([install] sections beat the test's [global])",
            pytrace=False,
        )
    return request, host


@pytest.fixture(scope="session")
def build_result(
    docker_client: docker.DockerClient, build_request: tuple[BuildRequest, HostPipSettings | None]
) -> BuildResult:
    """The real v2.8 runtime image, built once per session through the project's own build code."""
    return build_image(build_request[0], client=docker_client.api)


@pytest.fixture(scope="session")
def built_image(build_result: BuildResult) -> str:
    """Short tag of the real v2.8 runtime image ("pytorch-cuda:v2.8"), built once per session."""
    return build_result.tags[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def local_registry(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on 127.0.0.1:<free port>; yields "127.0.0.1:PORT"."""
    if not REGISTRY_BINARY.exists():
        message = f"{REGISTRY_BINARY} not installed; fix: apt-get install docker-registry"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen(
        [str(REGISTRY_BINARY), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (root / "registry.log").read_text()[-2000:]
            pytest.fail(f"registry did not start: {tail}", pytrace=False)
        time.sleep(0.2)
    yield address
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(root / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def mirror_url(docker_client: docker.DockerClient) -> Iterator[str]:
    """PyPI over plain HTTP at the bridge gateway (scripts/http_index_mirror.py): how a build here reaches the
    index with no CA, as a site's own mirror would be reached."""
    gateway = docker_client.api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"]
    server = http_index_mirror.start(port=0)
    yield f"http://{gateway}:{server.server_address[1]}/simple"
    server.shutdown()
