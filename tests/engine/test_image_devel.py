"""The devel flavor: nvcc from the CUDA wheels compiles a torch extension (no GPU needed to compile).

Opt-in (it downloads and builds another ~8 GB image): PYTORCH_CUDA_TEST_DEVEL=1 make test-engine.
"""

from __future__ import annotations

import os

import docker
import pytest

from images.build import BuildRequest, build_image
from images.matrix import ImageLine, load_matrix

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("PYTORCH_CUDA_TEST_DEVEL"),
        reason="the devel image is another ~8 GB build; set PYTORCH_CUDA_TEST_DEVEL=1 to build and test it",
    ),
]

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
