"""`python -m images COMMAND`: the build system's one entry point (the Makefile's targets call it).

Each subcommand lives in its own module; this file only parses arguments and maps errors to exit codes:
0 success, 1 the work failed (a build, a stale file, pins that disagree),
2 bad input (unknown tag, bad matrix) or a missing optional package, 141 stdout closed early (`| head`).

Every command and its `--help` answers even where an optional package is missing (a bare `pip install
--no-deps`, a system Python): a module whose import fails still lists its commands, and running one prints
one line naming the package, its extra and the install command, instead of a traceback or an argparse error
about arguments it never registered.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from images.matrix import MatrixError

EXAMPLES = """\
examples:
  python -m images pins                      # read CUDA/cuDNN/NCCL pins from each line's torch wheel
  python -m images pins-check                # fail when recorded pins and wheels disagree
  python -m images dockerfiles               # render images/<tag>/Dockerfile for every line and flavor
  python -m images dockerfiles --check       # fail when a committed Dockerfile is stale
  python -m images lock                      # resolve every image's packages into hash-pinned .lock files
  python -m images lock --check              # fail when a lock is stale (offline)
  python -m images readme --check            # fail when the README's matrix table is stale
  python -m images ci-matrix                 # the (tag x flavor) job matrix as JSON, for GitHub Actions
  python -m images build --tag v2.8          # build pytorch-cuda:v2.8 through the Docker Engine API
  python -m images verify --tag v2.8         # run `verify run` inside the built image, on the host's GPUs
  python -m images verify --gpus all         # require GPUs (GPU CI); --gpus none: on the CPU on purpose
  python -m images push --tag v2.8 --registry ghcr.io/acme
"""

# Each module and the subcommands it registers. The names are written here, not only in the modules, so a
# module that cannot be imported still shows its commands; tests/unit/images/test_cli.py checks that this
# table and what the modules register agree.
MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pins", ("pins", "pins-check")),
    ("readme", ("readme",)),
    ("dockerfile", ("dockerfiles",)),
    ("lock", ("lock",)),
    ("ci", ("ci-matrix",)),
    ("lint", ("lint",)),
    ("build", ("build", "push", "verify")),
)

# Third-party packages outside `packaging` and the extra that brings each ("" = the base install).
OPTIONAL_PACKAGES: dict[str, str] = {"docker": "build", "jinja2": "build", "requests": "build", "rich": ""}

REPO_ROOT = Path(__file__).resolve().parent.parent
STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`


@dataclass(frozen=True)
class MissingPackage:
    """An optional package a command needs and this Python lacks; says how to install it."""

    package: str

    @property
    def extra(self) -> str:
        return OPTIONAL_PACKAGES.get(self.package, "build")

    def install_command(self) -> str:
        spec = "." if Path.cwd().resolve() == REPO_ROOT else str(REPO_ROOT)
        if not (REPO_ROOT / "pyproject.toml").is_file():  # installed from a wheel, not a checkout
            spec = "pytorch-cuda"
        target = f"{spec}[{self.extra}]" if self.extra else spec
        editable = "-e " if spec != "pytorch-cuda" else ""
        return f"{sys.executable} -m pip install {editable}'{target}'"

    def message(self, command: str) -> str:
        needs = f"the [{self.extra}] extra" if self.extra else "the project's base install"
        return (
            f"error: 'python -m images {command}' needs the Python package '{self.package}' ({needs}), "
            f"which {sys.executable} lacks; fix: make tools (sets up .venv), or {self.install_command()}"
        )


def missing_package(exc: ImportError) -> MissingPackage | None:
    """The optional package behind an ImportError, or None when it is something else (a real bug)."""
    top = (getattr(exc, "name", None) or "").partition(".")[0]
    return MissingPackage(top) if top in OPTIONAL_PACKAGES else None


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, MissingPackage]]:
    """The parser, and the commands whose module could not be imported (name -> what is missing)."""
    parser = argparse.ArgumentParser(
        prog="python -m images",
        description="Build versioned PyTorch + CUDA images from images/matrix.toml.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    unavailable: dict[str, MissingPackage] = {}
    for module_name, commands in MODULES:
        try:  # imported here, one by one, so one missing package hides nothing else
            module = importlib.import_module(f"images.{module_name}")
        except ImportError as exc:
            missing = missing_package(exc)
            if missing is None:
                raise
            for command in commands:
                sub.add_parser(command, help=f"(needs '{missing.package}': make tools)")
                unavailable[command] = missing
        else:
            module.add_parsers(sub)
    return parser, unavailable


def _command_in(argv: list[str]) -> str | None:
    """The subcommand argv names: the first word that is not an option (the top level has only -h)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _flush_stdout() -> bool:
    """Flush stdout; False when its reader is gone (then later writes go to /dev/null, quietly)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's own advice: point the descriptor at devnull so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that closes stdout early (`| head`) ends it quietly with 141."""
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        _flush_stdout()
        return STDOUT_CLOSED
    except SystemExit:  # argparse's --help and usage errors: same quiet end when the reader is gone
        if not _flush_stdout():
            return STDOUT_CLOSED
        raise
    return code if _flush_stdout() else STDOUT_CLOSED


def _main(argv: list[str]) -> int:
    parser, unavailable = build_parser()
    command = _command_in(argv)
    if command in unavailable:  # before parsing: its options (and --help) were never registered
        print(unavailable[command].message(command), file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MatrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a package imported lazily, inside the command
        missing = missing_package(exc)
        if missing is None:
            raise
        print(missing.message(args.command), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
