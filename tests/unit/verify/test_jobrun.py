"""How rank 0 judges the job from what the ranks and nodes posted (pure functions of the posted data)."""

from __future__ import annotations

from pathlib import Path

from verify.cluster.job import detect
from verify.cluster.jobrun import merge_nccl, missing_result, node_report_name, nodes_result
from verify.result import Result, Status

TOPO = detect(
    {
        "RANK": "0",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "MASTER_ADDR": "h0",
        "MASTER_PORT": "29500",
    }
)
GOOD = Result("nccl", Status.PASS, "4 ranks on 2 nodes (NET/IB): busbw 180 GB/s at 1GiB", {"ranks": 4})


def _posted(status: Status = Status.PASS, summary: str = "ok") -> dict:
    return Result("nccl", status, summary).to_dict()


def test_every_rank_passed():
    merged = merge_nccl(GOOD, {r: _posted() for r in range(4)}, [], TOPO)
    assert merged.status is Status.PASS and merged.summary == GOOD.summary
    assert merged.details["per_rank"] == {str(r): "pass" for r in range(4)}


def test_a_failed_rank_fails_the_job_naming_rank_and_node():
    posted = {r: _posted() for r in range(4)} | {2: _posted(Status.FAIL, "timed out after 60 s (killed)")}
    merged = merge_nccl(GOOD, posted, [], TOPO)
    assert merged.status is Status.FAIL
    assert "rank 2 (node 1): timed out after 60 s" in merged.summary
    assert merged.figures == GOOD.figures  # rank 0's figures are kept


def test_a_silent_rank_is_named_missing():
    merged = merge_nccl(GOOD, {r: _posted() for r in range(3)}, [3], TOPO)
    assert merged.status is Status.FAIL and "ranks 3 (node 1) sent no nccl result" in merged.summary
    assert merged.details["missing_ranks"] == [3]


def test_missing_result_names_ranks_and_says_no_collective_was_started():
    result = missing_result([1, 3], TOPO, "reached the all-reduce", 42.0)
    assert result.status is Status.FAIL
    assert "rank 1 (node 0), rank 3 (node 1) never reached the all-reduce within 42 s" in result.summary


def _node(n: int, failed: list[str] | None = None) -> dict:
    return {"node_rank": n, "hostname": f"h{n}", "report": f"/r/node{n}.json", "failed": failed or []}


def test_all_nodes_reported():
    result = nodes_result([_node(0), _node(1)], [], TOPO, Path("/r"))
    assert result.status is Status.PASS and "2 nodes x 2 ranks (torchrun) all reported" in result.summary


def test_a_node_whose_local_check_failed_fails_the_job():
    result = nodes_result([_node(0), _node(1, ["gpu", "bert"])], [], TOPO, None)
    assert (
        result.status is Status.FAIL and "node 1 (h1): gpu, bert failed (see /r/node1.json)" in result.summary
    )


def test_a_missing_node_fails_the_job():
    result = nodes_result([_node(0)], [1], TOPO, None)
    assert result.status is Status.FAIL and "nodes [1] sent no report" in result.summary


def test_node_report_names_sort_by_node_and_are_safe_file_names():
    assert node_report_name(TOPO, "gpu07.cluster/x") == "node0000-gpu07.cluster_x.json"
