"""A pass-through package index over plain HTTP: PyPI's simple pages and wheels, fetched by this host.

    .venv/bin/python scripts/http_index_mirror.py --port 3141      # then: INDEX_URL=http://HOST:3141/simple

Why: on a host whose network sits behind a TLS-inspecting proxy, a container cannot reach PyPI without the
proxy's CA, so a build there always has an extra CA and installs in a builder stage. To measure (and test)
the build most users run, with no CA and the venv installed in place, this serves the index to the build
over plain HTTP while this host, which trusts the proxy's CA, fetches from PyPI. Nothing is cached or
changed: wheel bytes stream through as they come, and the lock's sha256 for each wheel is checked by the
installer in the build, as with PyPI itself. scripts/bench_build.py --http-mirror starts one.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

SIMPLE = "https://pypi.org/simple/"
FILES = "https://files.pythonhosted.org/"
CHUNK = 1024 * 1024


def _session() -> requests.Session:
    """One pool of kept-alive connections for every handler thread: the installer downloads many wheels at
    once, and a new connection per wheel means a DNS lookup per wheel, which this host's resolver fails at
    under load (the build's installer then retries)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("https://", adapter)
    return session


class MirrorHandler(BaseHTTPRequestHandler):
    session = _session()

    def do_GET(self) -> None:
        if self.path.startswith("/simple/"):
            self._simple_page(self.path.removeprefix("/simple/"))
        elif self.path.startswith("/files/"):
            self._file(self.path.removeprefix("/files/"), body=True)
        else:
            self.send_error(404, "only /simple/<project>/ and /files/<path> are served")

    def do_HEAD(self) -> None:
        """uv asks whether a wheel answers range requests before reading its metadata."""
        if self.path.startswith("/files/"):
            self._file(self.path.removeprefix("/files/"), body=False)
        else:
            self.send_error(404, "only /files/<path> answers HEAD")

    def _simple_page(self, rest: str) -> None:
        upstream = self.session.get(SIMPLE + rest, headers={"Accept": "text/html"}, timeout=60)
        if upstream.status_code != 200:
            self.send_error(upstream.status_code, f"PyPI answered {upstream.status_code} for {rest}")
            return
        here = f"http://{self.headers.get('Host', 'localhost')}/files/"
        body = upstream.text.replace(FILES, here).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, rest: str, *, body: bool) -> None:
        """A wheel or its .metadata, streamed; a Range request is passed on and answered 206 as PyPI does."""
        headers = {"Range": self.headers["Range"]} if "Range" in self.headers else {}
        method = self.session.get if body else self.session.head
        with method(FILES + rest, headers=headers, stream=True, timeout=60) as upstream:
            if upstream.status_code not in (200, 206):
                self.send_error(
                    upstream.status_code, f"files.pythonhosted.org answered {upstream.status_code}"
                )
                return
            self.send_response(upstream.status_code)
            for name in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag"):
                if name in upstream.headers:
                    self.send_header(name, upstream.headers[name])
            self.end_headers()
            if body:
                shutil.copyfileobj(upstream.raw, self.wfile, CHUNK)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: a build fetches hundreds of files


def start(port: int, bind: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve in a daemon thread; the caller shuts it down."""
    server = ThreadingHTTPServer((bind, port), MirrorHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=3141)
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), MirrorHandler)
    print(f"serving PyPI over http on {args.bind}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
