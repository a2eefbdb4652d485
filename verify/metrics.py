"""A run's report as Prometheus text exposition, for node_exporter's textfile collector.

Why: platform teams watch nodes in Prometheus; `verify run --prom FILE` / `verify gate --prom FILE` with FILE
in the collector's folder (node_exporter --collector.textfile.directory) puts each check's status and time,
the figures it measured and per-GPU health beside the node's other metrics, so an alert can fire on a FAIL
or on a figure that sinks over weeks. The file is written whole to a temporary name and renamed, so the
collector never reads half a file (the textfile collector's own advice).

Metrics (gauges; labels in braces):
    verify_check_status{check,status}          1 for the check's status in this run, 0 for the other three
    verify_check_duration_seconds{check}
    verify_check_figure{check,figure}          every numeric figure of every check (bert samples_per_s, ...)
    verify_gpu_temperature_celsius{gpu,uuid}   and _power_watts, _memory_used_bytes,
    verify_gpu_ecc_uncorrected_errors{gpu,uuid,scope}  from the driver check's NVML facts
    verify_run_exit_code, verify_run_duration_seconds, verify_run_timestamp_seconds
    verify_run_info{host,version}              1
Every sample also has `command` ("run" or "gate"): both may write into one textfile folder.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STATUSES = ("pass", "warn", "skip", "fail")
MiB = 1024**2


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class _Family:
    """One metric; every sample carries the `command` label ("run" or "gate"), so the files of both in one
    textfile folder never hold the same series twice (node_exporter rejects such a pair)."""

    def __init__(self, name: str, help_text: str, command: str) -> None:
        self.name, self.help, self.command = name, help_text, command
        self.samples: list[tuple[dict[str, object], float]] = []

    def add(self, value: float, **labels: object) -> None:
        self.samples.append(({"command": self.command, **labels}, value))

    def lines(self) -> Iterable[str]:
        if not self.samples:
            return
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {value!r}"


def render(report: dict[str, Any], command: str = "run") -> str:
    """The report (verify/report.py's dict) as exposition text."""
    status = _Family(
        "verify_check_status", "1 for the check's status in the last run, 0 for the others", command
    )
    duration = _Family("verify_check_duration_seconds", "wall time of the check in the last run", command)
    figure = _Family("verify_check_figure", "each numeric figure a check reported in the last run", command)
    temperature = _Family("verify_gpu_temperature_celsius", "GPU temperature (NVML) at the last run", command)
    power = _Family("verify_gpu_power_watts", "GPU power draw (NVML) at the last run", command)
    memory = _Family("verify_gpu_memory_used_bytes", "GPU memory in use (NVML) at the last run", command)
    ecc = _Family(
        "verify_gpu_ecc_uncorrected_errors",
        "uncorrected ECC errors (NVML; scope volatile/aggregate)",
        command,
    )
    for result in report.get("results", []):
        name = result["name"]
        for each in STATUSES:
            status.add(1.0 if result["status"] == each else 0.0, check=name, status=each)
        duration.add(float(result.get("duration_s") or 0.0), check=name)
        for key, value in sorted((result.get("figures") or {}).items()):
            number = _number(value)
            if number is not None:
                figure.add(number, check=name, figure=key)
        if name == "driver":
            for gpu in (result.get("details") or {}).get("gpus") or []:
                labels = {"gpu": gpu.get("index"), "uuid": gpu.get("uuid")}
                for family, key, scale in (
                    (temperature, "temperature_C", 1),
                    (power, "power_W", 1),
                    (memory, "memory_used_MiB", MiB),
                ):
                    number = _number(gpu.get(key))
                    if number is not None:
                        family.add(number * scale, **labels)
                for scope in ("volatile", "aggregate"):
                    number = _number(gpu.get(f"ecc_uncorrected_{scope}"))
                    if number is not None:
                        ecc.add(number, **labels, scope=scope)
    run = [
        _Family(
            "verify_run_exit_code",
            "exit code of the last run (0 fit, 1 a check failed, 130 interrupted)",
            command,
        ),
        _Family("verify_run_duration_seconds", "wall time of the last run", command),
        _Family("verify_run_timestamp_seconds", "when the last run started (Unix time)", command),
        _Family("verify_run_info", "the last run's host and verify version", command),
    ]
    run[0].add(float(report.get("exit_code", 0)))
    run[1].add(float(report.get("duration_s") or 0.0))
    started = report.get("started_at")
    if started:
        run[2].add(dt.datetime.fromisoformat(started).timestamp())
    host = (report.get("host") or {}).get("hostname", "")
    version = (report.get("tool") or {}).get("version", "")
    run[3].add(1.0, host=host, version=version)
    families = [status, duration, figure, temperature, power, memory, ecc, *run]
    return "\n".join(line for family in families for line in family.lines()) + "\n"


def write(report: dict[str, Any], path: Path, command: str = "run") -> None:
    """Write atomically: a temporary file in the same folder, then rename over `path`."""
    text = render(report, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        Path(tmp).chmod(0o644)  # node_exporter often runs as another user
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
