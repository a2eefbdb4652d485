"""`python -m images ci-matrix`: one job per (tag, flavor) of the real matrix, following edits to the TOML.

The images workflow fans out over exactly this JSON, so these tests are what keeps "a new line in
matrix.toml is a new CI job" true.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from images.cli import main
from images.matrix import MATRIX_PATH, PINS_PATH, load_matrix

REPO = Path(__file__).resolve().parents[3]
KEYS = {"tag", "flavor", "image", "short_tag", "full_tag", "torch", "python"}


def ci_matrix(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code = main(["ci-matrix", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def pairs(result: dict) -> list[tuple[str, str]]:
    return [(job["tag"], job["flavor"]) for job in result["include"]]


def test_real_process_emits_one_entry_per_tag_and_flavor() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "images", "ci-matrix"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1, "must be one line, for $GITHUB_OUTPUT"
    result = json.loads(proc.stdout)

    matrix = load_matrix()
    expected = [(line.tag, flavor) for line, flavor in matrix.jobs()]
    assert pairs(result) == expected
    assert len(set(expected)) == len(expected) == sum(len(line.flavors) for line in matrix.lines)
    for job in result["include"]:
        line = matrix.get(job["tag"])
        assert set(job) == KEYS
        assert job["short_tag"] == line.short_tag(job["flavor"])
        assert job["full_tag"] == line.full_tag(job["flavor"])
        assert (job["torch"], job["python"]) == (line.torch, line.python)


def _pins_table(tag: str, pins: dict) -> str:
    """Just enough TOML writing for pins.toml's shape (strings and one nested table of strings)."""
    flat = [f"{k} = {json.dumps(v)}" for k, v in pins.items() if not isinstance(v, dict)]
    nested = [f'\n["{tag}".{k}]\n' + "".join(f"{n} = {json.dumps(v)}\n" for n, v in sub.items())
              for k, sub in pins.items() if isinstance(sub, dict)]  # fmt: skip
    return f'\n["{tag}"]\n' + "\n".join(flat) + "\n" + "".join(nested)


def test_follows_edits_to_the_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Add a line, drop a flavor from another: the emitted jobs change with no other file touched."""
    matrix_text = MATRIX_PATH.read_text(encoding="utf-8")
    pins = tomllib.loads(PINS_PATH.read_text(encoding="utf-8"))
    first = load_matrix().lines[0]
    major, minor = (int(x) for x in first.torch.split(".")[:2])
    new_tag, new_torch = f"v{major}.{minor - 1}", f"{major}.{minor - 1}.0"  # a line older than any we ship
    assert new_tag not in load_matrix().tags

    # 1. a new line (its pins copied from the first line's, with its own torch: enough for the loader)
    matrix_text += f'\n[lines."{new_tag}"]\ntorch = "{new_torch}"\nflavors = ["runtime", "devel"]\n'
    new_pins = dict(pins[first.tag], torch=new_torch)
    pins_text = PINS_PATH.read_text(encoding="utf-8") + _pins_table(new_tag, new_pins)
    # 2. a line that builds both flavors (the newest) now builds the runtime flavor only
    both = next(line for line in reversed(load_matrix().lines) if "devel" in line.flavors)
    header = f'[lines."{both.tag}"]\n'
    assert header in matrix_text and "flavors" not in matrix_text.split(header, 1)[1].split("[", 1)[0]
    matrix_text = matrix_text.replace(header, header + 'flavors = ["runtime"]\n', 1)

    (tmp_path / "matrix.toml").write_text(matrix_text, encoding="utf-8")
    (tmp_path / "pins.toml").write_text(pins_text, encoding="utf-8")
    files = ["--matrix-file", str(tmp_path / "matrix.toml"), "--pins-file", str(tmp_path / "pins.toml")]

    code, before, _ = ci_matrix(capsys)
    code_after, after, err = ci_matrix(capsys, *files)
    assert (code, code_after) == (0, 0), err
    assert (new_tag, "runtime") in pairs(after) and (new_tag, "devel") in pairs(after)
    assert (both.tag, "devel") in pairs(before) and (both.tag, "devel") not in pairs(after)
    assert len(after["include"]) == len(before["include"]) + 2 - 1
    added = next(job for job in after["include"] if job["tag"] == new_tag and job["flavor"] == "devel")
    assert added["short_tag"] == f"{new_tag}-devel"
    assert added["full_tag"].startswith(f"{new_torch}-cuda{pins[first.tag]['cuda']}-")

    # a line that loses all but one flavor cannot be asked for the flavor it dropped
    code, _, err = ci_matrix(capsys, *files, "--tags", both.tag, "--flavors", "devel")
    assert code == 2
    assert "no image matches" in err and both.tag in err and "Traceback" not in err


def test_filters_by_tags_and_flavors(capsys: pytest.CaptureFixture[str]) -> None:
    matrix = load_matrix()
    two = list(matrix.tags[-2:])
    code, result, err = ci_matrix(capsys, "--tags", f"{two[0]}, {two[1]}")  # spaces are tolerated
    assert code == 0, err
    assert pairs(result) == [(line.tag, f) for line, f in matrix.jobs() if line.tag in two]

    code, result, err = ci_matrix(capsys, "--tags", two[0], "--flavors", "runtime")
    assert code == 0, err
    assert pairs(result) == [(two[0], "runtime")]

    code, result, err = ci_matrix(capsys, "--tags", "", "--flavors", "")  # blank workflow inputs: everything
    assert code == 0, err
    assert pairs(result) == [(line.tag, f) for line, f in matrix.jobs()]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tags", "v9.99"], ["unknown tag 'v9.99'", "known tags"]),
        (["--flavors", "slim"], ["--flavors", "'slim'", "runtime", "devel"]),
    ],
)
def test_bad_filters_are_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: list[str]
):
    code, _, err = ci_matrix(capsys, *args)
    assert code == 2
    for text in expected:
        assert text in err
    assert "Traceback" not in err
