"""Pins are read from the torch wheels: parsing, pins.toml round trip, and (against the real index) the
committed pins equal those in every line's torch wheel, with a warm cache costing one request."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_matrix import MATRIX, replace  # same folder: pytest puts it on sys.path

from images.matrix import MATRIX_PATH, PINS_PATH, Pins, load_matrix, parse_pins
from images.pins import (
    PinsError,
    check_pins,
    compute_pins,
    diff_pins,
    parse_cuda_version,
    parse_metadata,
    render_pins_toml,
)
from images.wheelindex import CACHE_DIR, WheelIndex

REPO = Path(__file__).resolve().parents[3]

# Shapes of real torch METADATA: CUDA 12 wheels pin each nvidia-*-cu12 for linux x86_64; newer ones pin the
# cuda-toolkit metapackage, give ranges for some packages and a compatible-release triton.
META_CU12 = """\
Metadata-Version: 2.1
Name: torch
Version: 2.8.0
Requires-Python: >=3.9.0
Requires-Dist: filelock
Requires-Dist: setuptools; python_version >= "3.12"
Requires-Dist: nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-cudnn-cu12==9.10.2.21; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-nccl-cu12==2.27.3; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-arm-only-cu12==1.0; platform_system == "Linux" and platform_machine == "aarch64"
Requires-Dist: triton==3.4.0; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: optree>=0.13.0; extra == "optree"

the long description
"""

META_CU13 = """\
Metadata-Version: 2.1
Name: torch
Version: 2.15.0
Requires-Python: >=3.11
Requires-Dist: cuda-toolkit[cublas,cudart]==13.2.2; platform_system == "Linux"
Requires-Dist: cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"
Requires-Dist: nvidia-cudnn-cu13==9.26.0.51; platform_system == "Linux"
Requires-Dist: nvidia-nccl-cu13==2.30.7; platform_system == "Linux"
Requires-Dist: nvidia-old-py-cu13==1.0; platform_system == "Linux" and python_version < "3.12"
Requires-Dist: triton~=3.9.0; platform_system == "Linux" and python_version < "3.16"
"""


def test_metadata_pins_for_linux_x86_64_only() -> None:
    got = parse_metadata(META_CU12, "3.13")
    assert got.requires_python == ">=3.9.0"
    assert got.nvidia == {
        "nvidia-cuda-runtime-cu12": "12.8.90",
        "nvidia-cudnn-cu12": "9.10.2.21",
        "nvidia-nccl-cu12": "2.27.3",
    }
    assert got.triton == "3.4.0"


def test_metadata_markers_follow_the_line_python_and_ranges_are_not_pins() -> None:
    got = parse_metadata(META_CU13, "3.13")
    assert got.nvidia == {
        "cuda-toolkit": "13.2.2",
        "nvidia-cudnn-cu13": "9.26.0.51",
        "nvidia-nccl-cu13": "2.30.7",
    }
    assert got.triton == "~=3.9.0"  # not pinned exactly by the wheel: recorded as the wheel states it
    assert "nvidia-old-py-cu13" in parse_metadata(META_CU13, "3.11").nvidia


def test_metadata_without_requires_python_is_an_error() -> None:
    with pytest.raises(PinsError, match="Requires-Python"):
        parse_metadata("Name: torch\nVersion: 1\n", "3.13")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("__version__ = '2.8.0+cu128'\ncuda: Optional[str] = '12.8'\nhip = None\n", "12.8"),
        ('cuda = "13.2"\n', "13.2"),
    ],
)
def test_cuda_version_from_version_py(text: str, expected: str) -> None:
    assert parse_cuda_version(text) == expected


def test_a_cpu_wheel_has_no_cuda_version() -> None:
    with pytest.raises(PinsError, match="CPU-only"):
        parse_cuda_version("__version__ = '2.8.0+cpu'\ncuda: Optional[str] = None\n")


def _pins(**changes: object) -> Pins:
    base = {
        "wheel": "torch-2.8.0-cp313-cp313-manylinux_2_28_x86_64.whl",
        "sha256": "a" * 64,
        "cuda": "12.8",
        "cudnn": "9.10.2.21",
        "nccl": "2.27.3",
        "requires_python": ">=3.9.0",
        "nvidia": {"nvidia-nccl-cu12": "2.27.3", "nvidia-cudnn-cu12": "9.10.2.21"},
        "triton": "3.4.0",
        "torch": "2.8.0",
    }
    base.update(changes)
    return Pins(**base)


def test_pins_toml_round_trips_through_the_loader() -> None:
    pins = {"v2.8": _pins(), "v2.15": _pins(torch="2.15.0", triton="~=3.9.0", cuda="13.2")}
    text = render_pins_toml(pins)
    assert text.startswith("# written by make pins; do not edit\n")
    assert parse_pins(tomllib.loads(text), Path("pins.toml"), known_tags=list(pins)) == pins


def test_diff_names_tag_field_and_both_values() -> None:
    recorded = {"v2.8": _pins(nccl="2.27.5", nvidia={"nvidia-nccl-cu12": "2.27.5"})}
    fresh = {"v2.8": _pins(), "v2.9": _pins(torch="2.9.1")}
    diffs = diff_pins(recorded, fresh)
    assert "v2.8: nccl: recorded '2.27.5', wheel says '2.27.3'" in diffs
    assert "v2.8: nvidia.nvidia-nccl-cu12: recorded '2.27.5', wheel says '2.27.3'" in diffs
    assert "v2.8: nvidia.nvidia-cudnn-cu12: recorded None, wheel says '9.10.2.21'" in diffs
    assert any(d.startswith("v2.9: no pins recorded") for d in diffs)
    assert diff_pins(fresh, fresh) == []


# --- against the real index (PyPI) ------------------------------------------------------------------------


@pytest.mark.network
def test_committed_pins_equal_those_in_every_torch_wheel() -> None:
    """The issue's definition of done: pins-check passes on the committed files."""
    assert check_pins(MATRIX_PATH, PINS_PATH) == []


@pytest.mark.network
def test_pins_rewrites_the_committed_file_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "pins.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "images", "pins", "--pins", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == PINS_PATH.read_text()


@pytest.mark.network
def test_pins_check_lists_each_difference_and_exits_1(tmp_path: Path) -> None:
    line = load_matrix().get("v2.8")
    stale = PINS_PATH.read_text().replace(f'nccl = "{line.pins.nccl}"', 'nccl = "0.0.1"', 1)
    stale_file = tmp_path / "pins.toml"
    stale_file.write_text(stale)
    proc = subprocess.run(
        [sys.executable, "-m", "images", "pins-check", "--pins", str(stale_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 1
    assert f"v2.8: nccl: recorded '0.0.1', wheel says '{line.pins.nccl}'" in proc.stderr
    assert "1 difference(s); fix: make pins" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.network
def test_a_warm_cache_costs_one_index_request(tmp_path: Path) -> None:
    cold = WheelIndex(cache_dir=tmp_path)
    first = compute_pins(index=cold)
    lines = len(load_matrix().lines)
    assert cold.requests_made > lines  # index page + metadata / ranges per line
    for line_dir in tmp_path.iterdir():  # keyed by the wheel's sha256
        assert len(line_dir.name) == 64
        assert {p.name for p in line_dir.iterdir()} == {"METADATA", "torch__version.py"}
    warm = WheelIndex(cache_dir=tmp_path)
    assert compute_pins(index=warm) == first
    assert warm.requests_made == 1  # only the torch project page


@pytest.mark.network
def test_range_reads_find_the_same_metadata_as_pep658(tmp_path: Path) -> None:
    """Where the index serves `.metadata`, reading METADATA out of the zip by ranges gives the same bytes,
    so the fallback (used for wheels without `.metadata`) is trustworthy."""
    index = WheelIndex(cache_dir=tmp_path)
    line = load_matrix().lines[0]
    wheel = index.find_wheel("torch", line.torch, line.python)
    served = index.session.get(wheel.url + ".metadata", timeout=60)
    if served.status_code != 200:
        pytest.skip(f"the index serves no .metadata for {wheel.filename}; nothing to compare with")
    member = f"torch-{line.torch}.dist-info/METADATA"
    assert index.read_member(wheel, member, cache=False) == served.content
    assert 0 < index.range_bytes < 16 * 2**20  # a few MB of the wheel, not all of it
    assert wheel.size is None or wheel.size > 20 * index.range_bytes


def test_cache_dir_is_under_the_repo_and_ignored() -> None:
    assert CACHE_DIR == REPO / ".cache" / "pins"
    assert ".cache/" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.network
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('torch = "2.8.0"', 'torch = "2.8.99"', ["torch: '2.8.99' is not a torch release", "fix: pick one"]),
        ('python = "3.13"', 'python = "3.99"', ["python: '3.99'", "no torch 2.8.0 wheel for CPython 3.99"]),
    ],
)
def test_a_line_without_a_torch_wheel_is_a_matrix_error(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(replace(MATRIX, old, new))
    proc = subprocess.run(
        [sys.executable, "-m", "images", "pins", "--matrix", str(matrix), "--pins", str(tmp_path / "p.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f'{matrix}: [lines."v2.8"]' in proc.stderr
    for part in expected:
        assert part in proc.stderr
    assert not (tmp_path / "p.toml").exists()


def test_an_unreachable_index_is_a_friendly_failure(tmp_path: Path) -> None:
    """--index-url is honoured; a dead index gives exit 1 with what to check, and the cache is not used
    to pretend (the index listing is always fetched)."""
    out = tmp_path / "pins.toml"
    dead = "http://127.0.0.1:9/simple/"
    proc = subprocess.run(
        [sys.executable, "-m", "images", "pins", "--index-url", dead, "--pins", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot reach http://127.0.0.1:9/simple/torch/" in proc.stderr
    assert "fix: check the network, --index-url" in proc.stderr
    assert not out.exists()


def test_pip_index_url_is_the_default_index(tmp_path: Path) -> None:
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    proc = subprocess.run(
        [sys.executable, "-m", "images", "pins-check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    assert "cannot reach http://127.0.0.1:9/simple/torch/" in proc.stderr
