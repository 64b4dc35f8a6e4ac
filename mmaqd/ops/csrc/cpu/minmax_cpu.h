// The smallest and largest value of an integer CPU tensor in one pass over its storage, whatever its memory format
// (at::aminmax copies a channels-last tensor to contiguous first): the range checks of the CPU kernels.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace mmaqd {

// min and max of p[begin, end): one loop body, compiled into an AVX2 function (vector min / max; x86-64's baseline
// SSE2 has no signed 32-bit min) and a function for any x86-64 CPU
template <typename T>
__attribute__((always_inline)) inline void span_minmax_body(const T* p, int64_t begin, int64_t end, T& lo, T& hi) {
  T a = std::numeric_limits<T>::max(), b = std::numeric_limits<T>::min();
  for (int64_t i = begin; i < end; ++i) {
    const T v = p[i];
    a = v < a ? v : a;
    b = v > b ? v : b;
  }
  lo = a, hi = b;
}

template <typename T>
void span_minmax_generic(const T* p, int64_t begin, int64_t end, T& lo, T& hi) {
  span_minmax_body(p, begin, end, lo, hi);
}

template <typename T>
__attribute__((target("avx2"))) void span_minmax_avx2(const T* p, int64_t begin, int64_t end, T& lo, T& hi) {
  span_minmax_body(p, begin, end, lo, hi);
}

inline bool minmax_has_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}

template <typename T>
std::pair<int64_t, int64_t> storage_minmax(const T* p, int64_t n) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / 65536 + 1));
  std::vector<T> lo(static_cast<size_t>(chunks)), hi(static_cast<size_t>(chunks));
  const bool avx2 = minmax_has_avx2();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t b0 = c * n / chunks, b1 = (c + 1) * n / chunks;
      if (avx2) {
        span_minmax_avx2(p, b0, b1, lo[size_t(c)], hi[size_t(c)]);
      } else {
        span_minmax_generic(p, b0, b1, lo[size_t(c)], hi[size_t(c)]);
      }
    }
  });
  return {int64_t(*std::min_element(lo.begin(), lo.end())), int64_t(*std::max_element(hi.begin(), hi.end()))};
}

// (min, max) of a non-empty integer tensor: a dense int32 / int16 / int8 / uint8 one is scanned in place, any other
// through at::aminmax
inline std::pair<int64_t, int64_t> integer_minmax(const at::Tensor& t) {
  if (t.is_non_overlapping_and_dense()) {
    switch (t.scalar_type()) {
      case at::kInt: return storage_minmax(t.data_ptr<int32_t>(), t.numel());
      case at::kShort: return storage_minmax(t.data_ptr<int16_t>(), t.numel());
      case at::kChar: return storage_minmax(t.data_ptr<int8_t>(), t.numel());
      case at::kByte: return storage_minmax(t.data_ptr<uint8_t>(), t.numel());
      default: break;
    }
  }
  const auto mm = at::aminmax(t);
  return {std::get<0>(mm).item<int64_t>(), std::get<1>(mm).item<int64_t>()};
}

}  // namespace mmaqd
