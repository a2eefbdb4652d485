"""The NVML replay answers like pynvml, so checks tested against it meet what a real GPU host says."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_replay_answers_the_recorded_h200(nvml_replay):
    nvml_replay("h200-idle")
    import pynvml

    pynvml.nvmlInit()
    try:
        assert pynvml.nvmlDeviceGetCount() == 1
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        assert pynvml.nvmlDeviceGetName(handle) == "NVIDIA H200"
        assert pynvml.nvmlDeviceGetMemoryInfo(handle).total == 150754820096
        assert pynvml.nvmlDeviceGetCudaComputeCapability(handle) == [9, 0]
        assert pynvml.nvmlDeviceGetTotalEccErrors(handle, 1, 0) == 0
        assert pynvml.nvmlSystemGetDriverVersion() == "580.159.04"
        # recorded as refused by the real driver: raised with NVML's own code
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle)
        # never recorded: answered like a query the board does not support
        with pytest.raises(pynvml.NVMLError) as info:
            pynvml.nvmlDeviceGetFanSpeed(handle)
        assert info.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED
    finally:
        pynvml.nvmlShutdown()


def test_replay_edit_and_processes(nvml_replay):
    def one_ecc_error(data):
        data["devices"][0]["nvmlDeviceGetTotalEccErrors(1,0)"] = 1

    replay = nvml_replay("h200-held", edit=one_ecc_error)
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetTotalEccErrors(handle, 1, 0) == 1
    (proc,) = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert proc.usedGpuMemory > 130 * 2**30
    assert pynvml.nvmlSystemGetProcessName(proc.pid) == "python3"
    pynvml.nvmlShutdown()
    assert replay.data["devices"][0]["nvmlDeviceGetTotalEccErrors(1,0)"] == 1


def test_without_recording_nvml_is_missing(nvml_replay, monkeypatch):
    nvml_replay("h200-idle")
    monkeypatch.delenv("NVML_REPLAY")
    import pynvml

    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        pynvml.nvmlInit()


def test_subprocesses_get_the_replay(nvml_replay):
    replay = nvml_replay("h200-idle")
    code = "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount(), pynvml.__version__)"
    out = subprocess.run([sys.executable, "-c", code], env=replay.env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "replay"], out.stderr
