"""The version matrix: what each image line pins, loaded and validated from matrix.toml and pins.toml.

matrix.toml is written by people (torch version, Python, base image, flavors, the packages on top).
pins.toml is written by `make pins` from the torch wheels themselves (CUDA, cuDNN, NCCL, every nvidia-* pin),
never by hand. Everything else (Dockerfiles, tags, labels, the README table, the CI job matrix) derives from
the `Matrix` returned by `load_matrix()`.

CONTRACT (other modules rely on these names; keep them stable):
    load_matrix(matrix_path=MATRIX_PATH, pins_path=PINS_PATH, *, require_pins=True) -> Matrix
    Matrix.lines: tuple[ImageLine, ...]; Matrix.tags; Matrix.get(tag) -> ImageLine (UnknownTagError lists tags)
    ImageLine.tag / torch / python / base_image / flavors / packages / pins
    ImageLine.short_tag(flavor) -> "v2.8" for runtime, "v2.8-devel" for devel
    ImageLine.full_tag(flavor) -> "2.8.0-cuda12.8-cudnn9-py3.13-runtime"
    ImageLine.labels(flavor) -> dict of OCI + org.pytorch-cuda.* labels carrying every pin
    ImageLine.manifest(flavor) -> dict written to /etc/pytorch-cuda/manifest.json in the image (for verify)
    MatrixError(ValueError): message names file, tag, field, value and the fix
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent
MATRIX_PATH = IMAGES_DIR / "matrix.toml"
PINS_PATH = IMAGES_DIR / "pins.toml"
IMAGE_NAME = "pytorch-cuda"
FLAVORS = ("runtime", "devel")


class MatrixError(ValueError):
    """A matrix or pins file is wrong; the message says where and how to fix it."""


class UnknownTagError(MatrixError):
    """A tag that the matrix does not have; the message lists the known ones."""


@dataclass(frozen=True)
class Pins:
    """What the line's torch wheel itself requires, read by `make pins` (never typed by hand)."""

    wheel: str  # wheel file name the pins were read from
    sha256: str  # its digest on the index
    cuda: str  # torch.version.cuda, e.g. "12.8"
    cudnn: str  # nvidia-cudnn-cu12 pin, e.g. "9.10.2.21"
    nccl: str  # nvidia-nccl-cu12 pin, e.g. "2.27.3"
    requires_python: str  # the wheel's Requires-Python
    nvidia: dict[str, str] = field(default_factory=dict)  # every nvidia-* Requires-Dist: name -> version
    triton: str | None = None


@dataclass(frozen=True)
class ImageLine:
    tag: str  # "v2.8"
    torch: str  # "2.8.0"
    python: str  # "3.13"
    base_image: str  # "debian:trixie-slim"
    flavors: tuple[str, ...]  # subset of FLAVORS
    packages: dict[str, str]  # pinned packages on top: {"transformers": "4.56.2", ...}
    pins: Pins | None  # None only when loaded with require_pins=False (before the first `make pins`)
