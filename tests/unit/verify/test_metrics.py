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


def samples(text: str, command: str = "gate") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(name, labels without `command`): value}; every sample must carry command=<command>."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("command") == command, sample
            found[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return found


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
    driver = report["results"][0]
    # the gate does not hold the driver against the health check's own torch: jobs bring their own CUDA
    assert "no CUDA runtime to compare (not compared in verify gate" in driver["summary"], driver["summary"]
    gpu0 = next(g for g in driver["details"]["gpus"] if g["index"] == 0)
    labels = (("gpu", "0"), ("uuid", gpu0["uuid"]))
    assert got[("verify_gpu_temperature_celsius", labels)] == gpu0["temperature_C"]
    assert got[("verify_gpu_memory_used_bytes", labels)] == gpu0["memory_used_MiB"] * 1024**2
    count = len(replay.data["devices"])
    assert got[("verify_check_figure", (("check", "driver"), ("figure", "gpu_count")))] == count
    assert got[("verify_run_exit_code", ())] == 0.0
    assert not list(prom.parent.glob(".*.tmp")), "a temporary file was left beside the metrics"


def test_a_failed_check_reads_as_status_fail_and_exit_code_one(
    tmp_path: Path, no_nvml: dict[str, str]
) -> None:
    proc, prom = gate(tmp_path, no_nvml, "--expect-gpus", "8")
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
    got = samples(metrics.render(report), command="run")
    assert got[("verify_check_figure", (("check", 'we"ird\\check\n'), ("figure", "x")))] == 2.0


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new text is written in full to a temporary file first; when the rename fails (as on a full disk
    or a vanished folder), the old file is untouched and the temporary one removed."""
    path = tmp_path / "verify.prom"
    metrics.write({"results": [], "exit_code": 0, "duration_s": 1.0}, path)
    before = path.read_text()

    def refuse(self: Path, target: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", refuse)
    report = {"results": [{"name": "driver", "status": "fail", "duration_s": 2.0}], "exit_code": 1}
    with pytest.raises(OSError):
        metrics.write(report, path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verify.prom"]


def test_run_and_gate_files_in_one_folder_hold_no_series_twice() -> None:
    report = {"results": [{"name": "driver", "status": "pass", "duration_s": 0.1}], "exit_code": 0}
    run = text_string_to_metric_families(metrics.render(report, "run"))
    gate = text_string_to_metric_families(metrics.render(report, "gate"))

    def series(families: object) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {(x.name, tuple(sorted(x.labels.items()))) for f in families for x in f.samples}

    run_series, gate_series = series(run), series(gate)
    assert run_series and gate_series and not run_series & gate_series


def test_an_unwritable_prom_path_is_a_usage_error_before_any_check(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "gate", "--prom", str(blocked / "verify.prom")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--prom" in proc.stderr and "fix: choose a writable path" in proc.stderr
