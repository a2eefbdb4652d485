"""The hash-pinned locks: pip's report -> lock entries, the lock file round trip, every way a committed lock
goes stale (offline), and (against the real index) a resolution whose digest matches the index's own."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from images.dockerfile import lock_name, requirements_name
from images.lock import (
    Locked,
    LockError,
    check_cuda,
    kept_pins,
    lock_platforms,
    lock_problems,
    parse_lock,
    parse_report,
    pip_environment,
    render_lock,
    resolve,
    same_versions,
)
from images.matrix import load_matrix
from images.wheelindex import WheelIndex

REPO = Path(__file__).resolve().parents[3]
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def report_item(
    name: str, version: str, sha256: str | None, *, url: str = "", extras: list[str] | None = None
):
    """One `install` entry in the shape of pip's installation report (version 1)."""
    archive = {"hashes": {"sha256": sha256}, "hash": f"sha256={sha256}"} if sha256 else {}
    item = {
        "metadata": {"name": name, "version": version},
        "download_info": {"url": url or f"https://files.example/{name}-{version}-py3-none-any.whl",
                          "archive_info": archive},
        "requested": extras is not None,
    }  # fmt: skip
    if extras:
        item["requested_extras"] = extras
    return item


def test_report_becomes_sorted_entries_with_extras() -> None:
    report = {
        "version": "1",
        "install": [
            report_item("torch", "2.8.0", SHA_A),
            report_item("cuda-toolkit", "13.2.2", SHA_B, extras=["nvcc", "cccl"]),
            report_item("Jinja2", "3.1.6", SHA_C),
        ],
    }
    entries = parse_report(report)
    assert [e.key for e in entries] == ["cuda-toolkit", "jinja2", "torch"]
    assert entries[0] == Locked("cuda-toolkit", "13.2.2", (SHA_B,), ("cccl", "nvcc"))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (report_item("demo", "1.0", None), "no wheel with a sha256"),
        (report_item("demo", "1.0", SHA_A, url="https://files.example/demo-1.0.tar.gz"), "no wheel"),
    ],
)
def test_a_report_entry_without_a_hashed_wheel_is_refused(item: dict, message: str) -> None:
    with pytest.raises(LockError, match=message):
        parse_report({"version": "1", "install": [item]})


def test_an_unknown_report_version_is_refused() -> None:
    with pytest.raises(LockError, match="version '2'"):
        parse_report({"version": "2", "install": []})


def test_lock_text_round_trips_and_names_its_requirements() -> None:
    line = load_matrix().get("v2.8")
    entries = [
        Locked("cuda-toolkit", "13.2.2", (SHA_B,), ("cccl", "nvcc")),
        Locked("torch", "2.8.0", (SHA_A,)),
    ]
    text = render_lock(line, "runtime", "torch==2.8.0\n", entries)
    recorded, parsed = parse_lock(text, "x.lock")
    assert parsed == entries
    assert recorded == hashlib.sha256(b"torch==2.8.0\n").hexdigest()
    assert "cuda-toolkit[cccl,nvcc]==13.2.2 \\\n    --hash=sha256:" + SHA_B in text


def test_a_malformed_lock_entry_names_the_file() -> None:
    with pytest.raises(LockError, match=r"x.lock: not an `name==version --hash"):
        parse_lock("# header\ntorch>=2.8\n", "x.lock")


def test_every_committed_lock_is_current() -> None:
    """The test that fails when a lock is stale: matrix edits must be followed by `make lock`."""
    matrix = load_matrix()
    problems = [p for line in matrix.lines for flavor in line.flavors for p in lock_problems(line, flavor)]
    assert problems == []


@pytest.fixture
def copied_line(tmp_path: Path):
    """The real v2.8 line's generated files under a scratch images/ folder, to break on purpose."""
    line = load_matrix().get("v2.8")
    root = tmp_path / "images"
    shutil.copytree(REPO / "images" / "v2.8", root / "v2.8")
    return line, root, root / "v2.8" / lock_name("runtime"), root / "v2.8" / requirements_name("runtime")


def test_each_way_a_lock_goes_stale_is_named(copied_line) -> None:
    line, root, lock, requirements = copied_line
    assert lock_problems(line, "runtime", root) == []
    text = lock.read_text()

    requirements.write_text(requirements.read_text() + "# edited\n")
    assert any("resolved from another requirements.txt" in p for p in lock_problems(line, "runtime", root))
    requirements.write_text(requirements.read_text().removesuffix("# edited\n"))

    lock.write_text(text.replace("transformers==4.56.2", "transformers==4.56.1"))
    assert any(
        "transformers 4.56.1, but requirements.txt asks ==4.56.2" in p
        for p in lock_problems(line, "runtime", root)
    )

    lock.write_text(text.replace("rich==14.1.0", "rich-other==14.1.0"))
    assert any(
        "rich from requirements.txt is not in the lock" in p for p in lock_problems(line, "runtime", root)
    )

    assert line.pins is not None
    lock.write_text(text.replace(line.pins.sha256, SHA_A))
    assert any("torch wheel sha256 aaaaaaaaaaaa" in p for p in lock_problems(line, "runtime", root))

    cudnn = line.pins.cudnn
    lock.write_text(text.replace(f"nvidia-cudnn-cu12=={cudnn}", "nvidia-cudnn-cu12=9.0.0.1"))
    assert any("not an `name==version" in p for p in lock_problems(line, "runtime", root))
    lock.write_text(text.replace(f"nvidia-cudnn-cu12=={cudnn}", "nvidia-cudnn-cu12==9.0.0.1"))
    assert any(f"nvidia-cudnn-cu12 9.0.0.1, pins.toml (from the torch wheel) {cudnn}" in p
               for p in lock_problems(line, "runtime", root))  # fmt: skip

    lock.unlink()
    assert lock_problems(line, "runtime", root) == [f"{lock}: missing"]
    assert lock_problems(replace(line, pins=None), "runtime", root) == [f"{lock}: missing"]
    requirements.unlink()
    assert lock_problems(line, "runtime", root) == [f"{requirements}: missing (make dockerfiles writes it)"]


def test_lock_check_cli_passes_here_and_fails_naming_the_fix(copied_line) -> None:
    _line, root, _lock, requirements = copied_line
    ok = subprocess.run(
        [sys.executable, "-m", "images", "lock", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    requirements.write_text(requirements.read_text() + "# edited\n")
    bad = subprocess.run(
        [sys.executable, "-m", "images", "lock", "--check", "--tag", "v2.8", "--root", str(root)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "stale:" in bad.stderr and "resolved from another requirements.txt" in bad.stderr
    assert "fix: make lock" in bad.stderr


def test_the_machines_pip_settings_do_not_reach_the_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/pip-cap.txt")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    env = pip_environment()
    assert not any(k.startswith("PIP_") and k != "PIP_CONFIG_FILE" for k in env)
    assert env["PIP_CONFIG_FILE"] == os.devnull


@pytest.mark.network
def test_a_real_resolution_pins_the_digest_the_index_publishes(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("packaging==25.0\n")
    entries = resolve(requirements, "3.13")
    assert [(e.name, e.version) for e in entries] == [("packaging", "25.0")]
    published = {
        w.sha256 for w in WheelIndex().files("packaging") if w.filename.startswith("packaging-25.0-")
    }
    assert entries[0].hashes[0] in published


@pytest.mark.network
def test_an_impossible_resolution_shows_pips_reason_and_the_fix(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("packaging==25.0\npackaging==24.2\n")
    with pytest.raises(LockError) as failure:
        resolve(requirements, "3.13")
    message = str(failure.value)
    assert "pip could not resolve" in message and "  | " in message and "fix: change the pins" in message


def test_a_relock_keeps_the_previous_pins_of_what_requirements_do_not_name() -> None:
    previous = [Locked("idna", "3.10", ("a" * 64,)), Locked("requests", "2.32.3", ("b" * 64,))]
    kept = kept_pins(previous, "# generated\nrequests==2.32.4\n")
    assert kept == "idna==3.10\n"  # requests is named (its new pin rules); idna stays where it was


@pytest.mark.network
def test_kept_pins_hold_an_old_transitive_version_and_upgrade_moves_it(tmp_path: Path) -> None:
    """requests pulls idna: the previous lock's idna 3.7 is kept; without it the newest fitting idna comes."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("requests==2.32.3\n")
    kept = resolve(requirements, "3.13", constraints="idna==3.7\n")
    fresh = resolve(requirements, "3.13")
    assert {e.name: e.version for e in kept}["idna"] == "3.7"
    assert {e.name: e.version for e in fresh}["idna"] != "3.7"


def test_a_two_platform_lock_round_trips_with_every_hash_and_its_platforms() -> None:
    line = replace(load_matrix().get("v2.15"), platforms=("linux/amd64", "linux/arm64"))
    entries = [Locked("numpy", "2.5.5", (SHA_A, SHA_B)), Locked("six", "1.17.0", (SHA_C,))]
    text = render_lock(line, "runtime", "numpy\n", entries)
    assert parse_lock(text, "x.lock")[1] == entries
    assert lock_platforms(text) == ("linux/amd64", "linux/arm64")
    assert "linux x86_64, aarch64" in text
    assert f"numpy==2.5.5 \\\n    --hash=sha256:{SHA_A} \\\n    --hash=sha256:{SHA_B}\n" in text


def test_a_second_platform_adds_its_hashes_at_the_same_versions_or_is_refused() -> None:
    first = [Locked("numpy", "2.5.5", (SHA_A,)), Locked("six", "1.17.0", (SHA_C,))]
    arm = [Locked("numpy", "2.5.5", (SHA_B,)), Locked("six", "1.17.0", (SHA_C,))]
    merged = same_versions(first, arm, "linux/arm64")
    assert merged == [Locked("numpy", "2.5.5", (SHA_A, SHA_B)), Locked("six", "1.17.0", (SHA_C,))]
    with pytest.raises(LockError, match=r"numpy 2.5.5 \(on linux/arm64: 2.5.4\).*fix: pin versions"):
        same_versions(first, [replace(arm[0], version="2.5.4"), arm[1]], "linux/arm64")
    with pytest.raises(LockError, match=r"six 1.17.0 \(on linux/arm64: not needed\)"):
        same_versions(first, arm[:1], "linux/arm64")
    with pytest.raises(LockError, match=r"cffi \(only on linux/arm64\)"):
        same_versions(first, [*arm, Locked("cffi", "2.0", (SHA_A,))], "linux/arm64")


def test_a_platform_whose_torch_brings_no_cuda_is_refused_with_the_fix() -> None:
    cpu_only = [Locked("torch", "2.9.1", (SHA_A,)), Locked("nvidia-ml-py", "13.580.82", (SHA_B,))]
    with pytest.raises(
        LockError, match=r"torch 2.9.1 for linux/arm64 requires no nvidia-\* wheel.*fix: remove"
    ):
        check_cuda(cpu_only, "2.9.1", "linux/arm64")
    check_cuda([*cpu_only, Locked("nvidia-cuda-runtime", "13.2.86", (SHA_C,))], "2.15.0", "linux/arm64")


def test_a_lock_resolved_for_other_platforms_than_the_matrix_is_stale(tmp_path: Path) -> None:
    line = load_matrix().get("v2.8")
    folder = tmp_path / line.tag
    shutil.copytree(REPO / "images" / line.tag, folder)
    assert lock_problems(line, "runtime", tmp_path) == []
    two = replace(line, platforms=("linux/amd64", "linux/arm64"))
    assert lock_problems(two, "runtime", tmp_path) == [
        f"{folder / 'requirements.lock'}: resolved for linux/amd64, the matrix builds linux/amd64 linux/arm64"
    ]
