"""verify/metrics.py: the report as Prometheus text exposition, read back by prometheus_client's own parser.

The run is real: `verify gate --prom` on this host with NVML answering from a real H200's recording
(tests/nvml_replay), so the per-GPU metrics carry what that GPU reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from verify import metrics

REPO = Path(__file__).resolve().parents[3]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def gate(tmp_path: Path, env: dict[str, str], *flags: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    prom = tmp_path / "textfile" / "verify-gate.prom"
    environ = dict(env, PYTHONPATH=os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO)) if p))
    cmd = [sys.executable, "-m", "verify", "gate", "--json", str(tmp_path / "gate.json"), "--prom", str(prom)]
    proc = subprocess.run(
        [*cmd, *flags], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120
    )
    return proc, prom


def test_a_gate_run_writes_metrics_prometheus_parses(nvml_replay: Callable[..., Any], tmp_path: Path) -> None:
    replay = nvml_replay("h200-idle")
    proc, prom = gate(tmp_path, replay.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = samples(prom.read_text())
    report = json.loads((tmp_path / "gate.json").read_text())
    for result in report["results"]:
        for status in metrics.STATUSES:
            key = ("verify_check_status", (("check", result["name"]), ("status", status)))
            assert got[key] == (1.0 if result["status"] == status else 0.0), key
        assert got[("verify_check_duration_seconds", (("check", result["name"]),))] == pytest.approx(
            result["duration_s"]
        )
    gpu0 = next(g for g in report["results"][0]["details"]["gpus"] if g["index"] == 0)
    labels = (("gpu", "0"), ("uuid", gpu0["uuid"]))
    assert got[("verify_gpu_temperature_celsius", labels)] == gpu0["temperature_C"]
    assert got[("verify_gpu_memory_used_bytes", labels)] == gpu0["memory_used_MiB"] * 1024**2
    count = len(replay.data["devices"])
    assert got[("verify_check_figure", (("check", "driver"), ("figure", "gpu_count")))] == count
    assert got[("verify_run_exit_code", ())] == 0.0
    assert next(k for k in got if k[0] == "verify_run_info")[1][0] == ("command", "gate")
    assert not list(prom.parent.glob(".*.tmp")), "a temporary file was left beside the metrics"


def test_a_failed_check_reads_as_status_fail_and_exit_code_one(tmp_path: Path) -> None:
    proc, prom = gate(tmp_path, dict(os.environ), "--expect-gpus", "8")
    assert proc.returncode == 1
    got = samples(prom.read_text())
    assert got[("verify_check_status", (("check", "topology"), ("status", "fail")))] == 1.0
    assert got[("verify_run_exit_code", ())] == 1.0
    assert got[("verify_check_figure", (("check", "topology"), ("figure", "expect_gpus")))] == 8.0


def test_label_values_are_escaped() -> None:
    report = {
        "results": [{"name": 'we"ird\\check\n', "status": "pass", "duration_s": 1.0, "figures": {"x": 2}}],
        "exit_code": 0,
        "duration_s": 1.0,
    }
    got = samples(metrics.render(report))
    assert got[("verify_check_figure", (("check", 'we"ird\\check\n'), ("figure", "x")))] == 2.0


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "verify.prom"
    metrics.write({"results": [], "exit_code": 0, "duration_s": 1.0}, path)
    before = path.read_text()
    with pytest.raises(ValueError):
        metrics.write({"results": [], "exit_code": 0, "started_at": "not a time"}, path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verify.prom"]


def test_an_unwritable_prom_path_is_a_usage_error_before_any_check(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "gate", "--prom", str(blocked / "verify.prom")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--prom" in proc.stderr and "fix: choose a writable path" in proc.stderr
