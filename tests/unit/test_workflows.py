"""The GitHub workflows: valid (actionlint and GitHub's JSON schema, run for real), and built the way the
issue asks: the image matrix comes from the CLI, builds take the user's make path, least privilege,
SHA-pinned actions, concurrency, a weekly rebuild, a GPU job that is skipped where no GPU runner exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from images import lint
from images.matrix import load_matrix

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
IN_CI = bool(os.environ.get("CI"))
SHA_PIN = re.compile(r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+(\.\d+)*\s*$")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def images_wf() -> dict[str, Any]:
    return load(REPO / ".github" / "workflows" / "images.yml")


def ci_wf() -> dict[str, Any]:
    return load(REPO / ".github" / "workflows" / "ci.yml")


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def tool_or_skip(tool: str) -> None:
    reason = lint.missing_reason(tool)
    if reason:
        if IN_CI:
            pytest.fail(f"{tool} must run in CI: {reason}; fix: {lint.INSTALL_HINT}")
        pytest.skip(f"{tool} is not installed here and CI is unset: {reason}")


def test_both_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "images.yml"}


# --- the linters, for real --------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(workflow: Path) -> None:
    tool_or_skip("actionlint")
    labels = [arg for label in lint.self_hosted_labels(REPO) for arg in ("--label", label)]
    proc = subprocess.run(
        ["node", str(lint.ACTIONLINT_SCRIPT), *labels, str(workflow.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_jsonschema_passes() -> None:
    tool_or_skip("check-jsonschema")
    result = lint.run_check_jsonschema(REPO)
    assert result.ok, result.output


# --- images.yml: the matrix comes from the CLI ------------------------------------------------------------


def test_image_matrix_comes_from_the_cli() -> None:
    wf = images_wf()
    first = wf["jobs"]["matrix"]
    assert "python -m images ci-matrix" in steps_text(first)
    assert 'echo "matrix=$matrix" >> "$GITHUB_OUTPUT"' in steps_text(first)
    assert first["outputs"]["matrix"] == "${{ steps.emit.outputs.matrix }}"
    for name in ("build", "gpu"):
        job = wf["jobs"][name]
        assert "matrix" in job["needs"]
        assert job["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
        assert job["strategy"]["fail-fast"] is False


def test_no_tag_is_written_in_the_yaml() -> None:
    """Adding a line to matrix.toml must need no YAML edit: no tag or full tag of the matrix appears here."""
    text = (REPO / ".github" / "workflows" / "images.yml").read_text(encoding="utf-8")
    matrix = load_matrix()
    for line, flavor in matrix.jobs():
        for name in (line.tag, line.full_tag(flavor), line.torch):
            assert not re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text), f"{name} is hard-coded"


def test_builds_take_the_users_make_path() -> None:
    wf = images_wf()
    for name in ("build", "gpu"):
        text = steps_text(wf["jobs"][name])
        assert 'make build TAG="$TAG" FLAVOR="$FLAVOR"' in text
        assert 'make verify TAG="$TAG" FLAVOR="$FLAVOR"' in text
    for path in WORKFLOWS:  # no second build recipe anywhere
        assert not re.search(r"docker (buildx )?build|build-push-action", path.read_text(encoding="utf-8"))


def test_build_job_frees_disk_first_and_publishes_reports() -> None:
    job = images_wf()["jobs"]["build"]
    assert uses(job)[0] == "jlumbroso/free-disk-space"
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "reports/${{ matrix.short_tag }}/"  # where `images verify` writes
    assert upload["if"] == "${{ !cancelled() }}"
    junit = next(s for s in job["steps"] if s.get("uses", "").startswith("mikepenz/action-junit-report"))
    assert junit["with"]["report_paths"].startswith("reports/${{ matrix.short_tag }}/")
    assert junit["with"]["annotate_only"] is True  # so the job needs no `checks: write`


def test_push_only_on_main_tags_and_the_weekly_rebuild() -> None:
    job = images_wf()["jobs"]["build"]
    publish = job["env"]["PUBLISH"]
    assert "github.event_name != 'pull_request'" in publish
    assert "github.ref == 'refs/heads/main'" in publish and "startsWith(github.ref, 'refs/tags/v')" in publish
    gated = [s for s in job["steps"] if s.get("if") == "env.PUBLISH == 'true'"]
    assert any("make push" in s.get("run", "") for s in gated)
    assert any(s.get("uses", "").startswith("docker/login-action") for s in gated)
    push_step = next(s for s in job["steps"] if "make push" in s.get("run", ""))
    assert push_step in gated and 'REGISTRY="$REGISTRY"' in push_step["run"]


def test_layer_cache_from_the_registry_except_for_the_weekly_rebuild() -> None:
    job = images_wf()["jobs"]["build"]
    cache = next(s for s in job["steps"] if s.get("id") == "cache")
    assert cache["if"] == "github.event_name != 'schedule'"
    assert "--deps-image" in cache["run"] and "-deps:$SHORT_TAG" in cache["run"]
    build = next(s for s in job["steps"] if "make build" in s.get("run", ""))
    assert build["env"]["BUILD_ARGS"] == "${{ steps.cache.outputs.build_args }}"


def test_build_cli_accepts_the_flags_the_workflow_passes() -> None:
    """The workflow hands BUILD_ARGS to `python -m images build`; every flag it uses must exist there."""
    text = (REPO / ".github" / "workflows" / "images.yml").read_text(encoding="utf-8")
    flags = set(re.findall(r"build_args=(--[\w-]+)", text))
    assert flags == {"--deps-image"}
    help_text = subprocess.run(
        [sys.executable, "-m", "images", "build", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in flags:
        assert flag in help_text, f"`python -m images build` has no {flag} option, but images.yml passes it"


def test_gpu_job_is_skipped_without_a_gpu_runner() -> None:
    job = images_wf()["jobs"]["gpu"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert job["if"] == "vars.GPU_RUNNER == 'true'"
    assert "gpu" in lint.self_hosted_labels(REPO)  # actionlint knows the label


def test_weekly_schedule_and_manual_runs() -> None:
    on = images_wf()["on"]
    (cron,) = [entry["cron"] for entry in on["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert minute.isdigit() and hour.isdigit(), f"{cron!r}: one fixed time of day"
    assert (day, month) == ("*", "*") and weekday.isdigit(), f"{cron!r} is not weekly"
    assert "workflow_dispatch" in on
    assert on["push"]["tags"] == ["v*"] and on["push"]["branches"] == ["main"]


# --- ci.yml ---------------------------------------------------------------------------------------------


def test_ci_runs_lint_tests_pins_and_generated_checks() -> None:
    text = "\n".join(steps_text(job) for job in ci_wf()["jobs"].values())
    for command in (
        "python -m ruff check",
        "python -m ruff format --check .",
        "bash scripts/install_lint_tools.sh",
        "python -m images lint",
        "make test-unit",
        "make pins-check",
        "python -m images dockerfiles --check",
        "python -m images readme --check",
    ):
        assert command in text, f"ci.yml does not run {command!r}"
    assert set(ci_wf()["on"]) >= {"push", "pull_request"}


def test_make_targets_used_by_workflows_exist() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.MULTILINE))
    used = set()
    for path in WORKFLOWS:
        used |= set(re.findall(r"\bmake ([a-z][\w-]*)", path.read_text(encoding="utf-8")))
    assert used and used <= targets, f"unknown make targets: {used - targets}"


# --- every workflow ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege(workflow: Path) -> None:
    wf = load(workflow)
    assert wf["permissions"] == {"contents": "read"}
    for name, job in wf["jobs"].items():
        perms = job.get("permissions", {})
        assert perms != "write-all"
        writes = {scope for scope, level in perms.items() if level == "write"}
        allowed = {"packages"} if (workflow.name, name) == ("images.yml", "build") else set()
        assert writes <= allowed, f"{workflow.name}:{name} asks for {writes - allowed}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_concurrency_cancels_superseded_runs(workflow: Path) -> None:
    concurrency = load(workflow)["concurrency"]
    assert "github.ref" in concurrency["group"] and "github.workflow" in concurrency["group"]
    assert concurrency["cancel-in-progress"] is True


def test_actions_are_pinned_by_sha_with_the_version_consistently() -> None:
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "uses:" not in line:
                continue
            match = SHA_PIN.search(line)
            assert match, f"{path.name}:{number}: not pinned by full SHA with a '# vX.Y.Z' comment: {line}"
            pins.setdefault(match.group(1), set()).add(line.split("@", 1)[1].strip())
    assert pins
    for action, refs in pins.items():
        assert len(refs) == 1, f"{action} is pinned to several versions: {refs}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_pip_cache_and_no_persisted_credentials(workflow: Path) -> None:
    for job in load(workflow)["jobs"].values():
        for step in job["steps"]:
            ref = step.get("uses", "")
            if ref.startswith("actions/setup-python"):
                assert step["with"]["cache"] == "pip"
            if ref.startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False
        assert "timeout-minutes" in job
