"""driver: throttle decoding, the per-GPU rules on NVML facts, and the real check on this GPU-less host.

Here `evaluate` gets hand-made dicts shaped like `collect`'s; test_driver_recorded.py runs `collect` on a real
H200's recorded NVML answers, and tests/gpu on a GPU host.
"""

from __future__ import annotations

import copy

import pynvml
import pytest

from verify import nvml
from verify.checks import driver
from verify.context import Context
from verify.result import Status

H100 = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "uuid": "GPU-4b1e0c6e-0000-0000-0000-000000000000",
    "pci_bus_id": "00000000:18:00.0",
    "memory_total_MiB": 81559,
    "memory_used_MiB": 0,
    "compute_capability": "9.0",
    "ecc_mode": "enabled",
    "ecc_uncorrected_volatile": 0,
    "mig_mode": "disabled",
    "persistence_mode": "enabled",
    "throttle_mask": 1,
    "throttle_reasons": ["gpu_idle"],
    "temperature_C": 33,
    "power_W": 71.2,
    "power_limit_W": 700.0,
    "sm_clock_MHz": 345,
    "sm_clock_max_MHz": 1980,
    "pcie": {"gen": 5, "gen_max": 5, "width": 16, "width_max": 16},
    "nvml_errors": {},
}
INFO = {"driver_version": "580.95.05", "driver_cuda": "13.0", "nvml_version": "13.580.95.05", "gpus": [H100]}


def _info(**gpu_changes):
    info = copy.deepcopy(INFO)
    info["gpus"][0].update(gpu_changes)
    return info


def test_throttle_bits_match_nvml_constants():
    names = {
        "gpu_idle": "GpuIdle",
        "applications_clocks_setting": "ApplicationsClocksSetting",
        "sw_power_cap": "SwPowerCap",
        "hw_slowdown": "HwSlowdown",
        "sync_boost": "SyncBoost",
        "sw_thermal_slowdown": "SwThermalSlowdown",
        "hw_thermal_slowdown": "HwThermalSlowdown",
        "hw_power_brake_slowdown": "HwPowerBrakeSlowdown",
        "display_clock_setting": "DisplayClockSetting",
        "board_limit": "BoardLimit",
        "reliability": "Reliability",
    }
    checked = []
    for bit, name in driver.THROTTLE_BITS.items():
        # newer nvidia-ml-py calls them ClocksEventReason; BoardLimit/Reliability exist only in recent ones
        constant = getattr(pynvml, f"nvmlClocksThrottleReason{names[name]}", None)
        if constant is None:
            constant = getattr(pynvml, f"nvmlClocksEventReason{names[name]}", None)
        if constant is not None:
            assert constant == bit, name
            checked.append(name)
    assert set(checked) >= set(list(names)[:9]), "the nine classic reasons are in every nvidia-ml-py"


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        (0, []),
        (0x1, ["gpu_idle"]),
        (0x44, ["sw_power_cap", "hw_thermal_slowdown"]),
        (0x88, ["hw_slowdown", "hw_power_brake_slowdown"]),
        (0x1 | 0x800, ["gpu_idle", "bit_0x800"]),
    ],
)
def test_decode_throttle(mask, names):
    assert driver.decode_throttle(mask) == names


def test_a_healthy_gpu_passes_with_driver_and_gpu_in_the_summary():
    result = driver.evaluate(_info(), "12.8")
    assert result.status is Status.PASS, result.summary
    assert result.summary == (
        "driver 580.95.05 (CUDA 13.0) for runtime 12.8; 1x NVIDIA H100 80GB HBM3 (81559 MiB, cc 9.0)"
    )
    assert result.figures["min_driver"] == "570.26"
    assert result.figures["gpu_count"] == 1 and result.figures["temperature_max_C"] == 33
    assert result.details["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"


def test_eight_gpus_are_counted():
    info = copy.deepcopy(INFO)
    info["gpus"] = [{**H100, "index": i} for i in range(8)]
    assert "8x NVIDIA H100 80GB HBM3" in driver.evaluate(info, "13.0").summary


def test_uncorrected_ecc_errors_fail():
    result = driver.evaluate(_info(ecc_uncorrected_volatile=3), "12.8")
    assert result.status is Status.FAIL
    assert (
        "GPU0 (00000000:18:00.0, GPU-4b1e0c6e-0000-0000-0000-000000000000) has 3 uncorrected ECC errors "
        "since the driver loaded" in result.summary
    )
    assert "nvidia-smi -r -i 0" in result.summary


@pytest.mark.parametrize(
    "reason", ["hw_thermal_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown", "hw_slowdown"]
)
def test_heat_and_power_delivery_throttling_warns(reason):
    result = driver.evaluate(_info(throttle_reasons=[reason], temperature_C=92), "12.8")
    assert result.status is Status.WARN
    assert result.summary.startswith(
        f"GPU0 (00000000:18:00.0, GPU-4b1e0c6e-0000-0000-0000-000000000000) clocks held down: {reason} "
        "(temperature 92 C, power 71.2 of 700.0 W), so benchmarks read low; fix: check the cooling"
    )


@pytest.mark.parametrize(
    "reasons", [["gpu_idle"], ["sw_power_cap"], ["applications_clocks_setting", "sync_boost"]]
)
def test_normal_clock_events_pass(reasons):
    assert driver.evaluate(_info(throttle_reasons=reasons), "12.8").status is Status.PASS


def test_not_supported_queries_are_facts_not_failures():
    na = nvml.NOT_SUPPORTED
    result = driver.evaluate(
        _info(
            ecc_mode=na,
            ecc_uncorrected_volatile=na,
            throttle_reasons=na,
            throttle_mask=na,
            temperature_C=na,
            power_W=na,
            pcie={"gen": na, "gen_max": na, "width": na, "width_max": na},
        ),
        "12.8",
    )
    assert result.status is Status.PASS, result.summary
    assert "temperature_max_C" not in result.figures


def test_an_nvml_error_warns_and_a_lost_gpu_fails():
    warn = driver.evaluate(_info(nvml_errors={"temperature_C": "Unknown Error"}), "12.8")
    assert warn.status is Status.WARN
    assert warn.summary.endswith("): NVML could not read temperature_C (Unknown Error)")
    lost = driver.evaluate(_info(nvml_errors={"handle": "GPU is lost"}), "12.8")
    assert lost.status is Status.FAIL and ") is lost to the driver (GPU is lost)" in lost.summary


def test_an_old_driver_fails_and_names_the_minimum():
    info = {**_info(), "driver_version": "470.256.02", "driver_cuda": "11.4"}
    result = driver.evaluate(info, "12.8")
    assert result.status is Status.FAIL
    assert "it needs a driver >= 570.26" in result.summary
    assert result.details["compat"]["level"] == "too_old"


def test_a_driver_inside_minor_version_compatibility_warns():
    info = {**_info(), "driver_version": "535.216.03", "driver_cuda": "12.2"}
    result = driver.evaluate(info, "12.8")
    assert result.status is Status.WARN and "minor-version compatibility" in result.summary


def test_a_cpu_torch_has_nothing_to_compare_but_the_gpus_are_reported():
    result = driver.evaluate(_info(), None)
    assert result.status is Status.PASS
    assert result.summary.startswith("no CUDA runtime to compare")


def test_pcie_below_maximum_is_reported_not_judged():
    result = driver.evaluate(_info(pcie={"gen": 1, "gen_max": 5, "width": 16, "width_max": 16}), "12.8")
    assert result.status is Status.PASS
    assert (
        result.details["gpus"][0]["pcie_note"]
        == "PCIe link gen1 x16 of gen5 x16 now (GPUs lower it when idle)"
    )


def test_driver_without_gpus_is_a_skip_with_reason():
    result = driver.evaluate({**INFO, "gpus": []}, "12.8")
    assert (result.status, result.summary) == (
        Status.SKIP,
        "NVIDIA driver 580.95.05 loaded but NVML sees no GPU",
    )


def test_probe_records_not_supported_and_errors_with_real_nvml_error_types():
    """Probe's error mapping, with pynvml's own exception classes and codes (no NVML library needed)."""

    class Board:
        NVMLError = pynvml.NVMLError
        NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
        NVML_ERROR_FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND

        @staticmethod
        def nvmlDeviceGetTemperature(_handle):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

        @staticmethod
        def nvmlDeviceGetPowerUsage(_handle):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

        @staticmethod
        def nvmlDeviceGetName(_handle):
            return b"NVIDIA A100-SXM4-80GB"

    probe = nvml.Probe(Board())
    assert probe("temperature_C", "nvmlDeviceGetTemperature", None) == nvml.NOT_SUPPORTED
    assert probe("power_W", "nvmlDeviceGetPowerUsage", None) is None
    assert probe("name", "nvmlDeviceGetName", None) == "NVIDIA A100-SXM4-80GB"
    assert probe("x", "nvmlDeviceGetSomethingFromTheFuture", None) == nvml.NOT_SUPPORTED
    assert probe.errors == {"power_W": "GPU is lost"}


def test_run_on_this_gpu_less_host_skips_with_the_reason():
    if nvml.kernel_driver_version() is not None:
        pytest.skip("this host has an NVIDIA kernel driver; the GPU run covers it")
    result = driver.run(Context())
    assert (result.status, result.summary) == (Status.SKIP, "no NVIDIA driver (NVML not found)")
