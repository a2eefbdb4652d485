"""Fixtures shared by more than one test package."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Callable
from pathlib import Path

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
