"""GPU tests run on a real GPU (the device machine): `make test-gpu`, or `pytest -m gpu tests/gpu`.

Without a GPU they skip, so the suite stays green on CPU machines. Where a GPU is expected -- a GPU host,
a GPU CI job -- a skip would hide the very fault these tests exist for (a hidden device, a CPU-only torch),
so VERIFY_EXPECT_GPU=1 (set by `make test-gpu`) turns every skip into a failure that says why. It fails at
setup (pytest counts it as an error), before any fixture could die on CUDA with a less useful traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
EXPECT_GPU = "VERIFY_EXPECT_GPU"
TRUE, FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


def gpu_expected() -> bool:
    raw = os.environ.get(EXPECT_GPU, "")
    value = raw.strip().lower()
    if value not in TRUE + FALSE:
        raise pytest.UsageError(
            f"{EXPECT_GPU}={raw!r}; fix: set it to 1 (a GPU must be seen) or 0 (GPU tests skip without one)"
        )
    return value in TRUE


def no_gpu_reason() -> str:
    """Why torch sees no GPU, with the facts that tell the causes apart."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA "
        f"{torch.version.cuda or 'none: a CPU-only build'}, CUDA_VISIBLE_DEVICES="
        f"{'unset' if visible is None else repr(visible)})"
    )


def pytest_report_header() -> str:
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"GPU tests: {EXPECT_GPU}={int(gpu_expected())}, torch sees {seen} GPU(s)"


def _under_here(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest hook sees the whole session's items: act only on the ones under tests/gpu.
    if torch.cuda.is_available() or gpu_expected():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {no_gpu_reason()}")
    for item in items:
        if _under_here(item):
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """With VERIFY_EXPECT_GPU=1 and no GPU, fail each GPU test before its fixtures run, saying why."""
    if _under_here(item) and gpu_expected() and not torch.cuda.is_available():
        pytest.fail(
            f"no GPU seen although {EXPECT_GPU}=1: {no_gpu_reason()}; fix: run where torch sees the GPU "
            f"(a CUDA build of torch, CUDA_VISIBLE_DEVICES unset or naming a real device, `nvidia-smi` "
            f"lists it), or set {EXPECT_GPU}=0 where no GPU is expected",
            pytrace=False,
        )
