// The argument checks and operand preparation that the CPU ops (cpu/*.cpp) and the CUDA ops (cuda/*.cu) share:
// one condition and one message for both devices. Host code (ATen): the ops' bindings include it, the kernels
// (and the host simulator of tests/test_ops/cuda_sim) do not. A device adds its own checks after these.
//
// The device checks here never fail on the CPU ops: the dispatcher gives them only CPU tensors.
#pragma once
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>

#include <tuple>
#include <utility>

namespace mmaqd {

// quant_conv2d_prepack: packed uint8 weight rows (C_out, bytes), a 4-d w_shape, 1-8 bits, groups dividing C_out.
inline void check_quant_conv2d_prepack_args(const at::Tensor& weight, int64_t w_bits, at::IntArrayRef w_shape,
                                            int64_t groups) {
  TORCH_CHECK(w_shape.size() == 4 && weight.dim() == 2 && weight.scalar_type() == at::kByte,
              "quant_conv2d_prepack: weight must be packed uint8 (C_out, bytes) with a 4-d w_shape");
  TORCH_CHECK(w_bits >= 1 && w_bits <= 8 && groups >= 1 && w_shape[0] % groups == 0,
              "quant_conv2d_prepack: bad w_bits or groups");
}

// quant_conv2d: an integer x (N, C_in, H, W); packed uint8 weight rows (C_out, bytes) on x's device with a 4-d
// w_shape (C_out, C_in/groups, kh, kw) and 1-8 bits; multiplier and shift together; offset_frac_bits >= frac_bits;
// two values each of stride, padding and dilation; channels that match w_shape and groups.
inline void check_quant_conv2d_args(const at::Tensor& x, const at::Tensor& weight, int64_t w_bits,
                                    at::IntArrayRef w_shape, const c10::optional<at::Tensor>& multiplier,
                                    const c10::optional<at::Tensor>& shift, int64_t frac_bits,
                                    int64_t offset_frac_bits, at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(!at::isFloatingType(x.scalar_type()), "quant_conv2d: x must be an integer tensor, got ",
              x.scalar_type());
  TORCH_CHECK(x.dim() == 4, "quant_conv2d: x must be (N, C, H, W)");
  TORCH_CHECK(w_shape.size() == 4 && weight.dim() == 2 && weight.scalar_type() == at::kByte,
              "quant_conv2d: weight must be packed uint8 (C_out, bytes) with a 4-d w_shape");
  TORCH_CHECK(weight.device() == x.device(), "quant_conv2d: weight must be on ", x.device(), ", got ",
              weight.device());
  TORCH_CHECK(w_bits >= 1 && w_bits <= 8, "quant_conv2d: w_bits must be 1 to 8");
  TORCH_CHECK(multiplier.has_value() == shift.has_value(), "quant_conv2d: give multiplier and shift together");
  TORCH_CHECK(offset_frac_bits >= frac_bits, "quant_conv2d: offset_frac_bits must be >= frac_bits");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "quant_conv2d: stride, padding and dilation must have two values");
  const int64_t c_in = x.size(1), c_out = w_shape[0], cg = w_shape[1];
  TORCH_CHECK(groups >= 1 && c_in == cg * groups && c_out % groups == 0,
              "quant_conv2d: channels do not match w_shape and groups");
  TORCH_CHECK(weight.size(0) == c_out, "quant_conv2d: weight rows != C_out");
}

// quant_conv2d's output size (OH, OW) for x (N, C, H, W): stride and dilation >= 1, padding >= 0 (checked before
// dividing by the stride), and an output that is not empty.
inline std::pair<int64_t, int64_t> conv_output_hw(const at::Tensor& x, at::IntArrayRef w_shape, at::IntArrayRef stride,
                                                  at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 && padding[0] >= 0 &&
                  padding[1] >= 0,
              "quant_conv2d: bad stride, padding or dilation");
  const int64_t oh = (x.size(2) + 2 * padding[0] - dilation[0] * (w_shape[2] - 1) - 1) / stride[0] + 1;
  const int64_t ow = (x.size(3) + 2 * padding[1] - dilation[1] * (w_shape[3] - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(oh > 0 && ow > 0, "quant_conv2d: the output would be empty");
  return {oh, ow};
}

// quant_add's operands: int32, contiguous, and (b given) broadcast to one shape; b is undefined when absent. The
// caller checks that a is an integer tensor.
inline std::pair<at::Tensor, at::Tensor> quant_add_operands(const at::Tensor& a_in,
                                                            const c10::optional<at::Tensor>& b_in) {
  // both operands dense in a's memory format (channels-last stays channels-last), so that the element-wise
  // kernels run over the storage and the output (empty_like) keeps that format
  const at::MemoryFormat fmt = a_in.dim() == 4 ? a_in.suggest_memory_format() : at::MemoryFormat::Contiguous;
  at::Tensor a = a_in.to(at::kInt), b;
  if (b_in.has_value()) {
    TORCH_CHECK(!at::isFloatingType(b_in->scalar_type()), "quant_add: operands must be integer tensors");
    TORCH_CHECK(b_in->device() == a_in.device(), "quant_add: operands must be on one device");
    b = b_in->to(at::kInt);
    const auto shape = at::infer_size(a.sizes(), b.sizes());
    const at::MemoryFormat f = shape.size() == 4 ? fmt : at::MemoryFormat::Contiguous;
    a = a.expand(shape).contiguous(f), b = b.expand(shape).contiguous(f);
  } else {
    a = a.contiguous(fmt);
  }
  return {a, b};
}

}  // namespace mmaqd
