"""On a real GPU: the bert check's setting is GPU-bound, sized to free memory, pinned near the GPU.

Run on the GPU host: `python -m pytest -m gpu tests/gpu/test_bert_setting_gpu.py`.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from verify import affinity, bench, reference, specs
from verify.checks import bert
from verify.context import Context
from verify.result import Status

pytestmark = pytest.mark.gpu
GIB = 2**30


def test_spec_lookup_accepts_torchs_total_memory():
    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    by_name = specs.lookup(name)
    if by_name is None:
        pytest.skip(f"{name} is not in verify/specs.py")
    assert specs.lookup(name, props.total_memory) is by_name  # torch's total agrees with the datasheet


def test_bus_id_names_a_sysfs_device():
    bus = affinity.torch_bus_id(torch.device("cuda", 0))
    assert bus is not None
    loc = affinity.read_locality(bus)
    assert loc.problem is None, loc.problem
    assert (Path("/sys/bus/pci/devices") / affinity.sysfs_bus_id(bus)).exists()


def test_gpu_setting_is_gpu_bound_estimated_and_compared():
    s = bert.GPU_SETTING
    cfg = bench.BenchConfig(**s, steps=10, warmup=5, repeats=3)
    res = bench.run_benchmark(cfg)
    assert res.config["batch"] == s["batch"] and not res.fit_notes and not res.oom_notes
    assert res.spread < 0.03, res.samples_per_s_repeats  # GPU-bound: repeats agree
    est = bench.estimate_train_bytes(s["size"], s["seq"], s["batch"], s["precision"]) / GIB
    assert res.peak_mem_gib <= est <= 1.3 * res.peak_mem_gib, (res.peak_mem_gib, est)
    assert res.pin_reason and str(res.pinned_cpu) in res.pin_reason
    ref, why = reference.comparable(res)
    if ref is not None:  # a card with a reference for this setting: it is a judged one
        assert ref.gpu_bound and "GPU-bound, judged" in reference.describe(res)
    else:
        assert why


def bert_check_with_only_free(gib: float):
    """The bert check while this process holds all of the GPU's memory but `gib` GiB (a memory holder)."""
    gc.collect()
    torch.cuda.empty_cache()  # earlier tests' cached blocks would come back as free once the check empties it
    free, _total = torch.cuda.mem_get_info()
    hold = torch.empty(int(free - gib * GIB), dtype=torch.uint8, device="cuda")
    try:
        return bert.run(Context(quick=True))
    finally:
        del hold
        gc.collect()
        torch.cuda.empty_cache()


def test_bert_check_takes_a_smaller_batch_beside_a_memory_holder():
    # The fault: something else holds all but ~12 GiB of the GPU. bert-base batch 256 needs ~26 GiB.
    r = bert_check_with_only_free(12)
    assert r.status == Status.PASS, r.summary
    assert r.figures["batch"] < bert.GPU_SETTING["batch"]
    assert "is free" in r.summary and "not compared with the reference" in r.summary
    assert "nvidia-smi" in r.summary


def test_bert_check_warns_by_name_when_nothing_fits():
    r = bert_check_with_only_free(1)
    assert r.status == Status.WARN
    assert r.summary.startswith("not measured: ") and "does not fit" in r.summary
    assert "is free" in r.summary and "CUDA_VISIBLE_DEVICES" in r.summary
