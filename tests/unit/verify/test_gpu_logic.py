"""gpu check logic: CUDA_VISIBLE_DEVICES parsing and arch-list coverage (pure functions)."""

import pytest

from verify.checks.gpu import arch_coverage, visible_nvml_indices

UUIDS = ["GPU-1111aaaa-0000", "GPU-2222bbbb-0000", "GPU-3333cccc-0000", "GPU-4444dddd-0000"]


@pytest.mark.parametrize(
    ("cvd", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("0", [0]),
        ("2,0", [2, 0]),
        ("1, 3", [1, 3]),
        ("0,7,1", [0]),  # CUDA stops at the first invalid entry
        ("0,-1,1", [0]),
        ("GPU-2222bbbb-0000", [1]),
        ("GPU-3333,GPU-1111", [2, 0]),  # unique UUID prefixes are accepted
        ("GPU-", []),  # ambiguous prefix names no device
        ("GPU-9999", []),
        ("1,1", [1]),  # a repeated device is not exposed twice
        ("NoDevFiles", []),
    ],
)
def test_visible_devices(cvd, expected):
    assert visible_nvml_indices(cvd, UUIDS) == expected


def test_visible_devices_on_a_host_without_nvml_devices():
    assert visible_nvml_indices(None, []) == []
    assert visible_nvml_indices("0", []) == []


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
