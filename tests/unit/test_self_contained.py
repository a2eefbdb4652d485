"""The project explains itself from its own files: nothing it tracks points to a document it does not have.

Two scans over every tracked text file: (1) names of documents and places that live outside any clone (notes,
folders and tools of the machines the project was developed on) must not appear; (2) every relative link in
the Markdown files, and every `*.md` path named anywhere, must exist in the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()

# Each pattern with why it is outside: a reader of a clone has none of these. A document named by its file
# (`NOTES.md`) needs no entry: the second scan finds every `*.md` that the repository does not hold.
OUTSIDE = {
    r"\.\./shared\b": "a folder beside the checkout",
    r"design notes": "design notes that were never committed",
    r"\bthe device tool\b": "a tool of the development machines",
    r"\bthe tool library\b": "a tool of the development machines",
    r"\bthis workplace\b": "the machines the project was developed on",
    r"/work/(?:helpers|\.library|\.mirror)\b": "folders of the development machines",
}
MD_LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
MD_PATH_RE = re.compile(r"(?<![\w./$-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
# Other projects' documents, cited with the project's name beside them: public, and not ours to carry.
UPSTREAM = {"nccl-tests doc/PERFORMANCE.md": "NVIDIA/nccl-tests' bandwidth definitions"}


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    files = {}
    for name in filter(None, names):
        path = REPO / name
        if name == THIS or not path.is_file():
            continue
        try:
            files[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
    return files


FILES = tracked_text_files()


def outside_references(files: dict[str, str]) -> list[str]:
    return [
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)!r} ({why})"
        for name, text in files.items()
        for pattern, why in OUTSIDE.items()
        for match in re.finditer(pattern, text)
    ]


def missing_documents(files: dict[str, str], exists=lambda p: p.exists()) -> list[str]:
    """Markdown links and `*.md` paths that name no file (from the repo root or from the file's folder)."""
    problems = []
    for name, text in files.items():
        here = (REPO / name).parent
        for cited in UPSTREAM:
            text = text.replace(cited, "")
        targets = set(MD_PATH_RE.findall(text))
        if name.endswith(".md"):
            targets |= {t for t in MD_LINK_RE.findall(text) if "://" not in t and not t.startswith("mailto:")}
        for target in sorted(targets):
            if any(ch in target for ch in "<>*{}$"):  # a pattern (images/<tag>/...), not a path
                continue
            bare_name_elsewhere = "/" not in target and any(f.endswith(f"/{target}") for f in files)
            if not (exists(REPO / target) or exists(here / target) or bare_name_elsewhere):
                problems.append(f"{name}: {target} does not exist in the repository")
    return problems


def test_no_tracked_file_names_a_document_outside_the_repository() -> None:
    assert outside_references(FILES) == []


def test_every_linked_or_named_markdown_document_exists() -> None:
    assert missing_documents(FILES) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("the project's design notes", True),
        ("on the lent machines $OUT is set by the device tool", True),
        ("python_executable: /work/main/.venv/bin/python", False),  # a recorded report, not a pointer
        ("see docs/report-schema.md", False),
    ],
)
def test_the_outside_scan_catches_what_came_back(text: str, found: bool) -> None:
    assert bool(outside_references({"x.py": text})) is found


def test_the_document_scan_catches_a_dead_link() -> None:
    dead = {"README.md": "read [the notes](docs/notes-never-committed.md) and docs/report-schema.md"}
    assert missing_documents(dead) == [
        "README.md: docs/notes-never-committed.md does not exist in the repository"
    ]


def test_the_document_scan_catches_a_notes_file_named_in_code() -> None:
    # What came back before: a comment citing a notes file by its bare name, in a file outside docs/.
    named = {"verify/x.py": "# see NOTES-NEVER-COMMITTED.md: Environment"}
    assert missing_documents(named) == [
        "verify/x.py: NOTES-NEVER-COMMITTED.md does not exist in the repository"
    ]
