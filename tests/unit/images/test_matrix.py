"""The matrix loader: the committed files load, the API derives tags/labels/manifest, bad input is refused
with a message that names the file, the tag, the field, the value and the fix (never a traceback)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from images.matrix import (
    FLAVORS,
    MATRIX_PATH,
    PINS_PATH,
    MatrixError,
    UnknownTagError,
    load_matrix,
)

REPO = Path(__file__).resolve().parents[3]

# A small, self-consistent pair of files; each bad case below changes one thing in them.
MATRIX = """\
[defaults]
python = "3.13"
base_image = "debian:trixie-slim"
flavors = ["runtime", "devel"]

[defaults.packages]
rich = "14.1.0"

[lines."v2.8"]
torch = "2.8.0"

[lines."v2.8".packages]
transformers = "4.56.2"
tokenizers = "0.22.1"
"""

PINS = """\
# written by make pins; do not edit
["v2.8"]
torch = "2.8.0"
wheel = "torch-2.8.0-cp313-cp313-manylinux_2_28_x86_64.whl"
sha256 = "65616ca8ec6f43245e1f5f296603e33923f4c30f93d65e103d9e50c25b35150b"
cuda = "12.8"
cudnn = "9.10.2.21"
nccl = "2.27.3"
requires_python = ">=3.9.0"
triton = "3.4.0"

["v2.8".nvidia]
nvidia-cudnn-cu12 = "9.10.2.21"
nvidia-nccl-cu12 = "2.27.3"
nvidia-cuda-runtime-cu12 = "12.8.90"
"""


def write(tmp_path: Path, matrix: str = MATRIX, pins: str = PINS) -> tuple[Path, Path]:
    m, p = tmp_path / "matrix.toml", tmp_path / "pins.toml"
    m.write_text(matrix)
    p.write_text(pins)
    return m, p


def replace(text: str, old: str, new: str) -> str:
    assert old in text, f"test setup: {old!r} not in the fixture"
    return text.replace(old, new, 1)


# --- the committed matrix ------------------------------------------------------------------------------


def test_committed_matrix_loads_with_pins_for_every_line() -> None:
    matrix = load_matrix()
    raw = tomllib.loads(MATRIX_PATH.read_text())
    assert matrix.tags == tuple(raw["lines"])
    assert {"v2.7", "v2.8", "v2.9"} <= set(matrix.tags)  # the lines the issue asks for
    for line in matrix.lines:
        assert line.pins is not None and line.pins.torch == line.torch
        assert line.tag == "v" + ".".join(line.torch.split(".")[:2])
        assert set(line.flavors) <= set(FLAVORS)


def test_every_committed_line_has_a_distinct_torch_and_the_newest_is_last() -> None:
    from packaging.version import Version

    torches = [Version(line.torch) for line in load_matrix().lines]
    assert torches == sorted(torches) and len(set(torches)) == len(torches)


# --- the API other modules use -------------------------------------------------------------------------


def test_tags_labels_and_manifest(tmp_path: Path) -> None:
    line = load_matrix(*write(tmp_path)).get("v2.8")
    assert line.packages == {"rich": "14.1.0", "transformers": "4.56.2", "tokenizers": "0.22.1"}
    assert line.short_tag("runtime") == "v2.8"
    assert line.short_tag("devel") == "v2.8-devel"
    assert line.full_tag("runtime") == "2.8.0-cuda12.8-cudnn9-py3.13-runtime"
    assert line.full_tag("devel") == "2.8.0-cuda12.8-cudnn9-py3.13-devel"

    labels = line.labels("devel")
    assert labels["org.opencontainers.image.version"] == "2.8.0-cuda12.8-cudnn9-py3.13-devel"
    assert labels["org.opencontainers.image.base.name"] == "debian:trixie-slim"
    assert labels["org.pytorch-cuda.tag"] == "v2.8-devel"
    assert labels["org.pytorch-cuda.nccl"] == "2.27.3"
    assert labels["org.pytorch-cuda.pkg.transformers"] == "4.56.2"
    assert labels["org.pytorch-cuda.nvidia.nvidia-cudnn-cu12"] == "9.10.2.21"
    for key in ("title", "description", "version", "source", "licenses", "base.name"):
        assert labels[f"org.opencontainers.image.{key}"]
    assert all(isinstance(v, str) for v in labels.values())

    manifest = line.manifest("runtime")
    assert manifest == {
        "schema": 1,
        "image": "pytorch-cuda",
        "tag": "v2.8",
        "flavor": "runtime",
        "full_tag": "2.8.0-cuda12.8-cudnn9-py3.13-runtime",
        "base_image": "debian:trixie-slim",
        "python": "3.13",
        "torch": "2.8.0",
        "cuda": "12.8",
        "cudnn": "9.10.2.21",
        "nccl": "2.27.3",
        "triton": "3.4.0",
        "packages": {"rich": "14.1.0", "tokenizers": "0.22.1", "transformers": "4.56.2"},
        "nvidia": {
            "nvidia-cuda-runtime-cu12": "12.8.90",
            "nvidia-cudnn-cu12": "9.10.2.21",
            "nvidia-nccl-cu12": "2.27.3",
        },
    }


def test_every_committed_line_carries_every_pin_in_its_labels() -> None:
    for line, flavor in load_matrix().jobs():
        labels = line.labels(flavor)
        for name, version in line.packages.items():
            assert labels[f"org.pytorch-cuda.pkg.{name}"] == version
        for name, version in line.pins.nvidia.items():
            assert labels[f"org.pytorch-cuda.nvidia.{name}"] == version
        assert line.manifest(flavor)["full_tag"] == labels["org.opencontainers.image.version"]


def test_unknown_tag_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownTagError, match=r"'v9\.9'.*known tags: v2\.8"):
        load_matrix(*write(tmp_path)).get("v9.9")


def test_a_flavor_the_line_lacks_is_refused(tmp_path: Path) -> None:
    matrix = replace(MATRIX, 'flavors = ["runtime", "devel"]', 'flavors = ["runtime"]')
    line = load_matrix(*write(tmp_path, matrix)).get("v2.8")
    with pytest.raises(MatrixError, match="'devel'"):
        line.full_tag("devel")


def test_without_pins_the_matrix_still_loads_when_asked(tmp_path: Path) -> None:
    m, p = write(tmp_path, pins="")
    line = load_matrix(m, p, require_pins=False).get("v2.8")
    assert line.pins is None
    with pytest.raises(MatrixError, match="make pins"):
        line.manifest("runtime")


# --- bad input ---------------------------------------------------------------------------------------------

# (id, matrix text, pins text, substrings the message must hold: the field and the bad value at least)
BAD = [
    (
        "unknown-line-key",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.8.0"\npyhton = "3.13"'),
        PINS,
        ["v2.8", "unknown key 'pyhton'", "did you mean 'python'"],
    ),
    (
        "unknown-top-level-key",
        MATRIX + '\n[line."v2.9"]\ntorch = "2.9.1"\n',
        PINS,
        ["unknown top-level key 'line'", "did you mean 'lines'"],
    ),
    (
        "unknown-defaults-key",
        replace(MATRIX, "[defaults]\n", '[defaults]\nbase = "debian:trixie-slim"\n'),
        PINS,
        ["[defaults]", "unknown key 'base'", "base_image"],
    ),
    (
        "missing-torch",
        replace(MATRIX, 'torch = "2.8.0"\n', ""),
        PINS,
        ["v2.8", "missing required field 'torch'"],
    ),
    (
        "torch-not-a-string",
        replace(MATRIX, 'torch = "2.8.0"', "torch = 2.8"),
        PINS,
        ["v2.8", "torch", "2.8", "expected a string"],
    ),
    (
        "malformed-torch-version",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.8.x"'),
        PINS,
        ["v2.8", "torch", "'2.8.x'", "not a valid version"],
    ),
    (
        "package-range-not-a-pin",
        replace(MATRIX, 'transformers = "4.56.2"', 'transformers = ">=4.56"'),
        PINS,
        ["v2.8", "packages.transformers", "'>=4.56'", "exact release"],
    ),
    (
        "package-version-not-a-string",
        replace(MATRIX, 'tokenizers = "0.22.1"', "tokenizers = 0.22"),
        PINS,
        ["packages.tokenizers", "0.22", "expected a version string"],
    ),
    (
        "torch-under-packages",
        replace(MATRIX, 'tokenizers = "0.22.1"', 'torch = "2.8.0"'),
        PINS,
        ["packages.torch", "pins.toml"],
    ),
    (
        "python-not-supported-by-torch",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.8.0"\npython = "3.8"'),
        PINS,
        ["v2.8", "python", "'3.8'", ">=3.9.0", "torch 2.8.0"],
    ),
    (
        "python-not-a-minor-version",
        replace(MATRIX, 'python = "3.13"', 'python = "3"'),
        PINS,
        ["v2.8", "python", "'3'"],
    ),
    (
        "duplicate-tag",
        MATRIX + '\n[lines."v2.8"]\ntorch = "2.8.0"\n',
        PINS,
        # the second table starts after the fixture and one blank line
        ["duplicate tag 'v2.8'", f"line {len(MATRIX.splitlines()) + 2}:", "matrix.toml"],
    ),
    (
        "duplicate-packages-table",
        MATRIX + '\n[lines."v2.8".packages]\nrich = "14.1.0"\n',
        PINS,
        ['table [lines."v2.8".packages] is declared twice', f"line {len(MATRIX.splitlines()) + 2}:"],
    ),
    (
        "key-set-twice",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.8.0"\ntorch = "2.8.1"'),
        PINS,
        ["line 11:", "a key is set twice"],
    ),
    (
        "duplicate-tag-in-pins",
        MATRIX,
        PINS + '\n["v2.8"]\ntorch = "2.8.0"\n',
        ["pins.toml", "duplicate tag 'v2.8'", f"line {len(PINS.splitlines()) + 2}:"],
    ),
    (
        "tag-format",
        replace(MATRIX, '[lines."v2.8"]', '[lines."2.8"]').replace(
            '[lines."v2.8".packages]', '[lines."2.8".packages]'
        ),
        PINS,
        ["tag '2.8'", "v<major>.<minor>", 'lines."v2.8"'],
    ),
    (
        "tag-does-not-match-torch",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.9.1"'),
        PINS,
        ["torch '2.9.1'", "tag 'v2.8'"],
    ),
    (
        "unknown-flavor",
        replace(MATRIX, '["runtime", "devel"]', '["runtime", "devle"]'),
        PINS,
        ["flavors", "'devle'", "did you mean 'devel'"],
    ),
    (
        "empty-flavors",
        replace(MATRIX, '["runtime", "devel"]', "[]"),
        PINS,
        ["v2.8", "flavors", "empty"],
    ),
    (
        "unknown-platform",
        replace(
            MATRIX, '["runtime", "devel"]', '["runtime", "devel"]\nplatforms = ["linux/amd64", "linux/arm"]'
        ),
        PINS,
        ["v2.8", "platforms", "'linux/arm'", "did you mean 'linux/arm64'"],
    ),
    (
        "platforms-not-a-list",
        replace(MATRIX, '["runtime", "devel"]', '["runtime", "devel"]\nplatforms = "linux/arm64"'),
        PINS,
        ["v2.8", "platforms", "'linux/arm64'", "expected a list", 'platforms = ["linux/amd64"]'],
    ),
    (
        "platforms-without-amd64-first",
        replace(MATRIX, '["runtime", "devel"]', '["runtime", "devel"]\nplatforms = ["linux/arm64"]'),
        PINS,
        ["v2.8", "platforms", "must start with 'linux/amd64'", 'platforms = ["linux/amd64", "linux/arm64"]'],
    ),
    (
        "platform-twice",
        replace(
            MATRIX, '["runtime", "devel"]', '["runtime", "devel"]\nplatforms = ["linux/amd64", "linux/amd64"]'
        ),
        PINS,
        ["v2.8", "platforms", "lists a platform twice"],
    ),
    (
        "bad-base-image",
        replace(MATRIX, '"debian:trixie-slim"', '"Debian:trixie slim"'),
        PINS,
        ["base_image", "'Debian:trixie slim'", "not a valid image reference"],
    ),
    (
        "invalid-toml",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.8.0'),
        PINS,
        ["matrix.toml", "line 10", "invalid TOML"],
    ),
    (
        "no-lines",
        MATRIX.split("[lines.")[0],
        PINS,
        ["lines", "no image lines"],
    ),
    (
        "line-without-pins",
        MATRIX + '\n[lines."v2.9"]\ntorch = "2.9.1"\n',
        PINS,
        ["pins.toml", "v2.9", "no pins", "make pins"],
    ),
    (
        "pins-for-another-torch",
        replace(MATRIX, 'torch = "2.8.0"', 'torch = "2.8.1"'),
        PINS,
        ["pins.toml", "v2.8", "'2.8.0'", "'2.8.1'", "make pins"],
    ),
    (
        "pins-for-an-unknown-tag",
        MATRIX,
        PINS + '\n["v2.6"]\ntorch = "2.6.0"\n',
        ["pins.toml", "v2.6", "not in the matrix"],
    ),
    (
        "pins-missing-field",
        MATRIX,
        replace(PINS, 'nccl = "2.27.3"\n', ""),
        ["pins.toml", "v2.8", "missing field 'nccl'", "make pins"],
    ),
    (
        "pins-unknown-field",
        MATRIX,
        replace(PINS, 'cuda = "12.8"', 'cuda = "12.8"\ncudaa = "12.8"'),
        ["pins.toml", "unknown key 'cudaa'", "did you mean 'cuda'"],
    ),
]


@pytest.mark.parametrize(("matrix", "pins", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named_with_field_value_and_fix(
    tmp_path: Path, matrix: str, pins: str, expected: list[str]
) -> None:
    m, p = write(tmp_path, matrix, pins)
    with pytest.raises(MatrixError) as info:
        load_matrix(m, p)
    message = str(info.value)
    assert str(tmp_path) in message  # the file
    assert "fix:" in message
    for part in expected:
        assert part in message, f"{part!r} missing from: {message}"


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"matrix\.toml: file not found"):
        load_matrix(tmp_path / "matrix.toml", tmp_path / "pins.toml")
    m, _p = write(tmp_path)
    with pytest.raises(MatrixError, match=r"nope\.toml: file not found; fix: make pins"):
        load_matrix(m, tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("case", "command"),
    [("unknown-line-key", "readme"), ("python-not-supported-by-torch", "readme"), ("duplicate-tag", "pins")],
)
def test_cli_reports_bad_input_with_exit_2_and_no_traceback(tmp_path: Path, case: str, command: str) -> None:
    _id, matrix, pins, expected = next(b for b in BAD if b[0] == case)
    m, p = write(tmp_path, matrix, pins)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- section:matrix -->\n<!-- /section:matrix -->\n")
    extra = ["--readme", str(readme)] if command == "readme" else []
    proc = subprocess.run(
        [sys.executable, "-m", "images", command, "--matrix", str(m), "--pins", str(p), *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    for part in expected:
        assert part in proc.stderr
    assert readme.read_text() == "<!-- section:matrix -->\n<!-- /section:matrix -->\n"  # nothing written


def test_committed_pins_file_is_the_generated_kind() -> None:
    assert PINS_PATH.read_text().startswith("# written by make pins; do not edit")
