"""The environment `srun` gives each task, for the tests that start a job's tasks themselves on this host."""

from __future__ import annotations

import os

LAUNCHER_PREFIXES = ("SLURM_", "MASTER_", "TORCHELASTIC")
LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


def without_launchers() -> dict[str, str]:
    """This process's environment minus any launcher's variables: the test's own job must not leak in."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(LAUNCHER_PREFIXES) and name not in LAUNCHER_NAMES
    }


def srun_task(rank: int, tasks: int, nodes: int, job_id: int, port: int) -> dict[str, str]:
    """What srun sets for task `rank` of `tasks` spread evenly over `nodes` (all "localhost"); MASTER_PORT is
    given because the port verify derives from the job id could be taken on a shared CI host."""
    per_node = tasks // nodes
    return {
        "SLURM_PROCID": str(rank),
        "SLURM_NTASKS": str(tasks),
        "SLURM_LOCALID": str(rank % per_node),
        "SLURM_NODEID": str(rank // per_node),
        "SLURM_NNODES": str(nodes),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})",
        "SLURM_JOB_ID": str(job_id),
        "MASTER_PORT": str(port),
    }
