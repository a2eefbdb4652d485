// A CUDA program to prove a devel image's nvcc makes code that runs on a real GPU: built in the image, run
// on a GPU host (the binary links cudart statically and needs only the host's driver):
//   docker run --rm --entrypoint bash -v $PWD/scripts:/src:ro -v $PWD/build/gpu-bins:/out -u 0 //     pytorch-cuda:v2.8-devel -c 'nvcc -O2 -gencode arch=compute_90,code=sm_90 -o /out/nvcc124_sm90 //     /src/nvcc_smoke.cu && nvcc -O2 -gencode arch=compute_90,code=compute_90 -o /out/nvcc124_ptx_only //     /src/nvcc_smoke.cu'
// The second holds PTX only, so the driver compiles it at load: the path a Blackwell GPU takes with the
// CUDA 12 devel images' sm_90 PTX. Adds 1 to a million floats and checks every result.
// Exit 0: right results; 1: wrong results; 2: a CUDA error (named).
#include <cstdio>
#include <cuda_runtime.h>

__global__ void add_one(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}

int main() {
    const int n = 1 << 20;
    float* host = new float[n];
    for (int i = 0; i < n; ++i) host[i] = static_cast<float>(i);
    float* dev = nullptr;
    cudaError_t err = cudaMalloc(&dev, n * sizeof(float));
    if (err == cudaSuccess) err = cudaMemcpy(dev, host, n * sizeof(float), cudaMemcpyHostToDevice);
    if (err == cudaSuccess) {
        add_one<<<(n + 255) / 256, 256>>>(dev, n);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess) err = cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost);
    if (err != cudaSuccess) {
        std::printf("CUDA error: %s\n", cudaGetErrorString(err));
        return 2;
    }
    int wrong = 0;
    for (int i = 0; i < n; ++i) wrong += host[i] != static_cast<float>(i) + 1.0f;
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    std::printf("%s (sm_%d%d): %d of %d wrong; runtime %d, driver %d\n", prop.name, prop.major, prop.minor,
                wrong, n, runtime, driver);
    return wrong == 0 ? 0 : 1;
}
