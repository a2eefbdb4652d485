"""Where a devel image's nvcc comes from, and so which lock it installs. No third-party imports (the README
table needs it in a bare venv)."""

from __future__ import annotations

from images.matrix import ImageLine, MatrixError

# The devel flavor's nvcc. CUDA 13 torch wheels pin NVIDIA's `cuda-toolkit` meta-package, whose nvcc extra is
# a full nvcc on PyPI. For CUDA 12 PyPI has none (nvidia-cuda-nvcc-cu12 carries ptxas alone), so those lines
# take Debian trixie's non-free nvidia-cuda-toolkit: nvcc 12.4. CUDA minor-version compatibility lets it build
# extensions that run on the 12.6/12.8 runtime in torch's wheels (torch warns of the minor mismatch only); it
# knows GPUs up to sm_90 (Hopper), so such images set TORCH_CUDA_ARCH_LIST to those archs plus sm_90 PTX,
# which the driver compiles for newer GPUs (Blackwell) when the extension loads.
DEBIAN_NVCC = "12.4"
DEBIAN_NVCC_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"
# Unpacked without their dependencies (see the template): nvcc and its tools, headers and libcudart, libnvvm,
# the CCCL headers (thrust, cub, libcu++).
DEBIAN_CUDA_PACKAGES = (
    "nvidia-cuda-toolkit",
    "nvidia-cuda-dev",
    "libnvvm4",
    "libcudart12",
    "libcu++-dev",
    "libcub-dev",
    "libthrust-dev",
)


def nvcc_source(line: ImageLine) -> str:
    """Where the line's devel flavor gets nvcc: "wheels" (CUDA 13, PyPI) or "debian" (CUDA 12, nvcc 12.4)."""
    pins = line.pins
    if pins is None:
        raise MatrixError(f"pins.toml: [{line.tag}]: no pins recorded for torch {line.torch}; fix: make pins")
    return "wheels" if "cuda-toolkit" in pins.nvidia else "debian"


def package_flavor(line: ImageLine, flavor: str) -> str:
    """The flavor whose requirements and lock an image installs.

    A devel image whose nvcc comes from Debian adds no wheel, so it installs the runtime lock: its venv layer
    is then the runtime image's own (the same steps on the same file), built and stored once.
    """
    if flavor == "devel" and nvcc_source(line) == "debian":
        return "runtime"
    return flavor


def cuda_toolkit_requirements(line: ImageLine) -> list[str]:
    """nvcc and the CUDA headers from PyPI for a line whose nvcc comes from the wheels (none otherwise)."""
    pins = line.pins
    if nvcc_source(line) != "wheels" or pins is None:
        return []
    return [f"cuda-toolkit[cccl,cudart,nvcc]=={pins.nvidia['cuda-toolkit']}"]
