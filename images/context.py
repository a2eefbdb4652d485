"""The build context tarball: the repository root filtered by .dockerignore, plus the build-only inputs.

The context is the repository root (the image carries verify/ and images/rootfs/), sent to the engine as a
custom tarball so build-only files (an extra CA bundle, a wheelhouse) can be added at fixed paths under
`.build/` without ever being written into the working tree. Only the builder-stage variant of the Dockerfile
(images/build.py renders it when such inputs are given) COPYs them, into its builder stage.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from docker.utils.build import exclude_paths

CA_PATH_IN_CONTEXT = ".build/extra-ca.pem"
WHEELHOUSE_IN_CONTEXT = ".build/wheelhouse"
SPOOL_BYTES = 64 * 1024 * 1024  # contexts with a wheelhouse can be large: spill to disk past this


class ContextError(ValueError):
    """A build-only input is unusable; the message names the option, the value and the fix."""


@dataclass(frozen=True)
class ContextInputs:
    root: Path
    dockerfile: str  # relative to root, e.g. "images/v2.8/Dockerfile"
    extra_ca: Path | None = None
    wheelhouse: Path | None = None
    extra_files: tuple[tuple[str, bytes], ...] = ()  # (path in context, content), e.g. a derived Dockerfile


def read_dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def check_extra_ca(path: Path) -> bytes:
    """The bundle must be PEM: a DER file or a wrong path would only fail minutes later inside pip."""
    if not path.is_file():
        raise ContextError(
            f"--extra-ca-cert: {path} is not a file; fix: pass a PEM bundle, e.g. "
            "/etc/ssl/certs/ca-certificates.crt"
        )
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ContextError(
            f"--extra-ca-cert: {path} holds no PEM certificate (no 'BEGIN CERTIFICATE'); "
            "fix: convert it with `openssl x509 -inform der -in CA.der -out CA.pem`"
        )
    return data


def wheel_files(path: Path) -> list[Path]:
    if not path.is_dir():
        raise ContextError(
            f"--wheelhouse: {path} is not a directory; fix: pass a folder holding the wheels "
            "images/<tag>/requirements.lock names (`pip download -d DIR --no-deps --only-binary=:all: "
            "-r images/<tag>/requirements.lock`, run with the image's Python on linux x86_64)"
        )
    wheels = sorted(path.glob("*.whl"))
    if not wheels:
        raise ContextError(
            f"--wheelhouse: {path} holds no .whl file; fix: fill it with `pip download -d {path} --no-deps "
            "--only-binary=:all: -r images/<tag>/requirements.lock` (run with the image's Python on linux "
            "x86_64)"
        )
    return wheels


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build_context(inputs: ContextInputs) -> IO[bytes]:
    """An uncompressed tar of the context, rewound; the caller closes it."""
    root = inputs.root
    ca_data = check_extra_ca(inputs.extra_ca) if inputs.extra_ca is not None else None
    wheels = wheel_files(inputs.wheelhouse) if inputs.wheelhouse is not None else []

    patterns = read_dockerignore(root)
    # Whatever sits in a local .build/ folder is never sent: only the inputs named on the command line are.
    patterns.append(".build")
    files = sorted(exclude_paths(str(root), patterns, dockerfile=inputs.dockerfile))

    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115  (returned to the caller)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            tar.add(root / rel, arcname=rel, recursive=False)
        if inputs.dockerfile not in files and not inputs.dockerfile.startswith(".build/"):
            # an ignored Dockerfile is still needed by the engine
            tar.add(root / inputs.dockerfile, arcname=inputs.dockerfile, recursive=False)
        if ca_data is not None:
            _add_bytes(tar, CA_PATH_IN_CONTEXT, ca_data)
        for wheel in wheels:
            tar.add(wheel, arcname=f"{WHEELHOUSE_IN_CONTEXT}/{wheel.name}", recursive=False)
        for name, data in inputs.extra_files:
            _add_bytes(tar, name, data)
    out.seek(0)
    return out
