"""The topology check's rules: GPU count against what is expected, NVLink per link, the NVSwitch fabric's
registration, and InfiniBand/RoCE ports read from a sysfs tree laid out as the kernel documents it
(Documentation/ABI/stable/sysfs-class-infiniband: ports/N/{state,phys_state,rate,link_layer,counters/*}).

NVML answers come from a real H200's recording (tests/nvml_replay) with the field each test names changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from verify.checks import topology
from verify.context import Context
from verify.result import Status


@pytest.fixture(autouse=True)
def _no_real_nvml(no_nvml: dict[str, str]) -> None:
    """A GPU host's own NVML and Slurm job must not answer for the trees and recordings these tests build."""


STATES = {"ACTIVE": "4: ACTIVE", "DOWN": "1: DOWN", "INIT": "2: INIT"}
PHYS = {"LinkUp": "5: LinkUp", "Disabled": "3: Disabled", "Polling": "2: Polling"}


def ib_port(
    root: Path, device: str, port: int, state: str = "ACTIVE", phys: str = "LinkUp", **counters: int
) -> None:
    base = root / "sys/class/infiniband" / device / "ports" / str(port)
    (base / "counters").mkdir(parents=True)
    (base / "state").write_text(STATES[state] + "\n")
    (base / "phys_state").write_text(PHYS[phys] + "\n")
    (base / "rate").write_text("400 Gb/sec (4X NDR)\n")
    (base / "link_layer").write_text("InfiniBand\n")
    for name in topology.IB_COUNTERS:
        (base / "counters" / name).write_text(f"{counters.get(name, 0)}\n")


def run_under(root: Path, **options: Any) -> Any:
    return topology.run(Context(options={"topology": {"root": str(root), **options}}))


def test_eight_active_ports_pass_with_their_rate(tmp_path: Path) -> None:
    for i in range(8):
        ib_port(tmp_path, f"mlx5_{i}", 1)
    result = run_under(tmp_path, expect_ib_ports=8)
    assert result.status is Status.PASS, result.summary
    assert "8 IB/RoCE port(s) ACTIVE (400 Gb/sec (4X NDR))" in result.summary
    assert result.figures["ib_ports_active"] == 8


def test_a_port_up_without_a_subnet_manager_fails(tmp_path: Path) -> None:
    ib_port(tmp_path, "mlx5_0", 1)
    ib_port(tmp_path, "mlx5_1", 1, state="INIT")
    result = run_under(tmp_path)
    assert result.status is Status.FAIL
    assert "mlx5_1 port 1 is physically up but INIT" in result.summary and "subnet manager" in result.summary


def test_a_port_down_warns_unless_a_count_is_expected_then_fails(tmp_path: Path) -> None:
    ib_port(tmp_path, "mlx5_0", 1)
    ib_port(tmp_path, "mlx5_1", 1, state="DOWN", phys="Polling")
    loose = run_under(tmp_path)
    assert loose.status is Status.WARN and "mlx5_1 port 1 is DOWN (Polling)" in loose.summary
    strict = run_under(tmp_path, expect_ib_ports=2)
    assert strict.status is Status.FAIL
    assert (
        "1 InfiniBand port(s) ACTIVE, 2 expected" in strict.summary and "mlx5_1 port 1 DOWN" in strict.summary
    )


def test_a_flapping_link_warns_with_its_count(tmp_path: Path) -> None:
    ib_port(tmp_path, "mlx5_0", 1, link_downed=3, symbol_error=12)
    result = run_under(tmp_path)
    assert result.status is Status.WARN and "went down 3 time(s)" in result.summary
    assert result.details["ports"][0]["counters"]["symbol_error"] == 12


def test_a_node_with_nothing_to_check_skips(tmp_path: Path) -> None:
    result = run_under(tmp_path)
    assert result.status is Status.SKIP and "nothing to check" in result.summary


def device_nodes(root: Path, count: int, container: bool = True) -> None:
    """/dev/nvidia<N> stand-ins (files) under a test root; `container`: the root is a container's."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / "dev" / f"nvidia{i}").touch()
    (root / "dev/nvidiactl").touch()  # not a GPU
    if container:
        (root / ".dockerenv").touch()


def test_fewer_gpus_than_expected_fails_counted_by_device_nodes_without_nvml(tmp_path: Path) -> None:
    """A container with device nodes and no NVML library: the count falls back to /dev/nvidia<N>."""
    device_nodes(tmp_path, 7)
    result = run_under(tmp_path, expect_gpus=8)
    assert result.status is Status.FAIL
    assert (
        "7 GPU(s) found by /dev/nvidia<N>" in result.summary
        and "8 expected (--expect-gpus)" in result.summary
    )
    enough = run_under(tmp_path, expect_gpus=7)
    assert enough.status is Status.WARN, enough.summary  # NVML missing in a container: said, not failed
    assert "NVIDIA_DRIVER_CAPABILITIES must include utility" in enough.summary


def test_a_driver_without_a_working_nvml_on_a_host_fails(tmp_path: Path) -> None:
    """The driver loaded (device nodes) but NVML not starting, on a host: e.g. a driver upgraded without a
    reboot (NVML/RM version mismatch). No GPU health can be read, so the node is not fit."""
    device_nodes(tmp_path, 8, container=False)
    result = run_under(tmp_path, expect_gpus=8)
    assert result.status is Status.FAIL
    assert "the NVIDIA driver is loaded (/dev/nvidia<N>) but NVML cannot start" in result.summary
    assert "reboot" in result.summary


def test_a_gpu_nvml_cannot_open_fails_by_name_and_is_not_counted(
    nvml_replay: Callable[..., Any], tmp_path: Path
) -> None:
    """Changed: NVML cannot open the recorded H200's GPU 0 ("Unknown Error", 999), as with a GPU that fell
    off the bus."""

    def lost(data: dict[str, Any]) -> None:
        data["devices"][0]["nvmlDeviceGetHandleByIndex"] = {"nvml_error": 999, "message": "Unknown Error"}

    replay = nvml_replay("h200-idle", edit=lost)
    count = len(replay.data["devices"])
    result = run_under(tmp_path, expect_gpus=count)
    assert result.status is Status.FAIL
    assert "GPU 0: NVML cannot open it" in result.summary
    assert f"{count - 1} GPU(s) found by NVML" in result.summary


def test_a_mig_gpu_counts_as_its_mig_devices(nvml_replay: Callable[..., Any], tmp_path: Path) -> None:
    """Changed: GPU 0 of the recorded H200 in MIG mode with 3 MIG devices (Slurm's GRES counts each)."""

    def mig(data: dict[str, Any]) -> None:
        data["devices"][0]["nvmlDeviceGetMigMode"] = [1, 1]
        data["devices"][0]["nvmlDeviceGetMaxMigDeviceCount"] = 7
        data["devices"][0]["mig_devices"] = [{"index": i, "nvmlDeviceGetUUID": f"MIG-{i}"} for i in range(3)]

    replay = nvml_replay("h200-idle", edit=mig)
    count = len(replay.data["devices"]) - 1 + 3
    assert run_under(tmp_path, expect_gpus=count).status is Status.PASS
    assert run_under(tmp_path, expect_gpus=count + 1).status is Status.FAIL


def test_an_active_ethernet_port_does_not_stand_in_for_an_infiniband_one(tmp_path: Path) -> None:
    ib_port(tmp_path, "mlx5_0", 1)
    ib_port(tmp_path, "mlx5_1", 1, state="DOWN", phys="Disabled")
    ib_port(tmp_path, "mlx5_2", 1)
    (tmp_path / "sys/class/infiniband/mlx5_2/ports/1/link_layer").write_text("Ethernet\n")
    result = run_under(tmp_path, expect_ib_ports=2)
    assert result.status is Status.FAIL and "1 InfiniBand port(s) ACTIVE, 2 expected" in result.summary


def test_slurm_gpus_on_node_is_the_expectation_when_none_is_given(tmp_path: Path) -> None:
    facts = topology.collect({"root": str(tmp_path)}, environ={"SLURM_GPUS_ON_NODE": "4"})
    assert (facts.expect_gpus, facts.expect_source) == (4, "SLURM_GPUS_ON_NODE")
    result = topology.evaluate(facts)
    assert result.status is Status.FAIL and "4 expected (SLURM_GPUS_ON_NODE)" in result.summary


Edit = Callable[[dict[str, Any]], None]


def with_links(states: list[int]) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        for link, state in enumerate(states):
            data["devices"][0][f"nvmlDeviceGetNvLinkState({link})"] = state

    return edit


def with_fabric(state: int, status: int = 0) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["devices"][0]["nvmlDeviceGetGpuFabricInfo"] = {
            "clusterUuid": [0] * 16,
            "status": status,
            "cliqueId": 1,
            "state": state,
        }

    return edit


def test_the_recorded_h200_passes_with_its_gpu_count(nvml_replay: Callable[..., Any], tmp_path: Path) -> None:
    replay = nvml_replay("h200-idle")
    count = len(replay.data["devices"])
    result = run_under(tmp_path, expect_gpus=count)
    assert result.status is Status.PASS, result.summary
    assert f"{count} GPU(s) by NVML" in result.summary


def test_some_nvlinks_down_fail_naming_the_links(nvml_replay: Callable[..., Any], tmp_path: Path) -> None:
    """Changed: GPU 0's NVLink states (the recording answered none): 16 of 18 up, links 3 and 9 down."""
    nvml_replay("h200-idle", edit=with_links([0 if i in (3, 9) else 1 for i in range(18)]))
    result = run_under(tmp_path)
    assert result.status is Status.FAIL
    assert "2 of 18 NVLinks down (links 3, 9)" in result.summary


def test_all_nvlinks_up_pass_and_none_up_is_no_nvlink(
    nvml_replay: Callable[..., Any], tmp_path: Path
) -> None:
    nvml_replay("h200-idle", edit=with_links([1] * 18))
    up = run_under(tmp_path)
    assert up.status is Status.PASS and "NVLink 18 links active on 1 GPU(s)" in up.summary
    nvml_replay("h200-idle", edit=with_links([0] * 18))
    assert "no NVLink in use" in run_under(tmp_path).summary


@pytest.mark.parametrize(("state", "words"), [(1, "not started"), (2, "in progress")])
def test_a_fabric_not_registered_fails_naming_the_fabric_manager(
    nvml_replay: Callable[..., Any], tmp_path: Path, state: int, words: str
) -> None:
    """Changed: GPU 0's fabric info (the recorded H200 answered 'not supported')."""
    nvml_replay("h200-idle", edit=with_fabric(state))
    result = run_under(tmp_path)
    assert result.status is Status.FAIL
    assert f"GPU fabric registration {words}" in result.summary and "nvidia-fabricmanager" in result.summary
    assert "error 802" in result.summary


def test_a_fabric_registered_with_an_error_fails_and_a_good_one_passes(
    nvml_replay: Callable[..., Any], tmp_path: Path
) -> None:
    nvml_replay("h200-idle", edit=with_fabric(3, status=999))
    assert run_under(tmp_path).status is Status.FAIL
    nvml_replay("h200-idle", edit=with_fabric(3, status=0))
    good = run_under(tmp_path)
    assert good.status is Status.PASS and "fabric registered on 1 GPU(s)" in good.summary


def test_the_recorded_h100_vm_has_no_nvlink_and_no_fabric_and_passes(
    nvml_replay: Callable[..., Any], tmp_path: Path
) -> None:
    """As recorded on the lent H100 (one GPU of an HGX board in a VM): every NVLink query NOT_SUPPORTED and
    the fabric state 0 (not supported). Neither may read as a fault."""
    nvml_replay("h100-idle")
    result = run_under(tmp_path, expect_gpus=1)
    assert result.status is Status.PASS, result.summary
    assert result.summary.startswith("1 GPU(s) by NVML (--expect-gpus 1); no NVLink in use")
    assert run_under(tmp_path, expect_gpus=2).status is Status.FAIL


def set_counter(root: Path, device: str, name: str, value: int) -> None:
    (root / "sys/class/infiniband" / device / "ports/1/counters" / name).write_text(f"{value}\n")


def test_error_counters_that_rose_since_the_last_run_warn(tmp_path: Path) -> None:
    """--state-dir keeps each port's counters; the next run names what rose, and by how much."""
    root, state = tmp_path / "root", tmp_path / "state"
    ib_port(root, "mlx5_0", 1, symbol_error=5)
    ib_port(root, "mlx5_1", 1)
    first = run_under(root, state_dir=str(state))
    assert first.status is Status.PASS, (
        first.summary
    )  # nothing to compare with yet; 5 old errors are not news
    set_counter(root, "mlx5_0", "symbol_error", 17)
    set_counter(root, "mlx5_0", "port_rcv_errors", 3)
    second = run_under(root, state_dir=str(state))
    assert second.status is Status.WARN
    assert "mlx5_0 port 1: error counters rose since the last run (" in second.summary
    assert "port_rcv_errors +3, symbol_error +12" in second.summary and "mlx5_1" not in second.summary
    third = run_under(root, state_dir=str(state))  # nothing rose since the second run
    assert third.status is Status.PASS, third.summary


def test_cleared_counters_are_no_rise(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    ib_port(root, "mlx5_0", 1, symbol_error=40)
    run_under(root, state_dir=str(state))
    set_counter(root, "mlx5_0", "symbol_error", 0)  # perfquery -x -R: counters reset
    assert run_under(root, state_dir=str(state)).status is Status.PASS


def test_an_unwritable_state_dir_is_said_not_raised(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ib_port(root, "mlx5_0", 1)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = run_under(root, state_dir=str(blocked / "state"))
    assert result.status is Status.WARN
    assert "error counters not compared with the last run" in result.summary


def test_a_pass_with_a_spare_port_down_counts_only_the_active_ones(tmp_path: Path) -> None:
    """--expect-ib-ports 1 met, a second (spare) port DOWN: the summary must not call it ACTIVE."""
    ib_port(tmp_path, "mlx5_0", 1)
    ib_port(tmp_path, "mlx5_1", 1, state="DOWN", phys="Disabled")
    result = run_under(tmp_path, expect_ib_ports=1)
    assert result.status is Status.PASS, result.summary
    assert "1 of 2 IB/RoCE port(s) ACTIVE" in result.summary
