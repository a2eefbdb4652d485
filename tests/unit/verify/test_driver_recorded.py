"""driver on a real H200's recorded NVML answers (tests/nvml_replay), through the real collect() path.

Each test edits one recorded answer (named in the test) to make a fault a healthy card cannot be made to
show; everything else is what the GPU said. h200-held.json is a real recording with another process
(pid 483, python3) holding 130.5 GiB.
"""

from __future__ import annotations

import os

import pytest

from verify.checks import driver
from verify.result import Status

WHERE = "GPU0 (00000000:00:06.0, GPU-b360bc59-811c-f617-4d21-e808a2fbf02a)"


@pytest.fixture
def check(nvml_replay):
    """check(recording, edit_gpu0=fn, runtime=None) -> the driver Result on the replayed host."""

    def run(recording="h200-idle", edit_gpu0=None, edit=None, runtime=None):
        def apply(data):
            if edit_gpu0 is not None:
                edit_gpu0(data["devices"][0])
            if edit is not None:
                edit(data)

        nvml_replay(recording, edit=apply)
        return driver.evaluate(driver.collect(), runtime)

    return run


def test_idle_h200_passes_its_615_mib_driver_reserve_is_no_process(check):
    result = check("h200-idle")
    assert result.status is Status.PASS, result.summary
    assert result.summary == (
        "no CUDA runtime to compare (torch is a CPU build or missing); 1x NVIDIA H200 (143771 MiB, cc 9.0)"
    )
    assert result.figures["gpu0_memory_used_MiB"] == 615 and result.figures["other_processes"] == 0
    gpu = result.details["gpus"][0]
    assert gpu["processes"] == [] and gpu["retired_pages_pending"] == "not supported"  # as H200 answered
    assert gpu["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False}


def test_held_h200_warns_naming_the_process_and_the_fix(check):
    result = check("h200-held")  # no edit: the real recording
    assert result.status is Status.WARN
    assert result.summary.startswith(
        f"{WHERE}: other processes hold GPU memory: pid 483 (python3) 130.5 GiB; 9.3 GiB of 140.4 GiB free."
    )
    assert "nvidia-smi --query-compute-apps=pid,name,used_memory --format=csv" in result.summary
    assert "stop pid 483 or pick a free GPU with CUDA_VISIBLE_DEVICES" in result.summary
    assert result.figures["gpu0_memory_free_MiB"] == 9509
    assert result.figures["other_processes_MiB"] == 133638
    assert result.details["gpus"][0]["processes"][0]["name"] == "python3"


def test_this_process_is_not_counted_as_another(check):
    def holder_is_us(gpu):  # edited: the holder's pid is this test process
        gpu["nvmlDeviceGetComputeRunningProcesses"][0]["pid"] = os.getpid()

    result = check("h200-held", holder_is_us)
    assert result.status is Status.PASS, result.summary
    assert result.details["gpus"][0]["processes"][0]["this_process"] is True
    assert result.figures["other_processes"] == 0


def test_memory_held_by_a_process_nvml_does_not_list_warns(check):
    def unlisted(gpu):  # edited: NVML lists no process, the 130 GiB stay used (another VM, a hidden pid)
        gpu["nvmlDeviceGetComputeRunningProcesses"] = []

    result = check("h200-held", unlisted)
    assert result.status is Status.WARN
    assert result.summary.startswith(f"{WHERE}: 131.1 GiB of GPU memory is in use by no process NVML lists")


def test_a_volatile_uncorrected_ecc_error_fails(check):
    def one_error(gpu):  # edited: uncorrected, volatile ECC count 0 -> 1
        gpu["nvmlDeviceGetTotalEccErrors(1,0)"] = 1

    result = check("h200-idle", one_error)
    assert result.status is Status.FAIL
    assert result.summary.startswith(f"{WHERE} has 1 uncorrected ECC errors since the driver loaded")
    assert "nvidia-smi -r -i 0" in result.summary and "RMA" in result.summary
    assert result.figures["ecc_uncorrected_total"] == 1


def test_lifetime_uncorrected_ecc_errors_are_reported_not_judged(check):
    def old_errors(gpu):  # edited: uncorrected, aggregate (lifetime) ECC count 0 -> 5
        gpu["nvmlDeviceGetTotalEccErrors(1,1)"] = 5

    result = check("h200-idle", old_errors)
    assert result.status is Status.PASS, result.summary
    assert result.details["gpus"][0]["ecc_uncorrected_aggregate"] == 5


def test_a_failed_row_remapping_fails_with_drain_and_rma(check):
    def failed(gpu):  # edited: nvmlDeviceGetRemappedRows failureOccurred 0 -> 1
        gpu["nvmlDeviceGetRemappedRows"] = [0, 0, 0, 1]

    result = check("h200-idle", failed)
    assert result.status is Status.FAIL
    assert result.summary.startswith(f"{WHERE}: a memory row remapping failed")
    assert "drain the node and RMA the GPU" in result.summary
    assert "nvidia-smi -q -d ROW_REMAPPER -i 0" in result.summary


def test_a_pending_row_remapping_warns_reset_when_idle(check):
    def pending(gpu):  # edited: nvmlDeviceGetRemappedRows isPending 0 -> 1
        gpu["nvmlDeviceGetRemappedRows"] = [0, 0, 1, 0]

    result = check("h200-idle", pending)
    assert result.status is Status.WARN
    assert result.summary.startswith(f"{WHERE} has a memory row remapping pending")
    assert "takes effect at the next GPU reset" in result.summary
    assert "nvidia-smi -r -i 0" in result.summary


def test_pages_pending_retirement_fail(check):
    def pending(gpu):  # edited: "Not Supported" (as the H200 answered) -> pending, as a pre-Ampere GPU says
        gpu["nvmlDeviceGetRetiredPagesPendingStatus"] = 1

    result = check("h200-idle", pending)
    assert result.status is Status.FAIL
    assert result.summary.startswith(f"{WHERE} has memory pages pending retirement")
    assert "reload the NVIDIA driver or reboot" in result.summary


def test_hardware_thermal_slowdown_warns(check):
    def hot(gpu):  # edited: clock event reasons 0x1 (idle) -> 0x40 (hw_thermal_slowdown)
        gpu["nvmlDeviceGetCurrentClocksEventReasons"] = 0x40

    result = check("h200-idle", hot)
    assert result.status is Status.WARN
    assert result.summary.startswith(
        f"{WHERE} clocks held down: hw_thermal_slowdown (temperature 37 C, power 80.0 of 700.0 W)"
    )


def test_a_pcie_link_below_its_maximum_is_a_note(check):
    def gen3(gpu):  # edited: current PCIe generation 5 -> 3
        gpu["nvmlDeviceGetCurrPcieLinkGeneration"] = 3

    result = check("h200-idle", gen3)
    assert result.status is Status.PASS, result.summary
    assert result.details["gpus"][0]["pcie_note"] == (
        "PCIe link gen3 x16 of gen5 x16 now (GPUs lower it when idle)"
    )


def test_a_slot_that_caps_the_gpus_pcie_generation_is_a_note(check):
    def gen4_slot(gpu):  # edited: link max and current 5 -> 4; added: the GPU's own max gen 5 (not recorded)
        gpu.update(
            nvmlDeviceGetMaxPcieLinkGeneration=4,
            nvmlDeviceGetCurrPcieLinkGeneration=4,
            nvmlDeviceGetGpuMaxPcieLinkGeneration=5,
        )

    result = check("h200-idle", gen4_slot)
    assert result.status is Status.PASS, result.summary
    assert result.details["gpus"][0]["pcie_note"].startswith(
        "the slot caps the link at gen4, the GPU supports gen5"
    )


MIG_DEVICES = [  # an H200 split as 1g.18gb + 3g.71gb: names as NVML spells MIG devices, sizes illustrative
    {
        "index": 0,
        "nvmlDeviceGetName": "NVIDIA H200 MIG 1g.18gb",
        "nvmlDeviceGetUUID": "MIG-11111111-2222-3333-4444-555555555555",
        "nvmlDeviceGetMemoryInfo": {"total": 17716740096, "free": 17641242624, "used": 75497472},
        "nvmlDeviceGetGpuInstanceId": 13,
        "nvmlDeviceGetComputeInstanceId": 0,
    },
    {
        "index": 1,
        "nvmlDeviceGetName": "NVIDIA H200 MIG 3g.71gb",
        "nvmlDeviceGetUUID": "MIG-66666666-7777-8888-9999-000000000000",
        "nvmlDeviceGetMemoryInfo": {"total": 74625056768, "free": 74549559296, "used": 75497472},
        "nvmlDeviceGetGpuInstanceId": 2,
        "nvmlDeviceGetComputeInstanceId": 0,
    },
]


def test_mig_devices_are_listed(check):
    def mig(
        gpu,
    ):  # edited: MIG mode on, 7 MIG slots, two MIG devices (not recorded: the H200 ran without MIG)
        gpu.update(nvmlDeviceGetMigMode=[1, 1], nvmlDeviceGetMaxMigDeviceCount=7, mig_devices=MIG_DEVICES)

    result = check("h200-idle", mig)
    assert result.status is Status.PASS, result.summary
    assert result.summary.endswith(
        "GPU0 in MIG mode: 2 MIG devices (NVIDIA H200 MIG 1g.18gb, NVIDIA H200 MIG 3g.71gb)"
    )
    gpu = result.details["gpus"][0]
    assert gpu["mig_mode"] == "enabled" and result.figures["mig_devices"] == 2
    assert [(m["name"], m["uuid"], m["memory_total_MiB"]) for m in gpu["mig_devices"]] == [
        ("NVIDIA H200 MIG 1g.18gb", "MIG-11111111-2222-3333-4444-555555555555", 16896),
        ("NVIDIA H200 MIG 3g.71gb", "MIG-66666666-7777-8888-9999-000000000000", 71168),
    ]


def test_mig_mode_without_mig_devices_warns(check):
    def mig_empty(gpu):  # edited: MIG mode [0, 0] -> [1, 1]; no MIG device was created
        gpu["nvmlDeviceGetMigMode"] = [1, 1]

    result = check("h200-idle", mig_empty)
    assert result.status is Status.WARN
    assert result.summary.startswith(f"{WHERE} is in MIG mode with no MIG device, so CUDA cannot run on it")


def _driver(version):
    def edit(data):  # edited: the driver version string only (its CUDA stays the recorded 13.0)
        data["system"]["nvmlSystemGetDriverVersion"] = version

    return edit


def test_a_driver_inside_minor_version_compatibility_warns_with_the_upgrade(check):
    result = check("h200-idle", edit=_driver("580.65.06"), runtime="13.1")
    assert result.status is Status.WARN
    assert "runs it only through CUDA minor-version compatibility (>= 580.65.06 for 13.x)" in result.summary
    assert result.summary.endswith("fix: upgrade the NVIDIA driver to 590.44.01 or newer")
    assert result.details["compat"]["level"] == "minor_compat"
    newer = check("h200-idle", edit=_driver("580.65.06"), runtime="13.2")  # newer than the table knows
    assert newer.status is Status.WARN and "a driver that supports CUDA 13.2" in newer.summary


def test_a_driver_too_old_fails_naming_the_minimum(check):
    result = check("h200-idle", edit=_driver("570.86.15"), runtime="13.0")
    assert result.status is Status.FAIL
    assert result.summary.startswith(
        "driver 570.86.15 is too old for CUDA 13.0: it needs a driver >= 580.65.06; "
        "fix: upgrade the NVIDIA driver to 580.65.06 or newer"
    )


def test_the_recorded_driver_passes_for_its_own_cuda(check):
    result = check("h200-idle", runtime="13.0")  # no edit
    assert result.status is Status.PASS
    assert result.summary.startswith("driver 580.159.04 (CUDA 13.0) for runtime 13.0; 1x NVIDIA H200")


def test_an_nvml_error_warns_and_a_lost_gpu_fails(check):
    def unknown(gpu):  # edited: nvmlDeviceGetRemappedRows answers NVML_ERROR_UNKNOWN
        gpu["nvmlDeviceGetRemappedRows"] = {"nvml_error": 999}

    warn = check("h200-idle", unknown)
    assert warn.status is Status.WARN
    assert warn.summary == f"{WHERE}: NVML could not read remapped_rows (Unknown Error)"

    def lost(gpu):  # edited: the ECC query answers NVML_ERROR_GPU_IS_LOST
        gpu["nvmlDeviceGetTotalEccErrors(1,0)"] = {"nvml_error": 15}

    failed = check("h200-idle", lost)
    assert failed.status is Status.FAIL and f"{WHERE} is lost to the driver (GPU is lost)" in failed.summary
