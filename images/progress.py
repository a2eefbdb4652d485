"""Follow a classic-builder stream: a live "step n/N" display, the whole log in a file, the failing step.

The engine's classic builder emits {"stream": "Step 3/25 : RUN ..."} before each instruction, then that
step's output, {"aux": {"ID": ...}} with the image id, or {"error": ...} when a step fails. Progress and
failure reports are built from those events alone, so they work for every Dockerfile.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
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


def follow_build(
    events: Iterable[dict[str, Any]], log: IO[str], console: Console | None = None, title: str = "build"
) -> StreamOutcome:
    """Consume the stream, showing progress on `console` (None: quiet) and copying every line to `log`."""
    outcome = StreamOutcome()
    current: Step | None = None
    last_layer: str | None = None
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[title]}[/]"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=console is None,
        transient=False,
    )
    with progress:
        task = progress.add_task("starting", total=None, title=title)
        for kind, text in iter_lines(events):
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
                short = (
                    current.instruction
                    if len(current.instruction) <= 70
                    else current.instruction[:67] + "..."
                )
                progress.update(task, total=current.total, completed=current.number - 1, description=short)
                continue
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
