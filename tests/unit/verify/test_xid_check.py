"""The xid check's rules on kernel-log records in /dev/kmsg's format (verify/kmsg.py, verify/checks/xid.py).

The lines are the NVIDIA driver's format, `NVRM: Xid (PCI:0000:3b:00): 79, pid=..., ...`, as the kernel hands
them out of /dev/kmsg (`PRIORITY,SEQ,USEC,FLAGS;MESSAGE`). tests/integration/verify/test_gate_cpu.py writes
such a line into this machine's real kernel log and runs the check on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verify import kmsg
from verify.checks import xid
from verify.context import Context
from verify.result import Status

LOG = """\
6,0,0,-;Linux version 6.8.0 (buildd@lcy02) #1 SMP
4,812,9123456,-;NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
 SUBSYSTEM=pci
 DEVICE=+pci:0000:3b:00.0
6,813,9200000,-;NVRM: GPU at PCI:0000:3b:00: GPU-9f4c1c70-0000-0000-0000-000000000000
4,900,12000000,-;NVRM: Xid (PCI:0000:5d:00): 13, pid=4242, name=python, Graphics Exception: ESR 0x404490
"""


def records(text: str = LOG) -> list[kmsg.Record]:
    return kmsg.parse(text)


def test_parse_reads_each_record_and_skips_continuation_lines() -> None:
    got = records()
    assert [r.seq for r in got] == [0, 812, 813, 900]
    assert got[1].level == 4 and got[1].usec == 9123456
    assert got[1].text.startswith("NVRM: Xid (PCI:0000:3b:00): 79,")


def test_find_events_reads_the_xid_the_address_and_when() -> None:
    events = xid.find_events(records())
    assert [(e.xid, e.pci, e.seq) for e in events] == [(79, "0000:3b:00", 812), (13, "0000:5d:00", 900)]
    assert events[0].seconds_since_boot == pytest.approx(9.123456)
    assert events[0].message.startswith("pid='<unknown>'")


def test_pci_keys_of_nvml_and_of_the_xid_line_match() -> None:
    assert xid.pci_key("00000000:3B:00.0") == xid.pci_key("0000:3b:00") == "0000:3b:00"


def test_a_gpu_that_fell_off_the_bus_fails_naming_the_xid_gpu_and_fix() -> None:
    result = xid.evaluate(xid.find_events(records()), 0, 4, uptime_s=600.0)
    assert result.status is Status.FAIL
    assert "XID 79 on PCI 0000:3b:00" in result.summary
    assert "fallen off the bus" in result.summary and "fix: reboot the node" in result.summary
    assert "min ago" in result.summary
    assert result.figures["xid_fail"] == 1
    # the application's XID 13 is reported, not judged
    assert any("XID 13" in note for note in result.details["notes"])


@pytest.mark.parametrize(
    ("number", "status"),
    [
        (48, Status.FAIL),
        (95, Status.FAIL),
        (119, Status.FAIL),
        (74, Status.FAIL),
        (94, Status.WARN),
        (63, Status.WARN),
        (92, Status.WARN),
        (999, Status.WARN),
        (13, Status.PASS),
        (31, Status.PASS),
        (43, Status.PASS),
    ],
)
def test_each_xid_gets_its_catalogued_verdict(number: int, status: Status) -> None:
    line = f"4,5,1000000,-;NVRM: Xid (PCI:0000:18:00): {number}, pid=1, name=x, words\n"
    result = xid.evaluate(xid.find_events(records(line)), 0, 1)
    assert result.status is status, result.summary
    if status is not Status.PASS:
        assert f"XID {number}" in result.summary and "fix:" in result.summary


def test_repeats_of_one_xid_on_one_gpu_are_one_line_with_a_count() -> None:
    line = "4,{seq},{usec},-;NVRM: Xid (PCI:0000:18:00): 48, pid=1, name=x, DBE\n"
    text = "".join(line.format(seq=s, usec=s * 1000) for s in (10, 11, 12))
    result = xid.evaluate(xid.find_events(records(text)), 0, 3)
    assert result.summary.count("XID 48") == 1 and "(3 times)" in result.summary


def test_an_xid_of_a_gpu_not_visible_here_only_warns() -> None:
    events = [
        xid.XidEvent(79, "0000:3b:00", 5, 1.0, "gone", gpu=None),
        xid.XidEvent(48, "0000:18:00", 6, 2.0, "DBE", gpu="GPU 0 (GPU-abc)"),
    ]
    shared = xid.evaluate(events[:1], 0, 2, gpus_known=True)
    assert shared.status is Status.WARN and "not visible here" in shared.summary
    mine = xid.evaluate(events, 0, 2, gpus_known=True)
    assert mine.status is Status.FAIL and "XID 48 on GPU 0 (GPU-abc)" in mine.summary


def test_no_xid_passes_and_says_how_far_back_the_log_reaches() -> None:
    clean = xid.evaluate([], 0, 120)
    assert clean.status is Status.PASS and "since boot (120 records)" in clean.summary
    wrapped = xid.evaluate([], 6666, 2114)
    assert "from record 6666" in wrapped.summary


def test_a_missing_log_is_a_skip_that_says_how_to_allow_it(tmp_path: Path) -> None:
    driver = tmp_path / "root/proc/driver/nvidia"
    driver.mkdir(parents=True)
    (driver / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05\n")
    options = {"xid": {"kmsg": str(tmp_path / "no-kmsg"), "root": str(tmp_path / "root")}}
    result = xid.run(Context(options=options))
    assert result.status is Status.SKIP
    assert "--device /dev/kmsg --cap-add SYSLOG" in result.summary


def test_no_nvidia_driver_is_a_skip(tmp_path: Path) -> None:
    result = xid.run(Context(options={"xid": {"root": str(tmp_path)}}))
    assert result.status is Status.SKIP and "no NVIDIA kernel driver" in result.summary


def test_a_saved_log_is_read_whole_across_read_sizes(tmp_path: Path) -> None:
    saved = tmp_path / "kmsg.txt"
    filler = "".join(f"6,{i},{i},-;{'x' * 200}\n" for i in range(1, 600))  # > one 64 KiB read
    saved.write_text(filler + "4,600,600,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, gone\n")
    got = kmsg.read_records(saved)
    assert len(got) == 600 and xid.find_events(got)[0].seq == 600


@pytest.mark.parametrize(
    ("action", "status", "words"),
    [
        ("0x2 (Node Reboot Required)", Status.FAIL, "the driver asks for a recovery: Node Reboot Required"),
        ("0x1 (GPU Reset Required)", Status.FAIL, "fix: gpu reset required, as the driver asks"),
        ("0x0 (None)", Status.PASS, "recovery action cleared"),
    ],
)
def test_xid_154_is_judged_by_the_recovery_action_the_driver_names(
    action: str, status: Status, words: str
) -> None:
    head = "4,7,1000000,-;NVRM: Xid (PCI:0000:18:00): 154, "
    line = f"{head}GPU recovery action changed from 0x0 (None) to {action}\n"
    result = xid.evaluate(xid.find_events(records(line)), 0, 1)
    assert result.status is status, result.summary
    assert words in result.summary or any(words in n for n in result.details["notes"])
