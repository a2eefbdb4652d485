"""Run the checks, each in its own process with its own timeout, and collect one Result per check.

Why a process per check: a check imports torch, initialises CUDA/NCCL and may segfault, hang in a collective
or leak children. Each runs in a NEW PROCESS GROUP, so the runner can kill the whole group (the check and
anything it started) at the timeout, on Ctrl-C, and after it exits. What the process does not report becomes
a FAIL of that check; the rest still run.

Why it is fast: the processes are forked from warm fork servers (verify/forkserver.py) that imported what
the checks declare in IMPORTS (torch; transformers for bert) once, before CUDA; one server per distinct
IMPORTS, all started at once, so torch and transformers load side by side. A check whose server could not
start runs as `python -m verify.worker` instead (also VERIFY_FORKSERVER=0), as every check once did.
And two lanes: checks that declare EXCLUSIVE = False (they use no GPU time: env, driver, host, compile)
run one after another beside the exclusive ones (the GPU measurements), which run one at a time so that
they never disturb each other.

The runner never imports a check module: `read_spec` reads NAME/DESCRIPTION/DEFAULT_TIMEOUT_S/IMPORTS/
EXCLUSIVE from the module's source with `ast`, so `verify list` and the parent process stay light and a
check that cannot even be imported is still listed and reported (as a FAIL with the import error).
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
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Protocol

from verify import prefetch
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
    imports: tuple[str, ...] = ()  # heavy modules its fork server imports beforehand (IMPORTS)
    exclusive: bool = True  # runs alone among the exclusive checks (EXCLUSIVE; False: beside them)


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
    imports = constants.get("IMPORTS", ())
    exclusive = constants.get("EXCLUSIVE", True)
    return CheckSpec(
        module=module,
        name=name if isinstance(name, str) and name else fallback,
        description=description if isinstance(description, str) else "",
        default_timeout_s=float(timeout)
        if isinstance(timeout, int | float) and timeout > 0
        else FALLBACK_TIMEOUT_S,
        imports=tuple(imports)
        if isinstance(imports, tuple | list) and all(isinstance(i, str) for i in imports)
        else (),
        exclusive=exclusive if isinstance(exclusive, bool) else True,
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


class ForkServer:
    """One `python -m verify.forkserver IMPORTS...` and the checks it forked (see verify/forkserver.py)."""

    START_TIMEOUT_S = 120.0  # a cold `import torch, transformers` from a slow disk; then the worker path

    def __init__(self, imports: tuple[str, ...]) -> None:
        self.imports = imports
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verify.forkserver", *imports],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
            start_new_session=True,  # Ctrl-C in the terminal reaches the runner alone
            text=True,
        )
        self.started_at = time.monotonic()
        self.preloaded: dict[str, str | None] | None = None
        self.dead = False
        self._lock = threading.Condition()
        self._pids: dict[int, int] = {}
        self._returncodes: dict[int, int] = {}
        self._next_id = 0
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if "ready" in event:
                    self.preloaded = dict(event["ready"])
                elif "returncode" in event:
                    self._returncodes[event["id"]] = int(event["returncode"])
                elif "pid" in event:
                    self._pids[event["id"]] = int(event["pid"])
                self._lock.notify_all()
        with self._lock:
            self.dead = True
            self._lock.notify_all()

    def ready(self) -> bool:
        """Wait until the server has imported its modules; False when it died or took too long."""
        with self._lock:
            self._lock.wait_for(
                lambda: self.preloaded is not None or self.dead,
                timeout=max(0.0, self.started_at + self.START_TIMEOUT_S - time.monotonic()),
            )
            return self.preloaded is not None and not self.dead

    def fork(self, module: str, ctx: Context, out_file: Path, log: Path, tmpdir: Path) -> ForkedCheck:
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
        request = {
            "id": request_id,
            "module": module,
            "ctx": ctx.to_dict(),
            "out": str(out_file),
            "log": str(log),
            "tmpdir": str(tmpdir),
        }
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        with self._lock:
            self._lock.wait_for(lambda: request_id in self._pids or self.dead, timeout=30)
            pid = self._pids.get(request_id)
        if pid is None:
            raise OSError("the fork server did not start the check")
        return ForkedCheck(self, request_id, pid)

    def returncode(self, request_id: int) -> int | None:
        with self._lock:
            code = self._returncodes.get(request_id)
            if code is None and self.dead:
                return -signal.SIGKILL  # the server is gone: its children were killed with it
            return code

    def close(self) -> None:
        """Closing stdin tells the server to kill what it still runs and leave; then make sure it did."""
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class ForkedCheck:
    """A check forked by a ForkServer: what the runner needs of a Popen (pid, poll)."""

    server: ForkServer
    request_id: int
    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.returncode(self.request_id)
        return self.returncode


class Handle(Protocol):
    pid: int

    def poll(self) -> int | None: ...


class ForkServers:
    """One ForkServer per distinct IMPORTS, started together at the beginning of a run."""

    def __init__(self, specs: Sequence[CheckSpec]) -> None:
        self.servers: dict[tuple[str, ...], ForkServer] = {}
        if os.environ.get("VERIFY_FORKSERVER", "1") == "0":
            return
        for spec in specs:
            if spec.problem is None and spec.imports not in self.servers:
                self.servers[spec.imports] = ForkServer(spec.imports)

    def for_spec(self, spec: CheckSpec) -> ForkServer | None:
        server = self.servers.get(spec.imports)
        return server if server is not None and server.ready() else None

    def close(self) -> None:
        for server in self.servers.values():
            server.close()


@dataclass
class Running:
    """A check that has been started: its process group, its files and its deadline."""

    spec: CheckSpec
    handle: Handle
    start: float
    timeout_s: float
    out_file: Path
    log: Path
    via: str  # "forkserver" or "worker": how it was started (in the report's details on a FAIL)
    log_fh: IO[bytes] | None = field(default=None, repr=False)

    @property
    def deadline(self) -> float:
        return self.start + self.timeout_s


def start_check(
    spec: CheckSpec, ctx: Context, timeout_s: float, workdir: Path, servers: ForkServers
) -> Running:
    """Start one check in its own process group: forked from its warm server, else a fresh worker."""
    out_file = workdir / f"{spec.name}.result.json"
    log = workdir / f"{spec.name}.log"
    tmpdir = workdir / f"{spec.name}.tmp"  # its TMPDIR: what it leaves there goes with the run's temp dir
    tmpdir.mkdir(exist_ok=True)
    check_ctx = replace(ctx, timeout_s=timeout_s)
    start = time.monotonic()
    server = servers.for_spec(spec)
    if server is not None:
        with contextlib.suppress(OSError):
            handle = server.fork(spec.module, check_ctx, out_file, log, tmpdir)
            return Running(spec, handle, start, timeout_s, out_file, log, "forkserver")
    cmd = [sys.executable, "-m", "verify.worker", spec.module, json.dumps(check_ctx.to_dict()), str(out_file)]
    log_fh = log.open("wb")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log_fh,
        stderr=subprocess.STDOUT,
        env=_child_env() | {"TMPDIR": str(tmpdir)},
        start_new_session=True,
    )
    return Running(spec, proc, start, timeout_s, out_file, log, "worker", log_fh)


def _wait_gone(running: Running, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while running.handle.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def stop_check(running: Running) -> None:
    """SIGTERM the check's whole process group, then SIGKILL what is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(running.handle.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        _wait_gone(running, wait_s)
    _finish_files(running)


def _finish_files(running: Running) -> None:
    _reap_leftovers(running.handle.pid)
    if running.log_fh is not None:
        running.log_fh.close()


def collect(running: Running, returncode: int) -> Result:
    """The Result of a check whose process has ended."""
    _finish_files(running)
    spec = running.spec
    result = _read_result(running.out_file, spec, returncode)
    result = replace(result, name=spec.name, duration_s=time.monotonic() - running.start)
    if result.status is not Status.PASS:
        tail = _log_tail(running.log)
        if tail:
            result.details.setdefault("log_tail", tail)
    return result


def timed_out(running: Running) -> Result:
    stop_check(running)
    return Result(
        running.spec.name,
        Status.FAIL,
        f"timed out after {running.timeout_s:g} s (killed)",
        details={"log_tail": _log_tail(running.log)},
        duration_s=time.monotonic() - running.start,
    )


def effective_timeout(spec: CheckSpec, override_s: float | None) -> float:
    return float(override_s) if override_s is not None else spec.default_timeout_s


POLL_S = 0.02


def run_checks(
    specs: Sequence[CheckSpec],
    ctx: Context,
    timeout_override_s: float | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Run every check: the exclusive ones one at a time in order, the others one at a time beside them.
    Ctrl-C/SIGTERM stops the running ones (SKIP, "interrupted after") and the rest (SKIP, "not run")."""
    lanes = {
        True: deque(s for s in specs if s.exclusive),
        False: deque(s for s in specs if not s.exclusive),
    }
    results: dict[str, Result] = {}
    running: dict[bool, Running] = {}
    interrupted = False

    def finish(result: Result) -> None:
        results[result.name] = result
        if progress:
            progress.finished(result)

    with tempfile.TemporaryDirectory(prefix="verify-") as tmp, _sigterm_as_interrupt():
        # the libraries the servers are about to import, read ahead side by side (verify/prefetch.py)
        prefetch.start(sorted({name.split(".")[0] for spec in specs for name in spec.imports}))
        servers = ForkServers(specs)
        try:
            while any(lanes.values()) or running:
                for lane, queue in lanes.items():
                    if lane not in running and queue:
                        spec = queue.popleft()
                        timeout_s = effective_timeout(spec, timeout_override_s)
                        if progress:
                            progress.started(spec, timeout_s)
                        running[lane] = start_check(spec, ctx, timeout_s, Path(tmp), servers)
                for lane, now in list(running.items()):
                    returncode = now.handle.poll()
                    if returncode is not None:
                        finish(_named(collect(now, returncode), now.spec))
                        del running[lane]
                    elif time.monotonic() > now.deadline:
                        finish(_named(timed_out(now), now.spec))
                        del running[lane]
                time.sleep(POLL_S)
        except (KeyboardInterrupt, _Interrupted):
            interrupted = True
            for now in running.values():
                stop_check(now)
                elapsed = time.monotonic() - now.start
                finish(
                    Result(
                        now.spec.name, Status.SKIP, f"interrupted after {elapsed:.1f} s", duration_s=elapsed
                    )
                )
            for spec in specs:
                if spec.name not in results:
                    finish(Result(spec.name, Status.SKIP, "interrupted: not run"))
        finally:
            servers.close()
    ordered = [results[spec.name] for spec in specs if spec.name in results]
    return RunOutcome(results=ordered, interrupted=interrupted)


def _named(result: Result, spec: CheckSpec) -> Result:
    return result if result.name == spec.name else replace(result, name=spec.name)
