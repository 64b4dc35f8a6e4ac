// The element-wise integer ops of the integer detector on the CPU, bit for bit as mmaqd/ops/fixed_point.py and
// mmaqd/ops/quant_conv.py compute them (Jacob et al., CVPR 2018, arXiv 1712.05877, section 2.2-2.4):
//   requantize: an int32 accumulator (N, C, ...) + per-channel bias -> per-channel fixed-point multiplier
//               -> + zero point -> clamp -> integer value (2c - q on a signed grid);
//   quant_add:  TFLite's quantized add: (a << left) * M_a + (b << left) * M_b + bias -> * M -> + zero point ->
//               clamp -> value (b absent: a rescale of a alone).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <tuple>

#include "fixed_point.h"
#include "fixed_point_avx512.h"
#include "minmax_cpu.h"
#include "op_checks.h"

namespace mmaqd {
namespace {


bool has_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  }();
  return yes;
}

struct AddParams {
  int32_t am, as, bm, bs, om, os;
  int64_t left, bias, zero_point, qmin, qmax, out_levels;
  bool out_signed;
};


// elements [begin, end) of the add, scalar; returns false if a rescaled sum left int32
bool quant_add_scalar(const int32_t* pa, const int32_t* pb, int32_t* o, int64_t begin, int64_t end,
                      const AddParams& p) {
  bool ok = true;
  for (int64_t i = begin; i < end; ++i) {
    int64_t t = multiply_by_quantized_multiplier(int64_t(pa[i]) << p.left, p.am, p.as);
    if (pb != nullptr) t += multiply_by_quantized_multiplier(int64_t(pb[i]) << p.left, p.bm, p.bs);
    t += p.bias;
    ok &= t >= kInt32Min && t <= kInt32Max;
    const int64_t c = multiply_by_quantized_multiplier(t, p.om, p.os) + p.zero_point;
    o[i] = int32_t(clamp_to_value(c, p.qmin, p.qmax, p.out_signed, p.out_levels));
  }
  return ok;
}

// the same, 8 elements per step (AVX-512); the tail goes to the scalar loop
MMAQD_AVX512 bool quant_add_avx512(const int32_t* pa, const int32_t* pb, int32_t* o, int64_t begin, int64_t end,
                                   const AddParams& p) {
  const auto lr = [](int32_t shift, int& l, int& r) { l = shift > 0 ? shift : 0, r = shift > 0 ? 0 : -shift; };
  int al, ar, bl, br, ol, orr;
  lr(p.as, al, ar), lr(p.bs, bl, br), lr(p.os, ol, orr);
  const __m512i am = _mm512_set1_epi64(p.am), bm = _mm512_set1_epi64(p.bm), om = _mm512_set1_epi64(p.om);
  const __m512i bias = _mm512_set1_epi64(p.bias), zp = _mm512_set1_epi64(p.zero_point);
  const __m512i lo = _mm512_set1_epi64(p.qmin), hi = _mm512_set1_epi64(p.qmax), q = _mm512_set1_epi64(p.out_levels);
  const __m512i vmin = _mm512_set1_epi64(kInt32Min), vmax = _mm512_set1_epi64(kInt32Max);
  const __m128i left = _mm_cvtsi32_si128(int(p.left));
  __mmask8 bad = 0;
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m512i a = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(pa + i))), left);
    __m512i t = multiply_by_quantized_multiplier8(a, am, al, ar);
    if (pb != nullptr) {
      const __m512i b = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(pb + i))), left);
      t = _mm512_add_epi64(t, multiply_by_quantized_multiplier8(b, bm, bl, br));
    }
    t = _mm512_add_epi64(t, bias);
    bad |= _mm512_cmplt_epi64_mask(t, vmin) | _mm512_cmpgt_epi64_mask(t, vmax);
    __m512i c = _mm512_add_epi64(multiply_by_quantized_multiplier8(t, om, ol, orr), zp);
    c = clamp_to_value8(c, lo, hi, p.out_signed, q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), _mm512_cvtepi64_epi32(c));
  }
  const bool ok = bad == 0;
  return quant_add_scalar(pa, pb, o, i, end, p) && ok;
}

struct RequantRow {
  int32_t m0, shift;
  int64_t bias, zero_point, qmin, qmax, out_levels;
  bool out_signed;
};

bool requantize_row_scalar(const int32_t* a, int32_t* o, int64_t begin, int64_t end, const RequantRow& r) {
  bool ok = true;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t t = int64_t(a[i]) + r.bias;
    ok &= t >= kInt32Min && t <= kInt32Max;
    const int64_t c = multiply_by_quantized_multiplier(t, r.m0, r.shift) + r.zero_point;
    o[i] = int32_t(clamp_to_value(c, r.qmin, r.qmax, r.out_signed, r.out_levels));
  }
  return ok;
}

// 8 values per step; a left shift (multiplier > 1) goes to the scalar loop, where int32 range holds by the check
MMAQD_AVX512 bool requantize_row_avx512(const int32_t* a, int32_t* o, int64_t np, const RequantRow& r) {
  if (r.shift > 0) return requantize_row_scalar(a, o, 0, np, r);
  const __m512i m0 = _mm512_set1_epi64(r.m0), bias = _mm512_set1_epi64(r.bias), zp = _mm512_set1_epi64(r.zero_point);
  const __m512i lo = _mm512_set1_epi64(r.qmin), hi = _mm512_set1_epi64(r.qmax), q = _mm512_set1_epi64(r.out_levels);
  const __m512i vmin = _mm512_set1_epi64(kInt32Min), vmax = _mm512_set1_epi64(kInt32Max);
  __mmask8 bad = 0;
  int64_t i = 0;
  for (; i + 8 <= np; i += 8) {
    const __m512i t = _mm512_add_epi64(
        _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i))), bias);
    const __mmask8 out = _mm512_cmplt_epi64_mask(t, vmin) | _mm512_cmpgt_epi64_mask(t, vmax);
    bad |= out;
    // a value outside int32 is reported; clamp it first so that the lane arithmetic stays exact meanwhile
    const __m512i ts = _mm512_min_epi64(_mm512_max_epi64(t, vmin), vmax);
    __m512i c = _mm512_add_epi64(multiply_by_quantized_multiplier8(ts, m0, 0, -r.shift), zp);
    c = clamp_to_value8(c, lo, hi, r.out_signed, q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), _mm512_cvtepi64_epi32(c));
  }
  const bool ok = bad == 0;
  return requantize_row_scalar(a, o, i, np, r) && ok;
}

// one pixel of a channels-last accumulator: channels [0, c) with their own multiplier, shift and bias; 8 channels
// per step, the rest (and channels whose shift is a left shift: a multiplier > 1) in the scalar loop
MMAQD_AVX512 bool requantize_pixel_avx512(const int32_t* a, int32_t* o, int64_t c, const int32_t* pm, const int32_t* ps,
                                          const int32_t* pb, const RequantRow& base) {
  const __m512i zp = _mm512_set1_epi64(base.zero_point), lo = _mm512_set1_epi64(base.qmin);
  const __m512i hi = _mm512_set1_epi64(base.qmax), q = _mm512_set1_epi64(base.out_levels);
  const __m512i vmin = _mm512_set1_epi64(kInt32Min), vmax = _mm512_set1_epi64(kInt32Max);
  const __m512i zero = _mm512_setzero_si512();
  __mmask8 bad = 0;
  bool ok = true;
  int64_t ch = 0;
  for (; ch + 8 <= c; ch += 8) {
    const __m512i shift = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ps + ch)));
    const __m512i m0 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pm + ch)));
    const __m512i bias = pb != nullptr ? _mm512_cvtepi32_epi64(
                                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + ch)))
                                       : zero;
    const __m512i t = _mm512_add_epi64(
        _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + ch))), bias);
    bad |= _mm512_cmplt_epi64_mask(t, vmin) | _mm512_cmpgt_epi64_mask(t, vmax);
    const __m512i ts = _mm512_min_epi64(_mm512_max_epi64(t, vmin), vmax);
    const __m512i left = _mm512_max_epi64(shift, zero), right = _mm512_max_epi64(_mm512_sub_epi64(zero, shift), zero);
    __m512i v = _mm512_add_epi64(multiply_by_quantized_multiplier8v(ts, m0, left, right), zp);
    v = clamp_to_value8(v, lo, hi, base.out_signed, q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + ch), _mm512_cvtepi64_epi32(v));
    if (_mm512_cmpgt_epi64_mask(left, zero) != 0) {  // a left shift: redo these 8 in the scalar loop (exact)
      for (int64_t k = ch; k < ch + 8; ++k) {
        RequantRow r = base;
        r.m0 = pm[k], r.shift = ps[k], r.bias = pb != nullptr ? pb[k] : 0;
        ok &= requantize_row_scalar(a + k, o + k, 0, 1, r);
      }
    }
  }
  for (; ch < c; ++ch) {
    RequantRow r = base;
    r.m0 = pm[ch], r.shift = ps[ch], r.bias = pb != nullptr ? pb[ch] : 0;
    ok &= requantize_row_scalar(a + ch, o + ch, 0, 1, r);
  }
  return ok && bad == 0;
}

}  // namespace

at::Tensor requantize_cpu(const at::Tensor& acc_in, const at::Tensor& m0_in, const at::Tensor& shift_in,
                          const c10::optional<at::Tensor>& bias_in, int64_t zero_point, int64_t qmin, int64_t qmax,
                          int64_t out_levels, bool out_signed) {
  TORCH_CHECK(acc_in.dim() >= 2 && acc_in.scalar_type() == at::kInt, "requantize: acc must be int32 (N, C, ...)");
  // a channels-last accumulator stays channels-last (one run of C values per pixel), any other becomes contiguous
  const bool nhwc = acc_in.dim() == 4 && acc_in.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const at::Tensor acc = acc_in.contiguous(nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const int64_t n = acc.size(0), c = acc.size(1), inner = c == 0 || n == 0 ? 0 : acc.numel() / (n * c);
  const at::Tensor m0 = m0_in.to(at::kInt).contiguous(), shift = shift_in.to(at::kInt).contiguous();
  TORCH_CHECK(m0.numel() == c && shift.numel() == c, "requantize: m0 and shift need one value per channel");
  at::Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->to(at::kInt).contiguous();
    TORCH_CHECK(bias.numel() == c, "requantize: bias needs one value per channel");
  }
  at::Tensor out = at::empty_like(acc);
  const int32_t* a = acc.data_ptr<int32_t>();
  const int32_t* pm = m0.data_ptr<int32_t>();
  const int32_t* ps = shift.data_ptr<int32_t>();
  const int32_t* pb = bias.defined() ? bias.data_ptr<int32_t>() : nullptr;
  int32_t* o = out.data_ptr<int32_t>();
  std::atomic<bool> ok{true};
  const bool avx512 = has_avx512();
  if (nhwc) {
    const RequantRow base{0, 0, 0, zero_point, qmin, qmax, out_levels, out_signed};
    at::parallel_for(0, n * inner, 64, [&](int64_t begin, int64_t end) {
      for (int64_t px = begin; px < end; ++px) {
        bool part = true;
        if (avx512) {
          part = requantize_pixel_avx512(a + px * c, o + px * c, c, pm, ps, pb, base);
        } else {
          for (int64_t ch = 0; ch < c; ++ch) {
            RequantRow r = base;
            r.m0 = pm[ch], r.shift = ps[ch], r.bias = pb != nullptr ? pb[ch] : 0;
            part &= requantize_row_scalar(a + px * c + ch, o + px * c + ch, 0, 1, r);
          }
        }
        if (!part) ok = false;
      }
    });
    TORCH_CHECK(ok.load(), "requantize: accumulator + bias leaves int32");
    return out;
  }
  at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t ch = row % c;
      const RequantRow r{pm[ch], ps[ch], pb != nullptr ? pb[ch] : 0, zero_point, qmin, qmax, out_levels, out_signed};
      const bool part = avx512 ? requantize_row_avx512(a + row * inner, o + row * inner, inner, r)
                               : requantize_row_scalar(a + row * inner, o + row * inner, 0, inner, r);
      if (!part) ok = false;
    }
  });
  TORCH_CHECK(ok.load(), "requantize: accumulator + bias leaves int32");
  return out;
}

at::Tensor quant_add_cpu(const at::Tensor& a_in, int64_t a_m0, int64_t a_shift, const c10::optional<at::Tensor>& b_in,
                         int64_t b_m0, int64_t b_shift, int64_t left_shift, int64_t bias, int64_t m0, int64_t shift,
                         int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed) {
  TORCH_CHECK(!at::isFloatingType(a_in.scalar_type()), "quant_add: operands must be integer tensors");
  at::Tensor a, b;
  std::tie(a, b) = quant_add_operands(a_in, b_in);
  at::Tensor out = at::empty_like(a);
  const int32_t* pa = a.data_ptr<int32_t>();
  const int32_t* pb = b.defined() ? b.data_ptr<int32_t>() : nullptr;
  int32_t* o = out.data_ptr<int32_t>();
  TORCH_CHECK(left_shift >= 0 && left_shift <= 30, "quant_add: left_shift must be in [0, 30]");
  const AddParams p{int32_t(a_m0), int32_t(a_shift), int32_t(b_m0), int32_t(b_shift), int32_t(m0), int32_t(shift),
                    left_shift, bias, zero_point, qmin, qmax, out_levels, out_signed};
  // the vector path keeps every (v << left) * M0 product exact in int64: |v << left| < 2^31
  const int64_t bound = (int64_t(1) << (31 - left_shift)) - 1;
  const auto within = [bound](const at::Tensor& t) {
    const auto mm = integer_minmax(t);
    return mm.first >= -bound && mm.second <= bound;
  };
  const bool avx512 = has_avx512() && a.numel() > 0 && within(a) && (!b.defined() || within(b));
  std::atomic<bool> ok{true};
  at::parallel_for(0, a.numel(), 4096, [&](int64_t begin, int64_t end) {
    const bool part = avx512 ? quant_add_avx512(pa, pb, o, begin, end, p) : quant_add_scalar(pa, pb, o, begin, end, p);
    if (!part) ok = false;
  });
  TORCH_CHECK(ok.load(), "quant_add: the rescaled sum leaves int32");
  return out;
}

}  // namespace mmaqd
