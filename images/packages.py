"""Check a line's package pins against the index: each release exists for the image's Python on linux
x86_64, admits that Python, and every requirement it has on torch or on another pinned package holds.

Pins are picked by people, so this is what catches `transformers` wanting a newer `tokenizers` (or torch)
than the line has, before an image build fails ten minutes in.
"""

from __future__ import annotations

import email.parser

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from images.matrix import ImageLine
from images.pins import target_environment
from images.wheelindex import WheelFile, WheelIndex

# Debian trixie has glibc 2.41: every manylinux baseline up to it installs.
GLIBC_MINOR_MAX = 41


# Docker's platform -> the machine name in wheel tags and environment markers (platform_machine).
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


def image_platforms(machine: str = "x86_64") -> list[str]:
    """The image's wheel platform tags on `machine`, newest first: every manylinux baseline its glibc
    (2.41) runs, then the legacy aliases (aarch64 has none before manylinux2014: the first baseline with
    aarch64 is glibc 2.17). Both this package check and pip's resolution for the locks (`--platform`, which
    takes exact tags) use this one list."""
    first = 5 if machine == "x86_64" else 17
    platforms = [f"manylinux_2_{m}_{machine}" for m in range(GLIBC_MINOR_MAX, first - 1, -1)]
    legacy = ["manylinux2014", "manylinux2010", "manylinux1"] if machine == "x86_64" else ["manylinux2014"]
    return [*platforms, *(f"{tag}_{machine}" for tag in legacy), f"linux_{machine}"]


def supported_tags(python: str, machine: str = "x86_64") -> set[Tag]:
    """The wheel tags pip accepts for CPython `python` on linux `machine` (glibc 2.41)."""
    major, minor = (int(p) for p in python.split("."))
    platforms = image_platforms(machine)
    tags = set(cpython_tags((major, minor), platforms=platforms))
    tags |= set(compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=platforms))
    return tags


def find_release_wheel(index: WheelIndex, name: str, version: str, python: str) -> WheelFile | None:
    tags = supported_tags(python)
    for wheel in index.files(name):
        _n, ver, _b, wheel_tags = parse_wheel_filename(wheel.filename)
        if str(ver) == version and wheel_tags & tags:
            return wheel
    return None


def package_problems(index: WheelIndex, line: ImageLine) -> list[str]:
    """Every reason the line's packages would not install together with its torch (empty: all fine)."""
    pinned = {canonicalize_name(n): v for n, v in line.packages.items()}
    pinned["torch"] = line.torch
    env = target_environment(line.python)
    problems = []
    shared: dict[str, list[tuple[str, SpecifierSet]]] = {}  # unpinned dependency -> (who, what it asks)
    for name, version in sorted(line.packages.items()):
        wheel = find_release_wheel(index, name, version, line.python)
        if wheel is None:
            problems.append(
                f"{line.tag}: packages.{name}: no {name} {version} wheel for CPython {line.python} "
                f"linux x86_64 on {index.index_url}"
            )
            continue
        msg = email.parser.Parser().parsestr(index.metadata(wheel), headersonly=True)
        requires_python = msg.get("Requires-Python") or wheel.requires_python
        if requires_python and not _admits(requires_python, line.python):
            problems.append(
                f"{line.tag}: packages.{name}: {version} requires Python {requires_python}, "
                f"the line has {line.python}"
            )
        for raw in msg.get_all("Requires-Dist") or []:
            try:
                req = Requirement(raw)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            other = canonicalize_name(req.name)
            if other in pinned and not req.specifier.contains(pinned[other], prereleases=True):
                problems.append(
                    f"{line.tag}: packages.{name}: {name} {version} requires {req.name}{req.specifier}, "
                    f"the line pins {other} {pinned[other]}"
                )
            elif other not in pinned and req.specifier:
                shared.setdefault(other, []).append((f"{name} {version}", req.specifier))
    for dep, asks in sorted(shared.items()):
        if len(asks) > 1 and not _some_release_satisfies(index, dep, [spec for _who, spec in asks]):
            wants = "; ".join(f"{who} wants {dep}{spec}" for who, spec in asks)
            problems.append(f"{line.tag}: packages: no {dep} release satisfies them all: {wants}")
    return problems


def _some_release_satisfies(index: WheelIndex, name: str, specs: list[SpecifierSet]) -> bool:
    """Whether pip could pick one release of an unpinned dependency that several pins share."""
    versions = {parse_wheel_filename(w.filename)[1] for w in index.files(name)}
    return any(all(spec.contains(v) for spec in specs) for v in versions)


def _admits(requires_python: str, python: str) -> bool:
    try:
        return SpecifierSet(requires_python).contains(Version(python), prereleases=True)
    except InvalidSpecifier:
        return True  # an unreadable Requires-Python is pip's problem to report, not a pin conflict
