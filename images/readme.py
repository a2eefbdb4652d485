"""`readme`: the README's matrix table, generated from matrix.toml and pins.toml (never edited by hand).

Only the text between `<!-- section:matrix -->` and `<!-- /section:matrix -->` is rewritten; `--check` exits 1
when that text is not what the matrix renders to, so a stale table fails the tests and CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from images.files import write_atomically
from images.matrix import MATRIX_PATH, PINS_PATH, ImageLine, Matrix, load_matrix
from images.toolkit import DEBIAN_NVCC, DEBIAN_NVCC_ARCH_LIST, nvcc_source

README_PATH = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- section:matrix -->"
END = "<!-- /section:matrix -->"
COLUMNS = (
    "tag",
    "torch",
    "python",
    "CUDA",
    "cuDNN",
    "NCCL",
    "transformers",
    "flavors",
    "platforms",
    "devel nvcc",
    "full tag",
)


def devel_nvcc(line: ImageLine) -> str:
    """Which nvcc the line's devel image has, from where, and for which GPUs."""
    if "devel" not in line.flavors:
        return "—"
    if nvcc_source(line) == "debian":
        archs = DEBIAN_NVCC_ARCH_LIST.replace(";", ", ")
        return f"{DEBIAN_NVCC} (Debian non-free); TORCH_CUDA_ARCH_LIST {archs}"
    toolkit = line.require_pins().nvidia["cuda-toolkit"]
    return f"{toolkit} (NVIDIA's wheels); the GPU's own arch"


class ReadmeError(RuntimeError):
    """The README has no place for the table (exit 2: fix the file, then rerun)."""


def render_section(matrix: Matrix) -> str:
    """The section's body: heading, one sentence, the table."""
    rows = [
        "## The matrix",
        "",
        "One image per line and flavor: `pytorch-cuda:<tag>` (runtime), `pytorch-cuda:<tag>-devel`,",
        "and the full tags. CUDA, cuDNN and NCCL are the versions each torch wheel itself pins. The devel",
        "image adds nvcc: PyPI has a full one only for CUDA 13, so CUDA 12 lines take Debian's 12.4, which",
        "builds extensions for their 12.x runtime (minor-version compatibility) and knows GPUs up to sm_90;",
        "newer ones run its sm_90 PTX, compiled by the driver when the extension loads. arm64 is locked",
        "where PyPI's torch aarch64 wheels carry CUDA (2.11 on; 2.8 and 2.9 there are CPU-only); see",
        '"arm64" below for what is built and tested of it today.',
        "This table is generated from `images/matrix.toml` and `images/pins.toml` by `make dockerfiles`;",
        "do not edit it by hand.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for line in matrix.lines:
        pins = line.require_pins()
        cells = (
            f"`{line.tag}`",
            line.torch,
            line.python,
            pins.cuda,
            pins.cudnn,
            pins.nccl,
            line.packages.get("transformers", "—"),
            ", ".join(line.flavors),
            ", ".join(p.removeprefix("linux/") for p in line.platforms),
            devel_nvcc(line),
            " ".join(f"`{line.full_tag(f)}`" for f in line.flavors),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def splice(readme_text: str, body: str, *, path: Path = README_PATH) -> str:
    """The README with the section's body replaced (markers kept, everything else untouched)."""
    start, end = readme_text.find(BEGIN), readme_text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ReadmeError(
            f"{path}: no {BEGIN} ... {END} markers (in that order); fix: put them where the table belongs"
        )
    return readme_text[: start + len(BEGIN)] + "\n" + body + "\n" + readme_text[end:]


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "readme",
        help="render the matrix table into README.md (--check: exit 1 when it is stale)",
        description="Render the matrix as a Markdown table between the README's section:matrix markers.",
    )
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when the table is stale")
    p.add_argument("--readme", type=Path, default=README_PATH, help="README file (default: %(default)s)")
    p.add_argument("--matrix", type=Path, default=MATRIX_PATH, help="matrix file (default: %(default)s)")
    p.add_argument("--pins", type=Path, default=PINS_PATH, help="pins file (default: %(default)s)")
    p.set_defaults(func=_cmd_readme)


def _cmd_readme(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.matrix, args.pins)
    try:
        current = args.readme.read_text(encoding="utf-8")
        wanted = splice(current, render_section(matrix), path=args.readme)
    except (OSError, ReadmeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if current != wanted:
            print(
                f"{args.readme}: the matrix table is stale (it differs from {args.matrix.name}); "
                f"fix: make dockerfiles (or python -m images readme)",
                file=sys.stderr,
            )
            return 1
        print(f"{args.readme}: the matrix table is current")
        return 0
    if current != wanted:
        write_atomically(args.readme, wanted)
        print(f"wrote the matrix table into {args.readme}")
    else:
        print(f"{args.readme}: the matrix table is already current")
    return 0
