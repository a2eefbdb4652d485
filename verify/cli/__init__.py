"""`verify`: is this GPU stack right, and is it fast, here? (console script; also `python -m verify`)

This package only parses arguments, wires the runner to the terminal and writes the reports: the parser and
main() here, one module per command family (run.py: `verify run` and `verify list`; gate.py; fleet.py;
sweep.py; bench.py), what they share in common.py.
Exit codes: 0 every check passed (SKIP and WARN allowed), 1 a check failed, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from verify import report as rep
from verify.checks import CHECK_MODULES
from verify.cli.bench import _add_bench, cmd_bench
from verify.cli.common import (
    EXAMPLES,
    UsageError,
    ensure_writable,
    ensure_writable_dir,
    job_topology,
)
from verify.cli.fleet import _add_fleet, cmd_fleet
from verify.cli.gate import GATE_CHECKS, _add_gate, cmd_gate
from verify.cli.run import (
    DEFAULT_JSON,
    FALSE_WORDS,
    REQUIRE_GPU_ENV,
    TRUE_WORDS,
    RichProgress,
    _add_run,
    cmd_list,
    cmd_run,
    cmd_run_job,
    require_gpu,
    select,
)
from verify.cli.sweep import _add_sweep, cmd_sweep

__all__ = [
    "DEFAULT_JSON",
    "EXAMPLES",
    "FALSE_WORDS",
    "GATE_CHECKS",
    "REQUIRE_GPU_ENV",
    "TRUE_WORDS",
    "RichProgress",
    "UsageError",
    "build_parser",
    "cmd_bench",
    "cmd_fleet",
    "cmd_gate",
    "cmd_list",
    "cmd_run",
    "cmd_run_job",
    "cmd_sweep",
    "ensure_writable",
    "ensure_writable_dir",
    "job_topology",
    "main",
    "require_gpu",
    "select",
]


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify",
        description=(
            "Check a PyTorch + CUDA stack on this host: versions, driver, host, XIDs, node shape, GPUs, "
            "NCCL, AMP, BERT, torch.compile."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rep.tool_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_gate(sub)
    _add_sweep(sub)
    sub.add_parser("list", help="list the checks, one line each").set_defaults(func=cmd_list)
    _add_fleet(sub)
    _add_bench(sub, load=bool(argv) and argv[0] == "bench")
    return parser


def main(argv: Sequence[str] | None = None, check_modules: Sequence[str] = CHECK_MODULES) -> int:
    """Entry point. `check_modules` lets tests run the real CLI on their own check modules."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args, check_modules)
    except UsageError as exc:
        parser.exit(rep.EXIT_USAGE, f"verify: error: {exc}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return rep.EXIT_INTERRUPTED
    return rep.EXIT_USAGE  # not reached: parser.exit raises SystemExit
