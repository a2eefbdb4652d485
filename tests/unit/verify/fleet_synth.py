"""Node reports for `verify fleet` tests, made by perturbing REAL reports:

- docs/gpu-runs/2026-11-29-h200-final-verify.json: `verify run` on the lent H200 (1 GPU);
- tests/unit/verify/fleet_data/cpu-quick-report.json: `verify run --quick` on this project's 2-core CPU dev
  host (2026-12-01), so CPU nodes have the exact shape the current code writes.

GPU figures are scaled from the H200's; an 8-rank NCCL curve is synthesized (the H200 run had one GPU, whose
busbw is 0 by definition), shaped like the 2xH200 NVLink sweep in issue 12 (27.6 GB/s at 1 MiB .. 327.7
at 1 GiB).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
H200_REPORT = ROOT / "docs" / "gpu-runs" / "2026-11-29-h200-final-verify.json"
CPU_REPORT = Path(__file__).with_name("fleet_data") / "cpu-quick-report.json"
BUSBW_CURVE = {  # message size -> busbw GB/s, 8 ranks
    "1MiB": 27.6,
    "4MiB": 80.0,
    "16MiB": 180.0,
    "64MiB": 270.0,
    "256MiB": 315.0,
    "1GiB": 327.7,
}
MIB = 2**20
H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_total_MiB": 81559, "scale": 0.78}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


_H200 = _load(H200_REPORT)
_CPU = _load(CPU_REPORT)


def _result(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in report["results"] if r["name"] == name)


def gpu_node(
    hostname: str,
    *,
    rng: random.Random | None = None,
    noise: float = 0.02,
    scale: dict[str, float] | None = None,
    model: str = "H200",
    torch: str | None = None,
    fail: str | None = None,
) -> dict[str, Any]:
    """A real H200 report as node `hostname`: every figure times (1 +- noise), times scale[figure]
    (keys: bf16, copy, bert, busbw); model "H100" renames the GPU and scales all figures down."""
    rng = rng or random.Random(hostname)
    scale = scale or {}
    r = copy.deepcopy(_H200)
    r["host"]["hostname"] = hostname
    base = H100["scale"] if model == "H100" else 1.0

    def f(key: str) -> float:
        return base * scale.get(key, 1.0) * (1.0 + rng.uniform(-noise, noise))

    if model == "H100":
        r["gpus"][0].update(name=H100["name"], memory_total_MiB=H100["memory_total_MiB"])
        _result(r, "driver")["figures"]["gpu_name"] = H100["name"]
        _result(r, "gpu")["figures"]["name"] = H100["name"]
    gpu = _result(r, "gpu")
    bf16, copy_bw = round(797.1 * f("bf16"), 1), round(4244.6 * f("copy"), 1)
    gpu["figures"].update(bf16_tflops=bf16, copy_GBps=copy_bw)
    gpu["details"]["gpus"][0].update(bf16_tflops=bf16, copy_GBps=copy_bw)
    bert = _result(r, "bert")
    sps = round(2311.9 * f("bert"), 1)
    bert["figures"]["samples_per_s"] = sps
    bert["details"]["samples_per_s"] = sps
    nccl = _result(r, "nccl")
    bus_scale = f("busbw")
    rows = []
    for row in nccl["details"]["rows"]:
        busbw = round(BUSBW_CURVE[row["size"]] * bus_scale, 2)
        algbw = round(busbw * 8 / (2 * 7), 2)
        rows.append(
            row | {"busbw_GBps": busbw, "algbw_GBps": algbw, "time_us": round(row["bytes"] / algbw / 1e3, 2)}
        )
    nccl["details"]["rows"] = rows
    nccl["figures"] = {"ranks": 8, "backend": "nccl"} | {
        f"nccl_{k}_GBps_{row['size']}": row[f"{k}_GBps"] for row in rows for k in ("algbw", "busbw")
    }
    if torch:
        r["versions"]["torch"] = torch
        _result(r, "env")["figures"]["torch"] = torch
    if fail:
        failed = _result(r, fail)
        failed["status"] = "fail"
        failed["summary"] = f"planted failure in {fail}"
        r["summary"] = {"pass": 5, "fail": 1, "warn": 0, "skip": 0}
        r["exit_code"] = 1
    return r


def cpu_node(hostname: str) -> dict[str, Any]:
    r = copy.deepcopy(_CPU)
    r["host"]["hostname"] = hostname
    return r


def write(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def healthy_fleet(folder: Path, n: int = 10, seed: int = 1) -> list[Path]:
    rng = random.Random(seed)
    return [write(gpu_node(f"gpu{i:03d}", rng=rng), folder / f"gpu{i:03d}.json") for i in range(n)]
