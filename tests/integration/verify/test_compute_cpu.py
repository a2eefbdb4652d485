"""The compute checks for real on this CPU-only host: honest SKIPs, the gloo collective path, CPU amp/bert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from verify.checks import amp, bert, gpu, nccl
from verify.cluster.distributed import CollectiveConfig, free_port, launch_local
from verify.context import Context
from verify.result import Status

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CPU-path tests; tests/gpu covers GPU hosts"
)


def test_gpu_skips_with_cudas_reason():
    r = gpu.run(Context())
    assert r.status == Status.SKIP
    assert r.summary.startswith("no GPU: torch.cuda.is_available() is False (")
    assert r.details["arch_list"] == torch.cuda.get_arch_list()


def test_nccl_runs_the_collective_path_on_gloo_and_skips_nccl():
    r = nccl.run(Context())
    assert r.status == Status.SKIP, r.summary
    assert "gloo with 2 processes: sums correct" in r.summary
    assert r.figures["ranks"] == 2 and r.figures["backend"] == "gloo"
    assert r.figures["gloo_algbw_GBps_1MiB"] > 0
    # n = 2: busbw equals algbw (2(n-1)/n = 1)
    assert r.figures["gloo_busbw_GBps_4MiB"] == r.figures["gloo_algbw_GBps_4MiB"]


def test_a_hung_collective_is_killed_at_the_deadline():
    cfg = CollectiveConfig.for_backend("gloo", quick=True)
    out = launch_local(cfg, nprocs=2, timeout_s=6, start_ranks=[0])  # rank 1 never comes
    assert out.timed_out
    assert out.returncodes[0] == -9
    assert 6 <= out.wall_s < 20
    assert out.results == []


def test_nccl_check_joins_a_torchrun_job(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from verify.checks import nccl
            from verify.context import Context
            r = nccl.run(Context())
            out = os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json")
            open(out, "w").write(json.dumps(r.to_dict()))
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(free_port()), str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["status"] == "skip", r["summary"]
        assert r["details"]["launch"] == f"torchrun job: rank {rank} of 2, node 0 of 1, 2 ranks per node"
        assert r["figures"]["ranks"] == 2


def test_amp_cpu_bf16_passes():
    r = amp.run(Context())
    assert r.status == Status.PASS, r.summary
    assert r.figures["bf16_rel_err"] <= amp.TOLERANCE["bf16"]
    assert r.figures["bf16_loss_last"] < r.figures["bf16_loss_first"]


def test_bert_cpu_runs_the_tiny_config():
    r = bert.run(Context(options={"bert": {"steps": 2, "repeats": 2, "warmup": 1}}))
    assert r.status == Status.PASS, r.summary
    assert "bert-tiny" in r.summary and "CPU" in r.summary
    assert r.figures["samples_per_s"] > 0 and r.figures["tflops"] > 0
    d = r.details
    assert d["attn_implementation"] == "sdpa" and d["loss_last"] < d["loss_first"] + 1
    assert d["formula"].startswith("FLOP/step")


def test_bert_rejects_an_unknown_option():
    r = bert.run(Context(options={"bert": {"layers": 3}}))
    assert r.status == Status.FAIL
    assert r.summary.startswith("option bert.layers is unknown; use one of size, seq, batch")


def test_bench_cli_on_cpu_writes_json(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "bench", "bert", "--size", "tiny", "--seq", "32", "--batch", "4",
         "--steps", "2", "--warmup", "1", "--repeats", "2", "--precision", "fp32", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "samples/s" in proc.stdout and "FLOPs/step" in proc.stdout
    data = json.loads(out.read_text())
    assert data["device_name"] == "CPU" and data["config"]["size"] == "tiny"
    assert len(data["step_ms"]) == 2 and data["pinned_cpu"] is None
