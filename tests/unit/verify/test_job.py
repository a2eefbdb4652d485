"""The job topology from torchrun's and from Slurm's environment, and Slurm's hostlist syntax."""

from __future__ import annotations

import pytest

from verify.cluster.job import (
    SLURM_PORT_BASE,
    JobError,
    Topology,
    detect,
    expand_hostlist,
    expand_tasks_per_node,
    validate,
)


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("node01", ["node01"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("node[8-11]", ["node8", "node9", "node10", "node11"]),
        ("gpu[001-002],login", ["gpu001", "gpu002", "login"]),
        ("a[1-2],b[3],c", ["a1", "a2", "b3", "c"]),
        ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
        ("dgx-[09-10]-ib", ["dgx-09-ib", "dgx-10-ib"]),
        ("10.0.0.[1-2]", ["10.0.0.1", "10.0.0.2"]),
    ],
)
def test_hostlist_expands_like_scontrol_show_hostnames(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["node[01-", "node]01[", "node[a-b]", "node[5-3]"])
def test_broken_hostlist_is_an_error_naming_it(text):
    with pytest.raises(JobError, match="hostlist"):
        expand_hostlist(text)


@pytest.mark.parametrize(
    ("text", "counts"), [("4", [4]), ("4(x2)", [4, 4]), ("4(x2),3", [4, 4, 3]), ("2,1(x3)", [2, 1, 1, 1])]
)
def test_tasks_per_node(text, counts):
    assert expand_tasks_per_node(text) == counts


def _slurm(procid: int, **extra: str) -> dict[str, str]:
    env = {
        "SLURM_PROCID": str(procid),
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": str(procid % 4),
        "SLURM_NODEID": str(procid // 4),
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu[07,12]",
        "SLURM_STEP_NODELIST": "gpu[07,12]",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_JOB_ID": "123456",
    }
    return env | extra


def test_slurm_step_gives_the_whole_topology_and_the_first_host_as_master():
    topo = detect(_slurm(6))
    assert topo == Topology(
        launcher="slurm",
        rank=6,
        world_size=8,
        local_rank=2,
        local_world_size=4,
        node_rank=1,
        nnodes=2,
        master_addr="gpu07",
        master_port=SLURM_PORT_BASE + 456,
        hosts=("gpu07", "gpu12"),
        job_id="123456",
    )
    assert validate(topo) is None
    assert not topo.is_leader and not topo.is_node_leader
    env = topo.torch_env()
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["GROUP_RANK"]) == ("6", "8", "2", "1")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("gpu07", str(SLURM_PORT_BASE + 456))


def test_slurm_every_rank_agrees_on_master_and_port():
    topos = [detect(_slurm(r)) for r in range(8)]
    assert {(t.master_addr, t.master_port) for t in topos} == {("gpu07", SLURM_PORT_BASE + 456)}
    assert [t.is_node_leader for t in topos] == [True, False, False, False] * 2
    assert [t.node_rank for t in topos] == [0] * 4 + [1] * 4


def test_user_master_addr_and_port_win_under_slurm():
    topo = detect(_slurm(0, MASTER_ADDR="10.1.2.3", MASTER_PORT="40000"))
    assert (topo.master_addr, topo.master_port) == ("10.1.2.3", 40000)


def test_slurm_job_nodelist_is_used_without_a_step_nodelist():
    env = _slurm(0)
    del env["SLURM_STEP_NODELIST"]
    env["SLURM_JOB_NODELIST"] = "n[3-4]"
    assert detect(env).master_addr == "n3"


def test_slurm_without_a_nodelist_says_what_is_missing():
    env = _slurm(1)
    del env["SLURM_STEP_NODELIST"], env["SLURM_JOB_NODELIST"]
    with pytest.raises(JobError, match="SLURM_STEP_NODELIST"):
        detect(env)


def test_one_slurm_task_is_no_job():
    assert detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "n1"}) is None


def test_uneven_slurm_tasks_are_reported_by_validate():
    topo = detect(_slurm(0, SLURM_NTASKS="7", SLURM_STEP_TASKS_PER_NODE="4,3"))
    assert "same number of ranks on every node" in validate(topo)


def _torchrun(rank: int, **extra: str) -> dict[str, str]:
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": "4",
        "LOCAL_RANK": str(rank % 2),
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": str(rank // 2),
        "MASTER_ADDR": "10.0.0.5",
        "MASTER_PORT": "29400",
        "TORCHELASTIC_RUN_ID": "abc",
    }
    return env | extra


def test_torchrun_topology():
    topo = detect(_torchrun(3))
    assert (topo.launcher, topo.rank, topo.world_size, topo.local_rank, topo.local_world_size) == (
        "torchrun",
        3,
        4,
        1,
        2,
    )
    assert (topo.node_rank, topo.nnodes, topo.master_addr, topo.master_port) == (1, 2, "10.0.0.5", 29400)
    assert validate(topo) is None


def test_torchrun_wins_over_slurm_when_srun_starts_torchrun():
    env = _slurm(1) | _torchrun(3)
    assert detect(env).launcher == "torchrun"


def test_torchrun_with_uneven_nodes_is_an_error_naming_the_fix():
    with pytest.raises(JobError, match="--nproc-per-node"):
        detect(_torchrun(0, WORLD_SIZE="5"))


def test_a_non_number_is_an_error_naming_the_variable():
    with pytest.raises(JobError, match="SLURM_PROCID='x'"):
        detect(_slurm(0, SLURM_PROCID="x"))


def test_plain_environment_is_no_job():
    assert detect({"PATH": "/usr/bin"}) is None


def test_validate_catches_a_rank_outside_the_world():
    topo = detect(_torchrun(0, RANK="9"))
    assert "outside" in validate(topo)
