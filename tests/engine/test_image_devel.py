"""The devel flavor compiles a torch CUDA extension (no GPU needed to compile) and loads it.

CUDA 12 lines (v2.8 here): nvcc 12.4 from Debian on the runtime image's own deps image, so the devel build
adds only the toolchain layer (always run: it costs a few minutes, not another venv). CUDA 13 lines: nvcc from
NVIDIA's wheels, a venv of its own; opt-in (another ~8 GB image): PYTORCH_CUDA_TEST_DEVEL=1 make test-engine.
"""

from __future__ import annotations

import os
from dataclasses import replace

import docker
import pytest

from images.build import BuildRequest, BuildResult, build_image
from images.engine import deps_ref
from images.matrix import ImageLine, load_matrix
from images.toolkit import DEBIAN_NVCC, DEBIAN_NVCC_ARCH_LIST, nvcc_source

pytestmark = pytest.mark.slow
opt_in = pytest.mark.skipif(
    not os.environ.get("PYTORCH_CUDA_TEST_DEVEL"),
    reason="the CUDA 13 devel image is another ~8 GB build; PYTORCH_CUDA_TEST_DEVEL=1 builds and tests it",
)

EXTENSION = r"""
import os, torch, torch.utils.cpp_extension as ext
os.makedirs('/tmp/ext', exist_ok=True)
cuda_src = '''
__global__ void add_one(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] += 1;
}
void launch(torch::Tensor x) { add_one<<<(x.numel() + 255) / 256, 256>>>(x.data_ptr<float>(), x.numel()); }
'''
cpp_src = 'void launch(torch::Tensor x);'
mod = ext.load_inline('addone', cpp_sources=cpp_src, cuda_sources=cuda_src, functions=['launch'],
                      build_directory='/tmp/ext', verbose=False)
print('compiled', mod.__file__, ext.CUDA_HOME)
"""


def newest_cuda13_line() -> ImageLine:
    """nvcc is on PyPI only for CUDA 13 (the cu12 nvcc wheel carries ptxas alone): the newest such line."""
    lines = [line for line in load_matrix().lines if line.pins and "cuda-toolkit" in line.pins.nvidia]
    if not lines:
        pytest.skip("no CUDA 13 line in the matrix: PyPI has no CUDA 12 nvcc to build a devel image with")
    return lines[-1]


@opt_in
def test_devel_compiles_a_cuda_extension(docker_client: docker.DockerClient, build_secrets) -> None:
    matrix_line = newest_cuda13_line()
    result = build_image(
        BuildRequest(tag=matrix_line.tag, flavor="devel", extra_ca=build_secrets.ca_bundle),
        client=docker_client.api,
    )
    image = result.tags[0]
    assert image == f"pytorch-cuda:{matrix_line.tag}-devel"
    version = docker_client.containers.run(image, ["nvcc", "--version"], remove=True).decode()
    assert f"release {matrix_line.pins.cuda}" in version  # type: ignore[union-attr]
    out = docker_client.containers.run(
        image,
        ["python", "-c", EXTENSION],
        environment={"TORCH_CUDA_ARCH_LIST": "9.0"},  # no GPU to detect the arch from
        remove=True,
    ).decode()
    assert "compiled /tmp/ext/addone.so /usr/local/cuda" in out


def test_cuda12_devel_is_the_runtime_deps_plus_debians_nvcc_and_compiles_an_extension(
    docker_client: docker.DockerClient,
    build_request: tuple[BuildRequest, object],
    build_result: BuildResult,
    matrix_line: ImageLine,
) -> None:
    """Built as the session's runtime image was (same CA and index), so the runtime deps image is current."""
    assert nvcc_source(matrix_line) == "debian"
    result = build_image(replace(build_request[0], flavor="devel"), client=docker_client.api)
    image = result.tags[0]
    assert image == f"pytorch-cuda:{matrix_line.tag}-devel"
    log = result.log_path.read_text()
    runtime_deps = deps_ref(matrix_line, "runtime")
    assert f"phase 0 (the runtime deps) skipped: {runtime_deps} is current" in log

    # the venv is stored once: every layer of the runtime deps image is one of the devel image's first layers
    runtime_layers = docker_client.api.inspect_image(runtime_deps)["RootFS"]["Layers"]
    devel_layers = docker_client.api.inspect_image(image)["RootFS"]["Layers"]
    assert devel_layers[: len(runtime_layers)] == runtime_layers

    version = docker_client.containers.run(image, ["nvcc", "--version"], remove=True).decode()
    assert f"release {DEBIAN_NVCC}," in version
    archs = docker_client.containers.run(image, ["nvcc", "--list-gpu-arch"], remove=True).decode().split()
    for arch in DEBIAN_NVCC_ARCH_LIST.replace("+PTX", "").split(";"):  # the image's default list is buildable
        assert f"compute_{arch.replace('.', '')}" in archs
    out = docker_client.containers.run(
        image,
        ["python", "-c", EXTENSION],
        environment={"TORCH_CUDA_ARCH_LIST": "9.0+PTX"},  # one arch and its PTX: the slowest part, kept short
        remove=True,
        stderr=True,
    ).decode()
    assert "compiled /tmp/ext/addone.so /usr/lib/cuda" in out
    # the driver's library comes from the host at run time, never from the image (no NVIDIA runtime here)
    count = docker_client.containers.run(
        image, ["bash", "-c", "ls /usr/lib/x86_64-linux-gnu/libcuda.so* 2>/dev/null | wc -l"], remove=True
    )
    assert count.decode().strip() == "0"
