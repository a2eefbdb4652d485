"""PCIe: what a GPU's link allows per direction, and whether pinned host<->device copies come near it.

Why: a GPU on a riser that trained down (Gen3 x8 instead of Gen5 x16), a link that falls back under load, or
copies through the wrong socket or a strict IOMMU all pass every compute check and then starve the input
pipeline and every host<->device transfer. Cluster tools (DCGM's pcie test, nvbandwidth) measure it; so does
the gpu check, with pinned copies timed by CUDA events (verify/measure.py), and judges it here (pure).

A link's rate per direction: GT/s per lane x lanes x encoding / 8 bits (8b/10b up to Gen2, 128b/130b for
Gen3-5, FLIT ~242/256 for Gen6). Gen5 x16: 63.0 GB/s; pinned copies reach about 85-90 % of it (55.0 and
55.2 GB/s on the lent H100, docs/gpu-results.md). Rules (each a WARN naming the figures and the fix):
- the link below its maximum generation or width, read right after the copies (an idle GPU may lower its
  link to save power; under load it should be at its maximum);
- the slower direction under SLOW_FRACTION of what the current link allows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from verify import nvml

GT_PER_LANE = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
SLOW_FRACTION = 0.6
LINK_FIX = "reseat the GPU or its riser, check the slot's BIOS setting (Gen/bifurcation) and the cable"
SLOW_FIX = (
    "run on a CPU of the GPU's NUMA node (numactl --cpunodebind), check IOMMU passthrough (iommu=pt) and "
    "whether the GPU shares a PCIe switch with busy devices"
)


@dataclass(frozen=True)
class Link:
    gen: int | None
    gen_max: int | None
    width: int | None
    width_max: int | None

    def describe(self) -> str:
        return f"Gen{self.gen} x{self.width} (max Gen{self.gen_max} x{self.width_max})"


def _encoding(gen: int) -> float:
    if gen <= 2:
        return 8 / 10
    if gen <= 5:
        return 128 / 130
    return 242 / 256


def link_gbps(gen: int | None, width: int | None) -> float | None:
    """What the link carries per direction, in 1e9 bytes/s; None for an unknown generation or width."""
    if gen not in GT_PER_LANE or not width:
        return None
    return GT_PER_LANE[gen] * width * _encoding(gen) / 8


def read_link(bus_id: str | None) -> Link | None:
    """The GPU's current and maximum link from NVML, by PCI bus id; None where NVML cannot say."""
    if not bus_id:
        return None
    try:
        with nvml.session() as nv:
            handle = nv.nvmlDeviceGetHandleByPciBusId(bus_id)
            values = []
            for call in (
                "nvmlDeviceGetCurrPcieLinkGeneration",
                "nvmlDeviceGetMaxPcieLinkGeneration",
                "nvmlDeviceGetCurrPcieLinkWidth",
                "nvmlDeviceGetMaxPcieLinkWidth",
            ):
                try:
                    values.append(int(getattr(nv, call)(handle)))
                except nv.NVMLError:
                    values.append(None)
            return Link(*values)
    except (nvml.NvmlUnavailable, Exception):  # no NVML, or no handle for that bus: the figures still stand
        return None


def judge(label: str, h2d_gbps: float, d2h_gbps: float, link: Link | None) -> list[str]:
    """Warnings for one GPU's pinned copy figures against its link (pure)."""
    if link is None:
        return []
    warns = []
    below = (link.gen or 0) < (link.gen_max or 0) or (link.width or 0) < (link.width_max or 0)
    if below:
        warns.append(
            f"{label}: PCIe link at Gen{link.gen} x{link.width} under load, its maximum is "
            f"Gen{link.gen_max} x{link.width_max} (pinned copies {h2d_gbps:g} GB/s to the GPU, "
            f"{d2h_gbps:g} back); fix: {LINK_FIX}"
        )
    allowed = link_gbps(link.gen, link.width)
    slower = min(h2d_gbps, d2h_gbps)
    if allowed and slower < SLOW_FRACTION * allowed:
        warns.append(
            f"{label}: pinned copies {h2d_gbps:g} GB/s to the GPU and {d2h_gbps:g} back, "
            f"{100 * slower / allowed:.0f}% of the {allowed:.1f} GB/s a Gen{link.gen} x{link.width} link "
            f"carries (under {100 * SLOW_FRACTION:.0f}%); fix: {SLOW_FIX}"
        )
    return warns


def as_dict(link: Link | None) -> dict[str, Any] | None:
    return asdict(link) if link else None
