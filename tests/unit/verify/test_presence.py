"""GPUs present but unusable: every cause named, on the NVML answers of the real H200 (tests/nvml_replay).

The host facts come from the recording `h200-idle` (1x NVIDIA H200, driver 580.159.04) read through the real
collector; torch's side is what torch 2.11+cu130 reported on that host (the CUDA error texts below were
measured there). Where a test changes the recording, it says which field.

MIG: there is no MIG recording (the lent H200 must not be switched to MIG mode), so the MIG cases are the
real H200 recording with MIG mode and MIG devices edited in (`mig_edit`): nvmlDeviceGetMigMode [1, 1],
nvmlDeviceGetMaxMigDeviceCount 7, and MIG devices with UUID, GPU instance and compute instance ids.
"""

from __future__ import annotations

import dataclasses

import pytest

from verify import presence
from verify.presence import Facts, MigDevice, NvmlGpu, visible_devices
from verify.result import Status

H200_UUID = "GPU-b360bc59-811c-f617-4d21-e808a2fbf02a"
NO_GPUS = "RuntimeError: No CUDA GPUs are available"  # torch.cuda.init() on the H200 with a hiding CVD
MIG_A = "MIG-c788539f-c1ea-5a36-8b4d-9b07d024b1bb"  # GPU instance 1, compute instance 0
MIG_B = "MIG-405bbda1-6b05-535f-9702-f95e8cd170ce"  # GPU instance 1, compute instance 1
MIG_C = "MIG-b4b2228d-6933-5839-bc0e-41ab9edb61c6"  # GPU instance 2, compute instance 0


def mig_edit(*migs: tuple[str, int, int], driver: str | None = None):
    """Edit the H200 recording into a MIG-mode GPU with these (uuid, GPU instance, compute instance)."""

    def edit(data: dict) -> None:
        device = data["devices"][0]
        device["nvmlDeviceGetMigMode"] = [1, 1]
        device["nvmlDeviceGetMaxMigDeviceCount"] = 7
        device["mig_devices"] = [
            {
                "index": slot,
                "nvmlDeviceGetUUID": uuid,
                "nvmlDeviceGetName": "NVIDIA H200 MIG 3g.71gb",
                "nvmlDeviceGetGpuInstanceId": gi,
                "nvmlDeviceGetComputeInstanceId": ci,
            }
            for slot, (uuid, gi, ci) in enumerate(migs)
        ]
        if driver:
            data["system"]["nvmlSystemGetDriverVersion"] = driver

    return edit


@pytest.fixture
def host(nvml_replay):
    """host(edit=None, **torch_and_env) -> Facts: the H200 as NVML answers (through the real collector),
    torch 2.11+cu130 seeing `torch_count` devices, no device nodes (NVML is the witness) unless given."""

    def make(edit=None, recording: str = "h200-idle", **changes) -> Facts:
        nvml_replay(recording, edit=edit)
        gpus, error, driver = presence.collect_nvml()
        base = Facts(
            nvml_gpus=gpus,
            nvml_error=error,
            driver_version=driver,
            device_nodes=(),
            proc_gpus=(),
            cuda_visible_devices=None,
            nvidia_visible_devices=None,
            nvidia_driver_capabilities=None,
            in_container=False,
            torch_version="2.11.0+cu130",
            torch_cuda="13.0",
            torch_count=1,
            cuda_error=None,
        )
        return dataclasses.replace(base, **changes)

    return make


def keys(verdict: presence.Verdict) -> list[str]:
    return [c.key for c in verdict.causes]


# ---- collecting from the recording -------------------------------------------------------------------------


def test_collect_nvml_reads_the_h200(nvml_replay):
    nvml_replay("h200-idle")
    gpus, error, driver = presence.collect_nvml()
    assert error is None and driver == "580.159.04"
    assert gpus == (NvmlGpu(0, H200_UUID, "NVIDIA H200", False, ()),)


def test_collect_nvml_reads_mig_devices(nvml_replay):
    nvml_replay("h200-idle", edit=mig_edit((MIG_A, 1, 0), (MIG_C, 2, 0)))
    (gpu,), _, _ = presence.collect_nvml()
    assert gpu.mig_enabled
    assert gpu.mig_devices == (MigDevice(MIG_A, 1, 0), MigDevice(MIG_C, 2, 0))


def test_collect_nvml_without_the_library(nvml_replay, monkeypatch):
    nvml_replay("h200-idle")
    monkeypatch.delenv("NVML_REPLAY")
    assert presence.collect_nvml() == (None, "NVML not found", None)


def test_collect_host_reads_device_nodes_under_the_host_root(tmp_path):
    (tmp_path / "dev").mkdir()
    for name in ("nvidia10", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (tmp_path / "dev" / name).write_text("")
    (tmp_path / "proc/driver/nvidia/gpus/0000:00:06.0").mkdir(parents=True)
    (tmp_path / ".dockerenv").write_text("")
    assert presence.collect_host(tmp_path) == (("/dev/nvidia2", "/dev/nvidia10"), ("0000:00:06.0",), True)
    assert presence.collect_host(tmp_path / "nowhere") == ((), (), False)


# ---- CUDA_VISIBLE_DEVICES grammar (four plain GPUs) --------------------------------------------------------

FOUR = tuple(NvmlGpu(i, f"GPU-{c * 4}{i}aaa-0000", "NVIDIA H100 80GB HBM3") for i, c in enumerate("1234"))


@pytest.mark.parametrize(
    ("cvd", "expected", "stopped_at"),
    [
        (None, [0, 1, 2, 3], None),
        ("", [], None),
        ("0", [0], None),
        ("2,0", [2, 0], None),
        ("1, 3", [1, 3], None),
        ("0,7,1", [0], "7"),  # CUDA stops at the first invalid entry
        ("7,0", [], "7"),  # ... so a bad first entry hides everything
        ("0,-1,1", [0], "-1"),
        ("1abc", [1], None),  # ordinals are read like strtoul
        (FOUR[1].uuid, [1], None),
        ("GPU-3333,GPU-1111", [2, 0], None),  # unique UUID prefixes are accepted
        ("GPU-", [], "GPU-"),  # ambiguous prefix names no device
        ("GPU-9999", [], "GPU-9999"),
        (
            "1,1",
            [],
            "1",
        ),  # a device named twice: CUDA exposes none (seen on the H200: invalid device ordinal)
        ("0,2,GPU-3333", [], "GPU-3333"),  # ... also when named once by ordinal and once by UUID
        ("NoDevFiles", [], "NoDevFiles"),
        ("MIG-bogus", [], "MIG-bogus"),
    ],
)
def test_visible_devices(cvd, expected, stopped_at):
    seen = visible_devices(cvd, FOUR, "580.159.04")
    assert [d.gpu for d in seen.devices] == expected
    assert seen.stopped_at == stopped_at


def test_a_repeated_device_fails_naming_the_repeat(host):
    # What the H200 answered for CUDA_VISIBLE_DEVICES=0,0 (scripts/gpu_faults.sh, 2026-12-01).
    error = "RuntimeError: Unexpected error from cudaGetDeviceCount(). Error 101: invalid device ordinal"
    verdict = presence.diagnose(
        host(cuda_visible_devices="0,0", torch_count=0, cuda_error=error), require_gpu=False
    )
    assert verdict.status is Status.FAIL
    (cause,) = [c for c in verdict.causes if c.key == "cuda_visible_devices"]
    assert "entry '0' repeats GPU 0" in cause.message and "named twice" in cause.message


def test_visible_devices_on_a_host_without_gpus():
    assert visible_devices(None, (), None).devices == ()
    assert visible_devices("0", (), None).stopped_at == "0"


# ---- present but unusable: each cause on the H200 ----------------------------------------------------------


def test_a_healthy_h200_is_measured(host):
    verdict = presence.diagnose(host(), require_gpu=True)
    assert verdict.status is None and verdict.expected == 1 and verdict.warnings == ()


def test_cpu_only_torch_on_a_gpu_host_fails_naming_the_build_and_the_fix(host):
    facts = host(torch_version="2.13.0+cpu", torch_cuda=None, torch_count=0)
    verdict = presence.diagnose(facts, require_gpu=False)
    assert verdict.status is Status.FAIL
    assert keys(verdict) == ["cpu_only_torch"]
    assert "NVML lists 1 GPU(s) (NVIDIA H200)" in verdict.summary
    assert "torch 2.13.0+cpu is a CPU-only build" in verdict.summary
    assert "download.pytorch.org/whl/cu" in verdict.summary


def test_empty_cuda_visible_devices_fails_naming_it(host):
    verdict = presence.diagnose(host(cuda_visible_devices="", torch_count=0, cuda_error=NO_GPUS), False)
    assert verdict.status is Status.FAIL
    assert keys(verdict) == ["cuda_visible_devices", "cuda_error"]
    assert "CUDA_VISIBLE_DEVICES is set but empty" in verdict.summary
    assert f"0 = {H200_UUID} (NVIDIA H200)" in verdict.summary  # the ids that exist
    assert "CUDA says: RuntimeError: No CUDA GPUs are available" in verdict.summary


@pytest.mark.parametrize(
    ("cvd", "bad", "why"),
    [
        ("7", "'7'", "names no GPU (ordinals here: 0)"),
        ("GPU-bogus", "'GPU-bogus'", "names no GPU UUID"),
        ("MIG-bogus", "'MIG-bogus'", "names no MIG device"),
        ("-1", "'-1'", "is negative"),
        ("7,0", "'7'", "CUDA never reads '0'"),
    ],
)
def test_cuda_visible_devices_naming_nothing_fails_naming_the_entry(host, cvd, bad, why):
    verdict = presence.diagnose(host(cuda_visible_devices=cvd, torch_count=0, cuda_error=NO_GPUS), False)
    assert verdict.status is Status.FAIL
    assert keys(verdict)[0] == "cuda_visible_devices"
    cause = verdict.causes[0].message
    assert f"its first entry {bad}" in cause and why in cause
    assert f"0 = {H200_UUID}" in cause


def test_cpu_only_build_is_named_before_the_hiding_variable(host):
    facts = host(cuda_visible_devices="7", torch_version="2.13.0+cpu", torch_cuda=None, torch_count=0)
    assert keys(presence.diagnose(facts, False)) == ["cpu_only_torch", "cuda_visible_devices"]


def test_a_bad_entry_after_a_good_one_keeps_the_good_one_and_warns(host):
    verdict = presence.diagnose(host(cuda_visible_devices="0,7", torch_count=1), False)
    assert verdict.status is None and verdict.expected == 1
    (warning,) = verdict.warnings
    assert "entry '7' names no GPU" in warning and "exposes only GPU 0" in warning


def test_a_uuid_prefix_selects_the_gpu(host):
    verdict = presence.diagnose(host(cuda_visible_devices="GPU-b360bc59-", torch_count=1), False)
    assert verdict.status is None and verdict.warnings == ()


def test_driver_too_old_for_the_wheels_cuda(host):
    def old_driver(data):  # the recording's driver replaced by a 12.x-era one
        data["system"]["nvmlSystemGetDriverVersion"] = "550.54.15"

    error = "RuntimeError: The NVIDIA driver on your system is too old (found version 12040)."
    verdict = presence.diagnose(host(edit=old_driver, torch_count=0, cuda_error=error), False)
    assert keys(verdict) == ["driver_too_old", "cuda_error"]
    assert "driver 550.54.15 is too old for CUDA 13.0" in verdict.summary
    assert "580.65.06" in verdict.summary  # the minimum, from verify/compat.py


def test_driver_too_old_said_by_cuda_alone_when_nvml_is_unusable(host):
    facts = host(
        nvml_gpus=None,
        nvml_error="NVML not found",
        driver_version=None,
        device_nodes=("/dev/nvidia0",),
        torch_count=0,
        cuda_error="RuntimeError: CUDA driver version is insufficient for CUDA runtime version",
    )
    verdict = presence.diagnose(facts, False)
    assert verdict.status is Status.FAIL and keys(verdict)[0] == "driver_too_old"
    assert "upgrade the NVIDIA driver" in verdict.summary


def test_any_other_cuda_error_is_quoted_verbatim(host):
    error = "RuntimeError: CUDA unknown error - this may be due to an incorrectly set up environment"
    verdict = presence.diagnose(host(torch_count=0, cuda_error=error), False)
    assert keys(verdict) == ["cuda_error"]
    assert error in verdict.summary and "dmesg" in verdict.summary


def test_torch_seeing_more_or_fewer_than_cuda_should_is_a_failure(host):
    verdict = presence.diagnose(host(torch_count=2), False)
    assert verdict.status is Status.FAIL and keys(verdict) == ["count_mismatch"]
    assert "torch sees 2 GPU(s) but NVML lists 1" in verdict.summary


def test_container_without_compute_capability(host):
    facts = host(in_container=True, nvidia_driver_capabilities="utility", torch_count=0, cuda_error=NO_GPUS)
    verdict = presence.diagnose(facts, False)
    assert keys(verdict)[0] == "driver_capabilities"
    assert "NVIDIA_DRIVER_CAPABILITIES='utility' lacks 'compute'" in verdict.summary


def test_device_nodes_without_nvml_are_evidence(host):
    facts = host(
        nvml_gpus=None,
        nvml_error="NVML not found",
        driver_version=None,
        device_nodes=("/dev/nvidia0",),
        in_container=True,
        nvidia_driver_capabilities="compute",
        cuda_visible_devices="3",
        torch_count=0,
        cuda_error=NO_GPUS,
    )
    verdict = presence.diagnose(facts, False)
    assert verdict.status is Status.FAIL and verdict.expected is None
    assert "device nodes /dev/nvidia0" in verdict.summary
    assert "lacks 'utility', so libnvidia-ml is not mounted" in verdict.summary
    assert keys(verdict)[0] == "cuda_visible_devices" and "ordinals here: 0" in verdict.summary


# ---- absent ------------------------------------------------------------------------------------------------


def absent(host, **changes) -> Facts:
    fields = {"nvml_gpus": None, "nvml_error": "NVML not found", "driver_version": None, "torch_count": 0}
    return host(**(fields | changes))


def test_no_gpu_is_a_skip_without_the_flag(host):
    verdict = presence.diagnose(absent(host), require_gpu=False)
    assert verdict.status is Status.SKIP
    assert verdict.summary.startswith(
        "no GPU: torch.cuda.is_available() is False (torch.cuda.device_count() is 0)"
    )
    assert "none on this host either: NVML: NVML not found" in verdict.summary
    assert verdict.summary.endswith("(--require-gpu makes this a FAIL)")


def test_no_gpu_fails_when_required_and_names_how_to_give_gpus(host):
    verdict = presence.diagnose(absent(host, nvidia_visible_devices="void"), require_gpu=True)
    assert verdict.status is Status.FAIL
    assert keys(verdict) == ["no_gpu", "nvidia_visible_devices"]
    assert "no GPU found but --require-gpu" in verdict.summary
    assert "NVIDIA_VISIBLE_DEVICES='void'" in verdict.summary and "--gpus all" in verdict.summary


def test_nvml_with_zero_gpus_is_absent(host):
    verdict = presence.diagnose(absent(host, nvml_gpus=(), nvml_error=None), require_gpu=False)
    assert verdict.status is Status.SKIP and "NVML: lists 0 GPUs" in verdict.summary


# ---- MIG (the H200 recording with MIG edited in) -----------------------------------------------------------


def test_mig_unset_gives_one_device_per_gpu_instance(host):
    facts = host(edit=mig_edit((MIG_A, 1, 0), (MIG_B, 1, 1), (MIG_C, 2, 0)), torch_count=2)
    verdict = presence.diagnose(facts, False)
    assert verdict.status is None and verdict.expected == 2  # no false FAIL on a MIG host
    assert [d.mig_uuid for d in visible_devices(None, facts.nvml_gpus, facts.driver_version).devices] == [
        MIG_A,
        MIG_C,
    ]


def test_mig_before_r570_gives_a_single_device(host):
    facts = host(edit=mig_edit((MIG_A, 1, 0), (MIG_C, 2, 0), driver="550.54.15"), torch_count=1)
    verdict = presence.diagnose(facts, False)
    assert verdict.status is None and verdict.expected == 1
    assert "lets a CUDA process use one MIG device" in verdict.warnings[0]


@pytest.mark.parametrize(
    "cvd",
    [MIG_C, MIG_C[:12], f"MIG-{H200_UUID}/2/0"],  # MIG-<uuid>, a unique prefix, the pre-R470 form
)
def test_mig_uuid_in_cuda_visible_devices_selects_that_device(host, cvd):
    facts = host(edit=mig_edit((MIG_A, 1, 0), (MIG_C, 2, 0)), cuda_visible_devices=cvd, torch_count=1)
    verdict = presence.diagnose(facts, False)
    assert verdict.status is None and verdict.expected == 1 and verdict.warnings == ()
    (device,) = visible_devices(cvd, facts.nvml_gpus, facts.driver_version).devices
    assert device.mig_uuid == MIG_C


def test_two_compute_instances_of_one_gpu_instance_give_one_device(host):
    facts = host(edit=mig_edit((MIG_A, 1, 0), (MIG_B, 1, 1)), cuda_visible_devices=f"{MIG_A},{MIG_B}")
    seen = visible_devices(facts.cuda_visible_devices, facts.nvml_gpus, facts.driver_version)
    assert [d.mig_uuid for d in seen.devices] == [MIG_A]
    assert "shares GPU instance 1" in seen.notes[0]


def test_mig_and_plain_gpus_together(host):
    def two_gpus(data):  # a second, plain GPU: a copy of the recorded H200 with another UUID
        mig_edit((MIG_A, 1, 0), (MIG_C, 2, 0))(data)
        plain = {k: v for k, v in data["devices"][0].items() if k != "mig_devices"}
        plain |= {
            "nvmlDeviceGetUUID": "GPU-00000000-0000-0000-0000-000000000001",
            "nvmlDeviceGetMigMode": [0, 0],
        }
        data["devices"].append(plain)

    facts = host(edit=two_gpus)
    assert len(visible_devices(None, facts.nvml_gpus, "580.159.04").devices) == 3  # R570+: both MIGs + GPU 1
    assert len(visible_devices(None, facts.nvml_gpus, "550.54.15").devices) == 1  # before: one MIG, no GPU


def test_a_bogus_mig_id_fails_listing_the_mig_devices(host):
    facts = host(
        edit=mig_edit((MIG_A, 1, 0)), cuda_visible_devices="MIG-bogus", torch_count=0, cuda_error=NO_GPUS
    )
    verdict = presence.diagnose(facts, False)
    assert verdict.status is Status.FAIL and keys(verdict)[0] == "cuda_visible_devices"
    assert f"MIG: {MIG_A}" in verdict.summary


def test_mig_mode_without_mig_devices_is_named(host):
    verdict = presence.diagnose(host(edit=mig_edit(), torch_count=0, cuda_error=NO_GPUS), False)
    assert verdict.status is Status.FAIL and keys(verdict)[0] == "mig_without_devices"
    assert "nvidia-smi -i 0 -mig 0" in verdict.summary
