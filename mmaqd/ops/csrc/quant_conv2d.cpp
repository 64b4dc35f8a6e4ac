// Registration of mmaqd::quant_conv2d: the schema once, one implementation per device (CPU here; the CUDA
// kernel registers under the same name from cuda/). Python: torch.ops.mmaqd.quant_conv2d, wrapped by
// mmaqd/ops/quant_conv.py, whose PyTorch reference it matches bit for bit.
#include <torch/library.h>

namespace mmaqd {
at::Tensor quant_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, int64_t w_bits, at::IntArrayRef w_shape,
                            const c10::optional<at::Tensor>& w_offset, int64_t frac_bits, int64_t offset_frac_bits,
                            const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& multiplier,
                            const c10::optional<at::Tensor>& shift, int64_t zero_point, int64_t qmin, int64_t qmax,
                            int64_t out_levels, bool out_signed, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, const c10::optional<at::Tensor>& prepacked);
at::Tensor quant_conv2d_prepack_cpu(const at::Tensor& weight, int64_t w_bits, at::IntArrayRef w_shape,
                                    int64_t groups);
int64_t cpu_isa();
}  // namespace mmaqd

TORCH_LIBRARY(mmaqd, m) {
  m.def(
      "quant_conv2d(Tensor x, Tensor weight, int w_bits, int[] w_shape, Tensor? w_offset, int frac_bits, "
      "int offset_frac_bits, Tensor? bias, Tensor? multiplier, Tensor? shift, int zero_point, int qmin, int qmax, "
      "int out_levels, bool out_signed, int[] stride, int[] padding, int[] dilation, int groups, "
      "Tensor? prepacked=None) -> Tensor");
  // the weights in the CPU kernel's layout, made once (at load) and passed as `prepacked`
  m.def("quant_conv2d_prepack(Tensor weight, int w_bits, int[] w_shape, int groups) -> Tensor");
  // the CPU kernels' instruction set: 0 scalar, 1 AVX2, 2 AVX-512 VNNI (after MMAQD_FORCE_SCALAR / MMAQD_ISA)
  m.def("cpu_isa() -> int", &mmaqd::cpu_isa);
}

TORCH_LIBRARY_IMPL(mmaqd, CPU, m) {
  m.impl("quant_conv2d", &mmaqd::quant_conv2d_cpu);
  m.impl("quant_conv2d_prepack", &mmaqd::quant_conv2d_prepack_cpu);
}
