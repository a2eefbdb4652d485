"""The compute checks on a real GPU: every one runs, and the figures are physically plausible."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from verify import presence, reference, specs
from verify.bench import BenchConfig, run_benchmark
from verify.checks import amp, bert, gpu, nccl
from verify.cluster.distributed import CollectiveConfig, launch_local
from verify.context import Context
from verify.result import Status

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_arch_list_covers_this_gpu():
    cap = torch.cuda.get_device_capability(0)
    cov = gpu.arch_coverage(cap, torch.cuda.get_arch_list())
    assert cov.ok, cov.how


def test_gpu_check_passes_with_figures_near_spec():
    r = gpu.run(Context(quick=True))
    assert r.status == Status.PASS, r.summary
    nvml_gpus, _, driver = presence.collect_nvml()
    expected = len(
        presence.visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), nvml_gpus or (), driver).devices
    )
    assert r.figures["gpus"] == torch.cuda.device_count() == expected
    spec = specs.lookup(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory)
    if spec:  # a healthy card: matmul and copy within sane fractions of the datasheet, never above it
        assert 0.4 * spec.bf16_tflops < r.figures["bf16_tflops"] < 1.02 * spec.bf16_tflops
        assert 0.5 * spec.mem_bw_gbps < r.figures["copy_GBps"] < 1.02 * spec.mem_bw_gbps
    for g in r.details["gpus"]:
        for key, err in g["rel_errors"].items():
            if key != "seed":
                assert err <= gpu._bound_for(key), (key, err)
        # pinned copies each way, against the link NVML reports under load (verify/pcie.py)
        link = g["pcie"].get("link_GBps")
        assert link, g["pcie"]  # NVML answered the link's generation and width
        for key in ("h2d_GBps", "d2h_GBps"):
            assert 0.6 * link < g[key] <= link, (key, g[key], g["pcie"])


def test_nccl_check_reduces_exactly_on_every_gpu():
    r = nccl.run(Context(quick=True))
    assert r.status == Status.PASS, r.summary
    assert r.figures["backend"] == "nccl"
    assert r.figures["ranks"] == torch.cuda.device_count()
    assert r.figures["nccl_algbw_GBps_64MiB"] > 0
    if torch.cuda.device_count() == 1:
        assert r.figures["nccl_busbw_GBps_64MiB"] == 0.0  # 2(n-1)/n = 0 for one rank


def test_nccl_hang_becomes_timeout():
    # rank 1 of 2 never starts: rank 0 waits in the rendezvous until the launcher kills it.
    cfg = CollectiveConfig.for_backend("nccl", quick=True)
    out = launch_local(cfg, nprocs=2, timeout_s=15, start_ranks=[0])
    assert out.timed_out
    assert out.returncodes[0] is not None and out.returncodes[0] != 0
    assert 15 <= out.wall_s < 30


def test_amp_bf16_and_fp16_pass():
    r = amp.run(Context())
    assert r.status == Status.PASS, r.summary
    assert r.figures["bf16_rel_err"] <= amp.TOLERANCE["bf16"]
    assert r.figures["fp16_rel_err"] <= amp.TOLERANCE["fp16"]
    assert r.figures["fp16_loss_last"] < r.figures["fp16_loss_first"]


def test_bert_check_measures_and_compares():
    r = bert.run(Context(quick=True))
    assert r.status in (Status.PASS, Status.WARN), r.summary
    f = r.figures
    assert f["samples_per_s"] > 0 and f["tflops"] > 0 and f["peak_mem_gib"] > 0
    assert 0 < f["mfu_measured_bf16_pct"] < 100
    if specs.lookup(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory):
        assert 0 < f["mfu_spec_pct"] < 100
    if r.status == Status.WARN:
        assert "below the" in r.summary  # the only WARN the bert check gives is the reference deficit


def test_oom_halves_the_batch():
    # A batch far beyond the card's memory: the benchmark must halve until it fits, and say so.
    free, _total = torch.cuda.mem_get_info()
    per_sample = 350e6  # bert-base seq 512 bf16: ~0.16 GB of logits (fp32 + bf16) plus activations
    batch = 1 << int(free / per_sample).bit_length() + 2
    cfg = BenchConfig(
        size="base", seq=512, batch=batch, steps=1, warmup=1, repeats=1, measure_peak=False, fit_memory=False
    )
    try:
        res = run_benchmark(cfg)
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    assert res.oom_notes and "ran out of memory" in res.oom_notes[0]
    assert res.config["batch"] < batch
    assert reference.assess(res) is None  # a halved batch is not compared with the reference


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verify",
            "bench",
            "bert",
            "--size",
            "tiny",
            "--steps",
            "3",
            "--repeats",
            "2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["device_name"] == torch.cuda.get_device_name(0)
    assert data["attn_implementation"] == "sdpa"
    assert len(data["samples_per_s_repeats"]) == 2
