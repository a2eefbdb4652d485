"""`python -m images COMMAND`: the build system's one entry point (the Makefile's targets call it).

Each subcommand lives in its own module; this file only parses arguments and maps errors to exit codes:
0 success, 1 the work failed (a build, a stale file, pins that disagree),
2 bad input (unknown tag, bad matrix).
"""

from __future__ import annotations

import argparse
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m images",
        description="Build versioned PyTorch + CUDA images from images/matrix.toml.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # One module per job; each registers its own subcommands (imported here to keep --help fast).
    from images import ci, dockerfile, lint, lock, pins, readme

    for module in (pins, readme, dockerfile, lock, ci, lint):
        module.add_parsers(sub)
    try:
        from images import build
    except ImportError as exc:  # docker-py lives in the [build] extra
        _register_missing_build_extra(sub, str(exc))
    else:
        build.add_parsers(sub)
    return parser


def _register_missing_build_extra(sub: argparse._SubParsersAction, missing: str) -> None:
    def _fail(_args: argparse.Namespace) -> int:
        print(
            f"error: this command needs the [build] extra ({missing}); fix: pip install -e '.[build]'",
            file=sys.stderr,
        )
        return 2

    for name in ("build", "push", "verify"):
        sub.add_parser(name, help=f"{name} (needs the [build] extra)").set_defaults(func=_fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MatrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
