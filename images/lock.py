"""`lock` and `lock --check`: every package of an image, resolved once and pinned to the sha256 of its wheel.

requirements.txt names what a line asks for (torch and the packages on top). The hundred-odd packages those
pull in would otherwise be resolved anew by every build, so two builds a week apart install different code.
`lock` resolves each line x flavor with pip's own resolver for the image's target (CPython X.Y, linux x86_64,
manylinux up to glibc 2.41, wheels only) without installing anything (`pip install --dry-run --report`), and
writes images/<tag>/requirements[-flavor].lock: every distribution `==` its version with the sha256 of the
exact wheel. A line built for more platforms (linux/arm64) is resolved again for each, held to the very
versions of the first, and each entry lists every platform's wheel digest (pip and uv accept any listed
one). The build installs from the lock with `--require-hashes`, so a build installs those very files or
stops. `lock --check` is offline: it fails when a lock is missing, was resolved from another
requirements file, or disagrees with requirements.txt or with the torch wheel pins.toml was read from.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from images.dockerfile import (
    IMAGES_DIR,
    line_dir,
    lock_name,
    package_flavor,
    repo_relative,
    requirements_name,
)
from images.files import write_atomically
from images.matrix import PLATFORMS, ImageLine, Matrix, load_matrix
from images.packages import GLIBC_MINOR_MAX, MACHINES, image_platforms
from images.wheelindex import index_url_default

# The first pip whose `install --dry-run` takes --platform/--python-version/--abi without --target: pip 23.2
# stops with "Can not use any platform or abi specific options unless installing via '--target'" (pypa/pip
# issue 12215, fixed by pull request 12217 in 23.3). tests/unit/images/test_lock_pip.py runs both pips.
MIN_PIP = Version("23.3")
REQUIREMENTS_SHA_RE = re.compile(r"^# requirements sha256: ([0-9a-f]{64})$", re.MULTILINE)
PLATFORMS_RE = re.compile(r"^# platforms: (.+)$", re.MULTILINE)
ENTRY_RE = re.compile(
    r"^([A-Za-z0-9._-]+(?:\[[A-Za-z0-9_,.-]+\])?)==(\S+)((?: \\\n    --hash=sha256:[0-9a-f]{64})+)$"
)
HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})")


class LockError(RuntimeError):
    """pip could not resolve a line (exit 1), with pip's own words and the fix."""


@dataclass(frozen=True)
class Locked:
    """One distribution of the image: its name (with the extras asked for), version and the digest of its
    wheel for each platform (one when the wheel is pure Python or the line has one platform)."""

    name: str
    version: str
    hashes: tuple[str, ...]
    extras: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)

    def render(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.name}{extras}=={self.version}" + "".join(
            f" \\\n    --hash=sha256:{digest}" for digest in self.hashes
        )


def pip_command(
    requirements: Path,
    python: str,
    report: Path,
    index_url: str,
    cert: Path | None,
    constraints: Path | None = None,
    machine: str = "x86_64",
) -> list[str]:
    """The resolution for the image's target on `machine`; run it with `pip_environment()`."""
    major, minor = python.split(".")
    command = [
        sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input",
        "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
        "--python-version", python, "--implementation", "cp", "--abi", f"cp{major}{minor}",
        "--index-url", index_url, "--report", str(report), "-r", str(requirements),
    ]  # fmt: skip
    for platform in image_platforms(machine):
        command += ["--platform", platform]
    if cert is not None:
        command += ["--cert", str(cert)]
    if constraints is not None:
        command += ["-c", str(constraints)]
    return command


def kept_pins(previous: list[Locked], requirements_text: str) -> str:
    """The previous lock's versions as pip constraints, except for what requirements.txt names itself.

    A relock after one pin changed should change that package and what it forces, not every transitive
    dependency that had a release since (`make lock UPGRADE=1` re-resolves everything).
    """
    named = set()
    for raw in requirements_text.splitlines():
        if raw.strip() and not raw.startswith("#"):
            with contextlib.suppress(InvalidRequirement):
                named.add(canonicalize_name(Requirement(raw).name))
    return "".join(f"{e.name}=={e.version}\n" for e in previous if e.key not in named)


def pip_environment() -> dict[str, str]:
    """This process's environment without pip's settings: a machine's pip.conf (a version cap, a local
    find-links folder) or PIP_* variables must not leak into every image. (`pip --isolated` would still read
    the site-wide /etc config.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def check_pip() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        have = Version(version("pip"))
    except PackageNotFoundError:
        have = Version("0")
    if have < MIN_PIP:
        raise LockError(
            f"make lock needs pip >= {MIN_PIP} (the first whose `install --dry-run` accepts --platform "
            f"without --target); {sys.executable} has pip {have}; "
            f"fix: {sys.executable} -m pip install -U 'pip>={MIN_PIP}'"
        )


def parse_report(report: dict) -> list[Locked]:
    """pip's installation report (format version 1) -> the lock's entries, sorted by name."""
    if str(report.get("version")) != "1":
        raise LockError(f"pip wrote an installation report of version {report.get('version')!r}, not 1")
    entries = []
    for item in report["install"]:
        meta = item["metadata"]
        archive = (item.get("download_info") or {}).get("archive_info") or {}
        sha256 = (archive.get("hashes") or {}).get("sha256")
        if not sha256 or not item["download_info"]["url"].endswith(".whl"):
            raise LockError(f"{meta['name']} {meta['version']}: pip reported no wheel with a sha256")
        extras = tuple(sorted(item.get("requested_extras") or ()))
        entries.append(Locked(meta["name"], meta["version"], (sha256,), extras))
    return sorted(entries, key=lambda e: e.key)


def resolve(
    requirements: Path,
    python: str,
    *,
    index_url: str | None = None,
    cert: Path | None = None,
    constraints: str = "",
    machine: str = "x86_64",
) -> list[Locked]:
    check_pip()
    with tempfile.TemporaryDirectory(prefix="pytorch-cuda-lock-") as tmp:
        report = Path(tmp) / "report.json"
        constraints_file = None
        if constraints:
            constraints_file = Path(tmp) / "kept-pins.txt"
            constraints_file.write_text(constraints)
        command = pip_command(
            requirements, python, report, index_url or index_url_default(), cert, constraints_file, machine
        )
        proc = subprocess.run(command, capture_output=True, text=True, check=False, env=pip_environment())
        if proc.returncode != 0 or not report.is_file():
            said = [
                line
                for line in (proc.stdout + proc.stderr).splitlines()
                if line.strip()
                and not line.lstrip().startswith(("Collecting", "Downloading", "Using cached"))
            ]
            tail = "\n".join(f"  | {line}" for line in said[-15:])
            raise LockError(
                f"pip could not resolve {requirements} for CPython {python} linux {machine}:\n{tail}\n"
                "fix: change the pins in images/matrix.toml (then make dockerfiles), or pass "
                "--index-url/--cert if the index is not reachable"
            )
        return parse_report(json.loads(report.read_text()))


def same_versions(first: list[Locked], other: list[Locked], platform: str) -> list[Locked]:
    """`first` with `other`'s wheel digests added: the same distributions at the same versions, else
    LockError naming what differs (one version set for every platform keeps one lock, no markers)."""
    theirs = {e.key: e for e in other}
    differ = [
        f"{e.name} {e.version} (on {platform}: {theirs[e.key].version if e.key in theirs else 'not needed'})"
        for e in first
        if theirs.get(e.key) is None or theirs[e.key].version != e.version
    ]
    only_there = sorted(set(theirs) - {e.key for e in first})
    if differ or only_there:
        raise LockError(
            f"{platform} needs other distributions than {PLATFORMS[0]}: "
            + "; ".join(differ + [f"{name} (only on {platform})" for name in only_there])
            + f"; fix: pin versions that have wheels for both in images/matrix.toml, or remove {platform} "
            "from the line's platforms"
        )
    return [replace(e, hashes=tuple(dict.fromkeys(e.hashes + theirs[e.key].hashes))) for e in first]


def check_cuda(entries: list[Locked], torch: str, platform: str) -> None:
    """A platform's torch must bring CUDA: PyPI's aarch64 torch before 2.11 requires no nvidia-* wheel."""
    if not any(e.key.startswith("nvidia-") and e.key != "nvidia-ml-py" for e in entries):
        raise LockError(
            f"torch {torch} for {platform} requires no nvidia-* wheel: PyPI's build there is CPU-only "
            f"(aarch64 wheels carry CUDA from torch 2.11); fix: remove {platform} from the line's platforms"
        )


def resolve_platforms(
    line: ImageLine,
    requirements: Path,
    *,
    index_url: str | None = None,
    cert: Path | None = None,
    constraints: str = "",
    say: Callable[[str], None] = print,
) -> list[Locked]:
    """The lock's entries for every platform of the line: the first resolved freely (but for `constraints`,
    the previous pins), each other held to exactly its versions."""
    entries = resolve(requirements, line.python, index_url=index_url, cert=cert, constraints=constraints)
    for platform in line.platforms[1:]:
        say(f"{line.tag}: resolving {requirements.name} again for {platform}, at the same versions")
        exact = "".join(f"{e.name}=={e.version}\n" for e in entries)
        theirs = resolve(
            requirements, line.python, index_url=index_url, cert=cert, constraints=exact,
            machine=MACHINES[platform],
        )  # fmt: skip
        check_cuda(theirs, line.torch, platform)
        entries = same_versions(entries, theirs, platform)
    return entries


def render_lock(line: ImageLine, flavor: str, requirements_text: str, entries: list[Locked]) -> str:
    digest = hashlib.sha256(requirements_text.encode()).hexdigest()
    machines = ", ".join(MACHINES[p] for p in line.platforms)
    header = [
        f"# pytorch-cuda {line.tag} ({flavor}): GENERATED by `make lock` from {requirements_name(flavor)}; "
        "do not edit.",
        f"# Every distribution of the image, resolved by pip for CPython {line.python}, linux {machines} "
        f"(manylinux, glibc <= 2.{GLIBC_MINOR_MAX}), wheels only,",
        "# each pinned to the sha256 of its wheel (one per platform where they differ): the builder installs "
        "it with --require-hashes.",
        f"# platforms: {' '.join(line.platforms)}",
        f"# requirements sha256: {digest}",
    ]
    return "\n".join(header + [e.render() for e in entries]) + "\n"


def lock_platforms(text: str) -> tuple[str, ...]:
    """The platforms a lock was resolved for (a lock from before the header: the first only)."""
    match = PLATFORMS_RE.search(text)
    return tuple(match.group(1).split()) if match else PLATFORMS[:1]


def parse_lock(text: str, source: str) -> tuple[str | None, list[Locked]]:
    """(the requirements digest it was resolved from, its entries); malformed entry lines raise LockError."""
    match = REQUIREMENTS_SHA_RE.search(text)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    entries = []
    for chunk in re.split(r"\n(?=\S)", body.strip()):
        found = ENTRY_RE.match(chunk)
        if not found:
            raise LockError(f"{source}: not an `name==version --hash=sha256:...` entry: {chunk[:80]!r}")
        spec, version, hashes = found.groups()
        name, _, extras = spec.partition("[")
        digests = tuple(HASH_RE.findall(hashes))
        entries.append(Locked(name, version, digests, tuple(extras.rstrip("]").split(",")) if extras else ()))
    return (match.group(1) if match else None), entries


def lock_problems(line: ImageLine, flavor: str, root: Path = IMAGES_DIR) -> list[str]:
    """Why the committed lock that line x flavor installs cannot be trusted (empty: it can). Offline."""
    flavor = package_flavor(line, flavor)
    directory = line_dir(line, root)
    requirements = directory / requirements_name(flavor)
    lock = directory / lock_name(flavor)
    where = repo_relative(lock)
    if not requirements.is_file():
        return [f"{repo_relative(requirements)}: missing (make dockerfiles writes it)"]
    if not lock.is_file():
        return [f"{where}: missing"]
    text = lock.read_text()
    try:
        recorded, entries = parse_lock(text, where)
    except LockError as exc:
        return [str(exc)]
    problems = []
    if recorded != hashlib.sha256(requirements.read_bytes()).hexdigest():
        problems.append(f"{where}: resolved from another {requirements.name} (it changed since)")
    if lock_platforms(text) != line.platforms:
        problems.append(
            f"{where}: resolved for {' '.join(lock_platforms(text))}, the matrix builds "
            f"{' '.join(line.platforms)}"
        )
    locked = {e.key: e for e in entries}
    for raw in requirements.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        try:
            req = Requirement(raw)
        except InvalidRequirement:
            problems.append(f"{requirements.name}: cannot parse {raw!r}")
            continue
        entry = locked.get(canonicalize_name(req.name))
        if entry is None:
            problems.append(f"{where}: {req.name} from {requirements.name} is not in the lock")
        elif not req.specifier.contains(entry.version, prereleases=True):
            problems.append(
                f"{where}: {req.name} {entry.version}, but {requirements.name} asks {req.specifier}"
            )
    pins = line.pins
    if pins is not None:
        torch = locked.get("torch")
        if torch is not None and pins.sha256 and pins.sha256 not in torch.hashes:
            problems.append(
                f"{where}: torch wheel sha256 {torch.hashes[0][:12]}..., pins.toml read {pins.wheel} "
                f"({pins.sha256[:12]}...)"
            )
        for name, version in sorted(pins.nvidia.items()):
            entry = locked.get(canonicalize_name(name))
            if entry is not None and entry.version != version:
                problems.append(
                    f"{where}: {name} {entry.version}, pins.toml (from the torch wheel) {version}"
                )
    return problems


def locked_flavors(line: ImageLine) -> list[str]:
    """The flavors with a lock of their own (a devel that installs the runtime lock has none)."""
    return sorted({package_flavor(line, flavor) for flavor in line.flavors}, key=line.flavors.index)


def previous_pins(lock: Path, requirements_text: str) -> str:
    """kept_pins() of the lock on disk; nothing when there is none or it cannot be read."""
    if not lock.is_file():
        return ""
    try:
        _, entries = parse_lock(lock.read_text(), repo_relative(lock))
    except LockError:
        return ""
    return kept_pins(entries, requirements_text)


def cmd_lock(args: argparse.Namespace) -> int:
    matrix: Matrix = load_matrix()
    root = Path(args.root)
    lines = [matrix.get(args.tag)] if args.tag else list(matrix.lines)
    if args.check:
        problems = [
            p for line in lines for flavor in locked_flavors(line) for p in lock_problems(line, flavor, root)
        ]
        for problem in problems:
            print(f"stale: {problem}", file=sys.stderr)
        if problems:
            print("fix: make lock (then commit the result)", file=sys.stderr)
            return 1
        print(f"{sum(len(locked_flavors(line)) for line in lines)} locks are current")
        return 0
    try:  # before the first resolution, not once per image
        check_pip()
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cert = Path(args.cert) if args.cert else None
    for line in lines:
        for flavor in locked_flavors(line):
            requirements = line_dir(line, root) / requirements_name(flavor)
            path = line_dir(line, root) / lock_name(flavor)
            kept = "" if args.upgrade else previous_pins(path, requirements.read_text())
            try:
                try:
                    entries = resolve_platforms(
                        line, requirements, index_url=args.index_url, cert=cert, constraints=kept
                    )
                except LockError:
                    if not kept:
                        raise
                    print(
                        f"{line.tag} ({flavor}): the new requirements need other versions than the previous "
                        "lock's; resolving everything anew",
                        file=sys.stderr,
                    )
                    entries = resolve_platforms(line, requirements, index_url=args.index_url, cert=cert)
            except LockError as exc:
                print(f"error: {line.tag} ({flavor}): {exc}", file=sys.stderr)
                return 1
            write_atomically(path, render_lock(line, flavor, requirements.read_text(), entries))
            problems = lock_problems(line, flavor, root)
            if problems:  # e.g. pip picked another torch wheel than pins.toml was read from
                for problem in problems:
                    print(f"error: {problem}", file=sys.stderr)
                print("fix: make pins, make dockerfiles, then make lock again", file=sys.stderr)
                return 1
            print(f"wrote {repo_relative(path)} ({len(entries)} distributions)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "lock",
        help="resolve each line's requirements into a hash-pinned requirements.lock (--check: offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="exit 1 naming each stale lock; no network")
    parser.add_argument("--tag", help="only this line (default: every line)")
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="re-resolve every dependency to its newest fitting release (default: keep the previous "
        "lock's versions of what requirements.txt does not name, unless the new pins need others)",
    )
    parser.add_argument(
        "--index-url", help="package index to resolve from (default: $PIP_INDEX_URL, else PyPI)"
    )
    parser.add_argument("--cert", help="CA bundle for a TLS-inspecting proxy between you and the index")
    parser.add_argument(
        "--root", default=str(IMAGES_DIR), help="folder holding the <tag>/ folders (default: %(default)s)"
    )
    parser.set_defaults(func=cmd_lock)
