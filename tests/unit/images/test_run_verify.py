"""`make verify`'s GPU decision: the host probe, the ways asked of the engine, their order and the messages.

The probe runs on real files and real processes (a made-up nvidia-smi). The run_in_image tests fake the
Docker API only for what the engine here cannot serve (an accepted `--gpus`, `nvidia` runtime or CDI
request); the refusal of every way and the CPU run are tested on the real engine in
tests/engine/test_verify_gpu_access.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from docker.errors import APIError, ImageNotFound
from docker.types import HostConfig

from images.engine import EngineError
from images.gpu_access import (
    CDI,
    HOOK,
    RUNTIME,
    Attempt,
    HostGpus,
    HostProbe,
    no_access_message,
    plan_gpus,
    plan_ways,
    probe_host,
)
from images.run_verify import CONTAINER_LABEL, REQUIRE_GPU_FLAG, NoGpuAccess, run_in_image, verify_command

REPO = Path(__file__).resolve().parents[3]

# `docker info` of the engine these tests run next to (Docker 20.10: no CDISpecDirs key at all) and of a
# Docker 27 GPU host with the toolkit configured as a runtime and CDI enabled.
INFO_HERE = {"ServerVersion": "20.10.24+dfsg1", "Runtimes": {"runc": {"path": "runc"}}}
INFO_GPU_HOST = {
    "ServerVersion": "27.5.1",
    "Runtimes": {"nvidia": {"path": "nvidia-container-runtime"}, "runc": {"path": "runc"}},
    "CDISpecDirs": ["/etc/cdi", "/var/run/cdi"],
}
# What dockerd answers (moby daemon/devices.go, runtime lookup, CDI injection).
NO_GPU_DRIVER = 'could not select device driver "" with capabilities: [[gpu]]'
NO_CDI_DRIVER = 'could not select device driver "cdi" with capabilities: []'
UNKNOWN_RUNTIME = "Unknown runtime specified nvidia"
UNRESOLVED_CDI = "failed to inject CDI devices: unresolvable CDI devices nvidia.com/gpu=all"
H200 = HostGpus(("/dev/nvidia0", "/proc/driver/nvidia/gpus/0000:00:06.0"), ())


def gpu_host(root: Path) -> HostProbe:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev" / "nvidia0").touch()
    return HostProbe.under(root)


# --- the host probe -----------------------------------------------------------------------------------


def test_only_per_gpu_device_nodes_count(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        (dev / name).touch()
    (dev / "nvidia-caps").mkdir()
    host = probe_host(HostProbe.under(tmp_path))
    assert not host.found
    assert f"{dev}/nvidia[0-9]*: absent" in host.looked_at
    (dev / "nvidia0").touch()
    (dev / "nvidia1").touch()
    assert probe_host(HostProbe.under(tmp_path)).evidence == (str(dev / "nvidia0"), str(dev / "nvidia1"))


def test_the_drivers_proc_folder_is_evidence_without_device_nodes(tmp_path: Path) -> None:
    """Device nodes appear only once something opened the GPU (or nvidia-persistenced runs)."""
    gpus = tmp_path / "proc/driver/nvidia/gpus/0000:00:06.0"
    gpus.mkdir(parents=True)
    host = probe_host(HostProbe.under(tmp_path))
    assert host.evidence == (str(gpus),)


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_nvidia_smi_lists_the_gpus(tmp_path: Path) -> None:
    smi = _script(tmp_path / "nvidia-smi", 'echo "GPU 0: NVIDIA H200 (UUID: GPU-b360bc59-0000)"')
    host = probe_host(HostProbe(tmp_path / "dev", tmp_path / "gpus", nvidia_smi=smi))
    assert host.evidence == ("nvidia-smi -L: GPU 0: NVIDIA H200 (UUID: GPU-b360bc59-0000)",)


def test_a_failing_nvidia_smi_is_no_evidence_and_says_why(tmp_path: Path) -> None:
    smi = _script(
        tmp_path / "nvidia-smi",
        'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9',
    )
    host = probe_host(HostProbe(tmp_path / "dev", tmp_path / "gpus", nvidia_smi=smi))
    assert not host.found
    assert any("exit 9" in seen and "couldn't communicate" in seen for seen in host.looked_at)


def test_a_hanging_or_absent_nvidia_smi_is_no_evidence(tmp_path: Path) -> None:
    smi = _script(tmp_path / "nvidia-smi", "exec sleep 30")
    hung = probe_host(
        HostProbe(tmp_path / "dev", tmp_path / "gpus", nvidia_smi=smi, nvidia_smi_timeout_s=0.5)
    )
    assert not hung.found and any("no answer within" in seen for seen in hung.looked_at)
    absent = probe_host(HostProbe(tmp_path / "dev", tmp_path / "gpus", nvidia_smi="no-such-nvidia-smi"))
    assert not absent.found and "`no-such-nvidia-smi -L`: not installed" in absent.looked_at


def test_the_probe_under_a_root_never_runs_nvidia_smi(tmp_path: Path) -> None:
    assert HostProbe.under(tmp_path).nvidia_smi is None
    assert len(probe_host(HostProbe.under(tmp_path)).looked_at) == 2


# --- which ways, in which order -----------------------------------------------------------------------


def test_this_engine_offers_only_the_hook_way() -> None:
    ways, skipped = plan_ways(INFO_HERE)
    assert ways == [HOOK]
    reasons = {a.way.key: a.said for a in skipped}
    assert "not listed by `docker info` (Runtimes: runc)" in reasons["runtime"]
    assert "Docker 20.10.24+dfsg1" in reasons["cdi"] and "Docker 25+" in reasons["cdi"]
    assert not any(a.tried for a in skipped)


def test_a_gpu_host_offers_hook_then_runtime_then_cdi() -> None:
    ways, skipped = plan_ways(INFO_GPU_HOST)
    assert [w.key for w in ways] == ["hook", "runtime", "cdi"]
    assert skipped == []


def test_an_engine_with_cdi_off_lists_no_spec_dirs() -> None:
    ways, skipped = plan_ways({**INFO_GPU_HOST, "CDISpecDirs": []})
    assert [w.key for w in ways] == ["hook", "runtime"]
    assert skipped[0].way is CDI and "CDI is off" in skipped[0].said


def test_the_requests_are_what_the_docker_cli_sends() -> None:
    """`--gpus all`, `--runtime nvidia`, `--device nvidia.com/gpu=all`, serialised by docker-py."""
    hook = HostConfig(version="1.43", device_requests=list(HOOK.device_requests))
    assert hook["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    cdi = HostConfig(version="1.44", device_requests=list(CDI.device_requests))
    assert cdi["DeviceRequests"][0]["Driver"] == "cdi"
    assert cdi["DeviceRequests"][0]["DeviceIDs"] == ["nvidia.com/gpu=all"]
    assert RUNTIME.runtime == "nvidia" and RUNTIME.environment == {"NVIDIA_VISIBLE_DEVICES": "all"}


# --- GPUs or CPU -----------------------------------------------------------------------------------------

NO_GPU = HostGpus((), ("/dev/nvidia[0-9]*: absent", "/proc/driver/nvidia/gpus/*: absent"))


@pytest.mark.parametrize(
    ("mode", "host", "want"),
    [("auto", H200, True), ("auto", NO_GPU, False), ("all", NO_GPU, True), ("all", H200, True),
     ("none", H200, False), ("none", NO_GPU, False)],
)  # fmt: skip
def test_the_mode_and_the_host_decide(mode: str, host: HostGpus, want: bool) -> None:
    assert plan_gpus(mode, host).want_gpu is want


def test_a_cpu_host_is_told_why_and_how_to_force_gpus() -> None:
    reason = plan_gpus("auto", NO_GPU).reason
    assert "no NVIDIA GPU" in reason and "/dev/nvidia[0-9]*: absent" in reason and "GPUS=all" in reason
    remote = plan_gpus("auto", NO_GPU, remote_engine="tcp://gpu-box:2376").reason
    assert "tcp://gpu-box:2376" in remote and "not the engine's" in remote
    with pytest.raises(ValueError, match="auto, all, none"):
        plan_gpus("some", H200)


# --- the FAIL message ------------------------------------------------------------------------------------


def test_no_toolkit_names_the_install_and_configure_steps() -> None:
    _, skipped = plan_ways(INFO_HERE)
    message = no_access_message(H200, [Attempt(HOOK, NO_GPU_DRIVER, True), *skipped], INFO_HERE)
    assert "/dev/nvidia0" in message and NO_GPU_DRIVER in message
    assert "NVIDIA Container Toolkit is not installed" in message
    assert "sudo apt-get install -y nvidia-container-toolkit" in message
    assert "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker" in message
    assert "or with CDI" not in message  # Docker 20.10 has no CDI: not offered as a fix
    assert "make verify GPUS=none" in message


def test_cdi_off_on_a_recent_engine_offers_cdi_as_a_second_fix() -> None:
    info = {**INFO_HERE, "ServerVersion": "27.5.1", "CDISpecDirs": []}
    _, skipped = plan_ways(info)
    message = no_access_message(H200, [Attempt(HOOK, NO_GPU_DRIVER, True), *skipped], info)
    assert "or with CDI: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`" in message
    assert "--cdi.enabled" in message and '"features": {"cdi": true}' in message


def test_an_advertised_cdi_without_the_nvidia_spec_names_cdi_generate() -> None:
    attempts = [
        Attempt(HOOK, NO_GPU_DRIVER, True),
        Attempt(RUNTIME, UNKNOWN_RUNTIME, True),
        Attempt(CDI, UNRESOLVED_CDI, True),
    ]
    message = no_access_message(H200, attempts, INFO_GPU_HOST)
    assert "NVIDIA Container Toolkit is not installed" in message  # unknown runtime: not installed either
    assert "no spec in /etc/cdi, /var/run/cdi gives nvidia.com/gpu=all" in message
    assert "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in message


def test_cdi_refused_for_want_of_its_driver_means_cdi_is_off() -> None:
    message = no_access_message(
        H200, [Attempt(HOOK, NO_GPU_DRIVER, True), Attempt(CDI, NO_CDI_DRIVER, True)], {}
    )
    assert "CDI: dockerd has CDI off" in message and "--cdi.enabled" in message


def test_a_toolkit_that_fails_is_told_apart_from_a_missing_one() -> None:
    broken = "nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown"
    attempts = [Attempt(HOOK, broken, True), Attempt(RUNTIME, broken, True)]
    message = no_access_message(H200, attempts, {**INFO_GPU_HOST, "CDISpecDirs": []})
    assert "is there but could not set up the GPUs" in message and "nvidia-container-cli info" in message
    assert "not installed" not in message


# --- run_in_image, with a fake engine for what the engine here cannot serve -------------------------------


class FakeEngine:
    """The docker.APIClient calls run_in_image makes. `refuse(host_config, environment)` returns
    ("create" | "start", the engine's words) for a way this engine would refuse, or None."""

    def __init__(self, info: dict[str, Any], refuse: Callable[[dict, dict], tuple[str, str] | None]) -> None:
        self._info = info
        self._refuse = refuse
        self.created: list[dict[str, Any]] = []
        self.started: list[str] = []
        self.removed: list[str] = []

    def inspect_image(self, image: str) -> dict:
        if image != "pytorch-cuda:v2.8":
            raise ImageNotFound(image)
        return {}

    def info(self) -> dict:
        return self._info

    def create_host_config(self, **kwargs: Any) -> HostConfig:
        return HostConfig(version="1.44", **kwargs)

    def create_container(self, image: str, **kwargs: Any) -> dict:
        cid = f"c{len(self.created)}"
        self.created.append({"id": cid, **kwargs})
        refusal = self._refuse(kwargs["host_config"], kwargs.get("environment") or {})
        if refusal and refusal[0] == "create":
            self.created.pop()
            raise APIError("400 Client Error", explanation=refusal[1])
        return {"Id": cid}

    def start(self, cid: str) -> None:
        spec = next(c for c in self.created if c["id"] == cid)
        refusal = self._refuse(spec["host_config"], spec.get("environment") or {})
        if refusal:
            raise APIError("500 Server Error", explanation=refusal[1])
        self.started.append(cid)

    def logs(self, cid: str, **_: Any) -> Iterator[bytes]:
        yield b"verify: 6 checks\n"

    def wait(self, cid: str) -> dict:
        return {"StatusCode": 0}

    def get_archive(self, cid: str, path: str) -> tuple:
        raise APIError("404 Client Error", response=requests.Response(), explanation="no such path")

    def remove_container(self, cid: str, force: bool = False) -> None:
        self.removed.append(cid)


def hook_refused_runtime_and_cdi_served(host_config: dict, environment: dict) -> tuple[str, str] | None:
    """An engine whose dockerd never found the toolkit's hook (`--gpus` fails) but has the `nvidia` runtime
    and CDI configured."""
    requests_ = host_config.get("DeviceRequests") or []
    if any(r["Driver"] == "" for r in requests_):
        return ("start", NO_GPU_DRIVER)
    return None


def run(engine: FakeEngine, tmp_path: Path, **kwargs: Any) -> tuple[Any, str]:
    out = io.StringIO()
    client: Any = engine  # duck-typed docker.APIClient
    outcome = run_in_image(
        "pytorch-cuda:v2.8", tmp_path / "reports", ["--quick"], client=client, out=out, **kwargs
    )
    return outcome, out.getvalue()


def test_the_nvidia_runtime_serves_when_the_hook_is_refused(tmp_path: Path) -> None:
    info = {**INFO_GPU_HOST, "CDISpecDirs": []}
    engine = FakeEngine(info, hook_refused_runtime_and_cdi_served)
    outcome, said = run(engine, tmp_path, probe=gpu_host(tmp_path / "host"))
    assert outcome.gpu and outcome.way == RUNTIME.label and outcome.exit_code == 0
    first, second = engine.created
    assert first["host_config"]["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert second["host_config"]["Runtime"] == "nvidia" and "DeviceRequests" not in second["host_config"]
    assert second["environment"] == {"NVIDIA_VISIBLE_DEVICES": "all"}
    assert second["command"][-2:] == [REQUIRE_GPU_FLAG, "--quick"]
    assert engine.removed == ["c0", "c1"]  # the refused container and, after the run, the one that ran
    assert engine.started == ["c1"]
    assert f"the engine refused {HOOK.label}: {NO_GPU_DRIVER}" in said
    assert "with all GPUs through the `nvidia` runtime" in said


def test_cdi_serves_when_neither_hook_nor_runtime_is_there(tmp_path: Path) -> None:
    info = {**INFO_GPU_HOST, "Runtimes": {"runc": {"path": "runc"}}}
    engine = FakeEngine(info, hook_refused_runtime_and_cdi_served)
    outcome, said = run(engine, tmp_path, probe=gpu_host(tmp_path / "host"))
    assert outcome.way == CDI.label
    served = engine.created[-1]
    assert served["host_config"]["DeviceRequests"][0]["Driver"] == "cdi"
    assert served["host_config"]["DeviceRequests"][0]["DeviceIDs"] == ["nvidia.com/gpu=all"]
    assert REQUIRE_GPU_FLAG in served["command"]
    assert served["labels"] == {CONTAINER_LABEL: "cdi"}
    assert "with all GPUs through CDI `--device nvidia.com/gpu=all`" in said


def test_the_hook_is_asked_first_and_alone_when_it_serves(tmp_path: Path) -> None:
    engine = FakeEngine(INFO_GPU_HOST, lambda hc, env: None)
    outcome, said = run(engine, tmp_path, probe=gpu_host(tmp_path / "host"))
    assert outcome.way == HOOK.label and len(engine.created) == 1
    assert "refused" not in said


def test_every_way_refused_is_the_toolkit_fail_and_leaves_nothing(tmp_path: Path) -> None:
    def refuse_all(host_config: dict, environment: dict) -> tuple[str, str]:
        if host_config.get("Runtime") == "nvidia":
            return ("create", UNKNOWN_RUNTIME)
        cdi = any(r["Driver"] == "cdi" for r in host_config.get("DeviceRequests") or [])
        return ("start", UNRESOLVED_CDI if cdi else NO_GPU_DRIVER)

    engine = FakeEngine(INFO_GPU_HOST, refuse_all)
    with pytest.raises(NoGpuAccess) as failed:
        run(engine, tmp_path, probe=gpu_host(tmp_path / "host"))
    assert isinstance(failed.value, EngineError)  # the CLI's exit 1, no traceback
    assert "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in str(failed.value)
    assert engine.started == [] and sorted(engine.removed) == [c["id"] for c in engine.created]


def test_a_cpu_host_hides_gpus_and_does_not_require_them(tmp_path: Path) -> None:
    engine = FakeEngine(INFO_GPU_HOST, lambda hc, env: None)
    outcome, said = run(engine, tmp_path, probe=HostProbe.under(tmp_path / "empty"))
    (only,) = engine.created
    assert not outcome.gpu and outcome.way == "no GPU"
    assert "DeviceRequests" not in only["host_config"] and "Runtime" not in only["host_config"]
    assert only["environment"] == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert REQUIRE_GPU_FLAG not in only["command"]
    assert "on CPU only: this host shows no NVIDIA GPU" in said


def test_gpus_all_requires_gpus_the_probe_did_not_see(tmp_path: Path) -> None:
    engine = FakeEngine(INFO_GPU_HOST, lambda hc, env: None)
    outcome, said = run(engine, tmp_path, probe=HostProbe.under(tmp_path / "empty"), gpus="all")
    assert outcome.gpu and REQUIRE_GPU_FLAG in engine.created[0]["command"]
    assert "--gpus all (GPUS=all) requires GPUs (the host probe found none)" in said


def test_gpus_all_on_an_engine_without_gpus_says_gpus_were_required() -> None:
    message = no_access_message(NO_GPU, [Attempt(HOOK, NO_GPU_DRIVER, True)], INFO_HERE)
    assert message.startswith("--gpus all requires GPUs but the Docker engine gives a container none")


def test_gpus_none_runs_on_the_cpu_of_a_gpu_host(tmp_path: Path) -> None:
    engine = FakeEngine(INFO_GPU_HOST, lambda hc, env: None)
    outcome, said = run(engine, tmp_path, probe=gpu_host(tmp_path / "host"), gpus="none")
    assert not outcome.gpu and engine.created[0]["environment"] == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert REQUIRE_GPU_FLAG not in engine.created[0]["command"]
    assert "on CPU only: --gpus none (GPUS=none) asked for the CPU" in said


def test_verify_command_puts_require_gpu_before_the_users_arguments() -> None:
    command = verify_command(["--only", "env"], require_gpu=True)
    assert command[command.index("run") :] == [
        "run", "--json", "/tmp/verify-report/verify.json", "--junit", "/tmp/verify-report/verify.xml",
        REQUIRE_GPU_FLAG, "--only", "env",
    ]  # fmt: skip


# --- make verify and the GPU CI job ----------------------------------------------------------------------


def test_make_verify_passes_gpus_through() -> None:
    dry = subprocess.run(
        ["make", "-n", "verify", "GPUS=all", "VERIFY_ARGS=--quick"], cwd=REPO, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "verify --tag v2.8 --flavor runtime --gpus all -- --quick" in dry.stdout
    plain = subprocess.run(["make", "-n", "verify"], cwd=REPO, capture_output=True, text=True).stdout
    assert "--gpus" not in plain  # the CLI's default: auto


def test_the_gpu_ci_job_requires_the_gpus() -> None:
    """A self-hosted GPU runner whose container gets no GPU must go red, not verify on the CPU."""
    workflow = yaml.safe_load((REPO / ".github/workflows/images.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["gpu"]["steps"]
    (verify,) = [s for s in steps if "make verify" in s.get("run", "")]
    assert 'make verify TAG="$TAG" FLAVOR="$FLAVOR" GPUS=all' in verify["run"]


def test_an_unknown_gpus_value_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "images", "verify", "--gpus", "some"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "invalid choice: 'some'" in proc.stderr
