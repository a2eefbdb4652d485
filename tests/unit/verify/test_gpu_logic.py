"""gpu check logic: arch-list coverage and problem sizes that fit the free memory (pure functions).

CUDA_VISIBLE_DEVICES and presence rules are tested in test_presence.py.
"""

import json
from pathlib import Path

import pytest

from verify.checks.gpu import MIB, WorkSize, arch_coverage, matmul_bytes, min_free_bytes, work_size

RECORDINGS = Path(__file__).resolve().parents[2] / "nvml_replay" / "recordings"
GIB = 2**30


def _recorded_free(name: str) -> int:
    return json.loads((RECORDINGS / f"{name}.json").read_text())["devices"][0]["nvmlDeviceGetMemoryInfo"][
        "free"
    ]


def test_full_sizes_on_the_idle_h200_and_with_130_gib_held():
    # free memory as NVML reported it on the lent H200: idle (139.8 GiB) and with another process holding
    # 130.5 GiB (9.3 GiB free): the full problem still fits, so the figures stay comparable
    for recording in ("h200-idle", "h200-held"):
        size = work_size(_recorded_free(recording), quick=False)
        assert size == WorkSize(8192, 1024 * MIB, 8192, 1024 * MIB) and not size.reduced
    assert work_size(_recorded_free("h200-held"), quick=True) == WorkSize(4096, 256 * MIB, 4096, 256 * MIB)


@pytest.mark.parametrize(
    ("free", "matmul_n", "copy_mib"),
    [
        (3 * GIB, 8192, 512),
        (int(1.5 * GIB), 4096, 256),
        (768 * MIB, 2048, 64),
        (600 * MIB, 1024, 16),
    ],
)
def test_work_shrinks_when_memory_is_short(free, matmul_n, copy_mib):
    size = work_size(free, quick=False)
    assert (size.matmul_n, size.copy_bytes // MIB) == (matmul_n, copy_mib) and size.reduced
    budget = free / 2 - 256 * MIB  # never more than half of what is free, less the reserve
    assert matmul_bytes(size.matmul_n) <= budget and 2 * size.copy_bytes <= budget


def test_below_the_minimum_nothing_runs():
    assert work_size(min_free_bytes(), quick=False) is not None
    assert work_size(min_free_bytes() - MIB, quick=False) is None
    assert work_size(0, quick=True) is None


TORCH_211 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize(
    ("cap", "arch_list", "ok", "how"),
    [
        ((9, 0), TORCH_211, True, "native sm_90"),
        ((8, 9), TORCH_211, True, "sm_86 binary"),  # Ada runs the sm_86 cubin (same major)
        ((12, 0), TORCH_211, True, "native sm_120"),
        ((10, 3), ["sm_90", "sm_100"], True, "sm_100 binary"),
        ((9, 0), ["sm_80", "sm_86", "compute_80"], True, "PTX compute_80"),
        ((9, 0), ["sm_80", "sm_86"], False, "no sm_90"),
        ((12, 0), ["sm_80", "sm_90", "compute_90"], True, "PTX compute_90"),
        ((8, 0), ["sm_90", "compute_90"], False, "no sm_80"),  # PTX newer than the GPU cannot JIT
        ((9, 0), ["sm_90a"], True, "native sm_90a"),
        ((10, 1), ["sm_100a"], False, "no sm_101"),  # arch-specific cubins run on exactly that arch
        ((7, 0), [], False, "no sm_70"),
    ],
)
def test_arch_coverage(cap, arch_list, ok, how):
    cov = arch_coverage(cap, arch_list)
    assert cov.ok is ok
    assert how in cov.how
