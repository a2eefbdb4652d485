"""examples/serve.py as a real server process on this host's CPU, serving what a tiny fine-tuning run
exported: 64 concurrent requests are all answered and share forward passes, and --onnx answers as
TorchScript does."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.examples.serving import (
    DATA,
    EXAMPLES,
    LABELS,
    example_env,
    free_port,
    request,
    review_texts,
    run_example,
    running_server,
)

pytestmark = pytest.mark.slow
for _module in ("torch", "transformers", "onnx", "onnxruntime", "tensorboard", "fastapi", "uvicorn"):
    pytest.importorskip(_module, reason=f"the examples need {_module} (see examples/README.md)")

CONCURRENT = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "bert-finetuned"
    args = ["--data", str(DATA), "--tiny", "--epochs", "2", "--batch-size", "16", "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "finetune_bert.py"), *args],
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def torchscript_server(model_dir: Path) -> Iterator[str]:
    with running_server(model_dir, model_dir.parent / "serve-torchscript.log") as base:
        yield base


@pytest.fixture(scope="module")
def onnx_server(model_dir: Path) -> Iterator[str]:
    with running_server(model_dir, model_dir.parent / "serve-onnx.log", "--onnx") as base:
        yield base


@pytest.fixture(scope="module")
def eager_server(model_dir: Path) -> Iterator[str]:
    with running_server(model_dir, model_dir.parent / "serve-eager.log", "--eager") as base:
        yield base


def test_healthz_names_the_model_and_device(torchscript_server):
    status, health = request(f"{torchscript_server}/healthz")
    assert status == 200
    assert (health["status"], health["backend"], health["device"]) == ("ok", "torchscript", "cpu")
    assert health["model"].endswith("model.torchscript.pt")
    assert set(health["labels"]) == LABELS


def test_64_concurrent_requests_are_answered_and_batched(torchscript_server):
    texts = review_texts(CONCURRENT)
    before = request(f"{torchscript_server}/healthz")[1]["stats"]
    start_together = threading.Barrier(CONCURRENT)

    def predict(text: str) -> tuple[int, Any, float]:
        start_together.wait()
        start = time.perf_counter()
        status, answer = request(f"{torchscript_server}/predict", {"text": text})
        return status, answer, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        results = list(pool.map(predict, texts))
    after = request(f"{torchscript_server}/healthz")[1]["stats"]

    for status, answer, _ in results:
        assert status == 200, answer
        assert answer["label"] in LABELS and 0 < answer["score"] <= 1, answer
    sizes = [answer["batch_size"] for _, answer, _ in results]
    latencies = sorted(seconds for *_, seconds in results)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * (len(latencies) - 1))]
    summary = f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; batch sizes {sorted(set(sizes))}"
    print(f"{summary}; server stats {after}")
    assert max(sizes) > 1, f"no request shared a forward pass: {sizes}"
    assert after["texts"] - before["texts"] == CONCURRENT
    assert after["batches"] - before["batches"] < CONCURRENT
    assert after["max_batch_size"] > 1


def test_a_texts_list_gets_a_list_and_bad_requests_a_422(torchscript_server):
    status, answers = request(f"{torchscript_server}/predict", {"texts": review_texts(3)})
    assert status == 200 and isinstance(answers, list) and len(answers) == 3, answers
    assert all(answer["label"] in LABELS for answer in answers)
    for body, needle in (
        ({"text": " "}, '"text" is empty'),
        ({}, "exactly one of"),
        ({"texts": []}, "0 texts"),
    ):
        status, answer = request(f"{torchscript_server}/predict", body)
        assert status == 422 and needle in answer["detail"], (body, answer)


def test_onnx_and_eager_modes_answer_as_torchscript_mode(torchscript_server, onnx_server, eager_server):
    texts = review_texts(200)[-16:]
    status, from_torchscript = request(f"{torchscript_server}/predict", {"texts": texts})
    assert status == 200, from_torchscript
    for mode, server in (("onnx", onnx_server), ("eager", eager_server)):
        status, answers = request(f"{server}/predict", {"texts": texts})
        assert status == 200, (mode, answers)
        assert [a["label"] for a in answers] == [a["label"] for a in from_torchscript], mode
        assert (
            max(abs(a["score"] - b["score"]) for a, b in zip(answers, from_torchscript, strict=True)) < 1e-4
        )
        health = request(f"{server}/healthz")[1]
        assert (health["backend"], health["device"], health["dtype"]) == (mode, "cpu", "float32")


def test_onnx_and_eager_together_are_a_usage_error(model_dir):
    proc = run_example("serve.py", "--model-dir", str(model_dir), "--onnx", "--eager")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr, proc.stderr


def test_help_shows_the_options(tmp_path):
    proc = run_example("serve.py", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--onnx", "--eager", "--max-batch", "--max-wait-ms", "--model-dir", "/predict"):
        assert option in proc.stdout


def test_a_folder_without_a_model_is_a_usage_error(tmp_path):
    proc = run_example("serve.py", "--model-dir", str(tmp_path), "--port", str(free_port()))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--model-dir" in proc.stderr and "config.json" in proc.stderr, proc.stderr


def test_load_test_reports_latency_percentiles_under_a_fixed_load(torchscript_server, tmp_path):
    report_path = tmp_path / "load.json"
    args = ["--url", torchscript_server, "--concurrency", "16", "--requests", "160", "--warmup", "16"]
    proc = run_example("load_test.py", *args, "--json", str(report_path), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(proc.stdout)
    report = json.loads(report_path.read_text())
    assert (report["requests"], report["ok"], report["errors"]) == (160, 160, {}), report
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], latency
    # The server saw exactly the counted requests between the two /healthz reads, and batched them.
    server = report["server"]
    assert (server["backend"], server["device"]) == ("torchscript", "cpu"), server
    assert server["mean_batch_size"] > 1 and server["batches"] < 160, server
    assert "requests/s" in proc.stdout and "p99" in proc.stdout


def test_load_test_without_a_server_fails_naming_the_fix():
    proc = run_example("load_test.py", "--url", f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "did not answer" in proc.stderr and "fix: start the server" in proc.stderr, proc.stderr
