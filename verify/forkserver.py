"""A warm process that imports torch once and forks one child per check: `python -m verify.forkserver MOD...`.

Why: a check used to start its own Python and import torch in it (4-6 s on a GPU host, transformers 8 s more),
one check after another, so a full run spent most of its time importing. A fork server imports the heavy
modules once, before anything touches CUDA (a process that has initialised CUDA cannot hand it to a forked
child), then forks a child per check, which finds them already imported. The isolation stays: each child
gets its own process group, so the runner still kills a hung or leaking check with everything it started;
a crash or os._exit ends only that child; the server itself never runs check code.

Protocol (one JSON object a line). The runner writes requests to the server's stdin:
    {"id": 3, "module": "verify.checks.gpu", "ctx": {...}, "out": ".../gpu.result.json",
     "log": ".../gpu.log", "tmpdir": ".../gpu.tmp"}
and reads events from the server's stdout, which the server keeps for the protocol alone (whatever an import
prints goes to stderr):
    {"ready": {"torch": null, "transformers": "ImportError: ..."}}   each preload and why it failed, if it did
    {"unusable": "why"}                                              CUDA got initialised: fork nothing here
    {"id": 3, "pid": 1234}                                           the check's child runs
    {"id": 3, "pid": 1234, "returncode": -9}                         it ended (as subprocess reports it)
A preload that fails is no error of the server's: the check that needs it imports it again and reports why.
When its stdin closes (the runner is gone), the server kills what it started and exits; PR_SET_PDEATHSIG
ends it even when the runner was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import importlib
import json
import os
import select
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def preload(modules: list[str]) -> dict[str, str | None]:
    """Import each module; the value is None when it imported, else the error's one-line text.

    While importing, torch.cuda.is_available() asks NVML instead of the CUDA runtime (torch's own switch for
    processes that fork), so a library that asks at import time does not initialise CUDA in the server."""
    outcome: dict[str, str | None] = {}
    saved = os.environ.get(NVML_CHECK)
    os.environ[NVML_CHECK] = "1"
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # a broken install's own error: the check reports it again
                outcome[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            else:
                outcome[name] = None
    finally:
        if saved is None:
            os.environ.pop(NVML_CHECK, None)
        else:
            os.environ[NVML_CHECK] = saved
    return outcome


def cuda_initialised() -> bool:
    """Whether torch initialised CUDA here: then no forked child could use it (the runner must not fork)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    return bool(cuda is not None and cuda.is_initialized())


def run_child(request: dict[str, Any]) -> None:
    """In the forked child: become a process group, send output to the log, run the check, leave."""
    code = 70
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python (the server ignores it)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        faulthandler.enable()  # a segfault prints the Python stack into the check's log
        name = str(request["module"]).rsplit(".", 1)[-1]
        with contextlib.suppress(OSError):  # ps and top show which check this is: "verify:nccl"
            Path("/proc/self/comm").write_text(f"verify:{name}"[:15])
        if request.get("tmpdir"):
            os.environ["TMPDIR"] = request["tmpdir"]
            tempfile.tempdir = None
        from verify.context import Context
        from verify.worker import exit_on_sigterm, run_check, write_result

        exit_on_sigterm()

        result = run_check(request["module"], Context.from_dict(request["ctx"]))
        write_result(result, Path(request["out"]))
        code = 0
    finally:
        # Leave at once, whatever happened: never return into the server's loop, and let no stray thread or
        # exit hook (NCCL, CUDA teardown) turn a finished check into a timeout. The result is on disk.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Server:
    def __init__(self, proto: TextIO) -> None:
        self.proto = proto
        self.children: dict[int, int] = {}  # pid -> request id

    def send(self, event: dict[str, Any]) -> None:
        self.proto.write(json.dumps(event) + "\n")
        self.proto.flush()

    def start(self, request: dict[str, Any]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(request)  # never returns
        # Also here, so the group exists before the runner hears of the pid (the child may be first).
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        self.children[pid] = request["id"]
        self.send({"id": request["id"], "pid": pid})

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request_id = self.children.pop(pid, None)
            if request_id is not None:
                self.send({"id": request_id, "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def kill_all(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def serve(self, stdin: TextIO) -> None:
        buffered = ""
        fd = stdin.fileno()
        while True:
            readable, _, _ = select.select([fd], [], [], 0.05)
            self.reap()
            if not readable:
                continue
            chunk = os.read(fd, 65536).decode()
            if not chunk:  # the runner closed our stdin or is gone
                self.kill_all()
                return
            buffered += chunk
            while "\n" in buffered:
                line, buffered = buffered.split("\n", 1)
                if line.strip():
                    self.start(json.loads(line))


def main(argv: list[str]) -> int:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides what an interrupt stops
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the imports print must not reach the protocol
    server = Server(proto)
    preloaded = preload(argv)
    if cuda_initialised():  # no child forked from here could use the GPU: tell the runner, and stop
        server.send({"unusable": "CUDA was initialised while importing " + ", ".join(argv)})
        return 0
    server.send({"ready": preloaded})
    try:
        server.serve(sys.stdin)
    except BrokenPipeError:
        server.kill_all()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)
