// mmaqd::quant_conv2d and mmaqd::quant_conv2d_prepack on CUDA tensors: argument checks, buffers, and the launch
// sequence of quant_conv2d_kernels.cuh (the tensor-core implicit GEMM, or the generic CUDA-core kernel), registered
// under the schema that quant_conv2d.cpp defines. Same integers as the CPU op and the PyTorch reference.
//
// Environment (read per call): MMAQD_CUDA_FORCE_GENERIC=1 runs the generic kernel only (tests compare the two);
// MMAQD_CUDA_CHECK=0 skips the one device-to-host read of the status words after the kernels, so that the op does
// not synchronise; an accumulator that leaves int32 then goes unreported (default: checked, raised as the CPU op
// does). mmaqd::cuda_last_conv_path() says which kernel did the last checked call's conv: 1 tensor cores, 2 generic.
#ifdef MMAQD_WITH_CUDA
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <utility>

#include "op_checks.h"
#include "quant_conv2d_kernels.cuh"
#include "torch_launcher.cuh"

namespace mmaqd {
namespace {

std::atomic<int64_t> g_last_path{0};

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || v[0] == '\0') return fallback;
  return v[0] != '0';
}

at::Tensor int32_table(const c10::optional<at::Tensor>& t, const at::Tensor& like, int64_t count, const char* what) {
  if (!t.has_value()) return at::Tensor();
  TORCH_CHECK(t->device() == like.device(), "quant_conv2d: ", what, " must be on ", like.device(), ", got ",
              t->device());
  at::Tensor out = t->to(at::kInt).contiguous();
  TORCH_CHECK(out.numel() == count, "quant_conv2d: ", what, " needs ", count, " values, got ", out.numel());
  return out;
}

const int32_t* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<int32_t>() : nullptr; }

bool usable_prepacked(const c10::optional<at::Tensor>& p, const at::Tensor& weight, const cuda::TcLayout& lay) {
  return p.has_value() && p->defined() && p->device() == weight.device() && p->scalar_type() == at::kByte &&
         p->is_contiguous() && p->numel() == lay.bytes && reinterpret_cast<uintptr_t>(p->data_ptr()) % 16 == 0;
}

at::Tensor prepack(const at::Tensor& packed, int64_t w_bits, int64_t cg, int64_t kh, int64_t kw,
                   const cuda::TcLayout& lay) {
  at::Tensor out = at::empty({lay.bytes}, packed.options().dtype(at::kByte));
  if (lay.bytes == 0) return out;
  TorchLauncher l(packed.device());
  cuda::launch_prepack(l, packed.data_ptr<uint8_t>(), packed.size(1), int(w_bits), cg, kh, kw, lay,
                       out.data_ptr<uint8_t>());
  return out;
}

}  // namespace

int64_t cuda_last_conv_path() { return g_last_path.load(); }

at::Tensor quant_conv2d_prepack_cuda(const at::Tensor& weight_in, int64_t w_bits, at::IntArrayRef w_shape,
                                     int64_t groups) {
  check_quant_conv2d_prepack_args(weight_in, w_bits, w_shape, groups);
  const c10::cuda::CUDAGuard guard(weight_in.device());
  const at::Tensor weight = weight_in.contiguous();
  const cuda::TcLayout lay = cuda::tc_layout(int(w_bits), w_shape[0], w_shape[1], w_shape[2], w_shape[3], groups);
  return prepack(weight, w_bits, w_shape[1], w_shape[2], w_shape[3], lay);
}

at::Tensor quant_conv2d_cuda(const at::Tensor& x_in, const at::Tensor& weight_in, int64_t w_bits,
                             at::IntArrayRef w_shape, const c10::optional<at::Tensor>& w_offset, int64_t frac_bits,
                             int64_t offset_frac_bits, const c10::optional<at::Tensor>& bias,
                             const c10::optional<at::Tensor>& multiplier, const c10::optional<at::Tensor>& shift,
                             int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups, const c10::optional<at::Tensor>& prepacked) {
  check_quant_conv2d_args(x_in, weight_in, w_bits, w_shape, multiplier, shift, frac_bits, offset_frac_bits, stride,
                          padding, dilation, groups);
  // the CUDA op's own checks (the CPU op does not make them)
  TORCH_CHECK(frac_bits >= 0 && offset_frac_bits - frac_bits <= 62, "quant_conv2d: bad frac_bits");
  cuda::ConvGeom g{};
  g.n = x_in.size(0), g.c_in = x_in.size(1), g.h = x_in.size(2), g.w = x_in.size(3);
  g.c_out = w_shape[0], g.cg = w_shape[1], g.kh = w_shape[2], g.kw = w_shape[3], g.groups = groups;
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  g.w_bits = int(w_bits);
  const int64_t k = g.cg * g.kh * g.kw, fields = 8 / field_bits(int(w_bits));
  TORCH_CHECK(weight_in.size(1) * fields >= k, "quant_conv2d: weight rows hold fewer than C_in/g * kh * kw codes");
  std::tie(g.oh, g.ow) = conv_output_hw(x_in, w_shape, stride, padding, dilation);
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor out = at::empty({g.n, g.c_out, g.oh, g.ow}, x_in.options().dtype(at::kInt));
  if (g.n == 0) return out;

  // int32 or int64 values as they come; narrower integer types widen exactly to int32
  const at::Tensor x =
      (x_in.scalar_type() == at::kLong ? x_in : x_in.to(at::kInt)).contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor offset_t = int32_table(w_offset, x, g.c_out, "w_offset");
  const at::Tensor bias_t = int32_table(bias, x, g.c_out, "bias");
  const at::Tensor m0_t = int32_table(multiplier, x, g.c_out, "multiplier");
  const at::Tensor shift_t = int32_table(shift, x, g.c_out, "shift");
  cuda::Stage st{};
  st.w_offset = ptr_or_null(offset_t), st.bias = ptr_or_null(bias_t);
  st.m0 = ptr_or_null(m0_t), st.shift = ptr_or_null(shift_t);
  st.frac_bits = int(frac_bits), st.offset_shift = int(offset_frac_bits - frac_bits);
  st.zero_point = zero_point, st.qmin = qmin, st.qmax = qmax, st.out_levels = out_levels;
  st.out_signed = out_signed;

  const cuda::TcLayout lay = cuda::tc_layout(g.w_bits, g.c_out, g.cg, g.kh, g.kw, groups);
  const bool use_tc = lay.eligible && !env_flag("MMAQD_CUDA_FORCE_GENERIC", false);
  at::Tensor wpre;
  if (use_tc) {
    wpre = usable_prepacked(prepacked, weight, lay) ? *prepacked : prepack(weight, w_bits, g.cg, g.kh, g.kw, lay);
  }
  int64_t x8_bytes = 0, csum_count = 0;
  cuda::conv_workspace(g, lay, use_tc, x8_bytes, csum_count);
  const at::Tensor x8 = at::empty({x8_bytes}, x.options().dtype(at::kChar));
  const at::Tensor csum = at::empty({csum_count}, x.options().dtype(at::kInt));
  const at::Tensor status = at::empty({cuda::kStatusWords}, x.options().dtype(at::kLong));
  const cuda::ConvBuffers buffers{x8.data_ptr<int8_t>(), csum.data_ptr<int32_t>(),
                                  reinterpret_cast<long long*>(status.data_ptr<int64_t>()), out.data_ptr<int32_t>()};
  TorchLauncher l(x.device());
  const uint8_t* wp = use_tc ? wpre.data_ptr<uint8_t>() : nullptr;
  if (x.scalar_type() == at::kLong) {
    cuda::launch_quant_conv2d(l, g, st, x.data_ptr<int64_t>(), weight.data_ptr<uint8_t>(), weight.size(1), lay, wp,
                              use_tc, buffers);
  } else {
    cuda::launch_quant_conv2d(l, g, st, x.data_ptr<int32_t>(), weight.data_ptr<uint8_t>(), weight.size(1), lay, wp,
                              use_tc, buffers);
  }
  if (env_flag("MMAQD_CUDA_CHECK", true)) {
    const at::Tensor words = status.cpu();  // the one synchronisation of the op
    const int64_t* w = words.data_ptr<int64_t>();
    g_last_path = use_tc && cuda::act_zero_point(w[1], w[2]) >= 0 ? 1 : 2;
    TORCH_CHECK(w[0] == 0, "quant_conv2d: accumulator + bias leaves int32");
  }
  return out;
}

}  // namespace mmaqd

TORCH_LIBRARY_IMPL(mmaqd, CUDA, m) {
  m.impl("quant_conv2d", &mmaqd::quant_conv2d_cuda);
  m.impl("quant_conv2d_prepack", &mmaqd::quant_conv2d_prepack_cuda);
}

TORCH_LIBRARY_FRAGMENT(mmaqd, m) {
  // which kernel did the last (checked) CUDA conv: 0 none yet, 1 the tensor cores, 2 the generic kernel
  m.def("cuda_last_conv_path() -> int", &mmaqd::cuda_last_conv_path);
}
#endif  // MMAQD_WITH_CUDA
