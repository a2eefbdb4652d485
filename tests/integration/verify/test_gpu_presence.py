"""`verify run --only gpu` for real on this CPU machine, with each "GPU not used" fault made for real.

This machine has no GPU; what a GPU host says is supplied where it can be: NVML answers are the real H200's
(tests/nvml_replay, recording h200-idle), and the device nodes /dev/nvidia<N> come from VERIFY_HOST_ROOT, a
temp dir (a real GPU device node cannot be made without the NVIDIA driver, and the check only asks whether
one exists). Everything else is real: the CLI, the check's own process, CPU torch, the environment variables.
With CPU torch every "present" case also has the cause "CPU-only build"; each test asserts the cause it is
about on top of that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from checkrun import CheckRun, run_check

H200_UUID = "GPU-b360bc59-811c-f617-4d21-e808a2fbf02a"
HIDING = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "VERIFY_REQUIRE_GPU",
)


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """An empty host: no /dev/nvidia<N>, no /proc/driver/nvidia (this machine's own /dev is not read)."""
    root = tmp_path / "host"
    (root / "dev").mkdir(parents=True)
    return root


@pytest.fixture
def no_nvml(nvml_replay) -> dict[str, str]:
    """An environment whose pynvml finds no NVML library, like a host without the driver (deterministic even
    where a real libnvidia-ml is installed): the replay shim without a recording."""
    env = dict(nvml_replay("h200-idle").env)
    del env["NVML_REPLAY"]
    return env


def run_gpu(env: dict[str, str], tmp_path: Path, *flags: str, **variables: str) -> tuple[int, dict, CheckRun]:
    """`python -m verify run --only gpu` -> (exit code, the gpu result, the run)."""
    env = {k: v for k, v in env.items() if k not in HIDING} | variables
    run = run_check("gpu", tmp_path, env, *flags, timeout=300)
    return run.returncode, run.result, run


def cause_keys(result: dict) -> list[str]:
    return [c["key"] for c in result["details"]["presence"]["verdict"]["causes"]]


def test_a_cpu_torch_on_a_gpu_host_fails_naming_the_build(nvml_replay, host_root, tmp_path):
    replay = nvml_replay("h200-idle")
    code, result, proc = run_gpu(replay.env, tmp_path, VERIFY_HOST_ROOT=str(host_root))
    assert code == 1 and result["status"] == "fail"
    assert cause_keys(result) == ["cpu_only_torch"]
    assert "NVML lists 1 GPU(s) (NVIDIA H200)" in result["summary"]
    assert "is a CPU-only build (torch.version.cuda is None)" in result["summary"]
    assert "fix: install a CUDA build of torch" in result["summary"]
    assert "FAIL" in proc.output


def test_empty_cuda_visible_devices_fails_naming_it(nvml_replay, host_root, tmp_path):
    replay = nvml_replay("h200-idle")
    code, result, _ = run_gpu(replay.env, tmp_path, VERIFY_HOST_ROOT=str(host_root), CUDA_VISIBLE_DEVICES="")
    assert code == 1 and result["status"] == "fail"
    assert "cuda_visible_devices" in cause_keys(result)
    assert "CUDA_VISIBLE_DEVICES is set but empty, which hides every GPU" in result["summary"]
    assert f"0 = {H200_UUID} (NVIDIA H200)" in result["summary"]


def test_a_cuda_visible_devices_ordinal_that_does_not_exist_fails_naming_it(nvml_replay, host_root, tmp_path):
    replay = nvml_replay("h200-idle")
    code, result, _ = run_gpu(replay.env, tmp_path, VERIFY_HOST_ROOT=str(host_root), CUDA_VISIBLE_DEVICES="7")
    assert code == 1 and result["status"] == "fail"
    assert "cuda_visible_devices" in cause_keys(result)
    assert (
        "CUDA_VISIBLE_DEVICES='7': its first entry '7' names no GPU (ordinals here: 0)" in result["summary"]
    )
    assert f"ids that exist here: 0 = {H200_UUID}" in result["summary"]


def test_nvidia_visible_devices_void_fails_when_a_gpu_is_required(no_nvml, host_root, tmp_path):
    # a container started with NVIDIA_VISIBLE_DEVICES=void: no NVML library, no device nodes
    code, result, _ = run_gpu(
        no_nvml, tmp_path, "--require-gpu", VERIFY_HOST_ROOT=str(host_root), NVIDIA_VISIBLE_DEVICES="void"
    )
    assert code == 1 and result["status"] == "fail"
    assert cause_keys(result)[:2] == ["no_gpu", "nvidia_visible_devices"]
    assert "no GPU found but --require-gpu" in result["summary"]
    assert "NVIDIA_VISIBLE_DEVICES='void' asks the NVIDIA Container Toolkit for no GPU" in result["summary"]
    assert "docker run --gpus all" in result["summary"]


def test_no_gpu_and_no_flag_is_a_skip_as_before(no_nvml, host_root, tmp_path):
    code, result, _ = run_gpu(no_nvml, tmp_path, VERIFY_HOST_ROOT=str(host_root))
    assert code == 0 and result["status"] == "skip"
    assert result["summary"].startswith("no GPU: torch.cuda.is_available() is False (torch ")
    assert (
        "none on this host either: NVML: NVML not found, no /dev/nvidia<N> device node" in result["summary"]
    )
    assert "--require-gpu makes this a FAIL" in result["summary"]


@pytest.mark.parametrize(
    ("flags", "variables"), [(("--require-gpu",), {}), ((), {"VERIFY_REQUIRE_GPU": "1"})]
)
def test_no_gpu_fails_when_required(no_nvml, host_root, tmp_path, flags, variables):
    code, result, _ = run_gpu(no_nvml, tmp_path, *flags, VERIFY_HOST_ROOT=str(host_root), **variables)
    assert code == 1 and result["status"] == "fail"
    assert cause_keys(result)[0] == "no_gpu"
    assert "no GPU found but --require-gpu (or VERIFY_REQUIRE_GPU=1) requires one" in result["summary"]


def test_a_device_node_without_nvml_is_a_gpu_present(no_nvml, host_root, tmp_path):
    (host_root / "dev" / "nvidia0").write_text("")  # stands for the device node the driver creates
    code, result, _ = run_gpu(no_nvml, tmp_path, VERIFY_HOST_ROOT=str(host_root))
    assert code == 1 and result["status"] == "fail"
    assert "GPUs present (device nodes /dev/nvidia0) (NVML unusable: NVML not found)" in result["summary"]
    assert cause_keys(result) == ["cpu_only_torch"]
