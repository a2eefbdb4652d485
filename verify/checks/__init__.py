"""The checks, in the order they run. One module per check; each module defines:

    NAME: str              the name used by --only/--skip and in reports ("env", "driver", ...)
    DESCRIPTION: str       one line for `verify list`
    DEFAULT_TIMEOUT_S: float
    IMPORTS: tuple[str, ...]  heavy modules the runner's fork server imports once for it (default none)
    EXCLUSIVE: bool        True (default): a GPU measurement, run alone among the exclusive checks;
                           False: uses no GPU time worth measuring, runs beside them
    def run(ctx: verify.context.Context) -> verify.result.Result

A check never raises for an expected condition (no GPU, no NVML, no manifest): it returns SKIP/WARN/FAIL
with a reason. An unexpected exception, a crash or a hang is turned into a FAIL by the runner, which runs
every check in its own process (forked from a warm server: verify/forkserver.py). To add a check: write
the module, add it to CHECK_MODULES. No discovery magic.
"""

from __future__ import annotations

CHECK_MODULES: tuple[str, ...] = (
    "verify.checks.env",
    "verify.checks.driver",
    "verify.checks.host",
    "verify.checks.xid",
    "verify.checks.topology",
    "verify.checks.gpu",
    "verify.checks.nccl",
    "verify.checks.amp",
    "verify.checks.bert",
    "verify.checks.compile",
)
