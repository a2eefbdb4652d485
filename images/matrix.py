"""The version matrix: what each image line pins, loaded and validated from matrix.toml and pins.toml.

matrix.toml is written by people (torch version, Python, base image, flavors, the packages on top).
pins.toml is written by `make pins` from the torch wheels themselves (CUDA, cuDNN, NCCL, every nvidia-* pin),
never by hand. Everything else (Dockerfiles, tags, labels, the README table, the CI job matrix) derives from
the `Matrix` returned by `load_matrix()`.

CONTRACT (other modules rely on these names; keep them stable):
    load_matrix(matrix_path=MATRIX_PATH, pins_path=PINS_PATH, *, require_pins=True) -> Matrix
    Matrix.lines: tuple[ImageLine, ...]; Matrix.tags; Matrix.jobs() -> (line, flavor) pairs
    Matrix.get(tag) -> ImageLine (UnknownTagError lists the known tags)
    ImageLine.tag / torch / python / base_image / flavors / packages / pins / platforms
    ImageLine.short_tag(flavor) -> "v2.8" for runtime, "v2.8-devel" for devel
    ImageLine.full_tag(flavor) -> "2.8.0-cuda12.8-cudnn9-py3.13-runtime"
    ImageLine.labels(flavor) -> dict of OCI + org.pytorch-cuda.* labels carrying every pin
    ImageLine.manifest(flavor) -> dict written to /etc/pytorch-cuda/manifest.json in the image (for verify)
    MatrixError(ValueError): message names file, tag, field, value and the fix
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

IMAGES_DIR = Path(__file__).resolve().parent
MATRIX_PATH = IMAGES_DIR / "matrix.toml"
PINS_PATH = IMAGES_DIR / "pins.toml"
IMAGE_NAME = "pytorch-cuda"
FLAVORS = ("runtime", "devel")
# The platforms an image can be built for; the first is the one every line has (pins.toml is read from its
# torch wheel, CI's engine runs it). A line lists more where PyPI's torch wheels carry CUDA there too.
PLATFORMS = ("linux/amd64", "linux/arm64")
SOURCE_URL = "https://github.com/pytorch-cuda/pytorch-cuda"
LICENSE = "BSD-3-Clause"
MANIFEST_SCHEMA = 1

# Keys a line (or [defaults]) may hold, and those every line must end up with after defaults apply.
LINE_KEYS = ("torch", "python", "base_image", "flavors", "packages", "platforms")
REQUIRED_LINE_KEYS = ("torch", "python", "base_image", "flavors")
TOP_KEYS = ("defaults", "lines")
PIN_KEYS = ("torch", "wheel", "sha256", "cuda", "cudnn", "nccl", "requires_python", "triton", "nvidia")
REQUIRED_PIN_KEYS = ("torch", "wheel", "sha256", "cuda", "cudnn", "nccl", "requires_python", "nvidia")
# Installed from the torch wheel's own pins; listing them under packages would fight those pins.
RESERVED_PACKAGES = ("torch", "triton")

TAG_RE = re.compile(r"^v(\d+)\.(\d+)$")
PYTHON_RE = re.compile(r"^3\.\d+$")
CUDA_RE = re.compile(r"^\d+\.\d+$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PACKAGE_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# A Docker image reference: [host[:port]/]path[:tag][@sha256:digest], lower-case path components.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF_RE = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


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
    torch: str = ""  # the torch version the wheel is (stale pins after a matrix edit are caught by this)

    def as_dict(self) -> dict[str, Any]:
        """The pins.toml table for this line (fields in a stable, readable order)."""
        out: dict[str, Any] = {
            "torch": self.torch,
            "wheel": self.wheel,
            "sha256": self.sha256,
            "cuda": self.cuda,
            "cudnn": self.cudnn,
            "nccl": self.nccl,
            "requires_python": self.requires_python,
        }
        if self.triton is not None:
            out["triton"] = self.triton
        out["nvidia"] = dict(sorted(self.nvidia.items()))
        return out


@dataclass(frozen=True)
class ImageLine:
    tag: str  # "v2.8"
    torch: str  # "2.8.0"
    python: str  # "3.13"
    base_image: str  # "debian:trixie-slim"
    flavors: tuple[str, ...]  # subset of FLAVORS
    packages: dict[str, str]  # pinned packages on top: {"transformers": "4.56.2", ...}
    pins: Pins | None  # None only when loaded with require_pins=False (before the first `make pins`)
    platforms: tuple[str, ...] = PLATFORMS[:1]  # Docker platforms, PLATFORMS[0] first

    # --- tags -------------------------------------------------------------------------------------------
    def short_tag(self, flavor: str) -> str:
        """`v2.8` for the runtime flavor (the seed's alias), `v2.8-devel` for the others."""
        self._check_flavor(flavor)
        return self.tag if flavor == "runtime" else f"{self.tag}-{flavor}"

    def full_tag(self, flavor: str) -> str:
        """In the style of the official images: `2.8.0-cuda12.8-cudnn9-py3.13-runtime`."""
        self._check_flavor(flavor)
        pins = self.require_pins()
        cudnn_major = pins.cudnn.split(".")[0]
        return f"{self.torch}-cuda{pins.cuda}-cudnn{cudnn_major}-py{self.python}-{flavor}"

    # --- what goes into the image ---------------------------------------------------------------------
    def labels(self, flavor: str) -> dict[str, str]:
        """OCI labels plus one label per pin, so `docker inspect` tells what an image holds."""
        pins = self.require_pins()
        full = self.full_tag(flavor)
        labels = {
            "org.opencontainers.image.title": IMAGE_NAME,
            "org.opencontainers.image.description": (
                f"PyTorch {self.torch} with CUDA {pins.cuda}, cuDNN {pins.cudnn}, NCCL {pins.nccl} "
                f"on Python {self.python} ({flavor})"
            ),
            "org.opencontainers.image.version": full,
            "org.opencontainers.image.source": SOURCE_URL,
            "org.opencontainers.image.licenses": LICENSE,
            "org.opencontainers.image.base.name": self.base_image,
            "org.pytorch-cuda.tag": self.short_tag(flavor),
            "org.pytorch-cuda.flavor": flavor,
            "org.pytorch-cuda.torch": self.torch,
            "org.pytorch-cuda.python": self.python,
            "org.pytorch-cuda.cuda": pins.cuda,
            "org.pytorch-cuda.cudnn": pins.cudnn,
            "org.pytorch-cuda.nccl": pins.nccl,
        }
        if pins.triton is not None:
            labels["org.pytorch-cuda.triton"] = pins.triton
        for name, version in sorted(self.packages.items()):
            labels[f"org.pytorch-cuda.pkg.{name}"] = version
        for name, version in sorted(pins.nvidia.items()):
            labels[f"org.pytorch-cuda.nvidia.{name}"] = version
        return labels

    def manifest(self, flavor: str) -> dict[str, Any]:
        """The promise `verify` checks the installed stack against (/etc/pytorch-cuda/manifest.json)."""
        pins = self.require_pins()
        return {
            "schema": MANIFEST_SCHEMA,
            "image": IMAGE_NAME,
            "tag": self.short_tag(flavor),
            "flavor": flavor,
            "full_tag": self.full_tag(flavor),
            "base_image": self.base_image,
            "python": self.python,
            "torch": self.torch,
            "cuda": pins.cuda,
            "cudnn": pins.cudnn,
            "nccl": pins.nccl,
            "triton": pins.triton,
            "packages": dict(sorted(self.packages.items())),
            "nvidia": dict(sorted(pins.nvidia.items())),
        }

    # --- helpers ----------------------------------------------------------------------------------------
    def _check_flavor(self, flavor: str) -> None:
        if flavor not in self.flavors:
            raise MatrixError(
                f"{self.tag}: unknown flavor {flavor!r}; this line has {', '.join(self.flavors)}; "
                f"fix: pick one of them (or add it to flavors in {MATRIX_PATH.name})"
            )

    def require_pins(self) -> Pins:
        """The pins, or a MatrixError saying to run `make pins` (for code that needs CUDA versions)."""
        if self.pins is None:
            raise MatrixError(f"{self.tag}: no pins recorded for torch {self.torch}; fix: make pins")
        return self.pins


@dataclass(frozen=True)
class Matrix:
    lines: tuple[ImageLine, ...]
    matrix_path: Path = MATRIX_PATH
    pins_path: Path = PINS_PATH

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(line.tag for line in self.lines)

    def get(self, tag: str) -> ImageLine:
        for line in self.lines:
            if line.tag == tag:
                return line
        raise UnknownTagError(
            f"unknown tag {tag!r}; known tags: {', '.join(self.tags)} (from {self.matrix_path})"
        )

    def jobs(self) -> Iterator[tuple[ImageLine, str]]:
        """Every (line, flavor) pair, in matrix order: one image each."""
        for line in self.lines:
            for flavor in line.flavors:
                yield line, flavor

    def __iter__(self) -> Iterator[ImageLine]:
        return iter(self.lines)


# --- loading ------------------------------------------------------------------------------------------


def load_matrix(
    matrix_path: Path = MATRIX_PATH, pins_path: Path = PINS_PATH, *, require_pins: bool = True
) -> Matrix:
    """Read and validate both files; raises MatrixError (never anything else) on bad input."""
    matrix_path, pins_path = Path(matrix_path), Path(pins_path)
    raw = read_toml(matrix_path, missing_fix="restore it from git (git checkout images/matrix.toml)")
    specs = parse_matrix(raw, matrix_path)
    pins_raw = read_toml(pins_path, missing_fix="make pins") if pins_path.exists() or require_pins else {}
    all_pins = parse_pins(pins_raw, pins_path, known_tags=[s["tag"] for s in specs])

    lines = []
    for spec in specs:
        tag = spec["tag"]
        pins = all_pins.get(tag)
        if pins is not None and pins.torch != spec["torch"]:
            if require_pins:
                raise MatrixError(
                    f"{pins_path}: [{tag}] torch: pins were read from torch {pins.torch!r} but "
                    f"{matrix_path.name} asks for {spec['torch']!r}; fix: make pins"
                )
            pins = None
        if pins is None and require_pins:
            raise MatrixError(
                f"{pins_path}: [{tag}]: no pins for this line (torch {spec['torch']}); fix: make pins"
            )
        if pins is not None:
            _check_python_supported(spec, pins, matrix_path, pins_path)
        lines.append(
            ImageLine(
                tag=tag,
                torch=spec["torch"],
                python=spec["python"],
                base_image=spec["base_image"],
                flavors=tuple(spec["flavors"]),
                packages=dict(spec["packages"]),
                pins=pins,
                platforms=tuple(spec.get("platforms", PLATFORMS[:1])),
            )
        )
    return Matrix(lines=tuple(lines), matrix_path=matrix_path, pins_path=pins_path)


def read_toml(path: Path, *, missing_fix: str) -> dict[str, Any]:
    """tomllib with errors re-worded: the file, the line, and for a duplicate table the tag."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatrixError(f"{path}: file not found; fix: {missing_fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"{path}: cannot read ({exc}); fix: {missing_fix}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        where = re.search(r"\(at line (\d+)", msg)
        line_no = f" line {where.group(1)}" if where else ""
        dup = re.search(r"Cannot declare (\(.*?\)) twice", msg)
        if dup:
            names = re.findall(r"'([^']*)'", dup.group(1))
            table = ".".join(f'"{n}"' if "." in n else n for n in names)
            tag = names[-1] if names[:-1] in ([], ["lines"]) and TAG_RE.match(names[-1]) else None
            if tag:  # [lines."v2.8"] in matrix.toml, ["v2.8"] in pins.toml
                raise MatrixError(
                    f"{path}:{line_no}: duplicate tag {tag!r} (a second [{table}] table); "
                    f"fix: keep one [{table}] table and delete or rename the other"
                ) from None
            raise MatrixError(
                f"{path}:{line_no}: table [{table}] is declared twice; fix: merge the two into one"
            ) from None
        if msg.startswith("Cannot overwrite a value"):
            raise MatrixError(
                f"{path}:{line_no}: a key is set twice in the same table; fix: keep one of the two"
            ) from None
        raise MatrixError(f"{path}:{line_no}: invalid TOML ({msg}); fix: correct the syntax there") from None


def parse_matrix(raw: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Validate matrix.toml's structure and values; return one plain dict per line with defaults applied."""
    _check_keys(raw, TOP_KEYS, path, "", "top-level key")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise MatrixError(f"{path}: defaults: expected a table, got {defaults!r}; fix: write [defaults]")
    _check_keys(defaults, LINE_KEYS, path, "[defaults] ", "key")
    lines = raw.get("lines")
    if not isinstance(lines, dict) or not lines:
        raise MatrixError(
            f"{path}: lines: no image lines (got {lines!r}); "
            f'fix: add at least one [lines."v2.8"] table with torch = "2.8.0"'
        )
    specs = []
    for tag, body in lines.items():
        where = f'{path}: [lines."{tag}"]'
        if not isinstance(body, dict):
            raise MatrixError(f'{where}: expected a table, got {body!r}; fix: write [lines."{tag}"] and keys')
        _check_keys(body, LINE_KEYS, path, f'[lines."{tag}"] ', "key")
        spec: dict[str, Any] = {k: v for k, v in defaults.items() if k != "packages"}
        spec.update({k: v for k, v in body.items() if k != "packages"})
        packages = {**_table(defaults, "packages", path, "[defaults]"), **_table(body, "packages", path, tag)}
        spec["packages"] = packages
        for key in REQUIRED_LINE_KEYS:
            if key not in spec:
                raise MatrixError(
                    f"{where}: missing required field {key!r}; fix: add {key} = ... to the table "
                    f"(or to [defaults])"
                )
        spec["tag"] = tag
        _validate_line(spec, where)
        specs.append(spec)
    return specs


def _table(body: dict[str, Any], key: str, path: Path, where: str) -> dict[str, Any]:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise MatrixError(
            f'{path}: {where} {key}: expected a table of name = "version", got {value!r}; '
            f'fix: write {key} = {{ transformers = "4.56.2" }}'
        )
    return value


def _validate_line(spec: dict[str, Any], where: str) -> None:
    tag = spec["tag"]
    for key in ("torch", "python", "base_image"):
        if not isinstance(spec[key], str):
            raise MatrixError(
                f"{where}: {key}: expected a string, got {spec[key]!r} ({type(spec[key]).__name__}); "
                f'fix: quote it, e.g. {key} = "{spec[key]}"'
            )
    torch = spec["torch"]
    version = _exact_version(torch, f"{where}: torch", example="2.8.0")
    match = TAG_RE.match(tag)
    if not match:
        raise MatrixError(
            f"{where}: tag {tag!r} is not of the form v<major>.<minor>; "
            f'fix: name the table [lines."v{version.major}.{version.minor}"]'
        )
    if (int(match.group(1)), int(match.group(2))) != (version.major, version.minor):
        raise MatrixError(
            f"{where}: torch {torch!r} does not match tag {tag!r}; "
            f"fix: use a torch {match.group(1)}.{match.group(2)}.x release, or rename the table to "
            f'[lines."v{version.major}.{version.minor}"]'
        )
    python = spec["python"]
    if not PYTHON_RE.match(python):
        raise MatrixError(
            f'{where}: python: {python!r} is not a Python minor version; fix: write e.g. python = "3.13"'
        )
    base = spec["base_image"]
    if not IMAGE_REF_RE.match(base):
        raise MatrixError(
            f"{where}: base_image: {base!r} is not a valid image reference; "
            f'fix: write e.g. base_image = "debian:trixie-slim"'
        )
    flavors = spec["flavors"]
    if not isinstance(flavors, list) or not all(isinstance(f, str) for f in flavors):
        raise MatrixError(
            f"{where}: flavors: expected a list of strings, got {flavors!r}; "
            f'fix: write flavors = ["runtime", "devel"]'
        )
    if not flavors:
        raise MatrixError(f'{where}: flavors: the list is empty; fix: write flavors = ["runtime"] at least')
    for flavor in flavors:
        if flavor not in FLAVORS:
            raise MatrixError(
                f"{where}: flavors: unknown flavor {flavor!r}{_did_you_mean(flavor, FLAVORS)}; "
                f"fix: use {' or '.join(FLAVORS)}"
            )
    if len(set(flavors)) != len(flavors):
        raise MatrixError(f"{where}: flavors: {flavors!r} lists a flavor twice; fix: list each once")
    _validate_platforms(spec.get("platforms", list(PLATFORMS[:1])), where)
    for name, pin in spec["packages"].items():
        _validate_package(name, pin, where)


def _validate_platforms(platforms: Any, where: str) -> None:
    if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms) or not platforms:
        both = ", ".join(f'"{p}"' for p in PLATFORMS)
        raise MatrixError(
            f"{where}: platforms: expected a list of Docker platforms, got {platforms!r}; "
            f'fix: write platforms = ["{PLATFORMS[0]}"] or [{both}]'
        )
    for platform in platforms:
        if platform not in PLATFORMS:
            raise MatrixError(
                f"{where}: platforms: unknown platform {platform!r}{_did_you_mean(platform, PLATFORMS)}; "
                f"fix: use {' or '.join(PLATFORMS)}"
            )
    if len(set(platforms)) != len(platforms):
        raise MatrixError(f"{where}: platforms: {platforms!r} lists a platform twice; fix: list each once")
    if platforms[0] != PLATFORMS[0]:
        raise MatrixError(
            f"{where}: platforms: {platforms!r} must start with {PLATFORMS[0]!r} (the line's pins are read "
            "from that torch wheel and CI builds it); fix: write platforms = ["
            + ", ".join(f'"{p}"' for p in [PLATFORMS[0], *(p for p in platforms if p != PLATFORMS[0])])
            + "]"
        )


def _validate_package(name: str, pin: Any, where: str) -> None:
    field_name = f"{where}: packages.{name}"
    if not PACKAGE_NAME_RE.match(name):
        raise MatrixError(f"{field_name}: {name!r} is not a valid package name; fix: use its PyPI name")
    canonical = canonicalize_name(name)
    if canonical in RESERVED_PACKAGES or (canonical.startswith("nvidia-") and canonical != "nvidia-ml-py"):
        raise MatrixError(
            f"{field_name}: {name!r} comes from the torch wheel's own pins (pins.toml); "
            f"fix: remove it from packages (set the line's torch instead)"
        )
    if canonical != name:
        raise MatrixError(f"{field_name}: write the package name in its normal form; fix: {canonical} = ...")
    if not isinstance(pin, str):
        raise MatrixError(
            f"{field_name}: expected a version string, got {pin!r} ({type(pin).__name__}); "
            f'fix: quote it, e.g. {name} = "{pin}"'
        )
    _exact_version(pin, field_name, example="4.56.2")


def _exact_version(value: str, field_name: str, *, example: str) -> Version:
    """A pin is one exact release (`1.2.3`), never a range: images must rebuild identically."""
    try:
        version = Version(value)
    except InvalidVersion:
        raise MatrixError(
            f"{field_name}: {value!r} is not a valid version (PEP 440); fix: write an exact release such as "
            f'"{example}"'
        ) from None
    if str(version) != value.strip() or value != value.strip():
        raise MatrixError(f'{field_name}: {value!r} is not in normal form; fix: write "{version}"')
    return version


def _check_python_supported(spec: dict[str, Any], pins: Pins, matrix_path: Path, pins_path: Path) -> None:
    try:
        supported = SpecifierSet(pins.requires_python)
    except InvalidSpecifier:
        raise MatrixError(
            f"{pins_path}: [{spec['tag']}] requires_python: {pins.requires_python!r} is not a specifier; "
            f"fix: make pins"
        ) from None
    if not supported.contains(Version(spec["python"]), prereleases=True):
        raise MatrixError(
            f'{matrix_path}: [lines."{spec["tag"]}"] python: {spec["python"]!r} is not supported by '
            f"torch {spec['torch']} (its wheel says Requires-Python {pins.requires_python}); "
            f"fix: pick a Python that satisfies {pins.requires_python}"
        )


def parse_pins(raw: dict[str, Any], path: Path, *, known_tags: list[str]) -> dict[str, Pins]:
    """pins.toml: one table per tag, as `make pins` writes it."""
    out: dict[str, Pins] = {}
    for tag, body in raw.items():
        if tag not in known_tags:
            raise MatrixError(
                f"{path}: [{tag}]: pins for a tag that is not in the matrix{_did_you_mean(tag, known_tags)}; "
                f"fix: make pins (it rewrites the file from the matrix)"
            )
        where = f'{path}: ["{tag}"]'
        if not isinstance(body, dict):
            raise MatrixError(f"{where}: expected a table, got {body!r}; fix: make pins")
        _check_keys(body, PIN_KEYS, path, f'["{tag}"] ', "key", fix_suffix="; or rerun make pins")
        for key in REQUIRED_PIN_KEYS:
            if key not in body:
                raise MatrixError(f"{where}: missing field {key!r}; fix: make pins")
        for key in PIN_KEYS:
            if key == "nvidia" or key not in body:
                continue
            if not isinstance(body[key], str):
                raise MatrixError(f"{where}: {key}: expected a string, got {body[key]!r}; fix: make pins")
        nvidia = body["nvidia"]
        if not isinstance(nvidia, dict) or not all(isinstance(v, str) for v in nvidia.values()):
            raise MatrixError(f'{where}: nvidia: expected a table of name = "version"; fix: make pins')
        if not SHA256_RE.match(body["sha256"]):
            raise MatrixError(f"{where}: sha256: {body['sha256']!r} is not a hex sha256; fix: make pins")
        if not CUDA_RE.match(body["cuda"]):
            raise MatrixError(f"{where}: cuda: {body['cuda']!r} is not a CUDA version; fix: make pins")
        for key in ("torch", "cudnn", "nccl"):
            _exact_version(body[key], f"{where}: {key}", example="1.2.3")
        out[tag] = Pins(
            wheel=body["wheel"],
            sha256=body["sha256"],
            cuda=body["cuda"],
            cudnn=body["cudnn"],
            nccl=body["nccl"],
            requires_python=body["requires_python"],
            nvidia=dict(nvidia),
            triton=body.get("triton"),
            torch=body["torch"],
        )
    return out


def _check_keys(
    table: dict[str, Any], known: tuple[str, ...], path: Path, where: str, what: str, fix_suffix: str = ""
) -> None:
    for key in table:
        if key not in known:
            raise MatrixError(
                f"{path}: {where}unknown {what} {key!r}{_did_you_mean(key, known)}; "
                f"fix: use one of {', '.join(known)}{fix_suffix}"
            )


def _did_you_mean(value: str, choices: Any) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
