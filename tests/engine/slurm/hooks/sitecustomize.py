"""Faults for tests/engine/test_slurm.py, made for real inside a job's `verify run` process.

Python imports `sitecustomize` at start-up from PYTHONPATH, so the test turns these on per job with
environment variables; only the `verify` command's own process acts, never the checks it starts.
  SLURM_TEST_STOP_RANK=N   the task whose SLURM_PROCID is N stops itself (SIGSTOP): a hung rank
  SLURM_TEST_HOLD_HOST=H   the task on host H writes <SLURM_TEST_MARK_DIR>/held-H and sleeps: a node that is
                           busy when the test kills it
"""

import os
import signal
import socket
import sys
import time
from pathlib import Path

if Path(sys.argv[0]).name == "verify":
    if os.environ.pop("SLURM_TEST_STOP_RANK", None) == os.environ.get("SLURM_PROCID"):
        os.kill(os.getpid(), signal.SIGSTOP)
    host = socket.gethostname()
    if os.environ.pop("SLURM_TEST_HOLD_HOST", None) == host:
        mark_dir = Path(os.environ.get("SLURM_TEST_MARK_DIR", "/tmp"))
        (mark_dir / f"held-{host}").write_text(str(os.getpid()))
        time.sleep(600)
