"""`verify`: is this GPU stack right, and is it fast, here? (console script; also `python -m verify`)

This module only parses arguments, wires the runner to the terminal and writes the reports.
Exit codes: 0 every check passed (SKIP and WARN allowed), 1 a check failed, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from verify import job as jobmod
from verify import report as rep
from verify.checks import CHECK_MODULES
from verify.context import DEFAULT_MANIFEST, Context
from verify.result import Result
from verify.runner import CheckSpec, read_specs, run_checks

DEFAULT_JSON = Path("verify-report.json")
REQUIRE_GPU_ENV = "VERIFY_REQUIRE_GPU"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")

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


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run the checks and write the report",
        description="Run the checks, each in its own process with its own timeout, and write the report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--only",
        type=_names,
        action="extend",
        default=[],
        metavar="A,B",
        help="run only these checks (comma-separated; see `verify list`)",
    )
    run.add_argument(
        "--skip", type=_names, action="extend", default=[], metavar="A,B", help="do not run these checks"
    )
    run.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help=f"write the JSON report here (default: ./{DEFAULT_JSON}; always written)",
    )
    run.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML for CI test publishers")
    run.add_argument(
        "--report-dir",
        type=Path,
        metavar="DIR",
        help="also keep each node's own report here (nodeNNNN-HOSTNAME.json; in a multi-node job written by "
        "each node's local rank 0, a shared folder gathers all of them)",
    )
    run.add_argument("--quick", action="store_true", help="short benchmarks: fewer steps and sizes")
    run.add_argument(
        "--require-gpu",
        action="store_true",
        help=f"fail when no GPU is found (default: a GPU-less host passes with SKIPs); "
        f"also {REQUIRE_GPU_ENV}=1",
    )
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="per-check timeout in seconds, replacing each check's default",
    )
    run.add_argument(
        "--manifest",
        type=Path,
        metavar="PATH",
        help=f"image manifest to compare with (default: {DEFAULT_MANIFEST} if present)",
    )
    run.set_defaults(func=cmd_run)


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


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"must be a percentage from 0 to below 100, got {text!r}")
    return value


def _expected_nodes(text: str) -> Any:
    from verify.fleet import Expected

    expected = Expected.parse(text)
    if expected.count < 1 or (not expected.names and not text.strip().isdigit()):
        raise argparse.ArgumentTypeError(
            f"expected a number of nodes (1 or more) or their names, comma-separated, got {text!r}"
        )
    return expected


def _add_fleet(sub: argparse._SubParsersAction) -> None:
    from verify.fleet import DEFAULT_TOLERANCE_PCT

    fleet = sub.add_parser(
        "fleet",
        help="merge node reports; flag failed, slow and mismatched nodes",
        description="Merge `verify run` reports (files, or folders searched for *.json) into one node x "
        "check table and flag: any failed check; a node more than --tolerance below the median of its own "
        "GPU model "
        "(matmul TFLOP/s, memory GB/s, bert samples/s, all_reduce busbw; same setting only); mixed driver, "
        "CUDA or torch versions. Exit 0 none flagged, 1 a node failed or is flagged, 2 usage error.",
    )
    fleet.add_argument("reports", nargs="+", type=Path, metavar="REPORT", help="report JSON files or folders")
    fleet.add_argument("--json", type=Path, metavar="FILE", help="write the merged fleet report as JSON")
    fleet.add_argument(
        "--html", type=Path, metavar="FILE", help="write one self-contained HTML file with plots"
    )
    fleet.add_argument(
        "--tolerance",
        type=_percent,
        default=DEFAULT_TOLERANCE_PCT,
        metavar="PCT",
        help="flag a node this many percent below its GPU model's median "
        f"(default {DEFAULT_TOLERANCE_PCT:g})",
    )
    fleet.add_argument(
        "--expect",
        type=_expected_nodes,
        metavar="N|NAMES",
        help="the nodes the job had, a number or their names (node1,node2): fewer reports (a node that died "
        "before writing one; named where names are given) or more (other runs' reports mixed in) is flagged; "
        "no report at all is then a finding, not an error",
    )
    fleet.set_defaults(func=cmd_fleet)


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


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    from verify.sweep import DEFAULT_SCALE_TOLERANCE_PCT, DEFAULT_TOLERANCE_PCT
    from verify.sweeprun import DEFAULT_SIZE, DEFAULT_TRIAL_TIMEOUT_S

    sweep = sub.add_parser(
        "sweep",
        help="find the node or link behind a slow or hung all-reduce (multi-node job)",
        description=(
            "Run as one rank of a multi-node job, started like `verify run` (srun, or torchrun on every "
            "node). Times all-reduces over groups of nodes in a few rounds: all nodes, disjoint pairs, each "
            "node of a slow pair with good partners, then halves of a slow group (bisection). Names the slow "
            "or hung node, the slow link between two nodes, or the cut between two halves. Exit 0 nothing "
            "found, 1 a node or link named, 2 usage error. Rank 0 prints the verdict, writes the JSON report."
        ),
    )
    sweep.add_argument(
        "--backend",
        choices=["auto", "nccl", "gloo"],
        default="auto",
        help="nccl where this node has a GPU (auto), else gloo on the CPU",
    )
    sweep.add_argument(
        "--size",
        type=_size,
        metavar="BYTES",
        help="buffer per all-reduce, e.g. 64M (default: "
        + ", ".join(f"{k} {v >> 20}M" for k, v in DEFAULT_SIZE.items())
        + ")",
    )
    sweep.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TRIAL_TIMEOUT_S,
        metavar="S",
        help="a trial still running after S seconds hangs and is killed "
        f"(default {DEFAULT_TRIAL_TIMEOUT_S:g})",
    )
    sweep.add_argument(
        "--tolerance",
        type=_percent,
        default=DEFAULT_TOLERANCE_PCT,
        metavar="PCT",
        help="a pair this many percent below the pairs' reference (their 75th percentile busbw) is slow "
        f"(default {DEFAULT_TOLERANCE_PCT:g})",
    )
    sweep.add_argument(
        "--scale-tolerance",
        type=_percent,
        metavar="PCT",
        help="the same for groups of 3 or more nodes, whose busbw a ring over many nodes lowers (default: "
        f"{DEFAULT_SCALE_TOLERANCE_PCT:g} on nccl; on gloo only a group that fails or hangs is slow, as the "
        "CPU and not the network bounds gloo over many nodes)",
    )
    sweep.add_argument(
        "--min-busbw",
        type=float,
        default=0.0,
        metavar="GBPS",
        help="any group below this busbw (GB/s) is slow too: the floor for fleets too small for a "
        "reference, or a figure your fabric must reach",
    )
    sweep.add_argument(
        "--json", type=Path, default=Path("verify-sweep.json"), metavar="FILE", help="rank 0's JSON report"
    )
    sweep.set_defaults(func=cmd_sweep)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify",
        description=(
            "Check a PyTorch + CUDA stack on this host: versions, driver, host, GPUs, NCCL, AMP, BERT, "
            "torch.compile."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rep.tool_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_sweep(sub)
    sub.add_parser("list", help="list the checks, one line each").set_defaults(func=cmd_list)
    _add_fleet(sub)
    _add_bench(sub, load=bool(argv) and argv[0] == "bench")
    return parser


def select(specs: Sequence[CheckSpec], only: Sequence[str], skip: Sequence[str]) -> list[CheckSpec]:
    """Apply --only then --skip; an unknown name is a UsageError that lists the valid ones."""
    valid = [spec.name for spec in specs]
    for flag, names in (("--only", only), ("--skip", skip)):
        unknown = [name for name in names if name not in valid]
        if unknown:
            names = ", ".join(repr(n) for n in unknown)
            raise UsageError(f"{flag}: unknown check {names}; valid names: {', '.join(valid)}")
    chosen = [spec for spec in specs if (not only or spec.name in only) and spec.name not in skip]
    if not chosen:
        raise UsageError(f"--only/--skip leave no check to run; valid names: {', '.join(valid)}")
    return chosen


def require_gpu(flag: bool, environ: dict[str, str] | os._Environ[str]) -> bool:
    """--require-gpu, or VERIFY_REQUIRE_GPU=1 (for CI jobs and `make verify`, which set it once for every
    run). A value that is neither yes nor no is a usage error: a typo must not drop the requirement."""
    value = environ.get(REQUIRE_GPU_ENV)
    if value is None:
        return flag
    word = value.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise UsageError(f"{REQUIRE_GPU_ENV}={value!r}: expected 1 or 0; fix: export {REQUIRE_GPU_ENV}=1")
    return flag or word in TRUE_WORDS


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


def _default_json() -> Path:
    """./verify-report.json, or the temp dir when the working directory is read-only."""
    try:
        return ensure_writable(DEFAULT_JSON, "--json")
    except UsageError:
        return Path(tempfile.gettempdir()) / f"verify-report-{dt.datetime.now():%Y%m%d-%H%M%S}.json"


class RichProgress:
    """One spinner naming the checks that run now (two lanes may run side by side), then one line per
    finished check."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.done = 0
        self.running: dict[str, str] = {}  # name -> what the spinner says of it
        self._status: Any = None

    def _show(self) -> None:
        if not self.running:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        text = f"[{self.done + 1}/{self.total}] " + "; ".join(self.running.values())
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def started(self, spec: CheckSpec, timeout_s: float) -> None:
        self.running[spec.name] = f"[bold]{spec.name}[/bold]: {spec.description} (timeout {timeout_s:g} s)"
        self._show()

    def finished(self, result: Result) -> None:
        self.running.pop(result.name, None)
        self.done += 1
        line = rep.status_text(result.status)
        line.append(f"  {result.name:<7} {result.duration_s:6.1f} s  ", style="default")
        line.append(result.summary, style="default")
        self.console.print(line, overflow="fold")
        self._show()


def cmd_list(_args: argparse.Namespace, modules: Sequence[str]) -> int:
    specs = read_specs(modules)
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        print(f"{spec.name:<{width}}  {spec.description}  (timeout {spec.default_timeout_s:g} s)")
    return rep.EXIT_OK


def cmd_fleet(args: argparse.Namespace, _modules: Sequence[str]) -> int:
    import json

    from verify import fleet as fl
    from verify.fleet_html import write_html

    json_path = ensure_writable(args.json, "--json") if args.json else None
    html_path = ensure_writable(args.html, "--html") if args.html else None
    try:
        fleet = fl.merge(args.reports, args.tolerance, args.expect)
    except fl.FleetInputError as exc:
        raise UsageError(str(exc)) from None
    print(fl.render_text(fleet))
    if json_path:
        rep._atomic_write(json_path, json.dumps(fleet.to_dict(), indent=1, allow_nan=False) + "\n")
        print(f"fleet JSON: {json_path.resolve()}")
    if html_path:
        write_html(fleet, html_path)
        print(f"fleet HTML: {html_path.resolve()}")
    return fleet.exit_code


def cmd_sweep(args: argparse.Namespace, _modules: Sequence[str]) -> int:
    topo = job_topology(os.environ)
    if topo is None or topo.nnodes < 2:
        raise UsageError(
            "verify sweep times all-reduces between nodes, so it runs as one rank of a job over 2 or more "
            "nodes; fix: start it as `verify run` is started in a job, e.g. `srun -N4 --ntasks-per-node 1 "
            "verify sweep` or `torchrun --nnodes 4 --nproc-per-node 1 ... -m verify sweep` on every node"
        )
    json_path = ensure_writable(args.json, "--json") if topo.is_leader else args.json
    from verify import sweeprun  # imports torch: only in a job

    backend = args.backend
    if backend == "auto":
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
    opts = sweeprun.SweepOptions(
        backend=backend,
        size_bytes=args.size or sweeprun.DEFAULT_SIZE[backend],
        trial_timeout_s=args.timeout,
        tolerance_pct=args.tolerance,
        scale_tolerance_pct=args.scale_tolerance
        if args.scale_tolerance is not None
        else sweeprun.default_scale_tolerance(backend),
        min_busbw_GBps=args.min_busbw,
    )
    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    try:
        outcome = sweeprun.run_sweep(topo, opts, lambda line: print(line, flush=True))
    except sweeprun.StoreUnreachable as exc:
        print(f"verify sweep: FAIL: {exc}", file=sys.stderr)
        return rep.EXIT_FAILED
    if outcome.sweep is None:
        return outcome.exit_code
    sweep = outcome.sweep
    report = {
        "schema": "verify-sweep/1",
        "tool_version": rep.tool_version(),
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - start, 1),
        "backend": opts.backend,
        "size_bytes": opts.size_bytes,
        "trial_timeout_s": opts.trial_timeout_s,
        "job": rep.job_section(topo, role="sweep"),
        "sweep": sweep.to_dict(),
        "exit_code": outcome.exit_code,
    }
    rep.write_json(report, json_path)
    word = "FOUND" if outcome.exit_code else "OK"
    print(f"verify sweep: {word}: {sweep.verdict()}", flush=True)
    print(f"JSON report: {json_path.resolve()}", flush=True)
    return outcome.exit_code


def cmd_bench(args: argparse.Namespace, _modules: Sequence[str]) -> int:
    error = getattr(args, "bench_error", None)
    if error:
        print(f"error: `verify bench` is unavailable here: {error}", file=sys.stderr)
        return rep.EXIT_FAILED
    return int(args.bench_run(args) or 0)


def cmd_run(args: argparse.Namespace, modules: Sequence[str]) -> int:
    specs = select(read_specs(modules), args.only, args.skip)
    if args.manifest is not None and not args.manifest.is_file():
        raise UsageError(f"--manifest {args.manifest}: no such file; fix: give the image's manifest.json")
    json_path = ensure_writable(args.json, "--json") if args.json else _default_json()
    junit_path = ensure_writable(args.junit, "--junit") if args.junit else None
    if args.report_dir:  # checked now, not after every check has run (the node would be reported missing)
        args.report_dir = ensure_writable_dir(args.report_dir, "--report-dir")
    manifest = args.manifest or DEFAULT_MANIFEST
    needs_gpu = require_gpu(args.require_gpu, os.environ)
    ctx = Context(quick=args.quick, timeout_s=args.timeout, manifest_path=manifest, require_gpu=needs_gpu)
    topo = job_topology(os.environ)
    if topo is not None:
        return cmd_run_job(args, specs, ctx, topo, json_path, junit_path, manifest)

    console = Console()
    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    outcome = run_checks(specs, ctx, args.timeout, RichProgress(console, len(specs)))
    report = rep.build_report(
        outcome.results,
        started_at=started_at,
        duration_s=time.monotonic() - start,
        manifest_path=manifest,
        options={
            "quick": args.quick,
            "timeout_s": args.timeout,
            "require_gpu": needs_gpu,
            "only": args.only,
            "skip": args.skip,
            "checks": [spec.name for spec in specs],
            "report_dir": str(args.report_dir) if args.report_dir else None,
        },
        interrupted=outcome.interrupted,
    )
    rep.write_json(report, json_path)
    if args.report_dir:
        rep.write_json(report, args.report_dir / f"node0000-{rep.host_info()['hostname']}.json")
    if junit_path:
        rep.write_junit(report, junit_path)
    console.print()
    console.print(rep.results_table(outcome.results))
    rep.print_summary(console, report)
    if junit_path:
        console.print(f"JUnit XML: {junit_path.resolve()}", highlight=False, soft_wrap=True)
    console.print(f"JSON report: {json_path.resolve()}", highlight=False, soft_wrap=True)
    return int(report["exit_code"])


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


def cmd_run_job(
    args: argparse.Namespace,
    specs: Sequence[CheckSpec],
    ctx: Context,
    topo: jobmod.Topology,
    json_path: Path,
    junit_path: Path | None,
    manifest: Path,
) -> int:
    """One rank of a multi-node job (verify.jobrun): only global rank 0 prints the table and writes the
    job's report; each node's local rank 0 writes that node's report into --report-dir."""
    from verify import jobrun  # imports torch: only in a job

    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    options = {
        "quick": args.quick,
        "timeout_s": args.timeout,
        "require_gpu": ctx.require_gpu,
        "only": args.only,
        "skip": args.skip,
        "checks": [spec.name for spec in specs],
        "report_dir": str(args.report_dir) if args.report_dir else None,
    }
    console = Console()

    def write_node_report(results: list[Result]) -> Path | None:
        if not args.report_dir:
            return None
        node = rep.build_report(
            results,
            started_at=started_at,
            duration_s=time.monotonic() - start,
            manifest_path=manifest,
            options=options,
            interrupted=False,
            job=rep.job_section(topo, role="node"),
        )
        path = args.report_dir / jobrun.node_report_name(topo, rep.host_info()["hostname"])
        rep.write_json(node, path)
        return path.resolve()

    progress = RichProgress(console, len(specs)) if topo.is_leader else None
    try:
        outcome = jobrun.run_job(specs, ctx, topo, args.timeout, progress, write_node_report)
    except jobrun.StoreUnreachable as exc:
        print(f"verify: FAIL: {exc}", file=sys.stderr)
        return rep.EXIT_FAILED
    if not topo.is_leader:
        print(
            f"verify: rank {topo.rank}/{topo.world_size} (node {topo.node_rank}) done; "
            f"the job's report is written by rank 0 (exit {outcome.exit_code})",
            file=sys.stderr,
        )
        return int(outcome.exit_code or 0)
    results = list(outcome.local)
    if outcome.nccl is not None:
        merged = jobrun.merge_nccl(outcome.nccl, outcome.rank_results, outcome.missing_ranks, topo)
        order = [spec.name for spec in specs]
        results.append(merged)
        results.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))
    results.append(jobrun.nodes_result(outcome.nodes, outcome.missing_nodes, topo, args.report_dir))
    section = rep.job_section(topo, role="job")
    section |= {
        "missing_ranks": outcome.missing_ranks,
        "missing_nodes": outcome.missing_nodes,
        "nodes": outcome.nodes,
    }
    report = rep.build_report(
        results,
        started_at=started_at,
        duration_s=time.monotonic() - start,
        manifest_path=manifest,
        options=options,
        interrupted=outcome.interrupted,
        job=section,
    )
    rep.write_json(report, json_path)
    if junit_path:
        rep.write_junit(report, junit_path)
    jobrun.announce_done(int(report["exit_code"]))
    console.print()
    console.print(rep.results_table(results))
    rep.print_summary(console, report)
    if junit_path:
        console.print(f"JUnit XML: {junit_path.resolve()}", highlight=False, soft_wrap=True)
    console.print(f"JSON report: {json_path.resolve()}", highlight=False, soft_wrap=True)
    return int(report["exit_code"])


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


if __name__ == "__main__":
    sys.exit(main())
