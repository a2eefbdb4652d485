"""What a check returns. One shape for every check, so the runner, the table, JSON and JUnit stay dumb.

CONTRACT (the runner, report writers and every check rely on it; keep stable):
    Status: PASS / FAIL / WARN / SKIP (str values "pass", "fail", "warn", "skip")
    Result(name, status, summary, figures={}, details={}, duration_s=0.0)
      summary: one line a person reads in the table: key figures on PASS, the reason on anything else
               (a SKIP or WARN or FAIL without a reason is a bug).
      figures: flat {name: number or short string} a machine compares (e.g. {"busbw_GBps_1GiB": 298.1})
      details: anything JSON-able (per-GPU tables, per-size rows, versions)
    Result.to_dict() / Result.from_dict() round-trip through JSON.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass
class Result:
    name: str
    status: Status
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            name=data["name"],
            status=Status(data["status"]),
            summary=data["summary"],
            figures=dict(data.get("figures", {})),
            details=dict(data.get("details", {})),
            duration_s=float(data.get("duration_s", 0.0)),
        )
