"""Follow a classic-builder stream: step n/N on the console, the whole log in a file, the failing step.

On a terminal the display is live (rich); in a file, a pipe or a CI log it is one plain line per step with
the elapsed time and a heartbeat line at least every HEARTBEAT_S seconds inside a long step, so a 5-minute
build never looks hung. Under GitHub Actions each build phase is a collapsible log group (log_group).

The engine's classic builder emits {"stream": "Step 3/25 : RUN ..."} before each instruction, then that
step's output, {"aux": {"ID": ...}} with the image id, or {"error": ...} when a step fails. Progress and
failure reports are built from those events alone, so they work for every Dockerfile.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# The image a step produced; not " ---> Running in <container>" nor " ---> Using cache".
LAYER_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
NO_SPACE = "no space left on device"
TAIL_LINES = 30
HEARTBEAT_S = 30.0  # the longest a non-TTY log stays silent inside a step (pip install, the venv copy)
TICK_S = 1.0  # how often a silent stream is checked for a due heartbeat


@dataclass
class Step:
    number: int
    total: int
    instruction: str
    started: float
    output: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


@dataclass
class StreamOutcome:
    image_id: str | None = None
    error: str | None = None
    failed_step: Step | None = None
    steps: list[Step] = field(default_factory=list)
    step_seconds: dict[int, float] = field(default_factory=dict)
    # The last image of every stage before the final one (short ids): in a multi-stage build those are the
    # builder stages' results, needed only as `COPY --from` sources once the build has succeeded.
    stage_ends: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.image_id is not None


def iter_lines(events: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """Flatten engine events into (kind, text) lines: kind is stream, status, error or aux."""
    for event in events:
        if "error" in event:
            detail = event.get("errorDetail") or {}
            yield "error", str(detail.get("message") or event["error"]).rstrip()
        elif "aux" in event:
            aux = event["aux"]
            if isinstance(aux, dict) and "ID" in aux:
                yield "aux", str(aux["ID"])
        elif "stream" in event:
            for text in str(event["stream"]).splitlines():
                yield "stream", text
        elif "status" in event:  # pulls of the base image report progress this way
            yield "status", " ".join(str(event[k]) for k in ("id", "status", "progress") if event.get(k))


def _with_ticks(events: Iterable[dict[str, Any]], tick_s: float) -> Iterator[tuple[str, str] | None]:
    """The stream's lines, and None whenever `tick_s` passes without one (a step that prints nothing).

    The engine sends nothing while `RUN sleep` or a quiet pip runs, so the stream is read in a thread and
    the caller wakes up on a timer to print heartbeats. Errors of the stream are raised here, unchanged.
    """
    lines: queue.Queue[tuple[str, Any]] = queue.Queue()

    def pump() -> None:
        try:
            for item in iter_lines(events):
                lines.put(("line", item))
        except BaseException as exc:  # re-raised in the caller's thread, where it is handled
            lines.put(("error", exc))
        lines.put(("end", None))

    threading.Thread(target=pump, name="build-stream", daemon=True).start()
    while True:
        try:
            what, item = lines.get(timeout=tick_s)
        except queue.Empty:
            yield None
            continue
        if what == "end":
            return
        if what == "error":
            raise item
        yield item


def fmt_seconds(seconds: float) -> str:
    """1m05s, 12s: short enough for a log line, exact enough to compare two builds."""
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def shorten(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class PlainProgress:
    """Progress for a file, a pipe or a CI log: one line per step, heartbeats inside long steps, no ANSI."""

    def __init__(
        self, out: IO[str], title: str, heartbeat_s: float = HEARTBEAT_S, clock: Any = time.monotonic
    ) -> None:
        self.out, self.title, self.heartbeat_s, self.clock = out, title, heartbeat_s, clock
        self.started = clock()
        self.last_line = self.started
        self.current: Step | None = None

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self.last_line = self.clock()

    def step(self, step: Step) -> None:
        self.current = step
        elapsed = fmt_seconds(self.clock() - self.started)
        self._print(f"[{self.title} {elapsed}] step {step.number}/{step.total}: {shorten(step.instruction)}")

    def tick(self) -> None:
        now = self.clock()
        if self.current is not None and now - self.last_line >= self.heartbeat_s:
            step = self.current
            self._print(
                f"  ... still running step {step.number}/{step.total} ({shorten(step.instruction, 50)}) "
                f"{fmt_seconds(now - step.started)}"
            )

    def finish(self, outcome: StreamOutcome) -> None:
        elapsed = fmt_seconds(self.clock() - self.started)
        if outcome.error is None:
            self._print(f"[{self.title} {elapsed}] done: {len(outcome.steps)} steps")
        elif outcome.failed_step is not None:
            step = outcome.failed_step
            self._print(f"[{self.title} {elapsed}] failed at step {step.number}/{step.total}")
        else:
            self._print(f"[{self.title} {elapsed}] failed before the first step")


def plain_output(console: Console) -> bool:
    """Plain lines instead of the live display: output is not a terminal, or a CI log renders it."""
    return not console.is_terminal or os.environ.get("GITHUB_ACTIONS") == "true"


@contextmanager
def log_group(console: Console | None, name: str) -> Iterator[None]:
    """A collapsible `::group::` in a GitHub Actions log around one phase; elsewhere nothing."""
    if console is None or os.environ.get("GITHUB_ACTIONS") != "true":
        yield
        return
    console.file.write(f"::group::{name}\n")
    console.file.flush()
    try:
        yield
    finally:  # closed on failure too, so the failure report below it is not folded away
        console.file.write("::endgroup::\n")
        console.file.flush()


def follow_build(
    events: Iterable[dict[str, Any]],
    log: IO[str],
    console: Console | None = None,
    title: str = "build",
    heartbeat_s: float = HEARTBEAT_S,
) -> StreamOutcome:
    """Consume the stream, showing progress on `console` (None: quiet) and copying every line to `log`.

    On a terminal a live step n/N display; elsewhere (a file, a pipe, GitHub Actions) PlainProgress lines.
    """
    outcome = StreamOutcome()
    current: Step | None = None
    last_layer: str | None = None
    plain = PlainProgress(console.file, title, heartbeat_s) if console and plain_output(console) else None
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[title]}[/]"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=console is None or plain is not None,
        transient=False,
    )
    lines: Iterable[tuple[str, str] | None] = (
        _with_ticks(events, min(TICK_S, heartbeat_s)) if plain else iter_lines(events)
    )
    with log_group(console, f"docker build: {title}"), progress:
        task = progress.add_task("starting", total=None, title=title)
        for item in lines:
            if item is None:
                if plain:
                    plain.tick()
                continue
            kind, text = item
            log.write(text + "\n")
            log.flush()
            if kind == "error":
                outcome.error = text
                outcome.failed_step = current
                if current is not None:
                    current.output.append(text)
                continue
            if kind == "aux":
                outcome.image_id = text
                continue
            match = STEP_RE.match(text)
            if match:
                now = time.monotonic()
                if current is not None:
                    outcome.step_seconds[current.number] = now - current.started
                current = Step(int(match.group(1)), int(match.group(2)), match.group(3), now)
                if current.instruction.upper().startswith("FROM ") and last_layer is not None:
                    outcome.stage_ends.append(last_layer)
                last_layer = None
                outcome.steps.append(current)
                if plain:
                    plain.step(current)
                progress.update(
                    task,
                    total=current.total,
                    completed=current.number - 1,
                    description=shorten(current.instruction),
                )
                continue
            if plain:
                plain.tick()  # a chatty step (pip) prints lines into the log only: still a heartbeat
            if current is not None:
                current.output.append(text)
            layer = LAYER_RE.match(text)
            if layer:
                last_layer = layer.group(1)
            success = re.match(r"^Successfully built ([0-9a-f]+)$", text)
            if success and outcome.image_id is None:
                outcome.image_id = success.group(1)
        if current is not None and current.number not in outcome.step_seconds:
            outcome.step_seconds[current.number] = time.monotonic() - current.started
        if outcome.error is None and current is not None:
            progress.update(task, completed=current.total, description="done")
        if plain:
            plain.finish(outcome)
    return outcome


def failure_report(outcome: StreamOutcome, log_path: Path) -> str:
    """What a person needs first when a build fails: which step, its last lines, where the full log is."""
    lines = []
    step = outcome.failed_step
    if step is not None:
        lines.append(f"build failed at step {step.number}/{step.total}: {step.instruction}")
        lines.append(f"last {len(step.output)} lines of its output:")
        lines += [f"  | {text}" for text in step.output]
    else:
        lines.append(f"build failed before the first step: {outcome.error}")
    if NO_SPACE in (outcome.error or "") or (step is not None and any(NO_SPACE in t for t in step.output)):
        lines.append(
            "the engine's disk is full: a build needs room for the venv twice (the builder stage and its "
            "copy in the image); fix: `docker image prune` (or `docker system df` to see what holds the "
            "space), then build again"
        )
    lines.append(f"full log: {log_path}")
    return "\n".join(lines)
