"""`python -m images ci-matrix`: the (tag x flavor) job matrix for GitHub Actions, from images/matrix.toml.

The images workflow reads this JSON in a first job and fans out one build job per entry, so adding a line
(or a flavor) to the TOML adds a CI job without touching the YAML: the matrix has one source of truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from images.matrix import FLAVORS, IMAGE_NAME, MATRIX_PATH, PINS_PATH, Matrix, MatrixError, load_matrix


def job_matrix(
    matrix: Matrix, tags: list[str] | None = None, flavors: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """One `include` entry per (tag, flavor) the matrix builds, optionally narrowed by tags and flavors."""
    for flavor in flavors or ():
        if flavor not in FLAVORS:
            raise MatrixError(
                f"--flavors: unknown flavor {flavor!r}; "
                f"fix: use one of {', '.join(FLAVORS)} (comma-separated)"
            )
    lines = [matrix.get(tag) for tag in tags] if tags else list(matrix.lines)  # get() names unknown tags
    include = [
        {
            "tag": line.tag,
            "flavor": flavor,
            "image": IMAGE_NAME,
            "short_tag": line.short_tag(flavor),
            "full_tag": line.full_tag(flavor),
            "torch": line.torch,
            "python": line.python,
        }
        for line in lines
        for flavor in line.flavors
        if not flavors or flavor in flavors
    ]
    if not include:
        # GitHub fails an empty matrix with an obscure message; say what was asked instead.
        raise MatrixError(
            f"ci-matrix: no image matches --tags {','.join(tags or []) or '(all)'} "
            f"--flavors {','.join(flavors or []) or '(all)'}; fix: pick flavors that those lines build"
        )
    return {"include": include}


def _csv(value: str) -> list[str]:
    """`--tags "v2.8, v2.9"` -> ["v2.8", "v2.9"]; an empty string (a blank workflow input) means all."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _run(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.matrix_file, args.pins_file)
    result = job_matrix(matrix, _csv(args.tags), _csv(args.flavors))
    # One line: it goes into $GITHUB_OUTPUT as `matrix=<json>`.
    print(
        json.dumps(result, indent=2 if args.pretty else None, separators=None if args.pretty else (",", ":"))
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ci-matrix",
        help="print the GitHub Actions job matrix (one entry per tag x flavor) as JSON",
        description='Print {"include": [{tag, flavor, image, short_tag, full_tag, torch, python}, ...]} '
        "for strategy.matrix, one entry per (tag, flavor) in the matrix.",
    )
    parser.add_argument(
        "--tags", default="", help="comma-separated tags to keep, e.g. v2.8,v2.9 (default: all)"
    )
    parser.add_argument(
        "--flavors", default="", help=f"comma-separated flavors to keep: {', '.join(FLAVORS)} (default: all)"
    )
    parser.add_argument("--matrix-file", type=Path, default=MATRIX_PATH, help="matrix.toml to read")
    parser.add_argument("--pins-file", type=Path, default=PINS_PATH, help="pins.toml to read")
    parser.add_argument("--pretty", action="store_true", help="indent the JSON for people")
    parser.set_defaults(func=_run)
