"""env and driver on a real GPU host: NVML's facts agree with what CUDA itself says about the same GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from verify import compat
from verify.checks import driver, env
from verify.context import Context
from verify.result import Status

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_env_reports_the_cuda_stack_of_this_torch(tmp_path):
    result = env.run(Context(manifest_path=tmp_path / "absent.json"))
    assert result.status is Status.PASS, result.summary
    versions = result.details["versions"]
    assert versions["cuda"] == torch.version.cuda
    assert versions["cudnn"] == env.cudnn_text(torch.backends.cudnn.version())
    assert versions["nccl"] == ".".join(map(str, torch.cuda.nccl.version()))


def test_driver_passes_and_agrees_with_cuda():
    result = driver.run(Context())
    assert result.status is Status.PASS, result.summary
    info = result.details
    assert compat.check_driver(info["driver_version"], torch.version.cuda, info["driver_cuda"]).level == "ok"
    gpus = info["gpus"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:  # NVML sees the host's GPUs; CUDA only the visible ones
        assert len(gpus) == torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    nvml_gpu = (
        next(g for g in gpus if g["uuid"].endswith(str(props.uuid))) if hasattr(props, "uuid") else gpus[0]
    )
    assert nvml_gpu["name"] == props.name
    assert nvml_gpu["compute_capability"] == f"{props.major}.{props.minor}"
    assert (
        abs(nvml_gpu["memory_total_MiB"] - props.total_memory / 2**20) / nvml_gpu["memory_total_MiB"] < 0.02
    )
    for gpu in gpus:
        assert isinstance(gpu["temperature_C"], int) and 10 < gpu["temperature_C"] < 100
        assert isinstance(gpu["throttle_reasons"], list)
        assert gpu["nvml_errors"] == {}


def test_verify_run_env_driver_writes_gpus_and_versions(tmp_path):
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "run", "--only", "env,driver", "--json", str(tmp_path / "r.json")],
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["gpus"] and report["gpus"][0]["name"] == torch.cuda.get_device_name(0)
    assert report["versions"]["cuda"] == torch.version.cuda
