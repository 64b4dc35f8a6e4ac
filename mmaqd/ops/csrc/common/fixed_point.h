// Fixed-point requantization shared by every kernel: gemmlowp's SaturatingRoundingDoublingHighMul and
// RoundingDivideByPOT, TFLite's MultiplyByQuantizedMultiplier (Jacob et al., CVPR 2018, arXiv 1712.05877,
// section 2.2). Bit for bit the same as the PyTorch reference in mmaqd/ops/fixed_point.py (int64 arithmetic).
// The CPU and the CUDA kernels call the same functions (MMAQD_HOST_DEVICE: __host__ __device__ under nvcc).
#pragma once
#include <cstdint>

#include "host_device.h"

namespace mmaqd {

constexpr int64_t kInt32Min = -(int64_t(1) << 31);
constexpr int64_t kInt32Max = (int64_t(1) << 31) - 1;

// round(2 * a * b / 2^32): ties of a positive product upward, of a negative one toward zero (gemmlowp)
MMAQD_HOST_DEVICE inline int64_t rounding_doubling_high_mul(int64_t a, int64_t b) {
  if (a == kInt32Min && b == kInt32Min) return kInt32Max;
  const int64_t ab = a * b;
  const int64_t nudge = ab >= 0 ? (int64_t(1) << 30) : (int64_t(1) - (int64_t(1) << 30));
  return (ab + nudge) / (int64_t(1) << 31);  // C++ division truncates toward zero, as gemmlowp's
}

// x / 2^exponent, to nearest, ties away from zero (gemmlowp), exponent in [0, 62]
MMAQD_HOST_DEVICE inline int64_t rounding_divide_by_pot(int64_t x, int exponent) {
  const int64_t mask = (int64_t(1) << exponent) - 1;
  const int64_t remainder = x & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// round(x * m0 * 2^(shift - 31)) in gemmlowp's two roundings
MMAQD_HOST_DEVICE inline int64_t multiply_by_quantized_multiplier(int64_t x, int32_t m0, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(rounding_doubling_high_mul(x * (int64_t(1) << left), m0), right);
}

// the output code clamped to [qmin, qmax], as the integer value the next op computes with (2c - q on a signed grid)
MMAQD_HOST_DEVICE inline int64_t clamp_to_value(int64_t c, int64_t qmin, int64_t qmax, bool out_signed, int64_t q) {
  c = c < qmin ? qmin : (c > qmax ? qmax : c);
  return out_signed ? 2 * c - q : c;
}

}  // namespace mmaqd
