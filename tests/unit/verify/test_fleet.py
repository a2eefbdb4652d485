"""`verify fleet`'s rules on data: real reports (H200, CPU `verify run --quick`) perturbed by fleet_synth."""

from __future__ import annotations

import json
import random
from pathlib import Path

import fleet_synth as fs
import pytest

from verify.cluster import fleet as fl


def facts(report: dict, path: str = "r.json") -> fl.NodeFacts:
    return fl.node_facts(fl.LoadedReport(Path(path), report))


def fleet_of(reports: list[dict], tolerance: float = 10.0) -> fl.Fleet:
    nodes = [facts(r, f"{i}.json") for i, r in enumerate(reports)]
    return fl.judge(nodes, tolerance)


def healthy(n: int = 10, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [fs.gpu_node(f"gpu{i:02d}", rng=rng) for i in range(n)]


def test_facts_of_the_real_h200_report() -> None:
    n = facts(json.loads(fs.H200_REPORT.read_text()))
    assert n.node == "vm" and n.model == "H200 SXM"
    assert n.versions == {"driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0+cu130"}
    assert n.metrics["bf16_tflops"] == fl.Metric(797.1, "matmul_n 8192")
    assert n.metrics["copy_GBps"] == fl.Metric(4244.6, "copy 1024 MiB")
    assert n.metrics["bert_samples_per_s"].value == 2311.9
    assert "busbw_GBps" not in n.metrics  # one rank: busbw is 0 by definition, not a figure to compare
    assert n.failed == {}


def test_cpu_node_has_statuses_and_versions_but_no_judged_figures() -> None:
    n = facts(fs.cpu_node("cpu1"))
    assert n.model == fl.CPU_MODEL and n.metrics == {} and n.busbw_curve == []
    assert n.statuses["gpu"] == "skip" and n.versions["driver"] is None and n.versions["torch"]


def test_node_field_wins_over_hostname() -> None:
    r = fs.gpu_node("host-a")
    assert fl.node_name(r) == "host-a"
    assert fl.node_name(r | {"node": "rack3-n07"}) == "rack3-n07"
    assert fl.node_name(r | {"node": {"name": "rack3-n08", "rank": 1}}) == "rack3-n08"


def test_healthy_fleet_has_no_flag() -> None:
    fleet = fleet_of(healthy())
    assert fleet.flags == [] and fleet.exit_code == 0
    assert {(m.metric, m.nodes) for m in fleet.medians} == {
        ("bf16_tflops", 10),
        ("copy_GBps", 10),
        ("bert_samples_per_s", 10),
        ("busbw_GBps", 10),
    }


@pytest.mark.parametrize("figure", ["bf16", "copy", "bert", "busbw"])
def test_a_node_20_percent_slow_is_flagged_with_value_median_and_gap(figure: str) -> None:
    reports = healthy()
    reports[3] = fs.gpu_node("gpu03", scale={figure: 0.8}, noise=0)
    fleet = fleet_of(reports)
    assert fleet.exit_code == 1
    (flag,) = fleet.flags
    metric = {"bf16": "bf16_tflops", "copy": "copy_GBps", "bert": "bert_samples_per_s", "busbw": "busbw_GBps"}
    assert (flag.node, flag.kind, flag.figure) == ("gpu03", "slow", metric[figure])
    assert flag.gap_pct is not None and 17 < flag.gap_pct < 23
    assert f"{flag.value:.1f}" in flag.message and f"{flag.median:.1f}" in flag.message
    assert f"{flag.gap_pct:.1f}% below" in flag.message and "fix:" in flag.message


def test_tolerance_decides() -> None:
    reports = healthy()
    reports[0] = fs.gpu_node("gpu00", scale={"bert": 0.92}, noise=0)
    assert fleet_of(reports, tolerance=10).flags == []
    assert [f.node for f in fleet_of(reports, tolerance=5).flags] == ["gpu00"]


def test_failed_check_flags_the_node() -> None:
    reports = healthy()
    reports[5] = fs.gpu_node("gpu05", fail="nccl")
    fleet = fleet_of(reports)
    (flag,) = [f for f in fleet.flags if f.kind == "failed"]
    assert flag.node == "gpu05" and "nccl FAILED: planted failure in nccl" in flag.message
    assert fleet.exit_code == 1


def test_mixed_torch_versions_are_one_fleet_wide_flag_naming_both() -> None:
    reports = healthy()
    reports[7] = fs.gpu_node("gpu07", torch="2.10.0+cu130")
    (flag,) = fleet_of(reports).flags
    assert flag.kind == "mixed_versions" and flag.node is None and flag.figure == "torch"
    assert "2.11.0+cu130 on 9 node(s)" in flag.message and "2.10.0+cu130 on 1 node(s) (gpu07)" in flag.message


def test_cpu_nodes_do_not_make_cuda_or_driver_mixed() -> None:
    reports = healthy(3)
    reports[0]["versions"]["torch"] = reports[1]["versions"]["torch"] = "2.13.0+cpu"
    reports[2]["versions"]["torch"] = "2.13.0+cpu"
    fleet = fleet_of([*reports, fs.cpu_node("cpu1")])
    assert [f.figure for f in fleet.flags] == []


def test_two_gpu_models_are_compared_only_within_each_model() -> None:
    rng = random.Random(3)
    h200 = [fs.gpu_node(f"h200-{i}", rng=rng) for i in range(5)]
    h100 = [fs.gpu_node(f"h100-{i}", rng=rng, model="H100") for i in range(5)]
    fleet = fleet_of(h200 + h100)
    assert fleet.flags == []  # every H100 is ~22% below the H200s, yet none is flagged
    assert {m.model for m in fleet.medians} == {"H200 SXM", "H100 SXM"}
    h100[2] = fs.gpu_node("h100-2", model="H100", scale={"bf16": 0.8}, noise=0)
    flags = fleet_of(h200 + h100).flags
    assert [(f.node, f.figure) for f in flags] == [("h100-2", "bf16_tflops")]
    assert "H100 SXM fleet median" in flags[0].message


def test_figures_of_different_settings_or_shrunk_runs_are_not_compared() -> None:
    reports = healthy(4)
    quick = fs.gpu_node("quick", scale={"bf16": 0.5}, noise=0)
    quick["results"][2]["details"]["gpus"][0]["matmul_n"] = 4096  # a --quick run: its own setting
    shrunk = fs.gpu_node("shrunk", scale={"copy": 0.5}, noise=0)
    shrunk["results"][2]["details"]["gpus"][0]["work_reduced"] = True
    cut = fs.gpu_node("cut", scale={"bert": 0.5}, noise=0)
    bert = next(r for r in cut["results"] if r["name"] == "bert")
    bert["details"]["config"]["batch"] = 32  # out of memory: the batch was cut
    fleet = fleet_of([*reports, quick, shrunk, cut])
    assert fleet.flags == []
    assert fleet.median_for("H200 SXM", "bf16_tflops", "matmul_n 4096").nodes == 1
    by_name = {n.node: n for n in fleet.nodes}
    assert "copy_GBps" not in by_name["shrunk"].metrics and "shrunk run" in by_name["shrunk"].notes[0]
    assert "bert_samples_per_s" not in by_name["cut"].metrics


def test_one_node_alone_is_not_judged() -> None:
    fleet = fleet_of([fs.gpu_node("solo", scale={"bert": 0.1})])
    assert fleet.flags == []


def test_references_come_from_specs_and_the_bert_table() -> None:
    fleet = fleet_of(healthy(3))
    refs = {m.metric: m.reference for m in fleet.medians}
    assert refs["bf16_tflops"] == 989.5 and refs["copy_GBps"] == 4800
    assert refs["bert_samples_per_s"] == 2310.0  # H200 base s128 b64 bf16 eager, verify/reference.py
    assert refs["busbw_GBps"] is None


def test_duplicate_hostnames_are_told_apart(tmp_path: Path) -> None:
    a = fs.write(fs.gpu_node("same"), tmp_path / "a.json")
    b = fs.write(fs.gpu_node("same"), tmp_path / "b.json")
    fleet = fl.merge([a, b])
    assert sorted(n.node for n in fleet.nodes) == ["same", "same#2"]
    assert any("has 2 reports" in s for s in fleet.skipped)


def test_load_folders_recursively_and_files_mixed(tmp_path: Path) -> None:
    fs.write(fs.gpu_node("n1"), tmp_path / "rack1" / "n1.json")
    fs.write(fs.gpu_node("n2"), tmp_path / "rack1" / "deep" / "n2.json")
    fs.write({"schema": 1, "image": "pytorch-cuda"}, tmp_path / "rack1" / "manifest.json")
    (tmp_path / "rack1" / "notes.txt").write_text("not json")
    single = fs.write(fs.gpu_node("n3"), tmp_path / "elsewhere" / "n3.json")
    loaded, skipped = fl.load_reports([tmp_path / "rack1", single])
    assert sorted(fl.node_name(r.data) for r in loaded) == ["n1", "n2", "n3"]
    assert skipped == [
        f"{tmp_path / 'rack1' / 'manifest.json'}: JSON but not a verify report "
        f"(no tool.name 'pytorch-cuda verify'); skipped"
    ]


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ('{"results": [', "not valid JSON"),
        ('{"schema": 1}', "not a verify report"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, content: str | bytes, expect: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(fl.FleetInputError, match=expect) as err:
        fl.load_reports([bad])
    assert str(bad) in str(err.value)


def test_truncated_report_in_a_folder_is_an_error_not_a_lost_node(tmp_path: Path) -> None:
    fs.write(fs.gpu_node("n1"), tmp_path / "n1.json")
    (tmp_path / "n2.json").write_text(json.dumps(fs.gpu_node("n2"))[:500])
    with pytest.raises(fl.FleetInputError, match=r"n2\.json: not valid JSON"):
        fl.load_reports([tmp_path])


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(fl.FleetInputError, match="no such file or folder"):
        fl.load_reports([tmp_path / "nope"])
    with pytest.raises(fl.FleetInputError, match="no verify reports found"):
        fl.load_reports([tmp_path])
    with pytest.raises(fl.FleetInputError, match="no reports given"):
        fl.load_reports([])


def test_text_table_marks_the_flagged_figure() -> None:
    reports = healthy(4)
    reports[1] = fs.gpu_node("gpu01", scale={"bert": 0.7}, noise=0)
    header, rows = fl.table_rows(fleet_of(reports))
    col = header.index("bert samples/s")
    assert rows[1][0] == "gpu01" and rows[1][col].endswith("*")
    assert not rows[0][col].endswith("*")


def test_fleet_json_is_strict_json() -> None:
    fleet = fleet_of(healthy(3))
    text = json.dumps(fleet.to_dict(), allow_nan=False)
    assert json.loads(text)["exit_code"] == 0


def job_section(role: str, node_rank: int, nnodes: int = 2) -> dict:
    """What `verify run` puts in a multi-node job's reports (verify/report.py job_section)."""
    return {
        "role": role,
        "launcher": "slurm",
        "rank": node_rank * 8,
        "world_size": 8 * nnodes,
        "local_rank": 0,
        "local_world_size": 8,
        "node_rank": node_rank,
        "nnodes": nnodes,
        "master_addr": "n0",
        "master_port": 29500,
    }


def test_a_jobs_own_report_is_not_a_node_but_its_failures_count(tmp_path: Path) -> None:
    fs.write(fs.gpu_node("n0") | {"job": job_section("node", 0)}, tmp_path / "node0000-n0.json")
    fs.write(fs.gpu_node("n1") | {"job": job_section("node", 1)}, tmp_path / "node0001-n1.json")
    job = fs.gpu_node("n0", fail="nccl") | {"job": job_section("job", 0)}
    fs.write(job, tmp_path / "verify-report.json")
    fleet = fl.merge([tmp_path])
    assert [n.node for n in fleet.nodes] == ["n0", "n1"]
    (flag,) = fleet.flags
    assert flag.node == "job of 2 nodes (rank 0 on n0)" and "nccl FAILED" in flag.message
    assert any("the job's own report" in s for s in fleet.skipped)
    assert [r[0] for r in fl.table_rows(fleet)[1]] == ["n0", "n1", "job of 2 nodes (rank 0 on n0)"]


def test_only_job_reports_are_the_nodes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        fs.write(fs.gpu_node(name) | {"job": job_section("job", 0, nnodes=1)}, tmp_path / f"{name}.json")
    fleet = fl.merge([tmp_path])
    assert [n.node for n in fleet.nodes] == ["a", "b"] and fleet.jobs == [] and fleet.flags == []


def test_expect_flags_a_node_that_sent_no_report_and_reports_of_other_runs(tmp_path: Path) -> None:
    for name in ("n0", "n1", "n2"):
        fs.write(fs.gpu_node(name), tmp_path / f"{name}.json")
    assert fl.merge([tmp_path], expect=3).flags == []
    short = fl.merge([tmp_path], expect=4)
    assert short.exit_code == 1
    (flag,) = short.flags
    assert flag.kind == "node_count" and flag.node is None
    assert flag.message.startswith("4 nodes expected, 3 reported: 1 node(s) sent no report"), flag.message
    (extra,) = fl.merge([tmp_path], expect=2).flags
    assert "reports of other runs are mixed in" in extra.message


def test_expect_with_the_jobs_node_names_names_the_missing_node(tmp_path: Path) -> None:
    for name in ("n0", "n2"):
        fs.write(fs.gpu_node(f"{name}.cluster.example"), tmp_path / f"{name}.json")  # FQDN hostnames
    (flag,) = fl.merge([tmp_path], expect=fl.Expected.parse("n0,n1,n2")).flags
    assert flag.message.startswith("3 nodes expected, 2 reported: 1 node(s) sent no report: n1 "), (
        flag.message
    )
    assert fl.merge([tmp_path], expect=fl.Expected.parse("n0,n2")).flags == []


def test_no_report_at_all_is_a_finding_when_the_nodes_are_expected(tmp_path: Path) -> None:
    """A node lost as the job's step started can take the others' tasks down with it (srun aborts a step
    whose launch failed): the fleet report must still say so, not end in an input error."""
    (tmp_path / "nodes").mkdir()
    with pytest.raises(fl.FleetInputError, match="no verify reports found"):
        fl.merge([tmp_path / "nodes"])
    fleet = fl.merge([tmp_path / "nodes"], expect=fl.Expected.parse("node1,node2"))
    assert fleet.exit_code == 1 and fleet.nodes == []
    assert [f.message.split(" (")[0] for f in fleet.flags] == [
        "2 nodes expected, 0 reported: 2 node(s) sent no report: node1, node2"
    ]


def _as_job_node(report: dict, job_rows: list[dict]) -> dict:
    """The node report a multi-node job writes: the job-wide rows (the same on every node) in "rows", this
    node's own within-node rows in "intra_rows" (here: the node's figures as fleet_synth made them)."""
    nccl = next(r for r in report["results"] if r["name"] == "nccl")
    nccl["details"]["intra_rows"] = [row | {"ranks": 8} for row in nccl["details"]["rows"]]
    nccl["details"]["rows"] = job_rows
    nccl["figures"]["ranks"] = 16
    return report


def test_a_node_whose_own_nccl_is_slow_is_flagged_in_a_multi_node_job() -> None:
    """Every node report of a job carries the job-wide busbw; the per-node (intra-node) figure must decide,
    or no node's NCCL could ever be flagged."""
    job_rows = fs.gpu_node("job", noise=0)["results"]
    job_rows = next(r for r in job_rows if r["name"] == "nccl")["details"]["rows"]
    reports = healthy()
    reports[4] = fs.gpu_node("gpu04", scale={"busbw": 0.5}, noise=0)
    fleet = fleet_of([_as_job_node(r, job_rows) for r in reports])
    slow = [f for f in fleet.flags if f.kind == "slow"]
    assert [(f.node, f.figure) for f in slow] == [("gpu04", "busbw_GBps")], fleet.flags
    node = facts(_as_job_node(fs.gpu_node("gpu09", noise=0), job_rows))
    assert "within the node" in node.metrics["busbw_GBps"].setting
