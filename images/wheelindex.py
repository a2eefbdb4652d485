"""Read files out of wheels on a package index without downloading them (a torch wheel is about 0.9 GB).

- The simple index is read as JSON (PEP 691).
- A wheel's METADATA comes from `<wheel url>.metadata` (PEP 658; PyPI serves it even where the page does not
  advertise it), or, where that is missing, out of the wheel itself.
- Any one file inside a wheel (such as `torch/version.py`) is read through HTTP range requests: `zipfile`
  works on `RangeFile`, a seekable file whose reads are range requests, so only the zip's central directory
  and that member's bytes travel (a few MB instead of the whole wheel).
Everything fetched is cached under `.cache/pins/<wheel sha256>/`, so a rerun makes no request but the index.
Uses `requests`, which honours REQUESTS_CA_BUNDLE (and a TLS-inspecting proxy's CA through it).
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import requests
from packaging.utils import canonicalize_name, parse_wheel_filename

from images.files import write_atomically

DEFAULT_INDEX_URL = "https://pypi.org/simple/"
CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "pins"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT = 60
RANGE_BLOCK = 256 * 1024  # reads are rounded up to this, so zipfile's small reads cost one request


class IndexError_(RuntimeError):
    """The index could not be read or does not hold what we need; the message says what and the fix."""


class NoWheelError(IndexError_):
    """The index answers but lists no wheel for that release and Python: a matrix mistake, not the network."""


@dataclass(frozen=True)
class WheelFile:
    filename: str
    url: str
    sha256: str
    requires_python: str | None
    size: int | None


def index_url_default() -> str:
    """`--index-url` defaults to $PIP_INDEX_URL (as pip does), then PyPI."""
    return os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL


class WheelIndex:
    """One package index, one HTTP session, one cache directory."""

    def __init__(self, index_url: str | None = None, cache_dir: Path = CACHE_DIR) -> None:
        self.index_url = (index_url or index_url_default()).rstrip("/") + "/"
        self.cache_dir = Path(cache_dir)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "pytorch-cuda-pins/1"
        self.requests_made = 0
        self.range_bytes = 0  # bytes fetched by range requests (what the 0.9 GB wheels really cost)
        self._projects: dict[str, list[WheelFile]] = {}

    # --- the simple index ---------------------------------------------------------------------------
    def files(self, project: str) -> list[WheelFile]:
        """Every wheel the index lists for `project` (PEP 691 JSON), not yanked."""
        name = canonicalize_name(project)
        if name not in self._projects:
            url = f"{self.index_url}{name}/"
            resp = self._get(url, headers={"Accept": SIMPLE_JSON})
            if "json" not in resp.headers.get("Content-Type", ""):
                raise IndexError_(
                    f"{url} did not answer with the JSON simple API (PEP 691; got "
                    f"{resp.headers.get('Content-Type')!r}); fix: use an --index-url that serves it"
                )
            out = []
            for entry in resp.json().get("files", []):
                if not entry["filename"].endswith(".whl") or entry.get("yanked"):
                    continue
                out.append(
                    WheelFile(
                        filename=entry["filename"],
                        url=requests.compat.urljoin(url, entry["url"]),
                        sha256=entry.get("hashes", {}).get("sha256", ""),
                        requires_python=entry.get("requires-python"),
                        size=entry.get("size"),
                    )
                )
            self._projects[name] = out
        return self._projects[name]

    def versions(self, project: str) -> list[str]:
        """Every release of `project` with a wheel on the index, oldest first."""
        found = {parse_wheel_filename(w.filename)[1] for w in self.files(project)}
        return [str(v) for v in sorted(found)]

    def find_wheel(self, project: str, version: str, python: str, platform: str = "x86_64") -> WheelFile:
        """The CPython `python` (e.g. "3.13") manylinux wheel of project==version for `platform`."""
        cp = "cp" + python.replace(".", "")
        candidates = []
        for wheel in self.files(project):
            _name, ver, _build, tags = parse_wheel_filename(wheel.filename)
            if str(ver) != version:
                continue
            if any(
                t.interpreter == cp
                and t.abi == cp  # not the free-threaded build (cp313t)
                and t.platform.startswith("manylinux")
                and t.platform.endswith(platform)
                for t in tags
            ):
                candidates.append(wheel)
        if not candidates:
            raise NoWheelError(
                f"no {project} {version} wheel for CPython {python} (tag {cp}) manylinux {platform} on "
                f"{self.index_url}; fix: pick a python / {project} pair that has one"
            )
        # Prefer the newest manylinux baseline when several are listed (they hold the same build).
        return sorted(candidates, key=lambda w: w.filename)[-1]

    # --- files inside a wheel -------------------------------------------------------------------------
    def metadata(self, wheel: WheelFile) -> str:
        """The wheel's METADATA: PEP 658 `.metadata` first, else read out of the zip by range requests."""
        cached = self._cache_path(wheel, "METADATA")
        if cached.exists():
            return cached.read_text(encoding="utf-8")
        resp = self.request("GET", wheel.url + ".metadata")
        if resp.status_code == 200:
            data = resp.content
        else:
            data = self.read_member(wheel, _dist_info_member(wheel, "METADATA"), cache=False)
        write_atomically(cached, data)
        return data.decode("utf-8")

    def read_member(self, wheel: WheelFile, member: str, *, cache: bool = True) -> bytes:
        """One file inside the wheel, through range requests on the zip (cached by wheel sha256)."""
        cached = self._cache_path(wheel, member.replace("/", "__"))
        if cache and cached.exists():
            return cached.read_bytes()
        try:
            with RangeFile(self, wheel.url) as fh, zipfile.ZipFile(fh) as zf:
                data = zf.read(member)
        except KeyError:
            raise IndexError_(f"{wheel.filename} has no member {member!r}") from None
        except (zipfile.BadZipFile, zlib.error) as exc:
            raise IndexError_(
                f"{wheel.filename} is not a readable zip ({exc}); fix: rerun, or report it"
            ) from None
        if cache:
            write_atomically(cached, data)
        return data

    # --- plumbing ---------------------------------------------------------------------------------------
    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One counted HTTP request; a network failure becomes an IndexError_ that says what to check."""
        try:
            resp = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise IndexError_(
                f"cannot reach {url} ({exc.__class__.__name__}: {exc}); fix: check the network, "
                f"--index-url, or REQUESTS_CA_BUNDLE behind a TLS-inspecting proxy"
            ) from None
        self.requests_made += 1
        return resp

    def _get(self, url: str, **kwargs) -> requests.Response:
        resp = self.request("GET", url, **kwargs)
        if resp.status_code != 200:
            raise IndexError_(f"{url} answered HTTP {resp.status_code}; fix: check --index-url and the name")
        return resp

    def _cache_path(self, wheel: WheelFile, name: str) -> Path:
        key = wheel.sha256 or wheel.filename  # an index without digests still caches, by file name
        return self.cache_dir / key / name


def _dist_info_member(wheel: WheelFile, name: str) -> str:
    _dist, version, _build, _tags = parse_wheel_filename(wheel.filename)
    # The dist-info directory uses the file name's spelling of the project (PEP 427).
    project = wheel.filename.split("-")[0]
    return f"{project}-{version}.dist-info/{name}"


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file; every read is an HTTP range request (block-aligned)."""

    def __init__(self, index: WheelIndex, url: str) -> None:
        super().__init__()
        self.index, self.url, self.pos = index, url, 0
        self._blocks: dict[int, bytes] = {}
        resp = index.request("HEAD", url, allow_redirects=True)
        if resp.status_code != 200 or "content-length" not in resp.headers:
            raise IndexError_(f"HEAD {url} answered HTTP {resp.status_code} without a length")
        self.url = resp.url  # follow the redirect once, not on every range
        self.size = int(resp.headers["content-length"])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        if end <= self.pos:
            return b""
        first, last = self.pos // RANGE_BLOCK, (end - 1) // RANGE_BLOCK
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        if missing:
            self._fetch(missing[0] * RANGE_BLOCK, min(self.size, (missing[-1] + 1) * RANGE_BLOCK))
        data = b"".join(self._blocks[b] for b in range(first, last + 1))
        out = data[self.pos - first * RANGE_BLOCK : end - first * RANGE_BLOCK]
        self.pos = end
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _fetch(self, start: int, stop: int) -> None:
        headers = {"Range": f"bytes={start}-{stop - 1}"}
        resp = self.index.request("GET", self.url, headers=headers)
        if resp.status_code != 206:
            raise IndexError_(
                f"{self.url} did not honour a range request (HTTP {resp.status_code}); fix: use an index "
                f"that serves .metadata files or byte ranges"
            )
        data = resp.content
        self.index.range_bytes += len(data)
        for i in range(0, len(data), RANGE_BLOCK):
            self._blocks[(start + i) // RANGE_BLOCK] = data[i : i + RANGE_BLOCK]
