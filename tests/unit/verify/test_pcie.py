"""verify/pcie.py's rule on pinned-copy figures measured on the lent H100 (docs/gpu-results.md, 2026-12-07:
55.0 GB/s to the GPU, 55.15 back, NVML Gen5 x16 of Gen5 x16) and on figures a bad link gives."""

from __future__ import annotations

import pytest

from verify import pcie

H100_LINK = pcie.Link(gen=5, gen_max=5, width=16, width_max=16)


@pytest.mark.parametrize(
    ("gen", "width", "gbps"),
    [(3, 16, 15.75), (4, 16, 31.51), (5, 16, 63.02), (5, 8, 31.51), (2, 16, 8.0), (1, 1, 0.25)],
)
def test_link_rate_per_direction(gen: int, width: int, gbps: float) -> None:
    assert pcie.link_gbps(gen, width) == pytest.approx(gbps, abs=0.01)


def test_unknown_links_have_no_rate() -> None:
    assert pcie.link_gbps(None, 16) is None and pcie.link_gbps(5, 0) is None and pcie.link_gbps(9, 16) is None


def test_the_h100_figures_pass() -> None:
    assert pcie.judge("GPU 0", 55.0, 55.15, H100_LINK) == []


def test_a_link_trained_down_under_load_warns_with_the_fix() -> None:
    """A riser that trained to Gen3 x8: copies at ~6.6 GB/s, the link below its Gen5 x16 maximum."""
    link = pcie.Link(gen=3, gen_max=5, width=8, width_max=16)
    (warning,) = pcie.judge("GPU 2 NVIDIA H100 80GB HBM3", 6.6, 6.5, link)
    assert "PCIe link at Gen3 x8 under load, its maximum is Gen5 x16" in warning
    assert "reseat the GPU or its riser" in warning


def test_slow_copies_on_a_full_link_warn_naming_numa_and_iommu() -> None:
    """Gen5 x16 but 20 GB/s one way (32 % of 63 GB/s): the wrong socket, a strict IOMMU, a shared switch."""
    (warning,) = pcie.judge("GPU 0", 20.0, 54.0, H100_LINK)
    assert "32% of the 63.0 GB/s a Gen5 x16 link carries" in warning
    assert "numactl --cpunodebind" in warning and "iommu=pt" in warning


def test_no_link_facts_no_verdict() -> None:
    assert pcie.judge("GPU 0", 1.0, 1.0, None) == []
