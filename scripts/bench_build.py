"""Benchmark the image build on this machine: cold build, rebuild after touching verify/, image size.

    .venv/bin/python scripts/bench_build.py                 # the build most users run: no extra CA
    .venv/bin/python scripts/bench_build.py --extra-ca-cert /etc/ssl/certs/ca-certificates.crt
    .venv/bin/python scripts/bench_build.py --http-mirror   # no CA, on a host whose proxy needs one

With no extra CA the venv is installed in place; with one it is installed in a builder stage and copied on.
--http-mirror serves PyPI to the build over plain HTTP from this host (scripts/http_index_mirror.py), so the
no-CA build can be measured where containers cannot reach PyPI without the proxy's CA.

Each figure comes from a real build through images.build (the same code `make build` runs):
  cold     --no-cache build of the line (every layer, CUDA wheels downloaded from the index)
  rebuild  a build right after appending a comment to a file under verify/ (restored afterwards)
  size     the image's uncompressed size as the engine reports it (`docker image inspect .Size`)
The per-step times of each build come from the build stream (time from one "Step n/N" to the next).
Not a test: the figures depend on the network and the machine; the README records one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from images.build import BuildError, BuildRequest, BuildResult, build_image  # noqa: E402
from images.engine import api_client  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
import http_index_mirror  # noqa: E402

TOUCHED = REPO / "verify" / "__init__.py"


def slowest_steps(result: BuildResult, count: int = 4) -> str:
    """The longest steps of both engine builds (the deps image's, when it ran, and the final one's)."""
    timed = []
    for outcome in (result.deps_outcome, result.outcome):
        if outcome is not None:
            names = {s.number: s.instruction for s in outcome.steps}
            timed += [(seconds, names[n]) for n, seconds in outcome.step_seconds.items()]
    ranked = sorted(timed, key=lambda item: -item[0])[:count]
    return "; ".join(f"{seconds:.0f}s {instruction[:48]}" for seconds, instruction in ranked)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tag", default="v2.8")
    parser.add_argument("--extra-ca-cert", type=Path, default=None)
    parser.add_argument(
        "--http-mirror", action="store_true", help="serve PyPI to the build over http from this host"
    )
    parser.add_argument("--skip-cold", action="store_true", help="only the rebuild (needs a previous build)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    console = Console(stderr=True)
    client = api_client()
    request = BuildRequest(tag=args.tag, extra_ca=args.extra_ca_cert)
    mirror = None
    if args.http_mirror:
        # Build containers are on the default bridge: its gateway is this host.
        gateway = client.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"]
        mirror = http_index_mirror.start(port=0)
        request = replace(request, index_url=f"http://{gateway}:{mirror.server_address[1]}/simple")
        console.print(f"serving PyPI to the build at {request.index_url}")
    rows: list[tuple[str, float, str]] = []

    if not args.skip_cold:
        cold = build_image(
            BuildRequest(**{**request.__dict__, "no_cache": True}), client=client, console=console
        )
        rows.append(("cold build (--no-cache)", cold.seconds, slowest_steps(cold)))
    original = TOUCHED.read_text()
    try:
        TOUCHED.write_text(original + f"\n# bench_build touch {time.time()}\n")
        rebuild = build_image(request, client=client, console=console)
    finally:
        TOUCHED.write_text(original)
    rows.append(
        (f"rebuild after touching {TOUCHED.relative_to(REPO)}", rebuild.seconds, slowest_steps(rebuild))
    )
    size = int(client.inspect_image(rebuild.tags[0])["Size"])
    if mirror is not None:
        mirror.shutdown()

    how = "extra CA: builder stage + copy" if args.extra_ca_cert else "no CA: venv installed in place"
    table = Table(title=f"pytorch-cuda {args.tag} runtime build on this machine ({how})")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_column("slowest steps")
    for what, seconds, detail in rows:
        table.add_row(what, f"{seconds:.0f}", detail)
    table.add_row("image size (uncompressed)", f"{size / 1e9:.2f} GB", rebuild.tags[0])
    Console().print(table)
    if args.json:
        figures = {what: round(seconds, 1) for what, seconds, _ in rows}
        figures["size_bytes"] = size
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as exc:
        print(f"bench_build: the build failed, nothing measured:\n{exc}", file=sys.stderr)
        sys.exit(1)
