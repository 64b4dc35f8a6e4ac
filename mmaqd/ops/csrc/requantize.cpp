// Registration of mmaqd::requantize (the output stage of an accumulator, to integer values) and mmaqd::quant_add
// (the requantizing add); the schema in the `mmaqd` library that quant_conv2d.cpp defines, the CPU kernels in
// cpu/elementwise_cpu.cpp. Python: mmaqd/ops/fixed_point.py (requantize_values) and mmaqd/ops/quant_conv.py.
#include <torch/library.h>

namespace mmaqd {
at::Tensor requantize_cpu(const at::Tensor& acc, const at::Tensor& m0, const at::Tensor& shift,
                          const c10::optional<at::Tensor>& bias, int64_t zero_point, int64_t qmin, int64_t qmax,
                          int64_t out_levels, bool out_signed);
at::Tensor quant_add_cpu(const at::Tensor& a, int64_t a_m0, int64_t a_shift, const c10::optional<at::Tensor>& b,
                         int64_t b_m0, int64_t b_shift, int64_t left_shift, int64_t bias, int64_t m0, int64_t shift,
                         int64_t zero_point, int64_t qmin, int64_t qmax, int64_t out_levels, bool out_signed);
}  // namespace mmaqd

TORCH_LIBRARY_FRAGMENT(mmaqd, m) {
  m.def(
      "requantize(Tensor acc, Tensor m0, Tensor shift, Tensor? bias, int zero_point, int qmin, int qmax, "
      "int out_levels, bool out_signed) -> Tensor");
  m.def(
      "quant_add(Tensor a, int a_m0, int a_shift, Tensor? b, int b_m0, int b_shift, int left_shift, int bias, "
      "int m0, int shift, int zero_point, int qmin, int qmax, int out_levels, bool out_signed) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmaqd, CPU, m) {
  m.impl("requantize", &mmaqd::requantize_cpu);
  m.impl("quant_add", &mmaqd::quant_add_cpu);
}
