// mmaqd::requantize and mmaqd::quant_add on CUDA tensors: argument handling as cpu/elementwise_cpu.cpp, the
// kernels of elementwise_kernels.cuh, registered under the schemas of requantize.cpp. An int32 overflow is raised
// as on the CPU (one device-to-host read of the status word; MMAQD_CUDA_CHECK=0 skips it).
#ifdef MMAQD_WITH_CUDA
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <tuple>

#include "elementwise_kernels.cuh"
#include "op_checks.h"
#include "torch_launcher.cuh"

namespace mmaqd {
namespace {

bool check_enabled() {
  const char* v = std::getenv("MMAQD_CUDA_CHECK");
  return v == nullptr || v[0] == '\0' || v[0] != '0';
}

unsigned grid_for(int64_t numel, int sms) {
  const int64_t blocks = (numel + 255) / 256, cap = int64_t(sms) * 32;
  return unsigned(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

void raise_on_overflow(const at::Tensor& status, const char* what) {
  if (check_enabled()) TORCH_CHECK(status.item<int64_t>() == 0, what, " leaves int32");
}

}  // namespace

at::Tensor requantize_cuda(const at::Tensor& acc_in, const at::Tensor& m0_in, const at::Tensor& shift_in,
                           const c10::optional<at::Tensor>& bias_in, int64_t zero_point, int64_t qmin, int64_t qmax,
                           int64_t out_levels, bool out_signed) {
  TORCH_CHECK(acc_in.dim() >= 2 && acc_in.scalar_type() == at::kInt, "requantize: acc must be int32 (N, C, ...)");
  const c10::cuda::CUDAGuard guard(acc_in.device());
  const at::Tensor acc = acc_in.contiguous();
  const int64_t n = acc.size(0), c = acc.size(1), inner = c == 0 || n == 0 ? 0 : acc.numel() / (n * c);
  const at::Tensor m0 = m0_in.to(acc.device(), at::kInt).contiguous();
  const at::Tensor shift = shift_in.to(acc.device(), at::kInt).contiguous();
  TORCH_CHECK(m0.numel() == c && shift.numel() == c, "requantize: m0 and shift need one value per channel");
  at::Tensor bias;
  if (bias_in.has_value()) {
    bias = bias_in->to(acc.device(), at::kInt).contiguous();
    TORCH_CHECK(bias.numel() == c, "requantize: bias needs one value per channel");
  }
  at::Tensor out = at::empty_like(acc);
  if (acc.numel() == 0) return out;
  const at::Tensor status = at::zeros({1}, acc.options().dtype(at::kLong));
  cuda::RequantArgs r{};
  r.numel = acc.numel(), r.channels = c, r.inner = inner;
  r.m0 = m0.data_ptr<int32_t>(), r.shift = shift.data_ptr<int32_t>();
  r.bias = bias.defined() ? bias.data_ptr<int32_t>() : nullptr;
  r.zero_point = zero_point, r.qmin = qmin, r.qmax = qmax, r.out_levels = out_levels, r.out_signed = out_signed;
  TorchLauncher l(acc.device());
  l.launch(cuda::requantize_kernel, dim3(grid_for(r.numel, l.sms)), dim3(256), 0, acc.data_ptr<int32_t>(), r,
           reinterpret_cast<long long*>(status.data_ptr<int64_t>()), out.data_ptr<int32_t>());
  raise_on_overflow(status, "requantize: accumulator + bias");
  return out;
}

at::Tensor quant_add_cuda(const at::Tensor& a_in, int64_t a_m0, int64_t a_shift, const c10::optional<at::Tensor>& b_in,
                          int64_t b_m0, int64_t b_shift, int64_t left_shift, int64_t bias, int64_t m0, int64_t shift,
                          int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed) {
  TORCH_CHECK(!at::isFloatingType(a_in.scalar_type()), "quant_add: operands must be integer tensors");
  TORCH_CHECK(left_shift >= 0 && left_shift <= 30, "quant_add: left_shift must be in [0, 30]");
  const c10::cuda::CUDAGuard guard(a_in.device());
  at::Tensor a, b;
  std::tie(a, b) = quant_add_operands(a_in, b_in);
  at::Tensor out = at::empty_like(a);
  if (a.numel() == 0) return out;
  const at::Tensor status = at::zeros({1}, a.options().dtype(at::kLong));
  cuda::AddArgs p{};
  p.numel = a.numel();
  p.am = int32_t(a_m0), p.as = int32_t(a_shift), p.bm = int32_t(b_m0), p.bs = int32_t(b_shift);
  p.om = int32_t(m0), p.os = int32_t(shift);
  p.left = left_shift, p.bias = bias, p.zero_point = zero_point, p.qmin = qmin, p.qmax = qmax;
  p.out_levels = out_levels, p.out_signed = out_signed;
  TorchLauncher l(a.device());
  l.launch(cuda::quant_add_kernel, dim3(grid_for(p.numel, l.sms)), dim3(256), 0, a.data_ptr<int32_t>(),
           b.defined() ? b.data_ptr<int32_t>() : nullptr, p, reinterpret_cast<long long*>(status.data_ptr<int64_t>()),
           out.data_ptr<int32_t>());
  raise_on_overflow(status, "quant_add: the rescaled sum");
  return out;
}

}  // namespace mmaqd

TORCH_LIBRARY_IMPL(mmaqd, CUDA, m) {
  m.impl("requantize", &mmaqd::requantize_cuda);
  m.impl("quant_add", &mmaqd::quant_add_cuda);
}
#endif  // MMAQD_WITH_CUDA
