"""examples/load_test.py against a small real HTTP server on loopback that misbehaves on purpose: /healthz
fails once the warm-up is done, or /predict is slow while the test presses Ctrl-C. Either used to hang
load_test.py for ever (its clients waited for a count that never started). No model needed."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.examples.serving import EXAMPLES, example_env
from tests.foreground import foreground_python


class FlakyServer(ThreadingHTTPServer):
    daemon_threads = True
    healthz_ok = 1  # /healthz answers 200 this many times, then 500
    predict_s = 0.0  # how long /predict takes
    predicts = 0


class Handler(BaseHTTPRequestHandler):
    server: FlakyServer
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        ok = self.server.healthz_ok > 0
        self.server.healthz_ok -= 1
        stats = {"texts": self.server.predicts, "batches": self.server.predicts, "max_batch_size": 1}
        self._answer(200 if ok else 500, {"backend": "test", "stats": stats} if ok else {"detail": "down"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.server.predict_s)
        self.server.predicts += 1
        self._answer(200, {"label": 1})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    srv = FlakyServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _load_test(srv: FlakyServer, *args: str) -> subprocess.Popen[str]:
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    command = foreground_python(str(EXAMPLES / "load_test.py"), "--url", url, "--concurrency", "4", *args)
    return subprocess.Popen(
        command, env=example_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_healthz_failing_after_the_warm_up_ends_the_run_with_a_message(server):
    server.healthz_ok = 1  # the first read (before the warm-up) works, the one after it fails
    proc = _load_test(server, "--requests", "40", "--warmup", "8")
    out, err = proc.communicate(timeout=60)  # hung for ever before
    assert proc.returncode == 1, out + err
    assert "did not answer" in err and "Traceback" not in err, err


def test_ctrl_c_during_the_counted_requests_stops_at_once(server):
    server.healthz_ok, server.predict_s = 10, 0.2
    proc = _load_test(server, "--requests", "100000", "--warmup", "4")
    deadline = time.monotonic() + 60
    while server.predicts < 20:  # into the counted part
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - started < 5, "the clients kept going after Ctrl-C"
    assert "interrupted" in err and "Traceback" not in err, err
