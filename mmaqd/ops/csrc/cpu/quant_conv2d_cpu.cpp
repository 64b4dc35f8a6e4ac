// quant_conv2d on the CPU: integer conv + LIQ weight-offset term + bias + fixed-point requantization + clamp,
// bit for bit what mmaqd/ops/quant_conv.py computes (AQD, arXiv 2007.06919, section 3.3 for the grids; Jacob et
// al., CVPR 2018, section 2.2-2.4 for the output stage).
//
// Per image, group and block of 64 output pixels, one dot product over K = kh * kw * C_in/g per output channel and
// pixel, with int32 accumulation (exact: the converter's F keeps |A| < 2^31, checked below), and S[p] = the sum of
// the pixel's inputs (the offset term needs it, from per-pixel channel sums):
//   * 2-7-bit weights and |x| <= 127 (every 2-4-bit layer): u8 weight codes c x s8 inputs, A = 2 dot(c, x) - q S
//     (the weight value is 2c - q): AVX-512 VNNI vpdpbusd (64 products per instruction) where the CPU has it,
//     else AVX2 vpmaddubsw + vpmaddwd (pair sums stay below 2 * 127 * 127 < 2^15: no saturation);
//   * otherwise (the 8-bit first and last layers): int16 x int16, VNNI vpdpwssd or AVX2 vpmaddwd.
// The vector kernels broadcast each pixel's inputs against 16 (VNNI) or 8 (AVX2) packed output channels, 8 pixels
// per tile, reading the zero-padded NHWC input directly (no im2col; one group, or C_in/g a multiple of 4); other
// grouped convs go through an im2col. A scalar fallback is chosen at run time (MMAQD_FORCE_SCALAR=1 forces it,
// MMAQD_ISA=avx2 caps the vector code at AVX2). The input, in any memory format, is converted to that padded NHWC
// layout in one pass; the output stage runs per pixel along its channels (accumulators stored pixel-major) and the
// output keeps the input's memory format (channels-last in, channels-last out).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fixed_point.h"
#include "fixed_point_avx512.h"
#include "minmax_cpu.h"
#include "op_checks.h"
#include "packing.h"

namespace mmaqd {
namespace {

enum class Isa { kScalar, kAvx2, kAvx512Vnni };

// the best the CPU has; MMAQD_FORCE_SCALAR=1 forces the scalar loops, MMAQD_ISA=avx2 caps it at AVX2 (tests and
// benchmarks of the AVX2 path on an AVX-512 machine)
Isa detect_isa() {
  static const Isa isa = [] {
    const char* force = std::getenv("MMAQD_FORCE_SCALAR");
    if (force != nullptr && force[0] != '\0' && force[0] != '0') return Isa::kScalar;
    const char* cap = std::getenv("MMAQD_ISA");
    const bool avx2_cap = cap != nullptr && std::string(cap) == "avx2";
    __builtin_cpu_init();
    if (!avx2_cap && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) {
      return Isa::kAvx512Vnni;
    }
    if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return isa;
}

// ------------------------------------------------------------------------------------------- dot products
// out[p * ldo + o] = sum_k w[o * kp + k] * col[p * kp + k] for o < og, p < np (the scalar fallback).
template <typename TW, typename TX>
void dots_scalar(const TW* w, const TX* col, int64_t og, int64_t np, int64_t kp, int32_t* out, int64_t ldo) {
  for (int64_t p = 0; p < np; ++p)
    for (int64_t o = 0; o < og; ++o) {
      const TW* r = w + o * kp;
      const TX* c = col + p * kp;
      int32_t acc = 0;
      for (int64_t k = 0; k < kp; ++k) acc += int32_t(r[k]) * int32_t(c[k]);
      out[p * ldo + o] = acc;
    }
}

// Broadcast micro-kernels, fbgemm style: a vector holds CW output channels x KG consecutive K values of the packed
// weights, each pixel's KG input values (4 bytes) are broadcast to every lane, and one instruction adds their dot
// products into CW channels at once (no horizontal sums):
//   u8 x s8 (KG = 4): AVX-512 VNNI vpdpbusd (CW = 16) or AVX2 vpmaddubsw + vpmaddwd (CW = 8; pair sums stay
//   below 2 * 127 * 127 < 2^15, no saturation); int16 x int16 (KG = 2): VNNI vpdpwssd or AVX2 vpmaddwd.
// A tile is up to two channel blocks x MR = 8 pixels; packed weights (og_pad / CW, K / KG, CW, KG). The
// accumulators are stored pixel-major, (pixels, og_pad) int32, each vector as it is: the output stage then runs
// along the channels of a pixel, the layout of the channels-last output.
constexpr int64_t kMr = 8;

#define MMAQD_AVX2 "avx2"
#define MMAQD_VNNI "avx512f,avx512bw,avx512vnni"
#define L256(p) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
#define S256(p, v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v)
#define L512(p) _mm512_loadu_si512(p)
#define S512(p, v) _mm512_storeu_si512(p, v)
#define FMA_U8S8_AVX2(a, w, x) \
  _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
#define FMA_I16_AVX2(a, w, x) _mm256_add_epi32(a, _mm256_madd_epi16(w, x))

// The micro-kernels ("direct"): each of the 8 pixels of a tile reads its receptive field straight from the
// zero-padded NHWC input, one run of channels per kernel tap (u, v) (or, after an im2col, its row as one tap); the
// channels of a group are padded to a multiple of 4 (zeros in input and weights) so that KG consecutive K values
// never straddle two taps.
// rows[r]: pixel r's top-left input, group offset included.
#define MMAQD_DIRECT_KERNEL(NAME, TARGET, TW, TX, VEC, CW, KG, ZERO, LOAD, BCAST, FMA, STORE)                \
  template <int NB>                                                                                            \
  __attribute__((target(TARGET))) inline void NAME##_tile(const TW* w0, int64_t wstride,                      \
                                                          const TX* const* rows, const int64_t* tap_off,   \
                                                          int64_t ntaps, int64_t cq, int32_t* out, int64_t ldo, \
                                                          int64_t o0) {                                        \
    VEC acc[NB][kMr];                                                                                          \
    for (int b = 0; b < NB; ++b)                                                                               \
      for (int64_t r = 0; r < kMr; ++r) acc[b][r] = ZERO;                                                      \
    const TW* w = w0;                                                                                          \
    for (int64_t t = 0; t < ntaps; ++t) {                                                                      \
      const TX* src[kMr];                                                                                      \
      for (int64_t r = 0; r < kMr; ++r) src[r] = rows[r] + tap_off[t];                                         \
      for (int64_t kc = 0; kc < cq; ++kc, w += CW * KG) {                                                      \
        VEC wv[NB];                                                                                            \
        for (int b = 0; b < NB; ++b) wv[b] = LOAD(w + b * wstride);                                            \
        for (int64_t r = 0; r < kMr; ++r) {                                                                    \
          int32_t four;                                                                                        \
          std::memcpy(&four, src[r] + kc * KG, 4);                                                             \
          const VEC x = BCAST(four);                                                                           \
          for (int b = 0; b < NB; ++b) acc[b][r] = FMA(acc[b][r], wv[b], x);                                   \
        }                                                                                                      \
      }                                                                                                        \
    }                                                                                                          \
    for (int b = 0; b < NB; ++b)                                                                               \
      for (int64_t r = 0; r < kMr; ++r) STORE(out + r * ldo + o0 + b * CW, acc[b][r]);                         \
  }                                                                                                            \
  __attribute__((target(TARGET))) void NAME(const TW* wp, const TX* const* rows, int64_t np,                  \
                                            const int64_t* tap_off, int64_t ntaps, int64_t cq, int64_t og,     \
                                            int32_t* out, int64_t ldo) {                                       \
    const int64_t nblk = og / CW, wstride = ntaps * cq * CW * KG;                                              \
    for (int64_t ob = 0; ob < nblk; ob += 2)                                                                   \
      for (int64_t p = 0; p < np; p += kMr) {                                                                  \
        if (ob + 1 < nblk) {                                                                                   \
          NAME##_tile<2>(wp + ob * wstride, wstride, rows + p, tap_off, ntaps, cq, out + p * ldo, ldo, ob * CW);     \
        } else {                                                                                               \
          NAME##_tile<1>(wp + ob * wstride, wstride, rows + p, tap_off, ntaps, cq, out + p * ldo, ldo, ob * CW);     \
        }                                                                                                      \
      }                                                                                                        \
  }

MMAQD_DIRECT_KERNEL(direct_u8s8_avx2, MMAQD_AVX2, uint8_t, int8_t, __m256i, 8, 4, _mm256_setzero_si256(), L256,
                    _mm256_set1_epi32, FMA_U8S8_AVX2, S256)
MMAQD_DIRECT_KERNEL(direct_u8s8_vnni, MMAQD_VNNI, uint8_t, int8_t, __m512i, 16, 4, _mm512_setzero_si512(), L512,
                    _mm512_set1_epi32, _mm512_dpbusd_epi32, S512)
MMAQD_DIRECT_KERNEL(direct_i16_avx2, MMAQD_AVX2, int16_t, int16_t, __m256i, 8, 2, _mm256_setzero_si256(), L256,
                    _mm256_set1_epi32, FMA_I16_AVX2, S256)
MMAQD_DIRECT_KERNEL(direct_i16_vnni, MMAQD_VNNI, int16_t, int16_t, __m512i, 16, 2, _mm512_setzero_si512(), L512,
                    _mm512_set1_epi32, _mm512_dpwssd_epi32, S512)
#undef MMAQD_DIRECT_KERNEL

template <typename TW, typename TX>
using DirectFn = void (*)(const TW*, const TX* const*, int64_t, const int64_t*, int64_t, int64_t, int64_t, int32_t*,
                          int64_t);

// weights for the micro-kernels: (og_pad / cw, kp / kg, cw, kg) of one group, from its (og_pad, kp) rows
template <typename T>
void pack_for_microkernel(const T* rows, int64_t og_pad, int64_t kp, int64_t cw, int64_t kg, T* out) {
  const int64_t kq = kp / kg;
  for (int64_t o = 0; o < og_pad; ++o)
    for (int64_t k = 0; k < kp; ++k) out[(((o / cw) * kq + k / kg) * cw + o % cw) * kg + k % kg] = rows[o * kp + k];
}


// ------------------------------------------------------------------------------------------- im2col
struct Geometry {
  int64_t h, w, c_in, cg, kh, kw, sh, sw, ph, pw, dh, dw, ow, kp;
};

// rows of pixels [p0, p0 + np) of image img, group g, from the NHWC input x: (np, kp), K in (u, v, c) order
// csum: (N, H, W, groups) sums of each pixel's channels of a group, so that S[p] is kh * kw additions
template <typename T>
void im2col(const T* x, const int64_t* csum, int64_t groups, const Geometry& gm, int64_t img, int64_t g,
            int64_t p0, int64_t np, T* col, int64_t* sums) {
  const size_t run = size_t(gm.cg) * sizeof(T);
  for (int64_t i = 0; i < np; ++i) {
    const int64_t y = (p0 + i) / gm.ow, xx = (p0 + i) % gm.ow;
    T* dst = col + i * gm.kp;
    int64_t sum = 0;
    for (int64_t u = 0; u < gm.kh; ++u) {
      const int64_t iy = y * gm.sh - gm.ph + u * gm.dh;
      for (int64_t v = 0; v < gm.kw; ++v, dst += gm.cg) {
        const int64_t ix = xx * gm.sw - gm.pw + v * gm.dw;
        if (iy < 0 || iy >= gm.h || ix < 0 || ix >= gm.w) {
          for (int64_t c = 0; c < gm.cg; ++c) dst[c] = T(0);  // zero padding: the value 0 is exact on every grid
          continue;
        }
        const int64_t pix = (img * gm.h + iy) * gm.w + ix;
        const T* src = x + pix * gm.c_in + g * gm.cg;
        if (gm.cg < 16) {
          for (int64_t c = 0; c < gm.cg; ++c) dst[c] = src[c];  // a few channels (the stem): no call
        } else {
          std::memcpy(dst, src, run);
        }
        sum += csum[pix * groups + g];
      }
    }
    std::memset(dst, 0, size_t(gm.kp - gm.kh * gm.kw * gm.cg) * sizeof(T));
    sums[i] = sum;
  }
}

// ------------------------------------------------------------------------------------------- output stage
struct Stage {
  const int32_t* w_offset;  // (C_out,) or nullptr
  const int32_t* bias;      // (C_out,) or nullptr
  const int32_t* m0;        // (C_out,) or nullptr: return accumulators
  const int32_t* shift;
  int frac_bits, offset_shift, zero_point, qmin, qmax, out_levels;
  bool out_signed;
};

// the output value of accumulator a of channel oc at a pixel whose inputs sum to s: A (u8s8: from dot = sum c * x as
// 2 dot - q S), + offset term, + bias, then requantized (or returned as an accumulator); false if A left int32
inline bool finish_one(int64_t a, int64_t s, int64_t oc, bool u8s8, int64_t q_w, const Stage& st, int32_t* dst) {
  const int64_t offset = st.w_offset != nullptr ? st.w_offset[oc] : 0;
  const int64_t bias = st.bias != nullptr ? st.bias[oc] : 0;
  const int64_t value = u8s8 ? 2 * a - q_w * s : a;
  const int64_t acc = value * (int64_t(1) << st.frac_bits) + bias + rounding_divide_by_pot(offset * s, st.offset_shift);
  const bool ok = acc >= kInt32Min && acc <= kInt32Max;
  if (st.m0 == nullptr) {
    *dst = int32_t(acc);
    return ok;
  }
  const int64_t c = multiply_by_quantized_multiplier(acc, st.m0[oc], st.shift[oc]) + st.zero_point;
  *dst = int32_t(clamp_to_value(c, st.qmin, st.qmax, st.out_signed, st.out_levels));
  return ok;
}

// one pixel's og channels c0.. c0 + og: a (og,) accumulators -> dst (og,) values
bool finish_pixel_generic(const int32_t* a, int64_t s, int64_t og, int64_t c0, bool u8s8, int64_t q_w,
                          const Stage& st, int32_t* dst) {
  bool ok = true;
  for (int64_t o = 0; o < og; ++o) ok &= finish_one(a[o], s, c0 + o, u8s8, q_w, st, dst + o);
  return ok;
}

#define MMAQD_LOAD8(p) _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))

// the same on 8 channels per step (AVX-512, one int64 lane per channel, per-lane bias, offset, multiplier and
// shift), the same integers as finish_one; the channel tail goes to finish_one
MMAQD_AVX512 bool finish_pixel_avx512(const int32_t* a, int64_t s, int64_t og, int64_t c0, bool u8s8, int64_t q_w,
                                      const Stage& st, int32_t* dst) {
  const __m512i zero = _mm512_setzero_si512(), vs = _mm512_set1_epi64(s), vqs = _mm512_set1_epi64(q_w * s);
  const __m512i v_min = _mm512_set1_epi64(kInt32Min), v_max = _mm512_set1_epi64(kInt32Max);
  const __m512i v_lo = _mm512_set1_epi64(st.qmin), v_hi = _mm512_set1_epi64(st.qmax);
  const __m512i v_zp = _mm512_set1_epi64(st.zero_point), v_q = _mm512_set1_epi64(st.out_levels);
  const __m128i frac = _mm_cvtsi32_si128(st.frac_bits);
  __mmask8 bad = 0;
  int64_t o = 0;
  for (; o + 8 <= og; o += 8) {
    const int64_t oc = c0 + o;
    __m512i v = MMAQD_LOAD8(a + o);
    if (u8s8) v = _mm512_sub_epi64(_mm512_slli_epi64(v, 1), vqs);
    __m512i acc = _mm512_sll_epi64(v, frac);
    if (st.bias != nullptr) acc = _mm512_add_epi64(acc, MMAQD_LOAD8(st.bias + oc));
    if (st.w_offset != nullptr) {
      acc = _mm512_add_epi64(acc, rdbpot8(_mm512_mullo_epi64(MMAQD_LOAD8(st.w_offset + oc), vs), st.offset_shift));
    }
    bad |= _mm512_cmplt_epi64_mask(acc, v_min) | _mm512_cmpgt_epi64_mask(acc, v_max);
    if (st.m0 == nullptr) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + o), _mm512_cvtepi64_epi32(acc));
      continue;
    }
    const __m512i shift = MMAQD_LOAD8(st.shift + oc);
    const __m512i left = _mm512_max_epi64(shift, zero), right = _mm512_max_epi64(_mm512_sub_epi64(zero, shift), zero);
    __m512i c = multiply_by_quantized_multiplier8v(acc, MMAQD_LOAD8(st.m0 + oc), left, right);
    c = clamp_to_value8(_mm512_add_epi64(c, v_zp), v_lo, v_hi, st.out_signed, v_q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + o), _mm512_cvtepi64_epi32(c));
  }
  const bool ok = bad == 0;
  return finish_pixel_generic(a + o, s, og - o, c0 + o, u8s8, q_w, st, dst + o) && ok;
}
#undef MMAQD_LOAD8

inline bool finish_pixel(const int32_t* a, int64_t s, int64_t og, int64_t c0, bool u8s8, int64_t q_w, const Stage& st,
                         int32_t* dst) {
  return detect_isa() == Isa::kAvx512Vnni ? finish_pixel_avx512(a, s, og, c0, u8s8, q_w, st, dst)
                                           : finish_pixel_generic(a, s, og, c0, u8s8, q_w, st, dst);
}

// weights as rows of K in (u, v, c) order with cgp channel slots per tap, og_pad rows per group, zero padded:
// codes c (u8 path) or values 2c - q
template <typename T>
std::vector<T> unpack_weights(const at::Tensor& packed, int64_t w_bits, int64_t groups, int64_t og, int64_t og_pad,
                              int64_t cg, int64_t cgp, int64_t kh, int64_t kw, int64_t kp, bool as_values) {
  const int fb = field_bits(int(w_bits));
  const int q = (1 << w_bits) - 1;
  std::vector<T> out(size_t(groups * og_pad * kp), T(0));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t o = 0; o < og; ++o) {
      const uint8_t* row = packed.data_ptr<uint8_t>() + (g * og + o) * packed.size(1);
      T* dst = out.data() + (g * og_pad + o) * kp;
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t u = 0; u < kh; ++u)
          for (int64_t v = 0; v < kw; ++v) {
            const int code = unpack_code(row, (c * kh + u) * kw + v, fb);
            dst[(u * kw + v) * cgp + c] = T(as_values ? 2 * code - q : code);  // channels cg..cgp stay 0
          }
    }
  return out;
}

// out[p * groups + g] = the sum of the cg channels of group g of pixel p of the NHWC x (npix, c), |sum| <= C * 2^15:
// the pixels' S of the output stage. One loop body, compiled into an AVX2 function (vector widening adds) and a
// function for any x86-64 CPU.
template <typename TX>
__attribute__((always_inline)) inline void channel_sums_body(const TX* x, int64_t begin, int64_t end, int64_t c,
                                                             int64_t groups, int64_t cg, int64_t* out) {
  for (int64_t pix = begin; pix < end; ++pix)
    for (int64_t g = 0; g < groups; ++g) {
      const TX* src = x + pix * c + g * cg;
      int32_t sum = 0;
      for (int64_t k = 0; k < cg; ++k) sum += int32_t(src[k]);
      out[pix * groups + g] = sum;
    }
}

template <typename TX>
void channel_sums_span(const TX* x, int64_t begin, int64_t end, int64_t c, int64_t groups, int64_t cg, int64_t* out) {
  channel_sums_body(x, begin, end, c, groups, cg, out);
}

template <typename TX>
__attribute__((target("avx2"))) void channel_sums_span_avx2(const TX* x, int64_t begin, int64_t end, int64_t c,
                                                            int64_t groups, int64_t cg, int64_t* out) {
  channel_sums_body(x, begin, end, c, groups, cg, out);
}

template <typename TX>
std::vector<int64_t> channel_sums(const TX* x, int64_t npix, int64_t c, int64_t groups, int64_t cg) {
  std::vector<int64_t> out(static_cast<size_t>(npix * groups));
  const bool avx2 = detect_isa() != Isa::kScalar;
  at::parallel_for(0, npix, 256, [&](int64_t begin, int64_t end) {
    if (avx2) {
      channel_sums_span_avx2(x, begin, end, c, groups, cg, out.data());
    } else {
      channel_sums_span(x, begin, end, c, groups, cg, out.data());
    }
  });
  return out;
}

constexpr int64_t kBlock = 64;  // output pixels per task, a multiple of the tile's kMr pixels

// the output stage of one block of np pixels and the og channels of group g (acc: (kBlock, og_pad) int32,
// pixel-major) into the output op: each pixel's og values straight into the channels-last output, or (NCHW) into
// fin (kBlock, og) and from there transposed into the output's channel rows
bool finish_block(const int32_t* acc, int64_t og_pad, const int64_t* sums, int64_t np, int64_t og, int64_t g,
                  int64_t img, int64_t p0, int64_t c_out, int64_t npix, bool u8s8, int64_t q_w, const Stage& st,
                  bool nhwc_out, int32_t* fin, int32_t* op) {
  bool ok = true;
  for (int64_t i = 0; i < np; ++i) {
    int32_t* dst = nhwc_out ? op + (img * npix + p0 + i) * c_out + g * og : fin + i * og;
    ok &= finish_pixel(acc + i * og_pad, sums[i], og, g * og, u8s8, q_w, st, dst);
  }
  if (!nhwc_out) {
    for (int64_t o = 0; o < og; ++o) {
      int32_t* row = op + (img * c_out + g * og + o) * npix + p0;
      for (int64_t i = 0; i < np; ++i) row[i] = fin[i * og + o];
    }
  }
  return ok;
}

// the conv through an im2col (groups whose channels are not a multiple of 4, or no vector ISA). vector: the
// broadcast micro-kernel ``dot`` over the im2col rows as a single tap (weights wvec); scalar (dot == nullptr):
// dots_scalar on the row weights wrows. u8s8: A = 2 * dot - q * S.
template <typename TW, typename TX>
void run_conv(const at::Tensor& x_nhwc, const TW* wrows, const TW* wvec,
              const Geometry& gm, int64_t n, int64_t groups, int64_t og, int64_t og_pad, int64_t npix,
              int64_t c_out, DirectFn<TW, TX> dot, bool u8s8, int q_w, const Stage& st, int32_t* op,
              bool nhwc_out) {
  constexpr int64_t kg = sizeof(TX) == 1 ? 4 : 2;
  const int64_t nblocks = (npix + kBlock - 1) / kBlock;
  const TX* xp = x_nhwc.data_ptr<TX>();
  // per pixel and group: the sum of its channels
  const std::vector<int64_t> csum_v = channel_sums(xp, n * gm.h * gm.w, gm.c_in, groups, gm.cg);
  const int64_t* csum = csum_v.data();
  at::parallel_for(0, n * groups * nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<TX> col(size_t(kBlock * gm.kp), TX(0));
    std::vector<int32_t> acc(size_t(og_pad * kBlock));
    std::vector<int64_t> sums(static_cast<size_t>(kBlock), 0);
    std::vector<int32_t> fin(nhwc_out ? 0 : size_t(og * kBlock));
    bool ok = true;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % nblocks, g = (task / nblocks) % groups, img = task / (nblocks * groups);
      const int64_t p0 = b * kBlock, np = std::min(kBlock, npix - p0);
      im2col<TX>(xp, csum, groups, gm, img, g, p0, np, col.data(), sums.data());
      if (dot != nullptr) {
        const int64_t np_pad = (np + kMr - 1) / kMr * kMr;
        std::fill(col.begin() + np * gm.kp, col.begin() + np_pad * gm.kp, TX(0));
        const TX* rows[kBlock];
        for (int64_t i = 0; i < np_pad; ++i) rows[i] = col.data() + i * gm.kp;
        const int64_t tap0 = 0;
        dot(wvec + g * og_pad * gm.kp, rows, np_pad, &tap0, 1, gm.kp / kg, og_pad, acc.data(), og_pad);
      } else {
        dots_scalar<TW, TX>(wrows + g * og_pad * gm.kp, col.data(), og, np, gm.kp, acc.data(), og_pad);
      }
      ok &= finish_block(acc.data(), og_pad, sums.data(), np, og, g, img, p0, c_out, npix, u8s8, q_w, st, nhwc_out,
                         fin.data(), op);
    }
    TORCH_CHECK(ok, "quant_conv2d: accumulator + bias leaves int32");
  });
}

// the conv without im2col: xpad is the zero-padded NHWC input (N, Hp, Wp, groups * cgp), cgp = C_in/g padded to 4
template <typename TW, typename TX>
void run_direct(const at::Tensor& xpad, const TW* wvec, const Geometry& gm, int64_t cgp, int64_t n, int64_t groups,
                int64_t og, int64_t og_pad, int64_t npix, int64_t c_out, DirectFn<TW, TX> dot, bool u8s8, int q_w,
                const Stage& st, int32_t* op, bool nhwc_out) {
  constexpr int64_t kg = sizeof(TX) == 1 ? 4 : 2;
  const int64_t hp = xpad.size(1), wpd = xpad.size(2), cin = xpad.size(3), nblocks = (npix + kBlock - 1) / kBlock;
  // one group with dilation 1 along the width: a kernel row's kw taps are one contiguous run of kw * cgp input
  // values (cin == cgp), in the weights' (u, v, c) order, so the kernels read a row as one tap (kh taps of
  // kw * cgp values instead of kh * kw of cgp: far fewer pointer updates for small channel counts, e.g. the stem)
  const bool rows_as_taps = groups == 1 && gm.dw == 1;
  const int64_t ntaps = rows_as_taps ? gm.kh : gm.kh * gm.kw, kp = gm.kh * gm.kw * cgp;
  const int64_t cq = (rows_as_taps ? gm.kw * cgp : cgp) / kg;
  const TX* xp = xpad.data_ptr<TX>();
  std::vector<int64_t> tap_off(static_cast<size_t>(ntaps));
  for (int64_t u = 0; u < gm.kh; ++u)
    for (int64_t v = 0; v < (rows_as_taps ? 1 : gm.kw); ++v)
      tap_off[size_t(rows_as_taps ? u : u * gm.kw + v)] = (u * gm.dh * wpd + v * gm.dw) * cin;
  // per padded pixel and group: its channel sum
  const std::vector<int64_t> csum_v = channel_sums(xp, n * hp * wpd, cin, groups, cgp);
  at::parallel_for(0, n * groups * nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> acc(size_t(og_pad * kBlock));
    std::vector<int64_t> sums(static_cast<size_t>(kBlock), 0);
    std::vector<int32_t> fin(nhwc_out ? 0 : size_t(og * kBlock));
    const TX* rows[kBlock];
    bool ok = true;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % nblocks, g = (task / nblocks) % groups, img = task / (nblocks * groups);
      const int64_t p0 = b * kBlock, np = std::min(kBlock, npix - p0), np_pad = (np + kMr - 1) / kMr * kMr;
      for (int64_t i = 0; i < np_pad; ++i) {
        const int64_t pi = p0 + std::min(i, np - 1);  // tail rows repeat the last pixel; their outputs are unused
        const int64_t y = pi / gm.ow, x = pi % gm.ow;
        const int64_t top = (img * hp + y * gm.sh) * wpd + x * gm.sw;  // padded pixel of tap (0, 0)
        rows[i] = xp + top * cin + g * cgp;
        if (i < np) {
          int64_t sum = 0;
          for (int64_t u = 0; u < gm.kh; ++u)
            for (int64_t v = 0; v < gm.kw; ++v) sum += csum_v[size_t((top + u * gm.dh * wpd + v * gm.dw) * groups + g)];
          sums[i] = sum;
        }
      }
      dot(wvec + g * og_pad * kp, rows, np_pad, tap_off.data(), ntaps, cq, og_pad, acc.data(), og_pad);
      ok &= finish_block(acc.data(), og_pad, sums.data(), np, og, g, img, p0, c_out, npix, u8s8, q_w, st, nhwc_out,
                         fin.data(), op);
    }
    TORCH_CHECK(ok, "quant_conv2d: accumulator + bias leaves int32");
  });
}

// x (N, C, H, W) integer values in any memory format -> (N, H + 2 ph, W + 2 pw, cp) of T, zero padded in space
// and in channels C..cp, in one pass (the layout the kernels read; an NHWC input streams through, an NCHW one is
// transposed on the way). The values fit T: the caller checked the input's range.
template <typename TI, typename T>
void to_padded_nhwc_as(const at::Tensor& x, int64_t ph, int64_t pw, int64_t cp, T* dst) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hp = h + 2 * ph, wp = w + 2 * pw;
  const int64_t sn = x.stride(0), sc = x.stride(1), sh = x.stride(2), sw = x.stride(3);
  const TI* src = x.data_ptr<TI>();
  at::parallel_for(0, n * hp, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t img = row / hp, y = row % hp - ph;
      T* out = dst + row * wp * cp;
      if (y < 0 || y >= h) {
        std::memset(out, 0, size_t(wp * cp) * sizeof(T));
        continue;
      }
      std::memset(out, 0, size_t(pw * cp) * sizeof(T));
      std::memset(out + (pw + w) * cp, 0, size_t(pw * cp) * sizeof(T));
      const TI* line = src + img * sn + y * sh;
      for (int64_t xx = 0; xx < w; ++xx) {
        T* o = out + (pw + xx) * cp;
        const TI* px = line + xx * sw;
        if (sc == 1) {
          for (int64_t ch = 0; ch < c; ++ch) o[ch] = T(px[ch]);  // NHWC: contiguous, vectorized
        } else {
          for (int64_t ch = 0; ch < c; ++ch) o[ch] = T(px[ch * sc]);
        }
        for (int64_t ch = c; ch < cp; ++ch) o[ch] = T(0);
      }
    }
  });
}

template <typename T>
at::Tensor to_padded_nhwc(const at::Tensor& x, int64_t ph, int64_t pw, int64_t cp, at::ScalarType dtype) {
  at::Tensor out = at::empty({x.size(0), x.size(2) + 2 * ph, x.size(3) + 2 * pw, cp}, x.options().dtype(dtype));
  switch (x.scalar_type()) {
    case at::kInt: to_padded_nhwc_as<int32_t, T>(x, ph, pw, cp, out.data_ptr<T>()); break;
    case at::kShort: to_padded_nhwc_as<int16_t, T>(x, ph, pw, cp, out.data_ptr<T>()); break;
    case at::kChar: to_padded_nhwc_as<int8_t, T>(x, ph, pw, cp, out.data_ptr<T>()); break;
    case at::kByte: to_padded_nhwc_as<uint8_t, T>(x, ph, pw, cp, out.data_ptr<T>()); break;
    case at::kLong: to_padded_nhwc_as<int64_t, T>(x, ph, pw, cp, out.data_ptr<T>()); break;
    default: {
      const at::Tensor xl = x.to(at::kLong);
      to_padded_nhwc_as<int64_t, T>(xl, ph, pw, cp, out.data_ptr<T>());
    }
  }
  return out;
}

struct WeightLayout {
  bool direct;  // im2col-free kernels
  int64_t cgp, kp, og_pad, numel;
};

// how the weights of a conv are laid out for the kernels of this CPU: direct (vector ISA, one group or C_in/g a
// multiple of 4; channels padded to 4) or im2col; rows, then the micro-kernel copy
WeightLayout weight_layout(bool small, int64_t og, int64_t cg, int64_t kh, int64_t kw, int64_t groups) {
  const bool direct = detect_isa() != Isa::kScalar && (groups == 1 || cg % 4 == 0);
  const int64_t cgp = direct ? (cg + 3) / 4 * 4 : cg, k = kh * kw * cgp;
  const int64_t kp = direct ? k : (small ? (k + 3) / 4 * 4 : (k + 1) / 2 * 2), og_pad = (og + 15) / 16 * 16;
  return {direct, cgp, kp, og_pad, 2 * groups * og_pad * kp};
}

template <typename T>
at::Tensor prepare_weights_as(const at::Tensor& packed, int64_t w_bits, int64_t groups, int64_t og, int64_t cg,
                              int64_t kh, int64_t kw, const WeightLayout& lay, bool as_values, at::ScalarType dtype,
                              int64_t kg) {
  const auto rows =
      unpack_weights<T>(packed, w_bits, groups, og, lay.og_pad, cg, lay.cgp, kh, kw, lay.kp, as_values);
  at::Tensor out = at::zeros({lay.numel}, packed.options().dtype(dtype));
  T* dst = out.data_ptr<T>();
  std::memcpy(dst, rows.data(), rows.size() * sizeof(T));
  const Isa isa = detect_isa();
  if (isa != Isa::kScalar) {
    const int64_t cw = isa == Isa::kAvx512Vnni ? 16 : 8, per_group = lay.og_pad * lay.kp;
    for (int64_t g = 0; g < groups; ++g)
      pack_for_microkernel<T>(rows.data() + g * per_group, lay.og_pad, lay.kp, cw, kg,
                              dst + rows.size() + g * per_group);
  }
  return out;
}

// the kernel's weight buffer: rows (groups, og_pad, kp) then the same in the micro-kernel layout; u8 codes for the
// u8 x s8 path, int16 values 2c - q otherwise
at::Tensor prepare_weights(const at::Tensor& weight, int64_t w_bits, at::IntArrayRef w_shape, int64_t groups,
                           bool small) {
  const int64_t c_out = w_shape[0], cg = w_shape[1], kh = w_shape[2], kw = w_shape[3], og = c_out / groups;
  const WeightLayout lay = weight_layout(small, og, cg, kh, kw, groups);
  const at::Tensor packed = weight.contiguous();
  if (small) return prepare_weights_as<uint8_t>(packed, w_bits, groups, og, cg, kh, kw, lay, false, at::kByte, 4);
  return prepare_weights_as<int16_t>(packed, w_bits, groups, og, cg, kh, kw, lay, true, at::kShort, 2);
}

}  // namespace

int64_t cpu_isa() { return int64_t(detect_isa()); }

at::Tensor quant_conv2d_prepack_cpu(const at::Tensor& weight, int64_t w_bits, at::IntArrayRef w_shape,
                                    int64_t groups) {
  check_quant_conv2d_prepack_args(weight, w_bits, w_shape, groups);
  return prepare_weights(weight, w_bits, w_shape, groups, w_bits <= 7);
}

at::Tensor quant_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& weight, int64_t w_bits,
                            at::IntArrayRef w_shape, const c10::optional<at::Tensor>& w_offset,
                            int64_t frac_bits, int64_t offset_frac_bits, const c10::optional<at::Tensor>& bias,
                            const c10::optional<at::Tensor>& multiplier, const c10::optional<at::Tensor>& shift,
                            int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups, const c10::optional<at::Tensor>& prepacked) {
  check_quant_conv2d_args(x_in, weight, w_bits, w_shape, multiplier, shift, frac_bits, offset_frac_bits, stride,
                          padding, dilation, groups);
  const int64_t n = x_in.size(0), c_in = x_in.size(1), h = x_in.size(2), wd = x_in.size(3);
  const int64_t c_out = w_shape[0], cg = w_shape[1], kh = w_shape[2], kw = w_shape[3];
  int64_t oh = 0, ow = 0;
  std::tie(oh, ow) = conv_output_hw(x_in, w_shape, stride, padding, dilation);
  // the output keeps the input's memory format, as PyTorch's convs do: channels-last in, channels-last out
  const bool nhwc_out = x_in.dim() == 4 && x_in.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty({n, c_out, oh, ow}, x_in.options().dtype(at::kInt).memory_format(
                                                     nhwc_out ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous));
  if (n == 0) return out;

  int64_t lo = 0, hi = 0;
  std::tie(lo, hi) = integer_minmax(x_in);
  TORCH_CHECK(lo >= -32768 && hi <= 32767, "quant_conv2d: input values must fit int16, got [", lo, ", ", hi, "]");

  at::Tensor offset_t, bias_t, m0_t, shift_t;
  Stage st{};
  if (w_offset.has_value()) {
    offset_t = w_offset->to(at::kInt).contiguous();
    st.w_offset = offset_t.data_ptr<int32_t>();
  }
  if (bias.has_value()) {
    bias_t = bias->to(at::kInt).contiguous();
    st.bias = bias_t.data_ptr<int32_t>();
  }
  if (multiplier.has_value()) {
    m0_t = multiplier->to(at::kInt).contiguous(), shift_t = shift->to(at::kInt).contiguous();
    TORCH_CHECK(m0_t.numel() == c_out && shift_t.numel() == c_out, "quant_conv2d: multiplier/shift need C_out");
    st.m0 = m0_t.data_ptr<int32_t>(), st.shift = shift_t.data_ptr<int32_t>();
  }
  st.frac_bits = int(frac_bits), st.offset_shift = int(offset_frac_bits - frac_bits);
  st.zero_point = int(zero_point), st.qmin = int(qmin), st.qmax = int(qmax), st.out_levels = int(out_levels);
  st.out_signed = out_signed;

  const int64_t og = c_out / groups, k = cg * kh * kw, npix = oh * ow;
  const Isa isa = detect_isa();
  const bool small = w_bits <= 7 && lo >= -127 && hi <= 127;  // u8 codes x s8 inputs
  const int q_w = (1 << w_bits) - 1;
  int32_t* op = out.data_ptr<int32_t>();
  Geometry gm{h, wd, c_in, cg, kh, kw, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], ow, 0};
  const WeightLayout lay = weight_layout(small, og, cg, kh, kw, groups);
  gm.kp = lay.kp;
  at::Tensor wbuf = prepacked.has_value() ? *prepacked : at::Tensor();
  const at::ScalarType want = small ? at::kByte : at::kShort;
  if (!wbuf.defined() || wbuf.scalar_type() != want || wbuf.numel() != lay.numel) {
    wbuf = prepare_weights(weight, w_bits, w_shape, groups, small);
  }
  const bool vnni = isa == Isa::kAvx512Vnni, vector = isa != Isa::kScalar;
  if (lay.direct) {  // no im2col: the kernels read the zero-padded NHWC input (channels padded to cgp) directly
    // (channel padding only happens for one group: then the padded channels sit after the real ones)
    const at::Tensor xpad = small ? to_padded_nhwc<int8_t>(x_in, padding[0], padding[1], c_in + lay.cgp - cg, at::kChar)
                                  : to_padded_nhwc<int16_t>(x_in, padding[0], padding[1], c_in + lay.cgp - cg,
                                                            at::kShort);
    const int64_t vec_off = groups * lay.og_pad * lay.kp;
    if (small) {
      run_direct<uint8_t, int8_t>(xpad, wbuf.data_ptr<uint8_t>() + vec_off, gm, lay.cgp, n, groups, og, lay.og_pad,
                                  npix, c_out, vnni ? direct_u8s8_vnni : direct_u8s8_avx2, true, q_w, st, op,
                                  nhwc_out);
    } else {
      run_direct<int16_t, int16_t>(xpad, wbuf.data_ptr<int16_t>() + vec_off, gm, lay.cgp, n, groups, og,
                                   lay.og_pad, npix, c_out, vnni ? direct_i16_vnni : direct_i16_avx2, false, q_w,
                                   st, op, nhwc_out);
    }
  } else if (small) {
    const at::Tensor x8 = to_padded_nhwc<int8_t>(x_in, 0, 0, c_in, at::kChar);  // NHWC int8
    const uint8_t* rows = wbuf.data_ptr<uint8_t>();
    DirectFn<uint8_t, int8_t> dot = !vector ? nullptr : (vnni ? direct_u8s8_vnni : direct_u8s8_avx2);
    run_conv<uint8_t, int8_t>(x8, rows, rows + groups * lay.og_pad * lay.kp, gm, n, groups, og, lay.og_pad, npix,
                              c_out, dot, true, q_w, st, op, nhwc_out);
  } else {
    const at::Tensor x16 = to_padded_nhwc<int16_t>(x_in, 0, 0, c_in, at::kShort);  // NHWC int16
    const int16_t* rows = wbuf.data_ptr<int16_t>();
    DirectFn<int16_t, int16_t> dot = !vector ? nullptr : (vnni ? direct_i16_vnni : direct_i16_avx2);
    run_conv<int16_t, int16_t>(x16, rows, rows + groups * lay.og_pad * lay.kp, gm, n, groups, og, lay.og_pad, npix,
                               c_out, dot, false, q_w, st, op, nhwc_out);
  }
  return out;
}

}  // namespace mmaqd
