// quant_conv2d on the CPU: integer conv + LIQ weight-offset term + bias + fixed-point requantization + clamp,
// bit for bit what mmaqd/ops/quant_conv.py computes (AQD, arXiv 2007.06919, section 3.3 for the grids; Jacob et
// al., CVPR 2018, section 2.2-2.4 for the output stage).
//
// Per image and group: im2col of the integer input into int16 rows (one row of K = C_in/g * kh * kw values per
// output pixel, zero padded to a multiple of 16), then A[o][p] = sum_k w[o][k] * col[p][k] with int32
// accumulation (exact: |A| < 2^31 is guaranteed by the converter's F and checked below), and S[p] = sum_k
// col[p][k] for the offset term. The dot products run in an AVX2 kernel (vpmaddwd on int16, 2 pixels x 4 output
// channels per register tile) when the CPU has AVX2 and MMAQD_FORCE_SCALAR is unset, else in a scalar loop.
// The output stage is fused per output element.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstdlib>
#include <vector>

#include "fixed_point.h"
#include "packing.h"

namespace mmaqd {
namespace {

constexpr int64_t kLane = 16;  // int16 values per AVX2 register

bool use_avx2() {
  static const bool avx2 = [] {
    const char* force = std::getenv("MMAQD_FORCE_SCALAR");
    if (force != nullptr && force[0] != '\0' && force[0] != '0') return false;
    return bool(__builtin_cpu_supports("avx2"));
  }();
  return avx2;
}

// out[o * ldo + p] = sum_k w[o * kp + k] * col[p * kp + k] for o < og, p < np; kp a multiple of 16
void dots_scalar(const int16_t* w, const int16_t* col, int64_t og, int64_t np, int64_t kp, int32_t* out,
                 int64_t ldo) {
  for (int64_t p = 0; p < np; ++p) {
    const int16_t* c = col + p * kp;
    for (int64_t o = 0; o < og; ++o) {
      const int16_t* r = w + o * kp;
      int32_t acc = 0;
      for (int64_t k = 0; k < kp; ++k) acc += int32_t(r[k]) * int32_t(c[k]);
      out[o * ldo + p] = acc;
    }
  }
}

__attribute__((target("avx2"))) inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// the same with og a multiple of 4 and np a multiple of 2 (the caller pads)
__attribute__((target("avx2"))) void dots_avx2(const int16_t* w, const int16_t* col, int64_t og, int64_t np,
                                               int64_t kp, int32_t* out, int64_t ldo) {
  for (int64_t p = 0; p < np; p += 2) {
    const int16_t* c0 = col + p * kp;
    const int16_t* c1 = c0 + kp;
    for (int64_t o = 0; o < og; o += 4) {
      const int16_t* r0 = w + o * kp;
      __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
              a30 = a00, a31 = a00;
      for (int64_t k = 0; k < kp; k += kLane) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c0 + k));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c1 + k));
        __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + k));
        a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(wv, x0));
        a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(wv, x1));
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + kp + k));
        a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(wv, x0));
        a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(wv, x1));
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + 2 * kp + k));
        a20 = _mm256_add_epi32(a20, _mm256_madd_epi16(wv, x0));
        a21 = _mm256_add_epi32(a21, _mm256_madd_epi16(wv, x1));
        wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + 3 * kp + k));
        a30 = _mm256_add_epi32(a30, _mm256_madd_epi16(wv, x0));
        a31 = _mm256_add_epi32(a31, _mm256_madd_epi16(wv, x1));
      }
      int32_t* d = out + o * ldo + p;
      d[0] = hsum(a00), d[1] = hsum(a01);
      d[ldo] = hsum(a10), d[ldo + 1] = hsum(a11);
      d[2 * ldo] = hsum(a20), d[2 * ldo + 1] = hsum(a21);
      d[3 * ldo] = hsum(a30), d[3 * ldo + 1] = hsum(a31);
    }
  }
}

struct Stage {  // the output stage of one call
  const int32_t* w_offset;  // (C_out,) or nullptr
  const int32_t* bias;      // (C_out,) or nullptr
  const int32_t* m0;        // (C_out,) or nullptr: return accumulators
  const int32_t* shift;
  int frac_bits, offset_shift, zero_point, qmin, qmax, out_levels;
  bool out_signed;
};

// acc (+ offset term) (+ bias), requantized or not, for one output value
inline int32_t finish(int64_t a, int64_t s, int64_t o, const Stage& st) {
  int64_t acc = a * (int64_t(1) << st.frac_bits);
  if (st.w_offset != nullptr) acc += rounding_divide_by_pot(int64_t(st.w_offset[o]) * s, st.offset_shift);
  if (st.bias != nullptr) acc += st.bias[o];
  TORCH_CHECK(acc >= kInt32Min && acc <= kInt32Max, "quant_conv2d: accumulator + bias leaves int32: ", acc);
  if (st.m0 == nullptr) return int32_t(acc);
  int64_t c = multiply_by_quantized_multiplier(acc, st.m0[o], st.shift[o]) + st.zero_point;
  c = c < st.qmin ? st.qmin : (c > st.qmax ? st.qmax : c);
  return int32_t(st.out_signed ? 2 * c - st.out_levels : c);
}

}  // namespace

at::Tensor quant_conv2d_cpu(const at::Tensor& x_in, const at::Tensor& weight, int64_t w_bits,
                            at::IntArrayRef w_shape, const c10::optional<at::Tensor>& w_offset,
                            int64_t frac_bits, int64_t offset_frac_bits, const c10::optional<at::Tensor>& bias,
                            const c10::optional<at::Tensor>& multiplier, const c10::optional<at::Tensor>& shift,
                            int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups) {
  TORCH_CHECK(!at::isFloatingType(x_in.scalar_type()), "quant_conv2d: x must be an integer tensor, got ",
              x_in.scalar_type());
  TORCH_CHECK(x_in.dim() == 4, "quant_conv2d: x must be (N, C, H, W)");
  TORCH_CHECK(w_shape.size() == 4 && weight.dim() == 2 && weight.scalar_type() == at::kByte,
              "quant_conv2d: weight must be packed uint8 (C_out, bytes) with a 4-d w_shape");
  TORCH_CHECK(multiplier.has_value() == shift.has_value(), "quant_conv2d: give multiplier and shift together");
  TORCH_CHECK(offset_frac_bits >= frac_bits, "quant_conv2d: offset_frac_bits must be >= frac_bits");
  const at::Tensor x = x_in.to(at::kShort).contiguous();
  TORCH_CHECK(at::equal(x.to(x_in.scalar_type()), x_in), "quant_conv2d: input values must fit int16");
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), wd = x.size(3);
  const int64_t c_out = w_shape[0], cg = w_shape[1], kh = w_shape[2], kw = w_shape[3];
  TORCH_CHECK(groups >= 1 && c_in == cg * groups && c_out % groups == 0,
              "quant_conv2d: channels do not match w_shape and groups");
  TORCH_CHECK(weight.size(0) == c_out, "quant_conv2d: weight rows != C_out");
  const int64_t sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1], dh = dilation[0],
                dw = dilation[1];
  const int64_t oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1, ow = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  TORCH_CHECK(oh > 0 && ow > 0, "quant_conv2d: output would be empty");
  const int64_t og = c_out / groups, k = cg * kh * kw, kp = (k + kLane - 1) / kLane * kLane;
  const int64_t npix = oh * ow;
  const int64_t og_pad = (og + 3) / 4 * 4;

  // weights: packed codes -> odd int16 values 2c - q, rows padded with zeros to kp (and to og_pad rows)
  const int fb = field_bits(int(w_bits));
  const int q_w = (1 << w_bits) - 1;
  const at::Tensor wcontig = weight.contiguous();
  std::vector<int16_t> wv(size_t(groups * og_pad * kp), 0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t o = 0; o < og; ++o) {
      const uint8_t* row = wcontig.data_ptr<uint8_t>() + (g * og + o) * wcontig.size(1);
      int16_t* dst = wv.data() + (g * og_pad + o) * kp;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk] = int16_t(2 * unpack_code(row, kk, fb) - q_w);
    }

  at::Tensor offset_t, bias_t, m0_t, shift_t;
  Stage st{};
  if (w_offset.has_value()) offset_t = w_offset->to(at::kInt).contiguous(), st.w_offset = offset_t.data_ptr<int32_t>();
  if (bias.has_value()) bias_t = bias->to(at::kInt).contiguous(), st.bias = bias_t.data_ptr<int32_t>();
  if (multiplier.has_value()) {
    m0_t = multiplier->to(at::kInt).contiguous(), shift_t = shift->to(at::kInt).contiguous();
    TORCH_CHECK(m0_t.numel() == c_out && shift_t.numel() == c_out, "quant_conv2d: multiplier/shift need C_out");
    st.m0 = m0_t.data_ptr<int32_t>(), st.shift = shift_t.data_ptr<int32_t>();
  }
  st.frac_bits = int(frac_bits), st.offset_shift = int(offset_frac_bits - frac_bits);
  st.zero_point = int(zero_point), st.qmin = int(qmin), st.qmax = int(qmax), st.out_levels = int(out_levels);
  st.out_signed = out_signed;

  at::Tensor out = at::empty({n, c_out, oh, ow}, x.options().dtype(at::kInt));
  const int16_t* xp = x.data_ptr<int16_t>();
  int32_t* op = out.data_ptr<int32_t>();
  const bool avx2 = use_avx2();
  constexpr int64_t kBlock = 64;  // output pixels per task
  const int64_t nblocks = (npix + kBlock - 1) / kBlock;

  at::parallel_for(0, n * groups * nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int16_t> col(size_t(kBlock * kp));
    std::vector<int32_t> acc(size_t(og_pad * kBlock));
    std::vector<int64_t> sums(static_cast<size_t>(kBlock), 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % nblocks, g = (task / nblocks) % groups, img = task / (nblocks * groups);
      const int64_t p0 = b * kBlock, np = std::min(kBlock, npix - p0), np_pad = (np + 1) / 2 * 2;
      // im2col of this block: (np_pad, kp) int16, zero padding exact (a padded input is the value 0)
      std::fill(col.begin(), col.end(), int16_t(0));
      for (int64_t i = 0; i < np; ++i) {
        const int64_t y = (p0 + i) / ow, xx = (p0 + i) % ow;
        int16_t* dst = col.data() + i * kp;
        int64_t sum = 0;
        for (int64_t c = 0; c < cg; ++c) {
          const int16_t* plane = xp + ((img * c_in) + g * cg + c) * h * wd;
          for (int64_t u = 0; u < kh; ++u) {
            const int64_t iy = y * sh - ph + u * dh;
            for (int64_t v = 0; v < kw; ++v, ++dst) {
              const int64_t ix = xx * sw - pw + v * dw;
              if (iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                *dst = plane[iy * wd + ix];
                sum += *dst;
              }
            }
          }
        }
        sums[i] = sum;
      }
      const int16_t* wg = wv.data() + g * og_pad * kp;
      if (avx2) {
        dots_avx2(wg, col.data(), og_pad, np_pad, kp, acc.data(), kBlock);
      } else {
        dots_scalar(wg, col.data(), og, np, kp, acc.data(), kBlock);
      }
      for (int64_t o = 0; o < og; ++o) {
        const int64_t oc = g * og + o;
        int32_t* dst = op + (img * c_out + oc) * npix + p0;
        for (int64_t i = 0; i < np; ++i) dst[i] = finish(acc[o * kBlock + i], sums[i], oc, st);
      }
    }
  });
  return out;
}

}  // namespace mmaqd
