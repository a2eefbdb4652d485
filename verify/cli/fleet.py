"""`verify fleet`: merge the nodes' reports (verify/cluster/fleet.py) and write them as text, JSON, HTML."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from verify import report as rep
from verify.cli.common import UsageError, _expected_nodes, _percent, ensure_writable


def _add_fleet(sub: argparse._SubParsersAction) -> None:
    from verify.cluster.fleet import DEFAULT_TOLERANCE_PCT

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


def cmd_fleet(args: argparse.Namespace, _modules: Sequence[str]) -> int:
    import json

    from verify.cluster import fleet as fl
    from verify.cluster.fleet_html import write_html

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
