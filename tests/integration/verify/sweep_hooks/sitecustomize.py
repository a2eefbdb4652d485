"""A fault for tests/integration/verify/test_sweep_cpu.py, made for real in one node's trial workers.

Python imports `sitecustomize` at start-up from PYTHONPATH. With SWEEP_TEST_STOP_NODE=N, the trial worker
(the all-reduce process `verify sweep` starts: it alone has GROUP_RANK set) of the node whose SLURM_NODEID is
N stops itself with SIGSTOP: its all-reduce hangs, and the node's `verify sweep` itself keeps answering.
"""

import os
import signal

if "GROUP_RANK" in os.environ and os.environ.get("SWEEP_TEST_STOP_NODE") == os.environ.get("SLURM_NODEID"):
    os.kill(os.getpid(), signal.SIGSTOP)
