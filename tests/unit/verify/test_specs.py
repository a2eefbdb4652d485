"""The spec-peak table: the models the issue names are there, names resolve, figures are consistent."""

import pytest

from verify import specs


@pytest.mark.parametrize(
    ("device_name", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 5090", "RTX 5090"),
    ],
)
def test_device_names_resolve_to_their_model(device_name, model):
    spec = specs.lookup(device_name)
    assert spec is not None and spec.model == model


def test_unknown_card_has_no_spec():
    assert specs.lookup("NVIDIA GeForce GTX 1080") is None


@pytest.mark.parametrize("spec", specs.SPECS, ids=lambda s: s.model)
def test_every_entry_is_dense_sourced_and_ordered(spec):
    assert spec.source.startswith("NVIDIA")
    # tensor-core TF32 is half of dense BF16 on every one of these parts; BF16 == FP16 (FP32 accumulate)
    assert spec.tf32_tflops == pytest.approx(spec.bf16_tflops / 2, rel=0.02)
    assert spec.fp16_tflops == spec.bf16_tflops
    assert spec.fp32_tflops < spec.bf16_tflops
    assert spec.mem_bw_gbps > 500


def test_peak_for_precision_and_bad_precision():
    h200 = specs.lookup("NVIDIA H200")
    assert specs.peak_tflops(h200, "tf32") == h200.tf32_tflops
    with pytest.raises(ValueError, match="int8"):
        specs.peak_tflops(h200, "int8")
