"""What the command modules share: the usage error (exit 2), the argument parsers' types, the report paths'
checks made before any work starts, and the job this process is a rank of."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from verify.cluster import job as jobmod

EXAMPLES = """\
examples:
  verify run                               # every check; table on the terminal, JSON in ./verify-report.json
  verify run --quick                       # short benchmarks (CI, smoke tests)
  verify run --require-gpu                 # no GPU is a FAIL, not a SKIP (GPU CI; also VERIFY_REQUIRE_GPU=1)
  verify run --only env,driver             # just these checks
  verify run --skip bert --timeout 120     # all but bert; kill any check still running after 120 s
  verify run --json out/report.json --junit out/junit.xml
  verify run --manifest ./manifest.json    # compare versions with this image manifest
  srun -N2 --ntasks-per-node 8 verify run --report-dir reports/   # one job over 2 nodes (Slurm)
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
      -m verify run --report-dir reports/  # the same under torchrun, on every node
  verify gate --expect-gpus 8              # the seconds-long torch-free tier for a scheduler's prolog
  verify list                              # the checks, one line each
  verify bench bert --help                 # the BERT training benchmark and its options
  verify fleet reports/ --html fleet.html  # merge node reports, flag failed/slow/mismatched nodes
  srun -N16 --ntasks-per-node 1 verify sweep   # which node or link makes the all-reduce slow or hang

exit codes: 0 all passed (SKIP and WARN allowed), 1 a check failed, 2 usage error, 130 interrupted
"""


class UsageError(Exception):
    """Bad input that argparse cannot see (a path we cannot write); exit 2."""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return int(text)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"must be a percentage from 0 to below 100, got {text!r}")
    return value


def _expected_nodes(text: str) -> Any:
    from verify.cluster.fleet import Expected

    expected = Expected.parse(text)
    if expected.count < 1 or (not expected.names and not text.strip().isdigit()):
        raise argparse.ArgumentTypeError(
            f"expected a number of nodes (1 or more) or their names, comma-separated, got {text!r}"
        )
    return expected


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = text.strip().upper().removesuffix("IB").removesuffix("B"), ""
    if number[-1:] in units:
        number, unit = number[:-1], number[-1]
    if not number.isdigit() or int(number) * units[unit] < 4 or int(number) * units[unit] % 4:
        raise argparse.ArgumentTypeError(
            f"expected a buffer size in bytes, a multiple of 4 (e.g. 4M, 256MiB, 1G), got {text!r}"
        )
    return int(number) * units[unit]


def ensure_writable(path: Path, flag: str) -> Path:
    """Fail before any check runs when a report could not be written (exit 2, not a lost report)."""
    path = path.expanduser()
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; fix: give a file name, e.g. {path / 'report'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".verify-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"{flag} {path}: cannot write there ({exc.strerror or exc}); fix: choose a writable path"
        ) from None
    return path


def ensure_writable_dir(path: Path, flag: str) -> Path:
    """The folder exists (made if need be) and a file can be written in it; else exit 2 before any check."""
    path = path.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".verify-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"{flag} {path}: cannot write there ({exc.strerror or exc}); fix: choose a writable folder "
            "(in a job: one every node sees)"
        ) from None
    return path


def job_topology(environ: os._Environ[str] | dict[str, str]) -> jobmod.Topology | None:
    """The multi-node job this process is a rank of (torchrun or srun), or None; a broken one is exit 2."""
    try:
        topo = jobmod.detect(environ)
    except jobmod.JobError as exc:
        raise UsageError(f"multi-node job: {exc}") from None
    problem = jobmod.validate(topo) if topo else None
    if problem:
        raise UsageError(f"multi-node job ({topo.launcher if topo else ''}): {problem}")
    return topo
