"""The spec-peak table: real device names (+ memory) resolve to exactly their model, or to nothing."""

import itertools

import pytest

from verify import specs

GIB = 2**30
MIB = 2**20


@pytest.mark.parametrize(
    ("device_name", "memory_bytes", "model"),
    [
        # the lent H200: NVML's memory total, as recorded
        ("NVIDIA H200", 150754820096, "H200 SXM"),
        ("NVIDIA H200", None, "H200 SXM"),
        ("NVIDIA H200 NVL", 150754820096, "H200 NVL"),  # the same 141 GB HBM3e as the SXM board
        # the three H100 boards, told apart by name; memory as nvidia-smi prints it (MiB)
        ("NVIDIA H100 80GB HBM3", 81559 * MIB, "H100 SXM"),
        ("NVIDIA H100 PCIe", 81559 * MIB, "H100 PCIe"),
        ("NVIDIA H100 NVL", 95830 * MIB, "H100 NVL"),
        # Grace Hopper: a GH200 is not an H200
        ("NVIDIA GH200 480GB", 97871 * MIB, "GH200 96GB HBM3"),
        ("NVIDIA GH200 144G HBM3e", 153008209920, "GH200 144GB HBM3e"),
        ("NVIDIA A100-SXM4-80GB", 81920 * MIB, "A100 SXM 80GB"),
        ("NVIDIA A100-SXM4-40GB", 40960 * MIB, "A100 SXM 40GB"),
        ("NVIDIA A100 80GB PCIe", 81920 * MIB, "A100 PCIe 80GB"),
        ("NVIDIA A100-PCIE-40GB", 40960 * MIB, "A100 PCIe 40GB"),
        ("NVIDIA L40S", 46068 * MIB, "L40S"),  # ECC on
        ("NVIDIA L40S", 49140 * MIB, "L40S"),  # ECC off
        ("NVIDIA GeForce RTX 4090", 24564 * MIB, "RTX 4090"),
        ("NVIDIA GeForce RTX 5090", 32607 * MIB, "RTX 5090"),
        ("nvidia  h100 80gb hbm3 ", None, "H100 SXM"),  # case and spacing do not matter
        ("H100 PCIe", None, "H100 PCIe"),  # the "NVIDIA " prefix is optional
    ],
)
def test_real_device_names_resolve_to_their_model(device_name, memory_bytes, model):
    spec = specs.lookup(device_name, memory_bytes)
    assert spec is not None and spec.model == model


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA GeForce GTX 1080",
        "NVIDIA H20",  # not an H200
        "NVIDIA H800",  # not an H100
        "NVIDIA B200",
        "NVIDIA H100 80GB HBM3 MIG 1g.10gb",  # a MIG slice: a fraction of the SMs
        "NVIDIA GH200 624GB",  # a name we have not seen: no guessing from the family
        "NVIDIA H200 SXM 141GB NEXT",
    ],
)
def test_unknown_cards_have_no_spec(device_name):
    assert specs.lookup(device_name) is None
    assert specs.lookup(device_name, 80 * GIB) is None


@pytest.mark.parametrize(
    ("device_name", "memory_bytes"),
    [
        ("NVIDIA H100 PCIe", 95830 * MIB),  # an NVL's memory under a PCIe name
        ("NVIDIA H100 80GB HBM3", 97871 * MIB),  # a 96 GB board
        ("NVIDIA H200", 97871 * MIB),
        ("NVIDIA GH200 480GB", 153008209920),
        ("NVIDIA A100-SXM4-80GB", 40960 * MIB),
        ("NVIDIA H200", 18 * GIB),  # what a MIG 1g.18gb slice reports
    ],
)
def test_memory_that_contradicts_the_name_gives_no_spec(device_name, memory_bytes):
    assert specs.lookup(device_name) is not None  # the name alone matches ...
    assert specs.lookup(device_name, memory_bytes) is None  # ... the memory says it is another card


def test_the_lent_h200_as_torch_and_nvml_see_it_is_not_a_gh200():
    spec = specs.lookup("NVIDIA H200", 150754820096)
    assert spec.model == "H200 SXM" and spec.mem_bw_gbps == 4800
    assert specs.lookup("NVIDIA GH200 480GB").model.startswith("GH200")


def test_variants_do_not_overlap_in_memory():
    # Two entries of one family whose memory windows overlapped could not be told apart by memory.
    by_family: dict[str, list[specs.GpuSpec]] = {}
    for s in specs.SPECS:
        by_family.setdefault(s.model.split()[0], []).append(s)
    for family in by_family.values():
        windows = sorted({(specs.MEMORY_LOW * s.memory_gb, specs.MEMORY_HIGH * s.memory_gb) for s in family})
        for (_, hi), (lo, _) in itertools.pairwise(windows):
            assert hi < lo, family


@pytest.mark.parametrize("spec", specs.SPECS, ids=lambda s: s.model)
def test_every_entry_is_dense_sourced_and_consistent(spec):
    assert spec.source.startswith("NVIDIA")
    # tensor-core TF32 is half of dense BF16 on every one of these parts; BF16 == FP16 (FP32 accumulate)
    assert spec.tf32_tflops == pytest.approx(spec.bf16_tflops / 2, rel=0.02)
    assert spec.fp16_tflops == spec.bf16_tflops
    assert spec.fp32_tflops < spec.bf16_tflops
    assert spec.mem_bw_gbps > 500
    assert spec.memory_gb >= 16


@pytest.mark.parametrize("spec", specs.SPECS, ids=lambda s: s.model)
def test_every_entry_is_reached_by_exactly_one_name(spec):
    # No entry shadows another: the names that reach each one reach no other.
    examples = {s.pattern.replace("\\", "") for s in specs.SPECS}
    hits = [e for e in examples if spec.name_matches(e)]
    assert len(hits) == 1


def test_peak_for_precision_and_bad_precision():
    h200 = specs.lookup("NVIDIA H200")
    assert specs.peak_tflops(h200, "tf32") == h200.tf32_tflops
    with pytest.raises(ValueError, match="int8"):
        specs.peak_tflops(h200, "int8")
