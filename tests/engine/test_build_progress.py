"""Build progress in a file and in a GitHub Actions log, from a real build on the real engine.

A tiny Dockerfile with a silent 65 s step goes through images.build._run_build (what `python -m images
build` runs for each phase) with the console writing to a file, as when the output is redirected or lands
in a CI log: one plain line per step, heartbeats at the real 30 s interval inside the silent step, no ANSI.
Under GITHUB_ACTIONS=true the phase is a `::group::`. About 75 s.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from pathlib import Path

import docker
import pytest
from rich.console import Console

from images.build import _run_build
from images.context import ContextInputs

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[")
DOCKERFILE = """FROM debian:trixie-slim
RUN sleep 65
RUN echo finished
LABEL org.pytorch-cuda.test=progress
"""


def build_to_file(
    client: docker.APIClient, tmp_path: Path, dockerfile: str, name: str
) -> tuple[str, str, bool]:
    """Build `dockerfile` (no cache) with progress written to a file; (progress text, log text, ok)."""
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    tag = f"pytorch-cuda-progress-test:{uuid.uuid4().hex[:12]}"
    progress_file = tmp_path / f"{name}.progress"
    with progress_file.open("w") as out, (tmp_path / f"{name}.log").open("w") as log:
        console = Console(file=out)  # a file: not a terminal, as under `make build > build.log 2>&1`
        try:
            outcome = _run_build(
                client, ContextInputs(context, "Dockerfile"), log, console, name, tag=tag, nocache=True
            )
        finally:
            with contextlib.suppress(docker.errors.APIError):  # not built
                client.remove_image(tag)
    return progress_file.read_text(), (tmp_path / f"{name}.log").read_text(), outcome.ok


def test_a_file_gets_a_line_per_step_and_heartbeats_in_a_silent_step(
    docker_client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    text, log, ok = build_to_file(docker_client.api, tmp_path, DOCKERFILE, "sleepy")
    assert ok, log
    lines = text.splitlines()
    steps = [line for line in lines if re.match(r"^\[sleepy \d+m?\d*s\] step \d/4: ", line)]
    assert [s.split("] ", 1)[1] for s in steps] == [
        "step 1/4: FROM debian:trixie-slim",
        "step 2/4: RUN sleep 65",
        "step 3/4: RUN echo finished",
        "step 4/4: LABEL org.pytorch-cuda.test=progress",
    ], text
    beats = [line for line in lines if line.startswith("  ... still running step 2/4 (RUN sleep 65) ")]
    assert len(beats) >= 2, text  # at 30 s and 60 s of the 65 s step
    assert re.fullmatch(r"\[sleepy 1m\d\ds\] done: 4 steps", lines[-1]), text
    assert not ANSI.search(text) and "::group::" not in text
    assert "Running in" in log and "Running in" not in text  # the steps' output is in the log only


def test_github_actions_gets_a_group_per_phase(
    docker_client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    quick = "FROM debian:trixie-slim\nRUN echo finished\n"
    text, log, ok = build_to_file(docker_client.api, tmp_path, quick, "quick")
    assert ok, log
    lines = text.splitlines()
    assert lines[0] == "::group::docker build: quick" and lines[-1] == "::endgroup::", text
    assert any(line.endswith("] step 2/2: RUN echo finished") for line in lines), text
    assert not ANSI.search(text)
