#!/usr/bin/env python3
"""Where one check's seconds go: import what its fork server would, then run the check under cProfile.

    python scripts/profile_check.py bert --quick [--top 30] [--out bert.prof]

`verify run` reports each check's time; this says which part of it is CUDA start-up, model set-up, a
measurement or waiting for the GPU, so a speed change starts from a measurement rather than a guess. The check
runs in this process exactly as a fork-server child runs it (its IMPORTS first, before CUDA), so the figures
match `verify run`'s, less the fork.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verify.context import Context
from verify.forkserver import preload
from verify.worker import run_check


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("check", help="a check's name: env, driver, host, gpu, nccl, amp, bert, compile")
    parser.add_argument("--quick", action="store_true", help="run it as `verify run --quick` does")
    parser.add_argument("--top", type=int, default=30, help="how many functions to list (default 30)")
    parser.add_argument("--out", type=Path, help="also keep the raw profile here (read it with pstats)")
    args = parser.parse_args()

    module_name = f"verify.checks.{args.check}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        parser.error(f"no check named {args.check!r}; the checks are in verify/checks/")
    imports = list(getattr(module, "IMPORTS", ()))
    start = time.monotonic()
    failed = {name: why for name, why in preload(imports).items() if why}
    import_s = time.monotonic() - start

    profile = cProfile.Profile()
    start = time.monotonic()
    profile.enable()
    result = run_check(module_name, Context(quick=args.quick))
    profile.disable()
    run_s = time.monotonic() - start

    print(f"{args.check}: imports {', '.join(imports) or '(none)'} {import_s:.2f} s; run {run_s:.2f} s")
    for name, why in failed.items():
        print(f"  import {name} failed: {why}")
    print(f"  {result.status.value}: {result.summary}")
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(text.getvalue())
    if args.out:
        stats.dump_stats(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
