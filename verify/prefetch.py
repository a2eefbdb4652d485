"""Read ahead what the fork servers are about to import: torch's and the CUDA wheels' shared libraries.

Why: on a host fresh from boot (a node brought into service, a prolog), importing torch pages in gigabytes
of shared libraries through page faults, a few hundred KB at a time, one file after another: the bert fork
server's imports took 11 s with the page cache dropped on a lent H100 (docs/gpu-results.md). One
POSIX_FADV_WILLNEED per file hands the kernel every range at once, so the disk works on many reads in
parallel while the imports run. It
only asks: nothing is read into this process, a file that cannot be opened is skipped, and the kernel may
drop the hint under memory pressure.

Off unless VERIFY_PREFETCH=1: timed on a lent H100 (docs/gpu-results.md, 2026-12-07 host 5), `--quick` with
the page cache dropped took 22.9 and 26.0 s with it against 22.0 and 25.7 s without, and the gpu check, which
runs while the read-ahead does, slowed from 6.3-8.3 s to 9.7-10.7 s. No gain there; kept to time on other
disks (network storage, a slower local disk) where the imports may wait longer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Never ask for more than this share of the memory the kernel says is available.
MAX_SHARE_OF_AVAILABLE = 0.5
CHUNK_BYTES = 128 * 1024  # the kernel's default readahead window: each call is read in full
WORKERS = 4  # files asked for side by side (a call may wait for its read on some kernels)


def package_dir(name: str) -> Path | None:
    """Where an installed top-level package lives, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# Where the libraries sit, relative to a package (a walk of torch's 15,000 files would be slow when cold).
LIBRARY_GLOBS = ("*.so*", "lib/*.so*", "_C/*.so*")
# The CUDA wheels torch loads (cuBLAS, cuDNN, NCCL, ...), relative to site-packages.
CUDA_WHEEL_GLOB = "nvidia/*/lib/*.so*"


def libraries(packages: list[str]) -> list[Path]:
    """Shared libraries of the packages, and of the CUDA wheels when torch is among them, largest first.
    Libraries only: Python modules are many small files that the imports read in order anyway."""
    found: dict[Path, int] = {}
    for name in packages:
        root = package_dir(name)
        if root is None:
            continue
        patterns = [root.glob(g) for g in LIBRARY_GLOBS]
        if name == "torch":
            patterns += [
                root.parent.glob(CUDA_WHEEL_GLOB),
                *(root.parent.joinpath("triton").glob(g) for g in LIBRARY_GLOBS),
            ]
        for matches in patterns:
            for path in matches:
                with contextlib.suppress(OSError):
                    if path.is_file():
                        found[path] = path.stat().st_size
    return sorted(found, key=lambda p: -found[p])


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def advise_file(path: Path, chunk: int = CHUNK_BYTES) -> int:
    """POSIX_FADV_WILLNEED over the whole file, one chunk per call; the bytes asked for (0: not readable).

    Per call the kernel reads ahead at most the device's readahead window (read_ahead_kb, often 128 KB), so
    one call for the whole file would fetch only its first window."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        size = os.fstat(fd).st_size
        for offset in range(0, size, chunk):
            os.posix_fadvise(fd, offset, chunk, os.POSIX_FADV_WILLNEED)
        return size
    except OSError:
        return 0
    finally:
        os.close(fd)


def advise(paths: list[Path], budget: int | None, workers: int = WORKERS) -> int:
    """advise_file for each file that fits the budget, a few files at a time; the bytes asked for."""
    chosen, total = [], 0
    for path in paths:
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            if budget is None or total + size <= budget:
                chosen.append(path)
                total += size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify-prefetch") as pool:
        return sum(pool.map(advise_file, chosen))


def start(packages: list[str]) -> threading.Thread | None:
    """Ask for the packages' libraries in a daemon thread (the runner goes on at once); None when off."""
    if os.environ.get("VERIFY_PREFETCH", "0") != "1" or not hasattr(os, "posix_fadvise") or not packages:
        return None
    available = available_bytes()
    budget = int(available * MAX_SHARE_OF_AVAILABLE) if available is not None else None

    def run() -> None:
        advise(libraries(packages), budget)

    thread = threading.Thread(target=run, name="verify-prefetch", daemon=True)
    thread.start()
    return thread
