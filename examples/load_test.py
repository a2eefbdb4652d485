"""Put serve.py under a fixed concurrent load and report latency percentiles and throughput.

    python load_test.py --url http://127.0.0.1:8000 --concurrency 32 --requests 2000
    python load_test.py --url http://127.0.0.1:8000 --json load.json

A closed loop, as users hit a service: --concurrency clients each send one text per POST /predict and send
the next as soon as the answer comes, over a kept-alive connection, until --requests answers are in. The
first --warmup requests are sent the same way and not counted (the first passes compile kernels and fill
caches). The texts are the data set's, in turn. Latency is the client's: from sending the request to the
last byte of the answer. The server's batch sizes during the counted part come from /healthz.

Exit codes: 0 every counted request answered 200, 1 some did not (or the server stopped answering),
2 usage error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import json
import math
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "chinese_reviews_synthetic.csv"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TIMEOUT_S = 60


@dataclass(frozen=True)
class Options:
    url: str
    concurrency: int
    requests: int
    warmup: int
    data: Path
    json_path: Path | None


@dataclass
class Report:
    url: str
    concurrency: int
    requests: int
    ok: int
    errors: dict[str, int]
    seconds: float
    requests_per_s: float
    latency_ms: dict[str, float]  # p50, p90, p99, max, mean
    server: dict[str, Any] = field(default_factory=dict)  # /healthz: backend, device, batch sizes


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Fixed concurrent load on serve.py's POST /predict: latency p50/p90/p99 and requests/s.",
        epilog="\n\n".join(__doc__.split("\n\n")[1:3]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=2000, help="counted requests (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=200, help="uncounted first requests (default: %(default)s)"
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="CSV with a text column (default: shipped)"
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    for name in ("concurrency", "requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.warmup < 0:
        parser.error(f"--warmup {args.warmup}: must be 0 or more")
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        parser.error(f"--url {args.url}: expected http://HOST:PORT")
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file; fix: a CSV with a 'text' column")
    return Options(
        args.url.rstrip("/"), args.concurrency, args.requests, args.warmup, args.data, args.json_path
    )


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row.get("text", "").strip()]
    if not texts:
        raise ValueError(f"--data {path}: no rows with a non-empty 'text' column")
    return texts


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (the smallest value with at least `fraction` of the values at or below it)."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class Client:
    """One kept-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.connection: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, Any]:
        return self._send("GET", path, None)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self._send("POST", path, json.dumps(body).encode())

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            self.connection.request(method, path, body, {"content-type": "application/json"})
            response = self.connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        except (OSError, http.client.HTTPException, json.JSONDecodeError):
            self.connection.close()
            self.connection = None
            raise


def server_stats(url: str) -> dict[str, Any]:
    status, health = Client(url).get("/healthz")
    if status != 200:
        raise OSError(f"GET {url}/healthz answered {status}")
    return health


def run(opts: Options, texts: Sequence[str]) -> Report:
    """The warm-up, then the counted requests; every client pulls the next request number from one counter."""
    lock = threading.Lock()
    counter = iter(range(opts.warmup + opts.requests))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counted_start = threading.Event()
    stop = threading.Event()  # the run failed or was interrupted: every client leaves after its request
    warm = threading.Barrier(opts.concurrency + 1)  # the clients and the timer: the count starts together

    def client_loop() -> None:
        client = Client(opts.url)
        in_warmup = True
        while not stop.is_set():
            with lock:
                number = next(counter, None)
            if number is None:
                break
            if in_warmup and number >= opts.warmup:
                in_warmup = False
                try:
                    warm.wait()
                except threading.BrokenBarrierError:
                    return
                counted_start.wait()
                if stop.is_set():
                    return
            began = time.perf_counter()
            try:
                status, _ = client.post("/predict", {"text": texts[number % len(texts)]})
                outcome = "ok" if status == 200 else f"HTTP {status}"
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
                outcome = type(exc).__name__
            seconds = time.perf_counter() - began
            if number < opts.warmup:
                continue
            with lock:
                if outcome == "ok":
                    latencies.append(seconds)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1
        if in_warmup:  # fewer counted requests than clients: this one still releases the barrier
            with contextlib.suppress(threading.BrokenBarrierError):
                warm.wait()

    before = server_stats(opts.url)
    with ThreadPoolExecutor(max_workers=opts.concurrency) as pool:
        futures = [pool.submit(client_loop) for _ in range(opts.concurrency)]
        try:
            warm.wait()
            stats_at_start = server_stats(opts.url)["stats"]
            start = time.perf_counter()
            counted_start.set()
            for future in futures:
                future.result()
        except BaseException:
            # /healthz failed after the warm-up, or Ctrl-C: release every client waiting for the count to
            # start and stop the others after their request, or leaving this `with` would wait forever
            stop.set()
            warm.abort()
            counted_start.set()
            raise
    seconds = time.perf_counter() - start
    after = server_stats(opts.url)
    latencies.sort()
    ms = [value * 1000 for value in latencies]
    latency = (
        {
            "p50": percentile(ms, 0.50),
            "p90": percentile(ms, 0.90),
            "p99": percentile(ms, 0.99),
            "max": ms[-1],
            "mean": sum(ms) / len(ms),
        }
        if ms
        else {}
    )
    texts_served = after["stats"]["texts"] - stats_at_start["texts"]
    batches = after["stats"]["batches"] - stats_at_start["batches"]
    return Report(
        url=opts.url,
        concurrency=opts.concurrency,
        requests=opts.requests,
        ok=len(latencies),
        errors=errors,
        seconds=seconds,
        requests_per_s=len(latencies) / seconds if seconds > 0 else 0.0,
        latency_ms=latency,
        server={
            "backend": before.get("backend"),
            "device": before.get("device"),
            "dtype": before.get("dtype"),
            "max_batch": before.get("max_batch"),
            "max_wait_ms": before.get("max_wait_ms"),
            "batches": batches,
            "mean_batch_size": texts_served / batches if batches else None,
            "max_batch_size": after["stats"]["max_batch_size"],
        },
    )


def summary(report: Report) -> str:
    server = report.server
    line = (
        f"{report.ok}/{report.requests} requests ok at concurrency {report.concurrency} "
        f"in {report.seconds:.1f} s: {report.requests_per_s:.1f} requests/s"
    )
    if report.latency_ms:
        lat = report.latency_ms
        line += f"; latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms"
    if server.get("mean_batch_size"):
        line += (
            f"; server {server['backend']} on {server['device']} ({server['dtype'] or 'float32'}), "
            f"mean batch {server['mean_batch_size']:.1f} over {server['batches']} passes"
        )
    if report.errors:
        line += f"; FAILED: {report.errors}"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        texts = read_texts(opts.data)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = run(opts, texts)
    except KeyboardInterrupt:
        print("interrupted: no report", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
        print(
            f"error: {opts.url} did not answer ({exc}); fix: start the server (python serve.py ...) "
            "or pass its --url",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(summary(report), flush=True)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return EXIT_OK if not report.errors and report.ok == report.requests else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
