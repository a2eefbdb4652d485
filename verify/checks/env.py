"""env: which Python, torch, CUDA runtime, cuDNN, NCCL and libraries are installed, and whether they are what
the image promised.

The image build writes its pins to /etc/pytorch-cuda/manifest.json (schema below). A package upgraded inside a
container, a wrong base image or a pip resolver surprise shows up here as a FAIL that names both versions.
Without a manifest (a bare host) there is nothing to compare: PASS with the versions, and the summary says so.

Manifest (schema 1): {"schema": 1, "image", "tag", "flavor", "full_tag", "base_image", "python": "3.13",
"torch": "2.8.0", "cuda": "12.8", "cudnn": "9.10.2.21", "nccl": "2.27.3", "triton",
"packages": {name: version}, "nvidia": {name: version}}. A null value means "not pinned" and is not compared.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from verify.context import Context
from verify.result import Result, Status

NAME = "env"
DESCRIPTION = (
    "versions of Python, torch, CUDA runtime, cuDNN, NCCL, transformers; compared with the image manifest"
)
DEFAULT_TIMEOUT_S = 60.0
IMPORTS = ("torch",)  # imported once, before CUDA, by the fork server
EXCLUSIVE = False  # runs beside the GPU measurements: reads versions only
MANIFEST_SCHEMA = 1


def dist_version(name: str) -> str | None:
    """An installed distribution's version (without importing it: transformers alone takes seconds)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cudnn_text(value: int | None) -> str | None:
    """torch.backends.cudnn.version(): 91002 -> '9.10.2' (cuDNN 9: M*10000+m*100+p), 8907 -> '8.9.7' (8.x)."""
    if value is None:
        return None
    if value >= 90000:
        return f"{value // 10000}.{(value % 10000) // 100}.{value % 100}"
    return f"{value // 1000}.{(value % 1000) // 100}.{value % 100}"


def nccl_text(value: Any) -> str | None:
    """torch.cuda.nccl.version(): a tuple (2, 27, 3) in current torch; older ones gave ints (21903, 2708)."""
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return ".".join(str(part) for part in value[:3])
    code = int(value)
    if code >= 10000:  # NCCL >= 2.9: M*10000 + m*100 + p
        return f"{code // 10000}.{(code % 10000) // 100}.{code % 100}"
    return f"{code // 1000}.{(code % 1000) // 100}.{code % 100}"


def collect_versions() -> tuple[dict[str, Any], str | None]:
    """Installed versions; the second value is why torch could not be imported (None when it could)."""
    versions: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": None,
        "torch_git": None,
        "cuda": None,
        "cudnn": None,
        "nccl": None,
        "triton": dist_version("triton"),
        "transformers": dist_version("transformers"),
        "nvidia_ml_py": dist_version("nvidia-ml-py"),
    }
    try:
        import torch
    except Exception as exc:  # a broken torch install is this check's finding, not a crash
        return versions, f"{type(exc).__name__}: {exc}"
    versions["torch"] = torch.__version__
    versions["torch_git"] = getattr(torch.version, "git_version", None)
    versions["cuda"] = torch.version.cuda
    try:
        versions["cudnn"] = cudnn_text(torch.backends.cudnn.version())
    except Exception as exc:  # libcudnn missing from a CUDA build: report it, the manifest decides
        versions["cudnn"] = None
        versions["cudnn_error"] = f"{type(exc).__name__}: {exc}"
    if torch.version.cuda:
        try:
            versions["nccl"] = nccl_text(torch.cuda.nccl.version())
        except Exception as exc:
            versions["nccl_error"] = f"{type(exc).__name__}: {exc}"
    return versions, None


@dataclass(frozen=True)
class Comparison:
    item: str
    installed: str | None
    promised: str
    ok: bool

    def message(self) -> str:
        have = "not installed" if self.installed is None else f"{self.installed} installed"
        return f"{self.item} {have}, manifest promises {self.promised}"


def _prefix(text: str, parts: int) -> tuple[int, ...] | None:
    """The first `parts` numeric components ('9.10.2.21', 3) -> (9, 10, 2); None when not numeric."""
    try:
        numbers = tuple(int(p) for p in text.split("+")[0].split(".")[:parts])
    except ValueError:
        return None
    return numbers if len(numbers) == parts else None


def _same_prefix(installed: str | None, promised: str, parts: int) -> bool:
    if installed is None:
        return False
    return _prefix(installed, parts) is not None and _prefix(installed, parts) == _prefix(promised, parts)


def _same_release(installed: str | None, promised: str, ignore_local: bool) -> bool:
    """PEP 440 equality ('2.8' == '2.8.0'); with ignore_local, '2.8.0+cu128' == '2.8.0'."""
    if installed is None:
        return False
    try:
        have, want = Version(installed), Version(promised)
    except InvalidVersion:
        return installed == promised
    if ignore_local:
        return Version(have.public) == Version(want.public)
    return have == want


class ManifestError(ValueError):
    """A manifest this verify cannot read (names the field and the fix)."""


def compare_manifest(
    versions: dict[str, Any], manifest: dict[str, Any], installed: Callable[[str], str | None] = dist_version
) -> list[Comparison]:
    """Every pin in the manifest against what is installed. `installed` looks up a distribution's version."""
    if not isinstance(manifest, dict):
        raise ManifestError("the manifest is not a JSON object")
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(
            f"field 'schema' is {manifest.get('schema')!r}, this verify reads schema {MANIFEST_SCHEMA}; "
            "fix: use the verify shipped in the same image"
        )
    out: list[Comparison] = []

    def add(item: str, have: str | None, want: Any, same: Callable[[str | None, str], bool]) -> None:
        if want is None:
            return
        out.append(Comparison(item, have, str(want), same(have, str(want))))

    add("python", versions.get("python"), manifest.get("python"), lambda h, w: _same_prefix(h, w, 2))
    add("torch", versions.get("torch"), manifest.get("torch"), _same)
    add("CUDA runtime", versions.get("cuda"), manifest.get("cuda"), lambda h, w: _same_prefix(h, w, 2))
    add("cuDNN", versions.get("cudnn"), manifest.get("cudnn"), lambda h, w: _same_prefix(h, w, 3))
    add("NCCL", versions.get("nccl"), manifest.get("nccl"), lambda h, w: _same_prefix(h, w, 3))
    add("triton", installed("triton"), manifest.get("triton"), _same)
    add("transformers", installed("transformers"), manifest.get("transformers"), _same)
    for field in ("packages", "nvidia"):
        pins = manifest.get(field) or {}
        if not isinstance(pins, dict):
            raise ManifestError(
                f"field {field!r} must map package names to versions, got {type(pins).__name__}"
            )
        for name, want in sorted(pins.items()):
            if name in ("torch", "triton", "transformers") and field == "packages" and manifest.get(name):
                continue  # compared above
            add(name, installed(name), want, _same)
    return out


def _same(have: str | None, want: str) -> bool:
    """Package pins compare as PEP 440 releases; a local tag (+cu128) on the installed side is ignored."""
    return _same_release(have, want, ignore_local=True)


def load_manifest(path: Path) -> dict[str, Any] | None:
    """None when there is no manifest (a bare host); ManifestError when there is one we cannot read."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a JSON object")
    return data


def _versions_line(v: dict[str, Any]) -> str:
    cuda = f"CUDA {v['cuda']}, cuDNN {v['cudnn']}, NCCL {v['nccl']}" if v.get("cuda") else "CPU build"
    return f"python {v['python']}, torch {v['torch']} ({cuda}), transformers {v['transformers']}"


def evaluate(
    versions: dict[str, Any],
    torch_error: str | None,
    manifest_path: Path,
    manifest: dict[str, Any] | None,
    comparisons: list[Comparison],
) -> Result:
    """The verdict from collected facts (pure: unit-tested without a torch build of every kind)."""
    figures = {key: versions.get(key) for key in ("python", "torch", "cuda", "cudnn", "nccl", "transformers")}
    figures = {key: value for key, value in figures.items() if value is not None}
    details: dict[str, Any] = {
        "versions": versions,
        "manifest_path": str(manifest_path),
        "manifest_compared": [c.__dict__ for c in comparisons],
    }
    if torch_error:
        return Result(
            NAME,
            Status.FAIL,
            f"torch cannot be imported ({torch_error}); fix: pip install torch",
            figures,
            details,
        )
    if manifest is None:
        return Result(
            NAME, Status.PASS, f"{_versions_line(versions)}; no image manifest (bare host)", figures, details
        )
    bad = [c for c in comparisons if not c.ok]
    figures["manifest_mismatches"] = len(bad)
    image = manifest.get("full_tag") or manifest.get("tag") or manifest.get("image") or str(manifest_path)
    if bad:
        reasons = "; ".join(c.message() for c in bad)
        noun = "mismatch" if len(bad) == 1 else "mismatches"
        return Result(
            NAME, Status.FAIL, f"{len(bad)} {noun} with manifest of {image}: {reasons}", figures, details
        )
    return Result(
        NAME,
        Status.PASS,
        f"{_versions_line(versions)}; all {len(comparisons)} pins match manifest of {image}",
        figures,
        details,
    )


def run(ctx: Context) -> Result:
    versions, torch_error = collect_versions()
    try:
        manifest = load_manifest(ctx.manifest_path)
        comparisons = compare_manifest(versions, manifest) if manifest is not None else []
    except ManifestError as exc:
        return Result(
            NAME,
            Status.FAIL,
            f"image manifest {ctx.manifest_path}: {exc}",
            details={"versions": versions, "manifest_path": str(ctx.manifest_path)},
        )
    return evaluate(versions, torch_error, ctx.manifest_path, manifest, comparisons)
