"""GPU tests run on a real GPU (the device machine): `pytest -m gpu tests/gpu`. Without one they skip."""

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    # A conftest hook sees the whole session's items: mark only the ones under tests/gpu.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
