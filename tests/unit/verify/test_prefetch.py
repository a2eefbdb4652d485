"""verify/prefetch.py: the libraries it picks, and that its hint fills the page cache (read with fincore).

The page cache is emptied of a test file with POSIX_FADV_DONTNEED (clean pages of a synced file go at once),
`fincore` (util-linux) says how much of it is resident, and after `advise` all of it must be: one hint for
the whole file would bring only the first readahead window (8 MB on this machine's disk, 128 KB on many).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verify import prefetch

SIZE = 48 * 1024 * 1024


def resident(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip())


def evicted_file(path: Path) -> Path:
    path.write_bytes(os.urandom(SIZE))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return path


@pytest.mark.skipif(shutil.which("fincore") is None, reason="fincore (util-linux) not installed")
def test_the_whole_file_is_read_ahead_not_only_its_first_window(tmp_path: Path) -> None:
    big = evicted_file(tmp_path / "libbig.so")
    if resident(big) > SIZE // 4:
        pytest.skip(f"this filesystem ({tmp_path}) keeps the file cached after DONTNEED; nothing to measure")
    assert prefetch.advise([big], budget=None) == SIZE
    deadline = time.monotonic() + 10
    while resident(big) < SIZE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resident(big) == SIZE


def test_the_budget_leaves_out_what_does_not_fit_and_unreadable_files_are_skipped(tmp_path: Path) -> None:
    small, large = tmp_path / "a.so", tmp_path / "b.so"
    small.write_bytes(b"x" * 1000)
    large.write_bytes(b"x" * 5000)
    gone = tmp_path / "gone.so"
    assert prefetch.advise([large, gone, small], budget=2000) == 1000
    assert prefetch.advise([large, gone, small], budget=None) == 6000


def test_libraries_of_torch_include_the_cuda_wheels_beside_it_largest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    files = {
        "torch/__init__.py": 0,
        "torch/_C.cpython-313-x86_64-linux-gnu.so": 10,
        "torch/lib/libtorch_cuda.so": 300,
        "torch/lib/libc10.so": 20,
        "torch/nn/modules/linear.py": 5,  # not a library
        "nvidia/cublas/lib/libcublas.so.12": 200,
        "nvidia/cublas/include/cublas.h": 5,  # not a library
        "triton/__init__.py": 0,
        "triton/_C/libtriton.so": 100,
    }
    for rel, size in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(b"x" * size)
    monkeypatch.syspath_prepend(str(site))
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    found = prefetch.libraries(["torch", "no_such_package"])
    assert [p.relative_to(site).as_posix() for p in found] == [
        "torch/lib/libtorch_cuda.so",
        "nvidia/cublas/lib/libcublas.so.12",
        "triton/_C/libtriton.so",
        "torch/lib/libc10.so",
        "torch/_C.cpython-313-x86_64-linux-gnu.so",
    ]


def test_prefetch_is_off_unless_verify_prefetch_is_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off by default: it gained nothing on a lent H100 and slowed the gpu check (prefetch.py says so)."""
    monkeypatch.delenv("VERIFY_PREFETCH", raising=False)
    assert prefetch.start(["torch"]) is None
    monkeypatch.setenv("VERIFY_PREFETCH", "0")
    assert prefetch.start(["torch"]) is None
    monkeypatch.setenv("VERIFY_PREFETCH", "1")
    thread = prefetch.start(["no_such_package"])
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
