"""`pins` and `pins-check`: CUDA, cuDNN, NCCL and every nvidia-* pin, read from each line's torch wheel.

Pins are read, never typed: for every line of matrix.toml we find the torch wheel for the line's Python on
linux x86_64, take the `nvidia-*` (and `cuda-toolkit`) `==` pins and triton from its METADATA, its
Requires-Python, and the CUDA version from `torch/version.py` inside the wheel (through range requests:
see wheelindex.py). `pins` writes them to images/pins.toml; `pins-check` recomputes them and lists every
difference.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from images.files import write_atomically
from images.matrix import (
    MATRIX_PATH,
    PINS_PATH,
    ImageLine,
    MatrixError,
    Pins,
    load_matrix,
    parse_pins,
    read_toml,
)
from images.wheelindex import CACHE_DIR, IndexError_, NoWheelError, WheelIndex, index_url_default

HEADER = """\
# written by make pins; do not edit
# Read from each line's torch wheel (METADATA and torch/version.py) by `python -m images pins`;
# `make pins-check` fails when this file and the wheels disagree. Edit images/matrix.toml instead.
"""
CUDA_RE = re.compile(r"""^cuda\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]""", re.MULTILINE)
# Distributions that carry CUDA user space: nvidia-* wheels, and the cuda-toolkit metapackage (torch >= 2.10).
CUDA_WHEEL_PREFIXES = ("nvidia-", "cuda-toolkit")


class PinsError(RuntimeError):
    """The wheel does not say what we need (exit 1: the work failed, not the input)."""


@dataclass(frozen=True)
class WheelPins:
    """What a torch wheel's METADATA pins for one Python on linux x86_64."""

    requires_python: str
    nvidia: dict[str, str]
    triton: str | None


def target_environment(python: str) -> dict[str, str]:
    """PEP 508 marker environment of the image: Linux, x86_64, CPython `python`."""
    env = dict(default_environment())
    env.update(
        os_name="posix",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        platform_python_implementation="CPython",
        implementation_name="cpython",
        python_version=python,
        python_full_version=f"{python}.0",
        implementation_version=f"{python}.0",
        extra="",
    )
    return env


def parse_metadata(text: str, python: str, *, source: str = "METADATA") -> WheelPins:
    """Pull Requires-Python, the CUDA wheel pins and triton out of a torch METADATA file."""
    msg = email.parser.Parser().parsestr(text, headersonly=True)
    requires_python = msg.get("Requires-Python")
    if not requires_python:
        raise PinsError(f"{source}: no Requires-Python")
    env = target_environment(python)
    nvidia: dict[str, str] = {}
    triton: str | None = None
    for line in msg.get_all("Requires-Dist") or []:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise PinsError(f"{source}: unreadable Requires-Dist {line!r} ({exc})") from None
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name == "triton":
            triton = _exact(req) or str(req.specifier)
        elif name.startswith(CUDA_WHEEL_PREFIXES):
            version = _exact(req)
            if version is not None:  # ranges (cuda-bindings>=13) are not pins
                nvidia[name] = version
    return WheelPins(requires_python=requires_python, nvidia=dict(sorted(nvidia.items())), triton=triton)


def _exact(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return specs[0].version
    return None


def parse_cuda_version(version_py: str, *, source: str = "torch/version.py") -> str:
    """`cuda: Optional[str] = '12.8'` -> "12.8" (the CUDA the wheel was built against)."""
    match = CUDA_RE.search(version_py)
    if not match:
        raise PinsError(f"{source}: no `cuda = '<version>'` line (a CPU-only wheel?)")
    return match.group(1)


def _pick(nvidia: dict[str, str], stem: str, wheel: str) -> str:
    """The cuDNN / NCCL version from `nvidia-<stem>-cuXY`, whatever the CUDA major is."""
    found = [v for k, v in nvidia.items() if re.fullmatch(rf"nvidia-{stem}-cu\d+", k)]
    if len(found) != 1:
        raise PinsError(f"{wheel}: expected one nvidia-{stem}-cu* pin, found {found or 'none'}")
    return found[0]


def read_line_pins(index: WheelIndex, line: ImageLine) -> Pins:
    """Find the line's torch wheel on the index and read its pins (cached by the wheel's sha256)."""
    wheel = index.find_wheel("torch", line.torch, line.python)
    meta = parse_metadata(index.metadata(wheel), line.python, source=f"{wheel.filename} METADATA")
    cuda = parse_cuda_version(
        index.read_member(wheel, "torch/version.py").decode("utf-8"),
        source=f"{wheel.filename} torch/version.py",
    )
    return Pins(
        wheel=wheel.filename,
        sha256=wheel.sha256,
        cuda=cuda,
        cudnn=_pick(meta.nvidia, "cudnn", wheel.filename),
        nccl=_pick(meta.nvidia, "nccl", wheel.filename),
        requires_python=meta.requires_python,
        nvidia=meta.nvidia,
        triton=meta.triton,
        torch=line.torch,
    )


def compute_pins(matrix_path: Path = MATRIX_PATH, *, index: WheelIndex | None = None) -> dict[str, Pins]:
    """Pins for every line of the matrix, fresh from the index (and the cache)."""
    # The recorded pins are ignored here (they may be stale or name removed tags: that is what we fix).
    matrix = load_matrix(matrix_path, pins_path=Path(os.devnull), require_pins=False)
    index = index or WheelIndex()
    out = {}
    for line in matrix.lines:
        _check_wheel_exists(index, line, matrix_path)
        try:
            out[line.tag] = read_line_pins(index, line)
        except (IndexError_, PinsError) as exc:
            raise PinsError(f"{line.tag} (torch {line.torch}, python {line.python}): {exc}") from None
    return out


def _check_wheel_exists(index: WheelIndex, line: ImageLine, matrix_path: Path) -> None:
    """A torch release or Python with no wheel is a matrix mistake (exit 2), named like the others."""
    where = f'{matrix_path}: [lines."{line.tag}"]'
    releases = index.versions("torch")  # a network failure propagates as IndexError_ (exit 1)
    try:
        index.find_wheel("torch", line.torch, line.python)
    except NoWheelError as exc:
        if line.torch not in releases:
            raise MatrixError(
                f"{where} torch: {line.torch!r} is not a torch release on {index.index_url}; "
                f"fix: pick one of the newest: {', '.join(releases[-5:])}"
            ) from None
        raise MatrixError(f"{where} python: {line.python!r}: {exc}") from None


# --- pins.toml -------------------------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_pins_toml(pins: dict[str, Pins]) -> str:
    """pins.toml text: the header, then one ["<tag>"] table and its ["<tag>".nvidia] table per line."""
    parts = [HEADER]
    for tag, p in pins.items():
        body = p.as_dict()
        nvidia = body.pop("nvidia")
        parts.append(f"\n[{_toml_str(tag)}]\n")
        parts.extend(f"{key} = {_toml_str(value)}\n" for key, value in body.items())
        parts.append(f"\n[{_toml_str(tag)}.nvidia]\n")
        parts.extend(f"{name} = {_toml_str(version)}\n" for name, version in nvidia.items())
    return "".join(parts)


def diff_pins(recorded: dict[str, Pins], fresh: dict[str, Pins]) -> list[str]:
    """One line per difference: tag, field, recorded value vs the wheel's."""
    out = []
    for tag in sorted(set(recorded) | set(fresh)):
        if tag not in recorded:
            out.append(f"{tag}: no pins recorded (the wheel {fresh[tag].wheel} has them)")
            continue
        if tag not in fresh:
            out.append(f"{tag}: pins recorded for a tag the matrix no longer has")
            continue
        old, new = recorded[tag].as_dict(), fresh[tag].as_dict()
        for key in sorted(set(old) | set(new) - {"nvidia"}):
            if key != "nvidia" and old.get(key) != new.get(key):
                out.append(f"{tag}: {key}: recorded {old.get(key)!r}, wheel says {new.get(key)!r}")
        old_nv, new_nv = old.get("nvidia", {}), new.get("nvidia", {})
        for name in sorted(set(old_nv) | set(new_nv)):
            if old_nv.get(name) != new_nv.get(name):
                out.append(
                    f"{tag}: nvidia.{name}: recorded {old_nv.get(name)!r}, wheel says {new_nv.get(name)!r}"
                )
    return out


def check_pins(
    matrix_path: Path = MATRIX_PATH, pins_path: Path = PINS_PATH, *, index: WheelIndex | None = None
) -> list[str]:
    """The differences between pins.toml and the wheels (empty when they agree)."""
    fresh = compute_pins(matrix_path, index=index)
    recorded = parse_pins(read_toml(pins_path, missing_fix="make pins"), pins_path, known_tags=list(fresh))
    return diff_pins(recorded, fresh)


# --- the subcommands ---------------------------------------------------------------------------------------


def add_parsers(sub) -> None:
    for name, func, help_text in (
        ("pins", _cmd_pins, "read CUDA/cuDNN/NCCL pins from each line's torch wheel into images/pins.toml"),
        ("pins-check", _cmd_pins_check, "exit 1 when images/pins.toml and the torch wheels disagree"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--matrix", type=Path, default=MATRIX_PATH, help="matrix file (default: %(default)s)")
        p.add_argument("--pins", type=Path, default=PINS_PATH, help="pins file (default: %(default)s)")
        p.add_argument(
            "--index-url",
            default=None,
            help=f"simple index (PEP 691 JSON) to read wheels from (default: $PIP_INDEX_URL or "
            f"{index_url_default()})",
        )
        p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="cache (default: %(default)s)")
        p.set_defaults(func=func)


def _index(args: argparse.Namespace) -> WheelIndex:
    return WheelIndex(args.index_url, cache_dir=args.cache_dir)


def _cmd_pins(args: argparse.Namespace) -> int:
    index = _index(args)
    try:
        pins = compute_pins(args.matrix, index=index)
    except (PinsError, IndexError_) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = render_pins_toml(pins)
    # Validate what we are about to write with the same loader everyone else uses.
    parse_pins(tomllib.loads(text), args.pins, known_tags=list(pins))
    unchanged = args.pins.exists() and args.pins.read_text(encoding="utf-8") == text
    if not unchanged:
        write_atomically(args.pins, text)
    for tag, p in pins.items():
        print(
            f"{tag}: torch {p.torch}  cuda {p.cuda}  cudnn {p.cudnn}  nccl {p.nccl}  "
            f"triton {p.triton}  python {p.requires_python}  ({len(p.nvidia)} nvidia pins)"
        )
    done = "unchanged" if unchanged else "wrote"
    print(f"{done}: {args.pins} ({index.requests_made} requests to {index.index_url})")
    return 0


def _cmd_pins_check(args: argparse.Namespace) -> int:
    index = _index(args)
    try:
        differences = check_pins(args.matrix, args.pins, index=index)
    except (PinsError, IndexError_) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if differences:
        for line in differences:
            print(f"{args.pins}: {line}", file=sys.stderr)
        print(f"{len(differences)} difference(s); fix: make pins", file=sys.stderr)
        return 1
    print(f"{args.pins} matches the torch wheels ({index.requests_made} requests to {index.index_url})")
    return 0
