"""Fixtures shared by more than one test package."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def host_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write an image manifest (the file every image carries) that matches this very environment: its Python,
    torch, transformers and rich. Keyword arguments replace fields, to make a mismatch on purpose."""

    def write(tag: str = "test", **changes: object) -> Path:
        import torch

        manifest = {
            "schema": 1,
            "image": "pytorch-cuda",
            "tag": tag,
            "full_tag": f"pytorch-cuda:{tag}",
            "python": ".".join(platform.python_version_tuple()[:2]),
            "torch": torch.__version__.split("+")[0],
            "cuda": None,
            "cudnn": None,
            "nccl": None,
            "packages": {
                "transformers": importlib.metadata.version("transformers"),
                "rich": importlib.metadata.version("rich"),
            },
        }
        manifest.update(changes)
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(manifest))
        return path

    return write


NVML_REPLAY_DIR = Path(__file__).resolve().parent / "nvml_replay"


@dataclass(frozen=True)
class NvmlReplay:
    """A recording of a real host's NVML answers, made the `pynvml` of this process and of its children."""

    path: Path  # the (possibly edited) recording in use
    data: dict[str, Any]
    env: dict[str, str]  # os.environ plus NVML_REPLAY and PYTHONPATH, for subprocesses (verify run, ...)


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """NVML absent, as on this CPU machine, also on a GPU host: the replay stand-in with no recording (its
    nvmlInit fails like a host without the library), and no Slurm GPU count in the environment. Returns the
    environment for subprocesses."""
    monkeypatch.delenv("NVML_REPLAY", raising=False)
    monkeypatch.delenv("SLURM_GPUS_ON_NODE", raising=False)
    monkeypatch.syspath_prepend(str(NVML_REPLAY_DIR))
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NVML_REPLAY_DIR), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture
def nvml_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., NvmlReplay]:
    """nvml_replay("h200-idle", edit=fn): replay tests/nvml_replay/recordings/<name>.json, after `edit`
    changed the loaded dict (e.g. one ECC counter), in this process and in subprocesses started with `.env`.

    Say in the test which field was changed: the rest is what the real GPU answered.
    """

    def use(recording: str = "h200-idle", edit: Callable[[dict[str, Any]], None] | None = None) -> NvmlReplay:
        data = json.loads((NVML_REPLAY_DIR / "recordings" / f"{recording}.json").read_text())
        if edit is not None:
            edit(data)
        path = tmp_path / f"nvml-{recording}.json"
        path.write_text(json.dumps(data))
        monkeypatch.setenv("NVML_REPLAY", str(path))
        monkeypatch.syspath_prepend(str(NVML_REPLAY_DIR))
        monkeypatch.delitem(sys.modules, "pynvml", raising=False)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NVML_REPLAY_DIR), env.get("PYTHONPATH", "")) if p)
        return NvmlReplay(path, data, env)

    return use
