"""No build-only secret in the image: walk every layer of `docker save`, the config and the history.

The build was given an extra CA bundle (the host's, with the proxy's private CA, plus a CA made for this test)
and an index URL with a credential, both picked up from the host's pip settings (PIP_CERT, a pip.conf named
by PIP_CONFIG_FILE) as `python -m images build` picks them up without flags. Public root certificates may
legitimately be in the image (Debian's ca-certificates); the private CAs' bodies and the credential must not
be, in any file of any layer.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

import docker
import pytest

from images.pipconfig import describe

if TYPE_CHECKING:
    from conftest import BuildSecrets

    from images.build import BuildRequest
    from images.pipconfig import HostPipSettings

pytestmark = pytest.mark.slow

CHUNK = 8 * 1024 * 1024


class _StreamReader:
    """A file-like view of docker-py's chunk generator, so tarfile can read `docker save` as a stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def needles_of(secrets: BuildSecrets) -> dict[str, bytes]:
    """Search strings: each private CA's base64 body as one line of its PEM (64 chars), and the credential."""
    needles = {"credential": secrets.credential.encode()}
    for index, body in enumerate(secrets.private_pems):
        needles[f"private CA #{index} (PEM line)"] = body[64:128]  # a full PEM line from the body's middle
    return needles


def scan(stream: IO[bytes], needles: dict[str, bytes], where: str, found: list[str]) -> None:
    longest = max(len(n) for n in needles.values())
    tail = b""
    while chunk := stream.read(CHUNK):
        window = tail + chunk
        for name, needle in needles.items():
            if needle in window:
                found.append(f"{name} in {where}")
        tail = window[-longest:]


def test_no_ca_or_credential_in_any_layer_config_or_history(
    docker_client: docker.DockerClient, built_image: str, build_secrets: BuildSecrets
) -> None:
    needles = needles_of(build_secrets)
    assert len(needles) >= 2 and all(len(n) >= 32 for n in needles.values())
    found: list[str] = []
    layers = files = 0
    image = docker_client.images.get(built_image)
    outer = tarfile.open(fileobj=_StreamReader(iter(image.save(chunk_size=CHUNK))), mode="r|")  # noqa: SIM115
    for member in outer:
        if not member.isfile():
            continue
        handle = outer.extractfile(member)
        assert handle is not None
        if member.name.endswith("layer.tar"):
            layers += 1
            inner = tarfile.open(fileobj=handle, mode="r|")  # noqa: SIM115
            for entry in inner:
                if entry.isfile():
                    files += 1
                    data = inner.extractfile(entry)
                    assert data is not None
                    scan(data, needles, f"{member.name}:{entry.name}", found)
                else:  # names and link targets, too
                    scan(_bytes(f"{entry.name} {entry.linkname}"), needles, member.name, found)
        else:  # the image config (with history and labels), manifest.json, repositories
            scan(handle, needles, member.name, found)
    assert layers >= 5 and files > 10000, f"walked only {layers} layers / {files} files"
    history = json.dumps(docker_client.api.history(built_image)).encode()
    scan(_bytes(history), needles, "docker history", found)
    assert not found, "build-only secrets leaked: " + "; ".join(found)


def test_the_build_took_its_index_and_ca_from_the_hosts_pip_settings(
    build_request: tuple[BuildRequest, HostPipSettings | None], build_secrets: BuildSecrets
) -> None:
    """The secrets scanned for came in through pip's settings, and what the build printed masks them."""
    _request, host = build_request
    assert host is not None and host.index_url is not None and host.cert is not None
    assert host.index_url.source.startswith("PIP_CONFIG_FILE=") and host.cert.source == "env PIP_CERT"
    printed = "\n".join(describe(host))
    assert build_secrets.credential not in printed and "https://ci-user:****@pypi.org/simple" in printed


def test_the_needles_would_be_found(build_secrets: BuildSecrets) -> None:
    """The scan is not vacuous: the very bundle we built with does contain them."""
    found: list[str] = []
    needles = needles_of(build_secrets)
    scan(build_secrets.ca_bundle.open("rb"), {k: v for k, v in needles.items() if "CA" in k}, "bundle", found)
    assert len(found) == len(build_secrets.private_pems) >= 1
    found.clear()
    scan(_bytes(build_secrets.index_url), {"credential": needles["credential"]}, "url", found)
    assert found == ["credential in url"]


def _bytes(data: str | bytes) -> IO[bytes]:
    return io.BytesIO(data.encode() if isinstance(data, str) else data)
