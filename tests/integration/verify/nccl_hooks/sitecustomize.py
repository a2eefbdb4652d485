"""A fault for tests/integration/verify/test_interrupt_cpu.py, made for real in the nccl check's ranks.

Python imports `sitecustomize` at start-up from PYTHONPATH. Only a rank that `verify.cluster.distributed`
started has VERIFY_LAUNCHER_PID set; each such rank writes its pid to <NCCL_TEST_MARK_DIR>/rank<RANK>.pid,
and the rank named by NCCL_TEST_STALL_RANK then sleeps instead of joining: the other ranks wait for it in the
rendezvous, as behind a stalled GPU.
"""

import os
import time
from pathlib import Path

if "VERIFY_LAUNCHER_PID" in os.environ and "NCCL_TEST_MARK_DIR" in os.environ:
    rank = os.environ.get("RANK", "?")
    (Path(os.environ["NCCL_TEST_MARK_DIR"]) / f"rank{rank}.pid").write_text(str(os.getpid()))
    if os.environ.get("NCCL_TEST_STALL_RANK") == rank:
        time.sleep(3600)
