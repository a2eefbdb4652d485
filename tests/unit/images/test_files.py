"""One atomic writer for every generated file: Dockerfiles, pins.toml, locks, the README, the pins cache."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from images.files import write_atomically


def test_write_atomically_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "v9.9" / "Dockerfile"  # the folder does not exist yet
    write_atomically(target, "one\n")
    write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["Dockerfile"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # readable like a checked-out file, not 0600


def test_bytes_are_written_as_they_are(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "METADATA"
    write_atomically(target, b"\x00binary\xff")
    assert target.read_bytes() == b"\x00binary\xff"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "pins.toml"
    write_atomically(target, "a = 1\n")
    with pytest.raises(TypeError):
        write_atomically(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "a = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pins.toml"]
