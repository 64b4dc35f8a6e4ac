// requantize and quant_add on CUDA: one element per thread step, the same integers as the CPU kernels
// (cpu/elementwise_cpu.cpp) and the PyTorch references (mmaqd/ops/fixed_point.py, mmaqd/ops/quant_conv.py), from the
// shared fixed_point.h. ATen-free like quant_conv2d_kernels.cuh; elementwise_cuda.cu binds them to torch.
#pragma once
#include <cstdint>

#include "device_compat.cuh"
#include "fixed_point.h"

namespace mmaqd {
namespace cuda {

struct RequantArgs {
  int64_t numel, channels, inner;  // acc (N, C, inner...) flattened
  const int32_t* m0;
  const int32_t* shift;
  const int32_t* bias;  // or nullptr
  int64_t zero_point, qmin, qmax, out_levels;
  bool out_signed;
};

// status[0] = 1 when acc + bias leaves int32 (the op then raises)
__global__ void requantize_kernel(const int32_t* __restrict__ acc, RequantArgs r, long long* status,
                                  int32_t* __restrict__ out) {
  bool ok = true;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < r.numel; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = (i / r.inner) % r.channels;
    const int64_t t = int64_t(acc[i]) + (r.bias != nullptr ? r.bias[ch] : 0);
    ok = ok && t >= kInt32Min && t <= kInt32Max;
    const int64_t c = multiply_by_quantized_multiplier(t, r.m0[ch], r.shift[ch]) + r.zero_point;
    out[i] = int32_t(clamp_to_value(c, r.qmin, r.qmax, r.out_signed, r.out_levels));
  }
  if (!ok) status[0] = 1;
}

struct AddArgs {
  int64_t numel;
  int32_t am, as, bm, bs, om, os;
  int64_t left, bias, zero_point, qmin, qmax, out_levels;
  bool out_signed;
};

// TFLite's quantized add: (a << left) M_a + (b << left) M_b + bias -> M -> + zero point -> clamp -> value; b may be
// nullptr (a rescale of a alone). a and b already broadcast to one shape.
__global__ void quant_add_kernel(const int32_t* __restrict__ a, const int32_t* __restrict__ b, AddArgs p,
                                 long long* status, int32_t* __restrict__ out) {
  bool ok = true;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t t = multiply_by_quantized_multiplier(int64_t(a[i]) << p.left, p.am, p.as);
    if (b != nullptr) t += multiply_by_quantized_multiplier(int64_t(b[i]) << p.left, p.bm, p.bs);
    t += p.bias;
    ok = ok && t >= kInt32Min && t <= kInt32Max;
    const int64_t c = multiply_by_quantized_multiplier(t, p.om, p.os) + p.zero_point;
    out[i] = int32_t(clamp_to_value(c, p.qmin, p.qmax, p.out_signed, p.out_levels));
  }
  if (!ok) status[0] = 1;
}

}  // namespace cuda
}  // namespace mmaqd
