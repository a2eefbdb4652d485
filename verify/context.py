"""What every check is told about the run (passed to the check's process as JSON).

CONTRACT: Context(quick=False, timeout_s=None, manifest_path=DEFAULT_MANIFEST, options={}, require_gpu=False)
    quick: short benchmarks (fewer steps/sizes) for CI and smoke runs
    require_gpu: "no GPU at all" is a FAIL, not a SKIP (--require-gpu, VERIFY_REQUIRE_GPU=1): a GPU CI job
        or an image run on a GPU host must not go green on the CPU
    manifest_path: the image's pin manifest, written by the image build; absent on a bare host
    options: per-check knobs, e.g. {"bert": {"size": "base", "seq": 128, "batch": 64}}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MANIFEST = Path("/etc/pytorch-cuda/manifest.json")


@dataclass
class Context:
    quick: bool = False
    timeout_s: float | None = None
    manifest_path: Path = DEFAULT_MANIFEST
    options: dict[str, Any] = field(default_factory=dict)
    require_gpu: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["manifest_path"] = str(self.manifest_path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        return cls(
            quick=bool(data.get("quick", False)),
            timeout_s=data.get("timeout_s"),
            manifest_path=Path(data.get("manifest_path", DEFAULT_MANIFEST)),
            options=dict(data.get("options", {})),
            require_gpu=bool(data.get("require_gpu", False)),
        )
