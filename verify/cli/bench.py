"""`verify bench bert`: the subcommand; its options and the benchmark live in verify/bench.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from verify import report as rep


def _add_bench(sub: argparse._SubParsersAction, load: bool) -> None:
    """`verify bench bert` lives in verify.bench (it imports torch), so it is loaded only for `bench`."""
    bench = sub.add_parser(
        "bench",
        help="benchmarks (bert: a BERT training step)",
        description="Training throughput on this host.",
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    bert = kinds.add_parser(
        "bert",
        help="BERT training step: samples/s, tokens/s, TFLOP/s, MFU",
        description="Time a BERT training step: forward, backward, optimizer.",
    )
    bert.set_defaults(func=cmd_bench)
    if not load:
        return
    try:
        from verify import bench as bench_module  # heavy: only for `verify bench`
    except Exception as exc:  # a missing or broken bench must not break the rest of the CLI
        bert.set_defaults(bench_error=f"{type(exc).__name__}: {exc}")
        return
    bench_module.add_bench_arguments(bert)
    bert.set_defaults(bench_run=bench_module.run_bench)


def cmd_bench(args: argparse.Namespace, _modules: Sequence[str]) -> int:
    error = getattr(args, "bench_error", None)
    if error:
        print(f"error: `verify bench` is unavailable here: {error}", file=sys.stderr)
        return rep.EXIT_FAILED
    return int(args.bench_run(args) or 0)
