"""GPU tests run on a real GPU (the device machine): `pytest -m gpu tests/gpu`. Without one they skip."""

import pytest
import torch

pytestmark = pytest.mark.gpu


def pytest_collection_modifyitems(items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
        for item in items:
            item.add_marker(skip)
