"""Build progress on a non-TTY: plain step lines, heartbeats from a real slow stream, GitHub Actions groups.

The streams are the classic builder's event shapes, delivered with real delays (time.sleep), so the reader
thread and the heartbeat timer run for real; heartbeat_s is shortened to keep the tests fast. The engine
test (tests/engine/test_build_progress.py) does the same with a real build and the real 30 s interval.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from images.progress import fmt_seconds, follow_build, log_group

ANSI = re.compile(r"\x1b\[")


def slow_stream(pause: float, fail: bool = False) -> Iterator[dict]:
    """Three steps; step 2 is silent for `pause` seconds, like `RUN sleep` or a quiet pip."""
    yield {"stream": "Step 1/3 : FROM debian:trixie-slim\n"}
    yield {"stream": " ---> 51cebcdd1b12\n"}
    yield {"stream": "Step 2/3 : RUN sleep 65\n"}
    yield {"stream": " ---> Running in 0f1e2d3c4b5a\n"}
    time.sleep(pause)
    if fail:
        message = "The command '/bin/sh -c sleep 65' returned a non-zero code: 1"
        yield {"errorDetail": {"message": message}, "error": message}
        return
    yield {"stream": " ---> 1234567890ab\n"}
    yield {"stream": "Step 3/3 : LABEL a=b\n"}
    yield {"aux": {"ID": "sha256:" + "ab" * 32}}
    yield {"stream": "Successfully built abababababab\n"}


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_a_file_gets_one_plain_line_per_step_and_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    console, out = plain_console()
    log = io.StringIO()
    outcome = follow_build(slow_stream(1.3), log, console=console, title="v2.8 runtime", heartbeat_s=0.4)
    assert outcome.ok
    lines = out.getvalue().splitlines()
    # The elapsed time since the build started; the machine may be busy, so only its form is exact.
    steps = [re.sub(r" \d+s\]", " Ns]", line) for line in lines if "] step " in line]
    assert steps == [
        "[v2.8 runtime Ns] step 1/3: FROM debian:trixie-slim",
        "[v2.8 runtime Ns] step 2/3: RUN sleep 65",
        "[v2.8 runtime Ns] step 3/3: LABEL a=b",
    ]
    step3 = next(line for line in lines if "step 3/3" in line)
    assert not step3.startswith("[v2.8 runtime 0s]")  # 1.3 s of silence went by before it
    beats = [
        line for line in lines if re.fullmatch(r"  \.\.\. still running step 2/3 \(RUN sleep 65\) \d+s", line)
    ]
    assert len(beats) >= 2, lines
    assert re.fullmatch(r"\[v2\.8 runtime \ds\] done: 3 steps", lines[-1])
    assert not ANSI.search(out.getvalue()) and "::group::" not in out.getvalue()
    assert "Running in 0f1e2d3c4b5a" in log.getvalue()  # the step's own output goes to the log only


def test_a_failed_build_ends_with_the_failing_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    console, out = plain_console()
    outcome = follow_build(slow_stream(0.0, fail=True), io.StringIO(), console=console, title="t")
    assert not outcome.ok and outcome.failed_step is not None and outcome.failed_step.number == 2
    assert out.getvalue().splitlines()[-1] == "[t 0s] failed at step 2/3"


def test_an_error_of_the_stream_reaches_the_caller_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader thread must not swallow a dropped connection: build.py turns it into a message."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)

    def broken() -> Iterator[dict]:
        yield {"stream": "Step 1/2 : FROM debian:trixie-slim\n"}
        raise ConnectionResetError("engine went away")

    console, _ = plain_console()
    with pytest.raises(ConnectionResetError, match="engine went away"):
        follow_build(broken(), io.StringIO(), console=console, title="t")


def test_github_actions_gets_groups_and_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)  # even if the runner fakes a terminal
    follow_build(slow_stream(0.0), io.StringIO(), console=console, title="v2.8 runtime deps")
    lines = out.getvalue().splitlines()
    assert lines[0] == "::group::docker build: v2.8 runtime deps" and lines[-1] == "::endgroup::"
    assert "[v2.8 runtime deps 0s] step 2/3: RUN sleep 65" in lines
    assert not ANSI.search(out.getvalue())


def test_a_group_is_closed_when_the_phase_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    console, out = plain_console()
    with pytest.raises(RuntimeError), log_group(console, "tag and clean up"):
        raise RuntimeError("tag refused")
    assert out.getvalue() == "::group::tag and clean up\n::endgroup::\n"
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    console, out = plain_console()
    with log_group(console, "x"):
        pass
    assert out.getvalue() == ""


def test_a_terminal_keeps_the_live_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    follow_build(slow_stream(0.0), io.StringIO(), console=console, title="v2.8 runtime")
    text = out.getvalue()
    assert ANSI.search(text) and "] step " not in text  # rich's display, not the plain lines


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (605, "10m05s")])
def test_fmt_seconds(seconds: float, text: str) -> None:
    assert fmt_seconds(seconds) == text
