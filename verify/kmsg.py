"""Read the kernel log's records since boot from /dev/kmsg, as `dmesg` does, without running dmesg.

Why not `dmesg`: it is not in every image, its output format varies by version, and it hides the
record's sequence number, which is what says "this record is new since the last look". /dev/kmsg gives one
record per read(2), `PRIORITY,SEQUENCE,MICROSECONDS,FLAGS;MESSAGE` then optional ` KEY=VALUE` lines
(Documentation/ABI/testing/dev-kmsg); the ring buffer holds the newest records since boot (older ones are
overwritten: the first sequence number read says how far back it reaches).

Who may read it: where `kernel.dmesg_restrict` is 1 (most distributions), only a process with CAP_SYSLOG;
Docker gives a container neither the device node nor the capability. `read_records` raises
`KmsgUnreadable` with the reason and the fix, so a check can SKIP saying how to allow it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

DEV_KMSG = Path("/dev/kmsg")
DMESG_RESTRICT = Path("/proc/sys/kernel/dmesg_restrict")
ALLOW_FIX = (
    "run it on the host as root, or give the container the log: "
    "docker run --device /dev/kmsg --cap-add SYSLOG (Kubernetes: securityContext.capabilities.add: [SYSLOG] "
    "and a hostPath /dev/kmsg), or allow every user with sysctl kernel.dmesg_restrict=0"
)


class KmsgUnreadable(Exception):
    """The kernel log cannot be read here; str(exc) says why and how to allow it."""


@dataclass(frozen=True)
class Record:
    seq: int
    usec: int  # microseconds since boot
    level: int  # 0 emergency .. 7 debug
    text: str


def parse(chunk: str) -> list[Record]:
    """Records from /dev/kmsg text (one record per read, or many joined by newlines, as in a saved copy).
    Continuation lines (` KEY=VALUE`) and lines that are not records are skipped."""
    records = []
    for line in chunk.splitlines():
        head, sep, text = line.partition(";")
        if not sep or line.startswith(" "):
            continue
        fields = head.split(",")
        if len(fields) < 3 or not all(f.isdigit() for f in fields[:3]):
            continue
        prio, seq, usec = (int(f) for f in fields[:3])
        records.append(Record(seq=seq, usec=usec, level=prio & 7, text=text))
    return records


def _why_denied(path: Path, exc: OSError) -> str:
    restrict = None
    with contextlib.suppress(OSError):
        restrict = DMESG_RESTRICT.read_text().strip()
    cause = (
        f"kernel.dmesg_restrict={restrict} allows only processes with CAP_SYSLOG"
        if restrict == "1"
        else f"{exc.strerror}"
    )
    return f"{path} cannot be read ({cause}): {ALLOW_FIX}"


def read_records(path: Path = DEV_KMSG) -> list[Record]:
    """Every record still in the ring buffer, oldest first. A regular file (a saved log, a test's) is read
    whole. Raises KmsgUnreadable when the log is absent or not readable by this process."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KmsgUnreadable(
            f"no {path} here (a container is not given it by default): {ALLOW_FIX}"
        ) from None
    except PermissionError as exc:
        raise KmsgUnreadable(_why_denied(path, exc)) from None
    except OSError as exc:
        raise KmsgUnreadable(f"{path}: {exc.strerror}: {ALLOW_FIX}") from None
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break  # /dev/kmsg: no record newer than the last one read
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten while reading: go on from the oldest left
                    continue
                if exc.errno in (errno.EPERM, errno.EACCES):
                    raise KmsgUnreadable(_why_denied(path, exc)) from None
                raise KmsgUnreadable(f"{path}: {exc.strerror}: {ALLOW_FIX}") from None
            if not data:
                break  # a regular file's end
            chunks.append(data)  # a /dev/kmsg record ends in a newline; a file is read in pieces
    finally:
        os.close(fd)
    return parse(b"".join(chunks).decode("utf-8", errors="replace"))
