// gemmlowp's fixed-point primitives on 8 int64 lanes of AVX-512 (fixed_point.h, one value per lane), for the
// output stages of the kernels; the same integers as the scalar functions for int32-range inputs.
#pragma once
#include <immintrin.h>

#include <cstdint>

#define MMAQD_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vnni")))

namespace mmaqd {

// gemmlowp's RoundingDivideByPOT on 8 int64 lanes, one exponent per lane (e in [0, 62])
MMAQD_AVX512 inline __m512i rdbpot8v(__m512i x, __m512i e) {
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i mask = _mm512_sub_epi64(_mm512_sllv_epi64(one, e), one);
  const __m512i rem = _mm512_and_si512(x, mask);
  const __mmask8 neg = _mm512_cmplt_epi64_mask(x, _mm512_setzero_si512());
  const __m512i half = _mm512_srai_epi64(mask, 1);
  const __m512i thr = _mm512_mask_add_epi64(half, neg, half, one);
  const __m512i q = _mm512_srav_epi64(x, e);
  return _mm512_mask_add_epi64(q, _mm512_cmpgt_epi64_mask(rem, thr), q, one);
}

// the same with one exponent for every lane
MMAQD_AVX512 inline __m512i rdbpot8(__m512i x, int e) { return rdbpot8v(x, _mm512_set1_epi64(e)); }

// RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, m0), right) per lane, for |x << left| < 2^31,
// m0 in int32 (never INT32_MIN: quantize_multiplier keeps |M0| < 2^31, so the saturating case cannot occur); one
// multiplier and shift pair per lane (per-channel requantization of 8 consecutive channels of a pixel)
MMAQD_AVX512 inline __m512i multiply_by_quantized_multiplier8v(__m512i x, __m512i m0, __m512i left, __m512i right) {
  const __m512i ab = _mm512_mullo_epi64(_mm512_sllv_epi64(x, left), m0);
  const __mmask8 neg = _mm512_cmplt_epi64_mask(ab, _mm512_setzero_si512());
  __m512i t = _mm512_add_epi64(ab, _mm512_mask_blend_epi64(neg, _mm512_set1_epi64(int64_t(1) << 30),
                                                           _mm512_set1_epi64(int64_t(1) - (int64_t(1) << 30))));
  const __mmask8 tneg = _mm512_cmplt_epi64_mask(t, _mm512_setzero_si512());
  t = _mm512_mask_add_epi64(t, tneg, t, _mm512_set1_epi64((int64_t(1) << 31) - 1));  // truncate toward zero
  return rdbpot8v(_mm512_srai_epi64(t, 31), right);
}

// the same with one shift pair for every lane
MMAQD_AVX512 inline __m512i multiply_by_quantized_multiplier8(__m512i x, __m512i m0, int left, int right) {
  return multiply_by_quantized_multiplier8v(x, m0, _mm512_set1_epi64(left), _mm512_set1_epi64(right));
}

// clamp_to_value on 8 lanes
MMAQD_AVX512 inline __m512i clamp_to_value8(__m512i c, __m512i qmin, __m512i qmax, bool out_signed, __m512i q) {
  c = _mm512_min_epi64(_mm512_max_epi64(c, qmin), qmax);
  return out_signed ? _mm512_sub_epi64(_mm512_slli_epi64(c, 1), q) : c;
}

}  // namespace mmaqd
