"""`verify gate` for real on this host: the torch-free tier a scheduler runs, and faults that must flip it.

- It imports no torch: a `torch` that raises on import is first on PYTHONPATH and the gate still answers.
- An XID written into this machine's real kernel log (/dev/kmsg, root only) FAILs the xid check and the gate
  (exit 1), naming the XID, its PCI address and the fix. Each test writes its own address, so earlier lines
  in the log (the log keeps them until reboot) cannot make it pass or fail by accident.
- The same log read without CAP_SYSLOG (a container's default; kernel.dmesg_restrict=1) is a SKIP that says
  how to allow it.
- Fewer /dev/nvidia<N> nodes than --expect-gpus FAILs the topology check.
The driver's presence is a file under a test root (VERIFY_HOST_ROOT): this host has no NVIDIA driver.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checkrun import REPO, SCHEMA
from jsonschema import Draft202012Validator

KMSG = Path("/dev/kmsg")


def driver_root(tmp_path: Path, gpus: int = 0) -> Path:
    """A container's root as the gate sees it: a loaded driver's version file, `gpus` /dev/nvidia<N> nodes."""
    root = tmp_path / "root"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05\n"
    )
    (root / "dev").mkdir()
    for i in range(gpus):
        (root / "dev" / f"nvidia{i}").touch()
    (root / ".dockerenv").touch()  # without NVML, in a container: a WARN; on a host it would FAIL
    return root


@pytest.fixture(autouse=True)
def _no_real_nvml(no_nvml: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a host without NVML, also on a GPU host (the stand-in pynvml first, no recording)."""
    monkeypatch.setenv("PYTHONPATH", no_nvml["PYTHONPATH"])


def run_gate(tmp_path: Path, *flags: str, prefix: tuple[str, ...] = (), **env: str) -> tuple[int, dict, str]:
    environ = dict(os.environ) | env
    paths = (env.get("PYTHONPATH", ""), os.environ.get("PYTHONPATH", ""), str(REPO))
    environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    environ["COLUMNS"] = "200"
    report = tmp_path / "gate.json"
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "verify", "gate", "--json", str(report), *flags],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    data = json.loads(report.read_text())
    Draft202012Validator(SCHEMA).validate(data)
    return proc.returncode, {r["name"]: r for r in data["results"]}, output


def test_the_gate_runs_its_four_checks_without_importing_torch(tmp_path: Path) -> None:
    poisoned = tmp_path / "poison"
    (poisoned / "torch").mkdir(parents=True)
    (poisoned / "torch/__init__.py").write_text("raise ImportError('the gate imported torch')\n")
    start = time.monotonic()
    code, results, output = run_gate(tmp_path, PYTHONPATH=str(poisoned))
    wall = time.monotonic() - start
    assert list(results) == ["driver", "host", "xid", "topology"]
    assert code == 0, output
    assert all(r["status"] != "fail" for r in results.values()), output
    assert "imported torch" not in output
    print(f"verify gate on this host: {wall:.2f} s wall")


def write_xid(number: int) -> str:
    """One XID line into the real kernel log; returns its PCI address (random, so it is this test's)."""
    if os.geteuid() != 0 or not os.access(KMSG, os.W_OK):
        pytest.skip("writing the kernel log needs root and a writable /dev/kmsg")
    address = f"0000:{random.randrange(0x40, 0xFE):02x}:{random.randrange(0, 0x1F):02x}"
    line = (
        f"<4>NVRM: Xid (PCI:{address}): {number}, pid='<unknown>', name=<unknown>, pytorch-cuda test line\n"
    )
    with KMSG.open("w") as kmsg:
        kmsg.write(line)
    return address


def test_an_xid_in_the_real_kernel_log_fails_the_gate_naming_it(tmp_path: Path) -> None:
    address = write_xid(79)
    code, results, output = run_gate(tmp_path, VERIFY_HOST_ROOT=str(driver_root(tmp_path)))
    assert code == 1, output
    xid = results["xid"]
    assert xid["status"] == "fail", xid["summary"]
    assert f"XID 79 on PCI {address}" in xid["summary"]
    assert "fallen off the bus" in xid["summary"] and "fix: reboot the node" in xid["summary"]
    assert any(e["pci"] == address for e in xid["details"]["events"])


def test_an_application_xid_alone_does_not_fail_it(tmp_path: Path) -> None:
    address = write_xid(13)
    _code, results, _output = run_gate(tmp_path, VERIFY_HOST_ROOT=str(driver_root(tmp_path)))
    events = [e for e in results["xid"]["details"]["events"] if e["pci"] == address]
    assert events and events[0]["xid"] == 13
    assert not any(address in line for line in results["xid"]["summary"].split("; ") if "XID 13" not in line)
    assert any(address in note for note in results["xid"]["details"]["notes"])


def test_the_log_read_without_cap_syslog_is_a_skip_that_says_how_to_allow_it(tmp_path: Path) -> None:
    """As Docker starts a container: root, but without CAP_SYSLOG (dropped from the bounding set)."""
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1":
        pytest.skip("kernel.dmesg_restrict is 0 here: every process may read the log")
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("dropping CAP_SYSLOG needs root and setpriv (util-linux)")
    prefix = (setpriv, "--bounding-set", "-syslog", "--inh-caps", "-syslog", "--")
    code, results, output = run_gate(tmp_path, prefix=prefix, VERIFY_HOST_ROOT=str(driver_root(tmp_path)))
    xid = results["xid"]
    assert xid["status"] == "skip", xid["summary"]
    assert "kernel.dmesg_restrict=1 allows only processes with CAP_SYSLOG" in xid["summary"]
    assert "--cap-add SYSLOG" in xid["summary"]
    assert code == 0, output


def test_fewer_gpu_device_nodes_than_expected_fail_the_gate(tmp_path: Path) -> None:
    root = driver_root(tmp_path, gpus=7)
    code, results, output = run_gate(tmp_path, "--expect-gpus", "8", VERIFY_HOST_ROOT=str(root))
    assert code == 1, output
    assert "7 GPU(s) found by /dev/nvidia<N>" in results["topology"]["summary"]
    code, results, output = run_gate(tmp_path, "--expect-gpus", "7", VERIFY_HOST_ROOT=str(root))
    assert results["topology"]["status"] == "warn", output  # the count holds; NVML missing is said


def test_a_bad_expectation_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "gate", "--expect-gpus", "eight"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--expect-gpus" in proc.stderr and "'eight'" in proc.stderr
