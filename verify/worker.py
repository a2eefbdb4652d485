"""One check, in its own process: `python -m verify.worker MODULE CONTEXT_JSON OUT_FILE`.

The runner starts this in a fresh process group, so a crash, a hang or a leaked child of one check never
takes the harness down. The worker turns what it can (an exception, a wrong return value) into a FAIL
Result itself; what it cannot (a segfault, os._exit, a kill) the runner sees as "no result file".
The result is written to OUT_FILE atomically (temp file + rename), so a half-written file never parses.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from verify.context import Context
from verify.result import Result, Status


def json_safe(value: Any) -> Any:
    """Make a check's figures/details strict JSON: NaN/inf become strings, unknown objects their str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    return str(value)


def exception_result(name: str, exc: BaseException, prefix: str = "raised ") -> Result:
    """FAIL with the exception's last line as the reason, the full traceback in details."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    last = text.splitlines()[-1] if text else type(exc).__name__
    return Result(name, Status.FAIL, f"{prefix}{last}", details={"traceback": text})


def run_check(module_name: str, ctx: Context) -> Result:
    """Import the check and run it; never raises for anything the check does."""
    name = module_name.rsplit(".", 1)[-1]
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # whatever stops the import fails this check
        return exception_result(name, exc, prefix=f"cannot import {module_name}: ")
    name = str(getattr(module, "NAME", name))
    try:
        result = module.run(ctx)
    except BaseException as exc:  # even SystemExit from a check is its FAIL
        return exception_result(name, exc)
    if not isinstance(result, Result):
        return Result(
            name, Status.FAIL, f"run() returned {type(result).__name__}, not a verify.result.Result"
        )
    return result


def write_result(result: Result, out_file: Path) -> None:
    data = json_safe(result.to_dict())
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
    tmp.replace(out_file)


def exit_on_sigterm() -> None:
    """The runner stops a check with SIGTERM (then SIGKILL after a grace period): raise SystemExit, so the
    check's `finally` blocks and context managers stop what it started and remove its temporary files."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str]) -> int:
    exit_on_sigterm()
    if len(argv) != 3:
        print("usage: python -m verify.worker MODULE CONTEXT_JSON OUT_FILE", file=sys.stderr)
        return 2
    module_name, ctx_json, out_file = argv
    ctx = Context.from_dict(json.loads(ctx_json))
    result = run_check(module_name, ctx)
    write_result(result, Path(out_file))
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Leave at once: a check's stray non-daemon thread or a library's exit hook (NCCL, CUDA teardown)
    # must not turn a finished check into a timeout. The result is already on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
