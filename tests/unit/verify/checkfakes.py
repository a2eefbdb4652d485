"""Tiny check modules that misbehave on purpose, written to a temp dir and run as REAL processes.

`install(tmp_path, monkeypatch, name=timeout, ...)` writes package `fakes`, one module per check, and makes
it importable here (sys.path, for read_spec) and in the check processes (PYTHONPATH, for verify.worker).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

HEADER = """\
import os, sys, time, signal, subprocess
from verify.result import Result, Status
NAME = {name!r}
DESCRIPTION = "fake check {name}"
DEFAULT_TIMEOUT_S = {timeout}
"""

SOURCES = {
    "ok": """
def run(ctx):
    return Result(NAME, Status.PASS, "fine", figures={"quick": ctx.quick, "timeout_s": ctx.timeout_s})
""",
    "warns": """
def run(ctx):
    return Result(NAME, Status.WARN, "a bit warm", figures={"temperature_C": 83})
""",
    "raises": """
def run(ctx):
    raise ValueError("boom in the check")
""",
    "segfault": """
import ctypes
def run(ctx):
    ctypes.string_at(0)  # reads address 0: SIGSEGV
""",
    "exits": """
def run(ctx):
    os._exit(3)
""",
    "sysexit": """
def run(ctx):
    sys.exit(0)
""",
    "hangs": """
def run(ctx):
    marker = os.environ.get("FAKE_MARKER_DIR")
    if marker:
        open(os.path.join(marker, NAME + ".pid"), "w").write(str(os.getpid()))
    time.sleep(1000)
""",
    "stubborn": """
def run(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    time.sleep(1000)
""",
    "grandchild": """
def run(ctx):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
    open(os.path.join(os.environ["FAKE_MARKER_DIR"], "grandchild.pid"), "w").write(str(child.pid))
    if os.environ.get("FAKE_RETURN_AFTER_SPAWN"):
        return Result(NAME, Status.PASS, "left a child behind")
    time.sleep(1000)
""",
    "garbage": """
def run(ctx):
    sys.stdout.write("\\x00\\xff garbage {not json\\n" * 20000)
    sys.stderr.write("more noise\\n" * 20000)
    print(Result)  # anything at all on stdout must not confuse the runner
    return Result(NAME, Status.PASS, "survived its own noise", figures={"nan": float("nan")})
""",
    "notresult": """
def run(ctx):
    return {"status": "pass"}
""",
    "noreason": """
def run(ctx):
    return Result(NAME, Status.SKIP, "")
""",
    "brokenimport": """
raise ImportError("a dependency is missing")
def run(ctx):
    pass
""",
}


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **timeouts: float) -> list[str]:
    """Write fakes.<name> for each name (value = its DEFAULT_TIMEOUT_S); return the module names in order."""
    root = tmp_path / "fakeroot"
    package = root / "fakes"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    modules = []
    for name, timeout in timeouts.items():
        source = HEADER.format(name=name, timeout=timeout) + textwrap.dedent(SOURCES[name])
        (package / f"{name}.py").write_text(source)
        modules.append(f"fakes.{name}")
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    for cached in [m for m in sys.modules if m == "fakes" or m.startswith("fakes.")]:
        monkeypatch.delitem(sys.modules, cached)  # an earlier test's `fakes` lives in another temp dir
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    monkeypatch.setenv("FAKE_MARKER_DIR", str(markers))
    return modules
