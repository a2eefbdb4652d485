#!/usr/bin/env python3
"""Time `verify run` itself: the wall time of the whole command and each check's own time, cold and warm.

    python scripts/bench_verify.py --runs 3 --out bench-verify.json [-- --quick --skip bert]

Each run is a fresh `python -m verify run` (as a user types it) whose JSON report gives each check's time.
The first run is "cold": where this process may (root on a Linux host), the page cache is dropped first so
that torch's 1-4 GB of shared libraries are read from disk again, as on a node that has just booted; where it
may not, the first run is labelled "first" instead of "cold". Later runs are "warm". The raw log of every
run (its whole terminal output) is kept beside the summary in the --out JSON, so a figure can be traced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def drop_page_cache() -> str | None:
    """Drop the page cache (root only); returns why not when it could not."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def one_run(verify_args: list[str], label: str, source: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "verify", "run", "--json", str(report_path), *verify_args]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
        )
        start = time.monotonic()
        # cwd: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=source, check=False)
        wall = time.monotonic() - start
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    checks = {
        r["name"]: {"status": r["status"], "seconds": r["duration_s"]} for r in report.get("results", [])
    }
    figures = {r["name"]: r.get("figures", {}) for r in report.get("results", [])}
    return {
        "label": label,
        "wall_s": round(wall, 2),
        "exit_code": proc.returncode,
        "checks": checks,
        "figures": figures,
        "log": proc.stdout + proc.stderr,
    }


def print_table(runs: list[dict]) -> None:
    names = list(dict.fromkeys(name for run in runs for name in run["checks"]))
    header = f"{'run':<8}{'wall s':>8}{'exit':>6}" + "".join(f"{n:>9}" for n in names)
    print(header)
    for run in runs:
        cells = "".join(f"{run['checks'].get(n, {}).get('seconds', float('nan')):>9.1f}" for n in names)
        print(f"{run['label']:<8}{run['wall_s']:>8.1f}{run['exit_code']:>6}" + cells)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs in all, the first cold (default: 3)")
    parser.add_argument("--out", type=Path, help="write every run (times, figures, raw log) as JSON here")
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO,
        help="the checkout whose verify/ runs (default: this one): an older commit's for a before/after",
    )
    parser.add_argument("verify_args", nargs="*", help="arguments for `verify run`, after --")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: must be at least 1")
    why_not = drop_page_cache()
    runs = []
    for index in range(args.runs):
        label = ("cold" if why_not is None else "first") if index == 0 else f"warm{index}"
        runs.append(one_run(args.verify_args, label, args.source.resolve()))
        print(f"{label}: {runs[-1]['wall_s']:.1f} s, exit {runs[-1]['exit_code']}", file=sys.stderr)
    if why_not:
        print(f"note: the page cache was not dropped ({why_not}); the first run may be warm", file=sys.stderr)
    print_table(runs)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "verify_args": args.verify_args,
                    "source": str(args.source.resolve()),
                    "page_cache_dropped": why_not is None,
                    "runs": runs,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
