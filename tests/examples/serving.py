"""Helpers for the tests that run examples/serve.py for real: start it, wait for /healthz, send requests."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from verify.cluster.distributed import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data" / "chinese_reviews_synthetic.csv"
LABELS = {"negative", "neutral", "positive"}
# Requests to 127.0.0.1 must not go through a proxy that the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def example_env(*, gpu: bool = False) -> dict[str, str]:
    """This environment, offline, outside any torchrun job; the CPU only unless gpu."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return env if gpu else env | {"CUDA_VISIBLE_DEVICES": ""}


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
def running_server(model_dir: Path, log: Path, *extra: str, gpu: bool = False) -> Iterator[str]:
    """serve.py on a free port of 127.0.0.1 until the block ends; yields its base URL."""
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
            [*command, "--port", str(port), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=example_env(gpu=gpu),
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


def run_example(
    script: str, *args: str, gpu: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """examples/SCRIPT with ARGS in a fresh Python (example_env), its output captured as text."""
    command = [sys.executable, str(EXAMPLES / script), *args]
    return subprocess.run(command, env=example_env(gpu=gpu), capture_output=True, text=True, timeout=timeout)
