"""On a real GPU: the examples use it. The faults that must fail here: fine-tuning that runs on the CPU, or
in fp32 where the GPU has bf16; an fp16 run that does not finish with a finite loss; a server that answers
from the CPU on a GPU host unless told to, or hides that the TorchScript file fell back to the CPU.

Run on the GPU host: `python -m pytest -m gpu tests/gpu/test_examples_gpu.py`.
"""

from __future__ import annotations

import json
import math
import os
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from tests.examples.serving import DATA, request, review_texts, run_example, running_server

pytestmark = pytest.mark.gpu
_MISSING = [m for m in ("transformers", "onnx", "tensorboard", "fastapi", "uvicorn") if not find_spec(m)]
if _MISSING:
    _WHY = f"the examples need {', '.join(_MISSING)}; fix: pip install -e '.[examples]' (examples/README.md)"
    # where a GPU is expected (conftest.py: VERIFY_EXPECT_GPU=1) a missing package must not pass as a skip
    if os.environ.get("VERIFY_EXPECT_GPU", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{_WHY} (VERIFY_EXPECT_GPU=1: a failure, not a skip)", pytrace=False)
    pytest.skip(_WHY, allow_module_level=True)


def finetune(out: Path, *args: str) -> dict:
    """One tiny fine-tuning run on the GPU; its metrics.json."""
    common = ["--data", str(DATA), "--tiny", "--epochs", "1", "--output", str(out)]
    proc = run_example("finetune_bert.py", *common, *args, gpu=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gpu-examples") / "auto"
    return out, finetune(out)


def test_finetuning_runs_on_the_gpu_in_bf16_by_default(auto_run):
    _, metrics = auto_run
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert (metrics["device"], metrics["precision"]) == ("cuda", expected), metrics
    assert metrics["peak_gpu_memory_bytes"] > 0 and metrics["samples_per_s"] > 0, metrics


def test_fp16_runs_with_its_grad_scaler(tmp_path):
    metrics = finetune(tmp_path / "fp16", "--precision", "fp16", "--check-export")
    assert (metrics["device"], metrics["precision"]) == ("cuda", "fp16"), metrics
    assert math.isfinite(metrics["epochs"][-1]["train_loss"]), metrics["epochs"]


def test_the_server_uses_the_gpu_unless_told_otherwise(auto_run, tmp_path):
    model_dir, _ = auto_run
    texts = review_texts(200)[-32:]
    with running_server(model_dir, tmp_path / "serve-auto.log", gpu=True) as base:
        health = request(f"{base}/healthz")[1]
        status, on_gpu = request(f"{base}/predict", {"texts": texts})
    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert (health["backend"], health["device"], health["dtype"]) == ("eager", "cuda", dtype), health
    assert status == 200, on_gpu
    # The traced TorchScript file runs on the CPU only; asked for it, the server says so instead of hiding it.
    with running_server(model_dir, tmp_path / "serve-ts.log", "--torchscript", gpu=True) as base:
        health = request(f"{base}/healthz")[1]
        status, on_cpu = request(f"{base}/predict", {"texts": texts})
    assert (health["backend"], health["device"]) == ("torchscript", "cpu"), health
    assert "does not run on the GPU" in (tmp_path / "serve-ts.log").read_text()
    same = sum(a["label"] == b["label"] for a, b in zip(on_gpu, on_cpu, strict=True))
    assert same >= 0.9 * len(texts), (same, on_gpu[:4], on_cpu[:4])  # bf16 on the GPU vs fp32 on the CPU
