"""Start Python as a terminal starts a foreground job: SIGINT at its default, so Ctrl-C is KeyboardInterrupt.

A test suite started from a background job of a script (`make test &`, nohup, some CI runners) inherits SIGINT
*ignored*, and Python keeps an inherited SIG_IGN: a program under test then never sees the Ctrl-C the test
sends, and an interrupt test hangs for a reason that has nothing to do with the program (found in a loaded CI
run: `verify run` kept polling 60 s after SIGINT). The wrapper resets SIGINT to its default and execs the real
command in the same process, so the pid the test signals is the program's own.
"""

from __future__ import annotations

import sys

_RESET_AND_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def foreground_python(*args: str) -> list[str]:
    """argv for `python ARGS...` with SIGINT as a terminal gives it (see the module docstring)."""
    return [sys.executable, "-c", _RESET_AND_EXEC, *args]
