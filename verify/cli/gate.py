"""`verify gate`: the torch-free tier for schedulers: is this node fit to take a job, in a few seconds?

A Slurm prolog, HealthCheckProgram or a Kubernetes node check runs it on every node, often, so it imports
no torch and measures nothing: the driver and GPU health from NVML, the host's limits, the kernel log's
XIDs and the node's shape (GPU count, NVLink, fabric, InfiniBand ports). The full `verify run` stays the
answer to "is this stack right and fast"; deploy/slurm/verify-health.sh drains a node on the gate's FAIL.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from verify.cli.common import _positive_seconds
from verify.cli.run import add_expectations, add_prom, cmd_run

GATE_CHECKS: tuple[str, ...] = ("driver", "host", "xid", "topology")
DEFAULT_GATE_JSON = Path("verify-gate.json")


def _add_gate(sub: argparse._SubParsersAction) -> None:
    gate = sub.add_parser(
        "gate",
        help="the fast torch-free tier for schedulers: driver, host, XIDs, GPU count/NVLink/fabric/ports",
        description=__doc__,
        epilog="examples:\n"
        "  verify gate --expect-gpus 8            # a Slurm prolog or HealthCheckProgram\n"
        "  verify gate --expect-gpus 8 --expect-ib-ports 8 --json /var/lib/verify/gate.json\n"
        "  verify gate --prom /var/lib/node_exporter/textfile/verify-gate.prom   # for Prometheus\n"
        "exit codes: 0 fit (SKIP and WARN allowed), 1 a check failed, 2 usage error, 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gate.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help=f"write the JSON report here (default: ./{DEFAULT_GATE_JSON}; always written)",
    )
    gate.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML")
    add_prom(gate)
    gate.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="per-check timeout in seconds (default: each's own)",
    )
    add_expectations(gate)
    gate.set_defaults(func=cmd_gate)


def cmd_gate(args: argparse.Namespace, modules: Sequence[str]) -> int:
    args.only, args.skip = list(GATE_CHECKS), []
    args.quick, args.require_gpu, args.manifest, args.report_dir = False, False, None, None
    # The driver is not held against the torch beside verify: jobs bring their own CUDA (their images).
    no_runtime = {"driver": {"compare_runtime": False}}
    return cmd_run(args, modules, default_json=DEFAULT_GATE_JSON, in_job=False, options=no_runtime)
