"""The driver <-> CUDA runtime table and the verdicts built on it."""

from __future__ import annotations

import pytest

from verify import compat


def test_versions_compare_numerically_not_as_text():
    assert compat.parse_version("570.124.06") > compat.parse_version("570.26")
    assert compat.parse_version("580.65.06") == (580, 65, 6)
    with pytest.raises(compat.VersionError, match=r"'570\.x'"):
        compat.parse_version("570.x")


@pytest.mark.parametrize(
    ("encoded", "text"), [(12080, "12.8"), (13000, "13.0"), (12090, "12.9"), (11080, "11.8")]
)
def test_cuda_from_nvml(encoded, text):
    assert compat.cuda_from_nvml(encoded) == text


def test_cuda_from_nvml_rejects_nonsense():
    with pytest.raises(compat.VersionError):
        compat.cuda_from_nvml(0)


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("11.8", "520.61.05"),
        ("12.1", "530.30.02"),
        ("12.4", "550.54.14"),
        ("12.6", "560.28.03"),
        ("12.8", "570.26"),
        ("12.8.1", "570.26"),
        ("12.9", "575.51.03"),
        ("13.0", "580.65.06"),
    ],
)
def test_minimum_driver_per_toolkit_line(cuda, driver):
    assert compat.min_driver_for(cuda) == driver


def test_an_unknown_line_has_no_minimum():
    assert compat.min_driver_for("14.0") is None


def test_table_minimums_never_go_down_as_cuda_goes_up():
    rows = sorted(compat.MIN_DRIVER.items(), key=lambda kv: compat.parse_version(kv[0]))
    drivers = [compat.parse_version(driver) for _, driver in rows]
    assert drivers == sorted(drivers), "a typo in MIN_DRIVER: a newer CUDA needs an older driver"


def test_minor_compat_floors_match_the_x0_releases_from_12_on():
    assert compat.MINOR_COMPAT_FLOOR[12] == compat.MIN_DRIVER["12.0"]
    assert compat.MINOR_COMPAT_FLOOR[13] == compat.MIN_DRIVER["13.0"]
    # 11.0 GA shipped with 450.36.06; minor-version compatibility for 11.x needs the later 450.80.02.
    assert compat.parse_version(compat.MINOR_COMPAT_FLOOR[11]) > compat.parse_version(
        compat.MIN_DRIVER["11.0"]
    )


def test_exactly_the_minimum_is_ok():
    verdict = compat.check_driver("570.26", "12.8")
    assert (verdict.level, verdict.min_driver) == ("ok", "570.26")


def test_a_newer_driver_branch_runs_an_older_runtime():
    assert compat.check_driver("580.95.05", "12.8").level == "ok"


def test_inside_minor_version_compatibility_is_a_warning_that_says_why():
    verdict = compat.check_driver("535.183.01", "12.8")
    assert verdict.level == "minor_compat"
    assert "minor-version compatibility (>= 525.60.13 for 12.x)" in verdict.reason
    assert "upgrade the NVIDIA driver to 570.26 or newer" in verdict.reason


def test_too_old_names_the_minimum_it_needs():
    verdict = compat.check_driver("470.256.02", "12.8")
    assert verdict.level == "too_old"
    assert verdict.reason.startswith(
        "driver 470.256.02 is too old for CUDA 12.8: it needs a driver >= 570.26"
    )


def test_minor_compat_does_not_cross_a_major_version():
    # 575 runs 12.x, but 13.x needs the 580 branch: no minor-version compatibility across majors.
    verdict = compat.check_driver("575.64.03", "13.0")
    assert verdict.level == "too_old" and ">= 580.65.06" in verdict.reason


def test_a_runtime_newer_than_the_table_trusts_what_the_driver_says_it_supports():
    assert compat.check_driver("600.10", "13.7", driver_cuda="13.8").level == "ok"
    verdict = compat.check_driver("580.95.05", "13.7", driver_cuda="13.0")
    assert verdict.level == "minor_compat"
    assert "that supports CUDA 13.7" in verdict.reason
