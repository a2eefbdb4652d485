"""examples/serve.py as a real server process on this host's CPU, serving what a tiny fine-tuning run
exported: 64 concurrent requests are all answered and share forward passes, and --onnx answers as
TorchScript does."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
for _module in ("torch", "transformers", "onnx", "onnxruntime", "tensorboard", "fastapi", "uvicorn"):
    pytest.importorskip(_module, reason=f"the examples need {_module} (see examples/README.md)")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data" / "chinese_reviews_synthetic.csv"
LABELS = {"negative", "neutral", "positive"}
CONCURRENT = 64
# Requests to 127.0.0.1 must not go through a proxy that the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}  # the CPU


def review_texts(count: int) -> list[str]:
    with DATA.open(encoding="utf-8") as handle:
        return [row["text"] for row, _ in zip(csv.DictReader(handle), range(count), strict=False)]


def request(url: str, body: Any = None) -> tuple[int, Any]:
    """GET (body None) or POST JSON; the status and the decoded JSON answer, errors included."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with OPENER.open(req, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve.py exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if request(f"{base}/healthz")[0] == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"serve.py not healthy after {timeout_s:g} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_server(model_dir: Path, log: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        str(EXAMPLES / "serve.py"),
        "--model-dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*command, "--port", str(port), *extra], stdout=sink, stderr=subprocess.STDOUT, env=_env()
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "bert-finetuned"
    args = ["--data", str(DATA), "--tiny", "--epochs", "2", "--batch-size", "16", "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "finetune_bert.py"), *args],
        env=_env(),
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


def test_onnx_mode_answers_as_torchscript_mode(torchscript_server, onnx_server):
    texts = review_texts(200)[-16:]
    status_ts, from_torchscript = request(f"{torchscript_server}/predict", {"texts": texts})
    status_onnx, from_onnx = request(f"{onnx_server}/predict", {"texts": texts})
    assert status_ts == status_onnx == 200
    assert [a["label"] for a in from_onnx] == [a["label"] for a in from_torchscript]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(from_onnx, from_torchscript, strict=True)) < 1e-4
    health = request(f"{onnx_server}/healthz")[1]
    assert (health["backend"], health["device"]) == ("onnx", "cpu")


def test_help_shows_the_options(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "serve.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--onnx", "--max-batch", "--max-wait-ms", "--model-dir", "/predict"):
        assert option in proc.stdout


def test_a_folder_without_a_model_is_a_usage_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "serve.py"),
            "--model-dir",
            str(tmp_path),
            "--port",
            str(free_port()),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--model-dir" in proc.stderr and "config.json" in proc.stderr, proc.stderr
