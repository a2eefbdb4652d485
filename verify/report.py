"""The three faces of one run: the terminal table, the JSON report (schema: docs/report-schema.md,
verify/report.schema.json) and JUnit XML for CI test publishers. All are built from the same dict, so they
cannot disagree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import socket
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from verify.result import Result, Status
from verify.worker import json_safe

SCHEMA_VERSION = 1
TOOL_NAME = "pytorch-cuda verify"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STATUS_STYLE = {
    Status.PASS: "bold green",
    Status.FAIL: "bold red",
    Status.WARN: "bold yellow",
    Status.SKIP: "cyan",
}


def tool_version() -> str:
    """The installed distribution's version; in a source checkout, pyproject.toml's."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version("pytorch-cuda")
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError, KeyError):
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    return "unknown"


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "in_container": Path("/.dockerenv").exists() or Path("/run/.containerenv").exists(),
    }


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The image manifest as written, or None on a bare host (the env check judges its content)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summarize(results: Sequence[Result]) -> dict[str, int]:
    return {status.value: sum(1 for r in results if r.status is status) for status in Status}


def exit_code_for(results: Sequence[Result], interrupted: bool) -> int:
    """0 all passed (WARN/SKIP allowed), 1 a check failed, 130 interrupted."""
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(r.status is Status.FAIL for r in results) else EXIT_OK


def _details_of(results: Sequence[Result], name: str, key: str) -> Any:
    for result in results:
        if result.name == name:
            return result.details.get(key)
    return None


def build_report(
    results: Sequence[Result],
    *,
    started_at: dt.datetime,
    duration_s: float,
    manifest_path: Path,
    options: dict[str, Any],
    interrupted: bool,
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict. job: None on a single host; in a multi-node job `job_section(...)` (role "job" for
    rank 0's report of the whole job, "node" for one node's own report), plus missing ranks/nodes."""
    gpus = _details_of(results, "driver", "gpus")
    versions = _details_of(results, "env", "versions")
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "started_at": started_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "host": host_info(),
        "gpus": gpus if isinstance(gpus, list) else [],
        "versions": versions if isinstance(versions, dict) else {},
        "manifest": read_manifest(manifest_path),
        "manifest_path": str(manifest_path),
        "options": options,
        "results": [r.to_dict() for r in results],
        "summary": summarize(results),
        "interrupted": interrupted,
        "exit_code": exit_code_for(results, interrupted),
    }
    if job is not None:
        report["job"] = job
    return json_safe(report)


def job_section(topo: Any, role: str) -> dict[str, Any]:
    """Where a report sits in a multi-node job (topo: verify.cluster.job.Topology)."""
    return {"role": role} | topo.to_dict()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(report: dict[str, Any], path: Path) -> None:
    _atomic_write(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def _figure_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def junit_xml(report: dict[str, Any]) -> str:
    """One <testcase> per check: <failure> for FAIL, <skipped> for SKIP, figures as <properties>.

    WARN is a passing testcase whose reason is in <system-out> and a `status` property, because JUnit has no
    warning state and a warning must not turn a CI run red.
    """
    results = report["results"]
    summary = report["summary"]
    counts = {  # the same totals on <testsuites> and its one <testsuite>
        "name": "verify",
        "tests": str(len(results)),
        "failures": str(summary["fail"]),
        "errors": "0",
        "skipped": str(summary["skip"]),
        "time": f"{sum(r['duration_s'] for r in results):.3f}",
    }
    suites = ET.Element("testsuites", counts)
    suite = ET.SubElement(
        suites, "testsuite", counts, timestamp=report["started_at"], hostname=report["host"]["hostname"]
    )
    props = ET.SubElement(suite, "properties")
    for key, value in sorted(report["versions"].items()):
        if value is not None:
            ET.SubElement(props, "property", name=f"version.{key}", value=str(value))
    ET.SubElement(props, "property", name="tool.version", value=report["tool"]["version"])
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"verify.{result['name']}",
            name=result["name"],
            time=f"{result['duration_s']:.3f}",
        )
        case_props = ET.SubElement(case, "properties")
        ET.SubElement(case_props, "property", name="status", value=result["status"])
        for key, value in result["figures"].items():
            ET.SubElement(case_props, "property", name=key, value=_figure_text(value))
        status = result["status"]
        if status == Status.FAIL.value:
            failure = ET.SubElement(case, "failure", message=result["summary"], type="CheckFailed")
            failure.text = json.dumps(result["details"], indent=2)[:20000]
        elif status == Status.SKIP.value:
            ET.SubElement(case, "skipped", message=result["summary"])
        out = ET.SubElement(case, "system-out")
        out.text = f"{status.upper()}: {result['summary']}"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(report: dict[str, Any], path: Path) -> None:
    _atomic_write(path, junit_xml(report))


def status_text(status: Status) -> Text:
    return Text(status.value.upper(), style=STATUS_STYLE[status])


def results_table(results: Sequence[Result]) -> Table:
    table = Table(title="verify", title_justify="left", expand=False)
    table.add_column("check", style="bold")
    table.add_column("status")
    table.add_column("figures / reason", overflow="fold")
    table.add_column("time", justify="right")
    for result in results:
        table.add_row(result.name, status_text(result.status), result.summary, f"{result.duration_s:.1f} s")
    return table


def print_summary(console: Console, report: dict[str, Any]) -> None:
    summary = report["summary"]
    parts = [f"{summary[s.value]} {s.value}" for s in Status if summary[s.value]]
    tail = " (interrupted)" if report["interrupted"] else ""
    console.print(f"{', '.join(parts) or 'no checks'} in {report['duration_s']:.1f} s{tail}")
