"""The README's matrix table is generated from the matrix, and a stale one is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_matrix import MATRIX, PINS, replace, write  # same folder: pytest puts it on sys.path

from images.matrix import load_matrix
from images.readme import BEGIN, END, README_PATH, render_section

REPO = Path(__file__).resolve().parents[3]


def run_readme(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "images", "readme", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_table_has_a_row_per_line_with_its_pins(tmp_path: Path) -> None:
    matrix = load_matrix(*write(tmp_path))
    text = render_section(matrix)
    assert text.startswith("## The matrix\n")
    assert "`make dockerfiles`" in text
    header = "| tag | torch | python | CUDA | cuDNN | NCCL | transformers | flavors | platforms | devel nvcc "
    header += "| full tag |"
    assert header in text
    row = next(r for r in text.splitlines() if r.startswith("| `v2.8`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    line = matrix.get("v2.8")
    assert cells == [
        "`v2.8`",
        line.torch,
        line.python,
        line.pins.cuda,
        line.pins.cudnn,
        line.pins.nccl,
        line.packages["transformers"],
        "runtime, devel",
        "amd64",
        "12.4 (Debian non-free); TORCH_CUDA_ARCH_LIST 7.5, 8.0, 8.6, 8.9, 9.0+PTX",  # CUDA 12: no nvcc wheel
        f"`{line.full_tag('runtime')}` `{line.full_tag('devel')}`",
    ]


def test_stale_readme_is_detected_then_fixed(tmp_path: Path) -> None:
    m, p = write(tmp_path)
    readme = tmp_path / "README.md"
    before, after = "# title\n\nintro\n\n", "\n\n<!-- section:build -->\nmine\n<!-- /section:build -->\n"
    readme.write_text(f"{before}{BEGIN}\n| old table |\n{END}{after}")
    args = ("--readme", str(readme), "--matrix", str(m), "--pins", str(p))

    stale = run_readme("--check", *args)
    assert stale.returncode == 1
    assert "stale" in stale.stderr and "fix: make dockerfiles" in stale.stderr
    assert "| old table |" in readme.read_text()  # --check writes nothing

    assert run_readme(*args).returncode == 0
    text = readme.read_text()
    assert text.startswith(before + BEGIN) and text.endswith(END + after)  # only the section changed
    assert "| old table |" not in text and "| `v2.8` |" in text
    assert run_readme("--check", *args).returncode == 0

    # A matrix edit makes the table stale again.
    m.write_text(replace(MATRIX, 'transformers = "4.56.2"', 'transformers = "4.56.1"'))
    assert run_readme("--check", *args).returncode == 1


def test_readme_without_markers_is_a_usage_error(tmp_path: Path) -> None:
    m, p = write(tmp_path, MATRIX, PINS)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    proc = run_readme("--readme", str(readme), "--matrix", str(m), "--pins", str(p))
    assert proc.returncode == 2
    assert "section:matrix" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_committed_readme_table_is_current() -> None:
    proc = run_readme("--check")
    assert proc.returncode == 0, proc.stderr
    assert render_section(load_matrix()) in README_PATH.read_text()
