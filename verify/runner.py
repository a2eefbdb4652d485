"""Run checks one by one, each in its own process with its own timeout, and collect one Result per check.

Why a process per check: a check imports torch, initialises CUDA/NCCL and may segfault, hang in a collective
or leak children. Each runs as `python -m verify.worker` in a NEW SESSION (its own process group), so the
runner can kill the whole group (the check and anything it started) at the timeout, on Ctrl-C, and after it
exits. What the process does not report becomes a FAIL of that check; the rest still run.

The runner never imports a check module: `read_spec` reads NAME/DESCRIPTION/DEFAULT_TIMEOUT_S from the
module's source with `ast`, so `verify list` and the parent process stay light and a check that cannot even
be imported is still listed and reported (as a FAIL with the import error).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from verify.context import Context
from verify.result import Result, Status

FALLBACK_TIMEOUT_S = 300.0
KILL_GRACE_S = 3.0
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 6000


@dataclass(frozen=True)
class CheckSpec:
    """What the runner knows about a check without importing it."""

    module: str
    name: str
    description: str
    default_timeout_s: float
    problem: str | None = None  # why the module's source could not be read (the run will FAIL with the cause)


def read_spec(module: str) -> CheckSpec:
    """NAME, DESCRIPTION and DEFAULT_TIMEOUT_S read from the module's source (literals), not imported."""
    fallback = module.rsplit(".", 1)[-1]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        found, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = f"module {module} not found"
    if found is None or not found.origin or not found.origin.endswith(".py"):
        return CheckSpec(module, fallback, f"(unavailable: {problem})", FALLBACK_TIMEOUT_S, problem)
    try:
        tree = ast.parse(Path(found.origin).read_text(encoding="utf-8"), filename=found.origin)
    except (OSError, SyntaxError, ValueError) as exc:
        problem = f"cannot read {found.origin}: {exc}"
        return CheckSpec(module, fallback, f"(unavailable: {problem})", FALLBACK_TIMEOUT_S, problem)
    constants: dict[str, object] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and value is not None:
            with contextlib.suppress(ValueError, TypeError, SyntaxError):
                constants[target.id] = ast.literal_eval(value)
    name = constants.get("NAME", fallback)
    description = constants.get("DESCRIPTION", "")
    timeout = constants.get("DEFAULT_TIMEOUT_S", FALLBACK_TIMEOUT_S)
    return CheckSpec(
        module=module,
        name=name if isinstance(name, str) and name else fallback,
        description=description if isinstance(description, str) else "",
        default_timeout_s=float(timeout)
        if isinstance(timeout, int | float) and timeout > 0
        else FALLBACK_TIMEOUT_S,
    )


def read_specs(modules: Sequence[str]) -> list[CheckSpec]:
    return [read_spec(module) for module in modules]


class Progress(Protocol):
    """What the terminal shows while checks run (the CLI's rich display; tests pass None)."""

    def started(self, spec: CheckSpec, timeout_s: float) -> None: ...

    def finished(self, result: Result) -> None: ...


@dataclass
class RunOutcome:
    results: list[Result]
    interrupted: bool


class _Interrupted(Exception):
    """SIGTERM arrived; handled like Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (docker stop, CI cancel) like Ctrl-C so the partial report is still written."""

    def handler(_signum: int, _frame: object) -> None:
        raise _Interrupted

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a segfault prints the Python stack into the check's log
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").exists():  # a source checkout: let the child import `verify` from it
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the check's whole process group, then SIGKILL what is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        if wait_s is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_S)


def _reap_leftovers(pgid: int) -> None:
    """Kill anything the check left running in its group after the worker itself exited."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _log_tail(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])
    return tail[-LOG_TAIL_CHARS:]


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _read_result(out_file: Path, spec: CheckSpec, returncode: int) -> Result:
    if not out_file.exists():
        return Result(spec.name, Status.FAIL, f"crashed: {_describe_exit(returncode)} without a result")
    try:
        result = Result.from_dict(json.loads(out_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Result(spec.name, Status.FAIL, f"unreadable result file ({type(exc).__name__}: {exc})")
    if not result.summary.strip() and result.status is not Status.PASS:
        result = replace(
            result, summary=f"{result.status.value.upper()} without a reason (a bug in the check)"
        )
    return result


def run_one(spec: CheckSpec, ctx: Context, timeout_s: float, workdir: Path) -> Result:
    """Run one check in its own process group; always returns a Result (raises only _Interrupted/Ctrl-C)."""
    out_file = workdir / f"{spec.name}.result.json"
    log = workdir / f"{spec.name}.log"
    check_ctx = replace(ctx, timeout_s=timeout_s)
    cmd = [sys.executable, "-m", "verify.worker", spec.module, json.dumps(check_ctx.to_dict()), str(out_file)]
    start = time.monotonic()
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            elapsed = time.monotonic() - start
            return Result(
                spec.name,
                Status.FAIL,
                f"timed out after {timeout_s:g} s (killed)",
                details={"log_tail": _log_tail(log)},
                duration_s=elapsed,
            )
        except BaseException:  # Ctrl-C or SIGTERM: stop this check (and its children) before leaving
            _kill_group(proc)
            raise
        finally:
            _reap_leftovers(proc.pid)
    result = _read_result(out_file, spec, returncode)
    result = replace(result, name=spec.name, duration_s=time.monotonic() - start)
    if result.status is not Status.PASS:
        tail = _log_tail(log)
        if tail:
            result.details.setdefault("log_tail", tail)
    return result


def effective_timeout(spec: CheckSpec, override_s: float | None) -> float:
    return float(override_s) if override_s is not None else spec.default_timeout_s


def run_checks(
    specs: Sequence[CheckSpec],
    ctx: Context,
    timeout_override_s: float | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Run every check in order. Ctrl-C/SIGTERM stops the current one; it and the rest become SKIP."""
    results: list[Result] = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp, _sigterm_as_interrupt():
        for index, spec in enumerate(specs):
            timeout_s = effective_timeout(spec, timeout_override_s)
            if progress:
                progress.started(spec, timeout_s)
            start = time.monotonic()
            try:
                result = run_one(spec, ctx, timeout_s, Path(tmp))
            except (KeyboardInterrupt, _Interrupted):
                interrupted = True
                elapsed = time.monotonic() - start
                result = Result(
                    spec.name, Status.SKIP, f"interrupted after {elapsed:.1f} s", duration_s=elapsed
                )
                results.append(result)
                if progress:
                    progress.finished(result)
                for rest in specs[index + 1 :]:
                    skipped = Result(rest.name, Status.SKIP, "interrupted: not run")
                    results.append(skipped)
                    if progress:
                        progress.finished(skipped)
                break
            results.append(result)
            if progress:
                progress.finished(result)
    return RunOutcome(results=results, interrupted=interrupted)
