// The element-wise integer ops of the integer detector on the CPU, bit for bit as mmaqd/ops/fixed_point.py and
// mmaqd/ops/quant_conv.py compute them (Jacob et al., CVPR 2018, arXiv 1712.05877, section 2.2-2.4):
//   requantize: an int32 accumulator (N, C, ...) + per-channel bias -> per-channel fixed-point multiplier
//               -> + zero point -> clamp -> integer value (2c - q on a signed grid);
//   quant_add:  TFLite's quantized add: (a << left) * M_a + (b << left) * M_b + bias -> * M -> + zero point ->
//               clamp -> value (b absent: a rescale of a alone).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "fixed_point.h"

namespace mmaqd {
namespace {

inline int64_t clamp_value(int64_t c, int64_t qmin, int64_t qmax, bool out_signed, int64_t q) {
  c = c < qmin ? qmin : (c > qmax ? qmax : c);
  return out_signed ? 2 * c - q : c;
}

}  // namespace

at::Tensor requantize_cpu(const at::Tensor& acc_in, const at::Tensor& m0_in, const at::Tensor& shift_in,
                          const c10::optional<at::Tensor>& bias_in, int64_t zero_point, int64_t qmin, int64_t qmax,
                          int64_t out_levels, bool out_signed) {
  TORCH_CHECK(acc_in.dim() >= 2 && acc_in.scalar_type() == at::kInt, "requantize: acc must be int32 (N, C, ...)");
  const at::Tensor acc = acc_in.contiguous();
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
  at::parallel_for(0, n * c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t ch = row % c, b = pb != nullptr ? pb[ch] : 0;
      for (int64_t i = row * inner; i < (row + 1) * inner; ++i) {
        const int64_t t = int64_t(a[i]) + b;
        TORCH_CHECK(t >= kInt32Min && t <= kInt32Max, "requantize: accumulator + bias leaves int32");
        o[i] = int32_t(clamp_value(multiply_by_quantized_multiplier(t, pm[ch], ps[ch]) + zero_point, qmin, qmax,
                                   out_signed, out_levels));
      }
    }
  });
  return out;
}

at::Tensor quant_add_cpu(const at::Tensor& a_in, int64_t a_m0, int64_t a_shift, const c10::optional<at::Tensor>& b_in,
                         int64_t b_m0, int64_t b_shift, int64_t left_shift, int64_t bias, int64_t m0, int64_t shift,
                         int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed) {
  TORCH_CHECK(!at::isFloatingType(a_in.scalar_type()), "quant_add: operands must be integer tensors");
  at::Tensor a = a_in.to(at::kInt), b;
  if (b_in.has_value()) {
    TORCH_CHECK(!at::isFloatingType(b_in->scalar_type()), "quant_add: operands must be integer tensors");
    b = b_in->to(at::kInt);
    const auto shape = at::infer_size(a.sizes(), b.sizes());
    a = a.expand(shape).contiguous(), b = b.expand(shape).contiguous();
  } else {
    a = a.contiguous();
  }
  at::Tensor out = at::empty_like(a);
  const int32_t* pa = a.data_ptr<int32_t>();
  const int32_t* pb = b.defined() ? b.data_ptr<int32_t>() : nullptr;
  int32_t* o = out.data_ptr<int32_t>();
  const int32_t am = int32_t(a_m0), as = int32_t(a_shift), bm = int32_t(b_m0), bs = int32_t(b_shift);
  const int32_t om = int32_t(m0), os = int32_t(shift);
  at::parallel_for(0, a.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t t = multiply_by_quantized_multiplier(int64_t(pa[i]) << left_shift, am, as);
      if (pb != nullptr) t += multiply_by_quantized_multiplier(int64_t(pb[i]) << left_shift, bm, bs);
      t += bias;
      TORCH_CHECK(t >= kInt32Min && t <= kInt32Max, "quant_add: the rescaled sum leaves int32");
      o[i] = int32_t(clamp_value(multiply_by_quantized_multiplier(t, om, os) + zero_point, qmin, qmax, out_signed,
                                 out_levels));
    }
  });
  return out;
}

}  // namespace mmaqd
