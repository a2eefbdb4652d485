"""`verify run` (on one host, or as one rank of a multi-node job) and `verify list`."""

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

from verify import metrics
from verify import report as rep
from verify.cli.common import (
    EXAMPLES,
    UsageError,
    _count,
    _names,
    _positive_seconds,
    ensure_writable,
    ensure_writable_dir,
    job_topology,
)
from verify.cluster import job as jobmod
from verify.context import DEFAULT_MANIFEST, Context
from verify.result import Result
from verify.runner import CheckSpec, read_specs, run_checks

DEFAULT_JSON = Path("verify-report.json")
REQUIRE_GPU_ENV = "VERIFY_REQUIRE_GPU"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


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
    add_prom(run)
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
    add_expectations(run)
    run.set_defaults(func=cmd_run)


def add_prom(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prom",
        type=Path,
        metavar="FILE",
        help="also write Prometheus metrics (text format, written atomically; in a job, each node its own) "
        "for node_exporter's textfile collector, e.g. /var/lib/node_exporter/textfile/verify.prom",
    )


def add_expectations(parser: argparse.ArgumentParser) -> None:
    """What this node should have (the topology check judges them); shared by `run` and `gate`."""
    parser.add_argument(
        "--expect-gpus",
        type=_count,
        metavar="N",
        help="fail when fewer than N GPUs are found (default: the job's SLURM_GPUS_ON_NODE, else not judged)",
    )
    parser.add_argument(
        "--expect-ib-ports",
        type=_count,
        metavar="N",
        help="fail when fewer than N InfiniBand ports are ACTIVE (default: a port down is a WARN)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep this node's InfiniBand error counters here and warn when they rose since the last run "
        "(e.g. /var/lib/verify)",
    )


def expectations(args: argparse.Namespace) -> dict[str, Any]:
    """ctx.options for the topology check from --expect-gpus / --expect-ib-ports."""
    state = str(args.state_dir) if args.state_dir else None
    wanted = {"expect_gpus": args.expect_gpus, "expect_ib_ports": args.expect_ib_ports, "state_dir": state}
    wanted = {key: value for key, value in wanted.items() if value is not None}
    return {"topology": wanted} if wanted else {}


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


def _default_json(default: Path = DEFAULT_JSON) -> Path:
    """./verify-report.json (the gate: ./verify-gate.json), or the temp dir when the working directory is
    read-only (a Slurm prolog may start in /)."""
    try:
        return ensure_writable(default, "--json")
    except UsageError:
        return Path(tempfile.gettempdir()) / f"{default.stem}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"


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
        line.append(f"  {result.name:<8} {result.duration_s:5.1f} s  ", style="default")
        line.append(result.summary, style="default")
        self.console.print(line, overflow="fold")
        self._show()


def cmd_list(_args: argparse.Namespace, modules: Sequence[str]) -> int:
    specs = read_specs(modules)
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        print(f"{spec.name:<{width}}  {spec.description}  (timeout {spec.default_timeout_s:g} s)")
    return rep.EXIT_OK


def cmd_run(
    args: argparse.Namespace,
    modules: Sequence[str],
    default_json: Path = DEFAULT_JSON,
    in_job: bool = True,
    options: dict[str, Any] | None = None,
) -> int:
    """`verify run`; `verify gate` calls it with its own checks, its own default report and no job (a
    prolog or health check runs on one node, outside any job's ranks)."""
    specs = select(read_specs(modules), args.only, args.skip)
    if args.manifest is not None and not args.manifest.is_file():
        raise UsageError(f"--manifest {args.manifest}: no such file; fix: give the image's manifest.json")
    json_path = ensure_writable(args.json, "--json") if args.json else _default_json(default_json)
    junit_path = ensure_writable(args.junit, "--junit") if args.junit else None
    prom_path = ensure_writable(args.prom, "--prom") if args.prom else None
    if args.report_dir:  # checked now, not after every check has run (the node would be reported missing)
        args.report_dir = ensure_writable_dir(args.report_dir, "--report-dir")
    manifest = args.manifest or DEFAULT_MANIFEST
    needs_gpu = require_gpu(args.require_gpu, os.environ)
    ctx = Context(
        quick=args.quick,
        timeout_s=args.timeout,
        manifest_path=manifest,
        require_gpu=needs_gpu,
        options=expectations(args) | (options or {}),
    )
    topo = job_topology(os.environ) if in_job else None
    if topo is not None:
        return cmd_run_job(args, specs, ctx, topo, json_path, junit_path, manifest, prom_path)

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
            **expectations(args).get("topology", {}),
        },
        interrupted=outcome.interrupted,
    )
    rep.write_json(report, json_path)
    if args.report_dir:
        rep.write_json(report, args.report_dir / f"node0000-{rep.host_info()['hostname']}.json")
    if junit_path:
        rep.write_junit(report, junit_path)
    if prom_path:
        metrics.write(report, prom_path, command="run" if in_job else "gate")
    console.print()
    console.print(rep.results_table(outcome.results))
    rep.print_summary(console, report)
    if junit_path:
        console.print(f"JUnit XML: {junit_path.resolve()}", highlight=False, soft_wrap=True)
    if prom_path:
        console.print(f"Prometheus metrics: {prom_path.resolve()}", highlight=False, soft_wrap=True)
    console.print(f"JSON report: {json_path.resolve()}", highlight=False, soft_wrap=True)
    return int(report["exit_code"])


def cmd_run_job(
    args: argparse.Namespace,
    specs: Sequence[CheckSpec],
    ctx: Context,
    topo: jobmod.Topology,
    json_path: Path,
    junit_path: Path | None,
    manifest: Path,
    prom_path: Path | None = None,
) -> int:
    """One rank of a multi-node job (verify.cluster.jobrun): only global rank 0 prints the table and writes
    the job's report; each node's local rank 0 writes that node's report into --report-dir and its
    metrics into --prom (a path on the node itself)."""
    from verify.cluster import jobrun  # imports torch: only in a job

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
        """On each node's local rank 0: that node's report into --report-dir, its metrics into --prom."""
        if not args.report_dir and not prom_path:
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
        if prom_path:
            metrics.write(node, prom_path)
        if not args.report_dir:
            return None
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
