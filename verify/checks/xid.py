"""xid: has the NVIDIA driver reported a GPU error (an XID) in the kernel log since boot?

The driver writes every GPU error it sees to the kernel log as `NVRM: Xid (PCI:0000:3b:00): 79, pid=...,
GPU has fallen off the bus.` Cluster health tools (DCGM, Azure's and Google's node checks, NVIDIA's
k8s-device-plugin) read these lines because many faults show nowhere else until a job dies: an XID 79 GPU
is gone until the node reboots, an XID 48 double-bit ECC error means the card needs a reset. No torch: it
reads /dev/kmsg (verify/kmsg.py) and, where NVML answers, maps the PCI address to the GPU's index and UUID.

Rules, from NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors) and the XIDs the k8s-device-plugin
treats as application errors (CATALOGUE below holds each one's words and fix):
- an XID whose catalogued action is a GPU reset, a reboot or a hardware check (48, 62, 64, 74, 79, 95, 119,
  120, 140, ...): FAIL naming the XID, the GPU, when, and the fix;
- one that asks for attention but leaves the GPU usable (63, 92, 94) or that verify does not know: WARN;
- one caused by an application (13, 31, 43, 45, 68, 109): reported, not judged;
- 154: by the recovery action the driver names in the line (a reset or a reboot: FAIL; None: a note);
- in a container, an XID on a PCI address that is none of the GPUs NVML shows here (another container's
  GPU, in the host's shared log): WARN at most, naming the address; on a host every XID counts (a GPU that
  fell off the bus may be missing from NVML's list: that is the fault);
- the log cannot be read (an unprivileged container, dmesg_restrict): SKIP saying how to allow it; no
  NVIDIA kernel driver loaded (/proc/driver/nvidia/version): SKIP, there is no GPU to report on;
- no XID: PASS, saying how far back the log reaches.
Scope is "since boot": the XIDs that ask for a reset or reboot stay until one is done, which is when the
node should return. `options["xid"]`: `kmsg` reads another file (a saved log, a test's), `root` looks for
the driver under another tree (as the host check's `root`).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from verify import kmsg, nvml, presence
from verify.context import Context
from verify.result import Result, Status

NAME = "xid"
DESCRIPTION = "NVIDIA XID errors in the kernel log since boot (reset/reboot ones FAIL)"
DEFAULT_TIMEOUT_S = 30.0
IMPORTS = ()  # reads /dev/kmsg and asks NVML: no torch
EXCLUSIVE = False

RESET = (
    "reset the GPU (nvidia-smi -r -i <index>, no process on it) or reboot the node; the line stays in the "
    "kernel log, so this check passes again only after a reboot"
)
REBOOT = "reboot the node; if it comes back, reseat or replace the GPU (check power and the PCIe riser)"
REPLACE_IF_AGAIN = "; if it happens again after the reset, have the GPU replaced (RMA)"


@dataclass(frozen=True)
class XidRule:
    level: str  # "fail", "warn" or "note"
    what: str
    fix: str


APP = "check the application"
CATALOGUE: dict[int, XidRule] = {
    13: XidRule("note", "graphics engine exception (usually the application)", APP),
    31: XidRule("note", "GPU memory page fault (usually the application)", APP),
    43: XidRule("note", "GPU stopped processing (the application hit an error)", APP),
    45: XidRule(
        "note", "preemptive cleanup after an earlier error or a killed process", "see the XID before it"
    ),
    48: XidRule("fail", "double-bit ECC error (uncorrectable memory error)", RESET + REPLACE_IF_AGAIN),
    61: XidRule("warn", "internal micro-controller breakpoint/warning", RESET),
    62: XidRule("fail", "internal micro-controller halt", RESET + REPLACE_IF_AGAIN),
    63: XidRule(
        "warn", "ECC page retirement or row remapping recorded", "reset the GPU when it is idle to apply it"
    ),
    64: XidRule("fail", "ECC page retirement or row remapping failed", RESET + REPLACE_IF_AGAIN),
    68: XidRule("note", "video decoder (NVDEC) exception", APP),
    74: XidRule(
        "fail", "NVLink error", RESET + "; then nvidia-smi nvlink -s shows each link" + REPLACE_IF_AGAIN
    ),
    79: XidRule("fail", "GPU has fallen off the bus", REBOOT),
    92: XidRule("warn", "high single-bit ECC error rate", "watch it; reset the GPU if it keeps rising"),
    94: XidRule(
        "warn", "contained ECC error (the affected process was stopped)", "restart that job; " + RESET
    ),
    95: XidRule(
        "fail", "uncontained ECC error (every process on the GPU is affected)", RESET + REPLACE_IF_AGAIN
    ),
    109: XidRule("note", "context switch timeout (usually the application)", APP),
    119: XidRule("fail", "GSP RPC timeout (the GPU's system processor stopped answering)", RESET),
    120: XidRule("fail", "GSP error", RESET),
    140: XidRule("fail", "unrecovered ECC error", RESET + REPLACE_IF_AGAIN),
}
UNKNOWN = XidRule("warn", "not in verify's catalogue", "look it up in NVIDIA's XID catalogue")

# XID 154 (drivers from R550): the driver states the recovery the GPU needs, e.g. "GPU recovery action changed
# from 0x0 (None) to 0x2 (Node Reboot Required)". The action it names decides the verdict.
RECOVERY_XID = 154
RECOVERY = re.compile(r"recovery action changed from .*? to (?P<code>0x[0-9a-fA-F]+) \((?P<action>[^)]*)\)")


def recovery_rule(message: str) -> XidRule:
    match = RECOVERY.search(message)
    if not match:
        return XidRule("warn", "GPU recovery action changed (its action not read)", "see the line in dmesg")
    action = match["action"].strip()
    if action.lower() == "none":
        return XidRule("note", "GPU recovery action cleared (None)", "nothing to do")
    return XidRule(
        "fail", f"the driver asks for a recovery: {action}", f"{action.lower()}, as the driver asks"
    )


XID_LINE = re.compile(r"NVRM: Xid \((?P<where>[^)]*)\): (?P<xid>\d+)\s*,?\s*(?P<rest>.*)")


@dataclass(frozen=True)
class XidEvent:
    xid: int
    pci: str  # "0000:3b:00" as the driver writes it
    seq: int
    seconds_since_boot: float
    message: str
    gpu: str | None = None  # "GPU 3 (GPU-uuid)" where NVML maps the address


def find_events(records: list[kmsg.Record]) -> list[XidEvent]:
    events = []
    for record in records:
        match = XID_LINE.search(record.text)
        if match:
            where = match["where"].removeprefix("PCI:")
            events.append(
                XidEvent(int(match["xid"]), where, record.seq, record.usec / 1e6, match["rest"].strip())
            )
    return events


def pci_key(address: str) -> str:
    """'00000000:3B:00.0' (NVML) and '0000:3b:00' (the XID line) to one key: 'domain:bus:device'."""
    parts = address.lower().split(":")
    if len(parts) < 3:
        return address.lower()
    domain, bus, device = parts[-3], parts[-2], parts[-1].split(".")[0]
    return f"{int(domain, 16):04x}:{bus}:{device}"


def gpus_by_pci() -> dict[str, str]:
    """{pci_key: 'GPU i (uuid)'} from NVML; empty where NVML is unavailable (the XIDs still count)."""
    try:
        with nvml.session() as nv:
            found = {}
            for index in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                bus_id = nvml.text(nv.nvmlDeviceGetPciInfo(handle).busId)
                found[pci_key(bus_id)] = f"GPU {index} ({nvml.text(nv.nvmlDeviceGetUUID(handle))})"
            return found
    except (nvml.NvmlUnavailable, Exception):  # naming the GPU is a courtesy, never a failure
        return {}


def _when(seconds_since_boot: float, uptime_s: float | None) -> str:
    if uptime_s is None:
        return f"{seconds_since_boot:.0f} s after boot"
    ago = max(uptime_s - seconds_since_boot, 0.0)
    return f"{seconds_since_boot:.0f} s after boot, {ago / 60:.0f} min ago"


def evaluate(
    events: list[XidEvent],
    first_seq: int | None,
    records: int,
    uptime_s: float | None = None,
    gpus_known: bool = False,
) -> Result:
    """The verdict from the XID events found (pure). gpus_known: in a container where NVML listed the GPUs
    given to it, so an event with no GPU name is on another container's GPU."""
    figures: dict[str, Any] = {"xid_events": len(events), "log_records": records}
    details: dict[str, Any] = {"events": [asdict(e) for e in events], "first_seq": first_seq}
    judged: dict[str, list[str]] = {"fail": [], "warn": [], "note": []}
    seen: dict[tuple[int, str], tuple[int, XidEvent]] = {}  # (xid, pci) -> (times, the latest event)
    for event in events:
        times = seen.get((event.xid, event.pci), (0, event))[0]
        seen[(event.xid, event.pci)] = (times + 1, event)
    for (xid, pci), (count, last) in seen.items():
        rule = recovery_rule(last.message) if xid == RECOVERY_XID else CATALOGUE.get(xid, UNKNOWN)
        if gpus_known and last.gpu is None and rule.level == "fail":
            rule = XidRule("warn", rule.what + " (on a GPU not visible here: another container's?)", rule.fix)
        times = f" ({count} times)" if count > 1 else ""
        where = last.gpu or f"PCI {pci}"
        line = f"XID {xid} on {where}{times}, last {_when(last.seconds_since_boot, uptime_s)}: {rule.what}"
        judged[rule.level].append(line if rule.level == "note" else f"{line}; fix: {rule.fix}")
        if rule.level == "fail" and last.gpu:  # "GPU 3 (GPU-uuid)": `verify fleet` follows the card
            details.setdefault("failed_gpus", []).append({"gpu": last.gpu, "xid": xid, "summary": line})
    figures["xid_fail"] = len(judged["fail"])
    figures["xid_warn"] = len(judged["warn"])
    details["notes"] = judged["note"]
    reach = "the kernel log since boot" if first_seq in (0, 1) else f"the kernel log from record {first_seq}"
    if judged["fail"]:
        return Result(NAME, Status.FAIL, "; ".join(judged["fail"] + judged["warn"]), figures, details)
    if judged["warn"]:
        return Result(NAME, Status.WARN, "; ".join(judged["warn"]), figures, details)
    apps = (
        f"; {len(judged['note'])} application XID(s): {'; '.join(judged['note'])}" if judged["note"] else ""
    )
    return Result(
        NAME, Status.PASS, f"no GPU error XID in {reach} ({records} records){apps}", figures, details
    )


def _uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run(ctx: Context) -> Result:
    options = ctx.options.get(NAME) or {}
    path = Path(options.get("kmsg") or kmsg.DEV_KMSG)
    root = Path(options["root"]) if options.get("root") else presence.host_root()
    if not (root / "proc/driver/nvidia/version").exists():
        return Result(
            NAME, Status.SKIP, "no NVIDIA kernel driver loaded (/proc/driver/nvidia/version): no GPU"
        )
    start = time.monotonic()
    try:
        records = kmsg.read_records(path)
    except kmsg.KmsgUnreadable as exc:
        return Result(NAME, Status.SKIP, f"XIDs not checked: {exc}", details={"reason": str(exc)})
    events = find_events(records)
    names: dict[str, str] = {}
    if events:
        names = gpus_by_pci()
        events = [
            XidEvent(e.xid, e.pci, e.seq, e.seconds_since_boot, e.message, names.get(pci_key(e.pci)))
            for e in events
        ]
    first = records[0].seq if records else None
    in_container = presence.collect_host(root)[2]
    result = evaluate(events, first, len(records), _uptime(), gpus_known=bool(names) and in_container)
    result.figures["read_s"] = round(time.monotonic() - start, 3)
    return result
