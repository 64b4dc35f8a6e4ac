// The launcher that the ATen-free launch sequences (quant_conv2d_kernels.cuh) call in the torch build: kernels on
// the current stream of a device, with torch's launch-error check; the host simulator has its own.
#pragma once
#include <c10/core/Device.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>

namespace mmaqd {

struct TorchLauncher {
  cudaStream_t stream;
  int sms;  // multiprocessors of the device (sizes the grid-stride kernels)

  explicit TorchLauncher(c10::Device device)
      : stream(c10::cuda::getCurrentCUDAStream(device.index()).stream()), sms(multiprocessors(device.index())) {}

  template <typename... P, typename... A>
  void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "kernel arguments");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    kernel<<<grid, block, shared, stream>>>(static_cast<P>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  void zero(void* p, size_t bytes) {
    if (bytes > 0) C10_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream));
  }

  static int multiprocessors(c10::DeviceIndex index) {
    static std::array<std::atomic<int>, 64> cache{};
    const int i = index < 0 ? 0 : int(index) % 64;
    int n = cache[size_t(i)].load();
    if (n == 0) {
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, int(index)));
      cache[size_t(i)] = n;
    }
    return n;
  }
};

}  // namespace mmaqd
