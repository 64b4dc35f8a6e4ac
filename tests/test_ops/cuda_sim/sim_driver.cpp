// Runs mmaqd's CUDA kernels (quant_conv2d with its launch sequence, requantize, quant_add) in the host simulator
// (cuda_sim.h) on inputs written by tests/test_ops/test_cuda_sim.py, and writes their outputs back.
//
//   sim_driver IN OUT
//
// IN: 64 int64 header words (word 0: mode 0 conv, 1 requantize, 2 quant_add), then the arrays the mode needs.
// OUT: 8 int64 words (status[0], the activations' zero point or -1, whether the tensor-core path ran, the prepacked
// bytes, the output's element count, ...), then the int32 output.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_sim.h"
#include "elementwise_kernels.cuh"
#include "quant_conv2d_kernels.cuh"

namespace {

struct SimLauncher {
  int sms = 2;
  template <typename... P, typename... A>
  void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, A... args) {
    mmaqd_sim::launch(grid, block, shared, [&] { kernel(args...); });
  }
  void zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
};

struct Reader {
  FILE* f;
  template <typename T>
  std::vector<T> read(int64_t count) {
    std::vector<T> v(size_t(count > 0 ? count : 0));
    if (count > 0 && std::fread(v.data(), sizeof(T), size_t(count), f) != size_t(count)) {
      std::fprintf(stderr, "sim_driver: short input\n");
      std::exit(2);
    }
    return v;
  }
};

template <typename T>
const T* ptr_or_null(const std::vector<T>& v, bool present) {
  return present ? v.data() : nullptr;
}

void write_out(const char* path, const std::vector<int64_t>& head, const std::vector<int32_t>& out) {
  FILE* f = std::fopen(path, "wb");
  std::vector<int64_t> h(head);
  h.resize(8, 0);
  std::fwrite(h.data(), sizeof(int64_t), h.size(), f);
  std::fwrite(out.data(), sizeof(int32_t), out.size(), f);
  std::fclose(f);
}

template <typename T>
int run_conv(Reader& r, const std::vector<int64_t>& hd, const char* out_path) {
  using namespace mmaqd::cuda;
  ConvGeom g{};
  g.n = hd[1], g.c_in = hd[2], g.h = hd[3], g.w = hd[4], g.c_out = hd[5], g.kh = hd[6], g.kw = hd[7];
  g.sh = hd[8], g.sw = hd[9], g.ph = hd[10], g.pw = hd[11], g.dh = hd[12], g.dw = hd[13], g.groups = hd[14];
  g.w_bits = int(hd[15]);
  g.cg = g.c_in / g.groups;
  g.oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  const bool has_offset = hd[18], has_bias = hd[19], has_mult = hd[20], force_fallback = hd[26];
  const int64_t w_row_bytes = hd[27];
  const auto x = r.read<T>(g.n * g.c_in * g.h * g.w);
  const auto w = r.read<uint8_t>(g.c_out * w_row_bytes);
  const auto offset = r.read<int32_t>(has_offset ? g.c_out : 0);
  const auto bias = r.read<int32_t>(has_bias ? g.c_out : 0);
  const auto m0 = r.read<int32_t>(has_mult ? g.c_out : 0);
  const auto shift = r.read<int32_t>(has_mult ? g.c_out : 0);
  Stage st{};
  st.w_offset = ptr_or_null(offset, has_offset), st.bias = ptr_or_null(bias, has_bias);
  st.m0 = ptr_or_null(m0, has_mult), st.shift = ptr_or_null(shift, has_mult);
  st.frac_bits = int(hd[16]), st.offset_shift = int(hd[17] - hd[16]);
  st.zero_point = hd[21], st.qmin = hd[22], st.qmax = hd[23], st.out_levels = hd[24], st.out_signed = hd[25] != 0;

  SimLauncher l;
  const TcLayout lay = tc_layout(g.w_bits, g.c_out, g.cg, g.kh, g.kw, g.groups);
  const bool use_tc = lay.eligible && !force_fallback;
  std::vector<uint8_t> wpre(size_t(lay.bytes) + 16, 0xA5);
  uint8_t* wpre_p = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(wpre.data()) + 15) / 16 * 16);
  if (use_tc) launch_prepack(l, w.data(), w_row_bytes, g.w_bits, g.cg, g.kh, g.kw, lay, wpre_p);
  int64_t x8_bytes = 0, csum_count = 0;
  conv_workspace(g, lay, use_tc, x8_bytes, csum_count);
  std::vector<uint4> x8(size_t(x8_bytes / 16 + 1));
  std::vector<int32_t> csum(size_t(csum_count + 1), 12345);
  std::vector<long long> status(kStatusWords, 777);
  std::vector<int32_t> out(size_t(g.n * g.c_out * g.oh * g.ow), -999999);
  ConvBuffers b{reinterpret_cast<int8_t*>(x8.data()), csum.data(), status.data(), out.data()};
  launch_quant_conv2d(l, g, st, x.data(), w.data(), w_row_bytes, lay, wpre_p, use_tc, b);
  const int zp = act_zero_point(status[1], status[2]);
  write_out(out_path, {status[0], use_tc ? zp : -2, use_tc && zp >= 0, lay.bytes, int64_t(out.size())}, out);
  return 0;
}

int run_requantize(Reader& r, const std::vector<int64_t>& hd, const char* out_path) {
  using namespace mmaqd::cuda;
  RequantArgs a{};
  const int64_t n = hd[1], c = hd[2], inner = hd[3];
  const bool has_bias = hd[4];
  a.numel = n * c * inner, a.channels = c, a.inner = inner;
  a.zero_point = hd[5], a.qmin = hd[6], a.qmax = hd[7], a.out_levels = hd[8], a.out_signed = hd[9] != 0;
  const auto acc = r.read<int32_t>(a.numel);
  const auto m0 = r.read<int32_t>(c);
  const auto shift = r.read<int32_t>(c);
  const auto bias = r.read<int32_t>(has_bias ? c : 0);
  a.m0 = m0.data(), a.shift = shift.data(), a.bias = ptr_or_null(bias, has_bias);
  std::vector<long long> status(1, 0);
  std::vector<int32_t> out(size_t(a.numel));
  SimLauncher l;
  l.launch(requantize_kernel, dim3(3), dim3(64), 0, acc.data(), a, status.data(), out.data());
  write_out(out_path, {status[0], 0, 0, 0, a.numel}, out);
  return 0;
}

int run_quant_add(Reader& r, const std::vector<int64_t>& hd, const char* out_path) {
  using namespace mmaqd::cuda;
  AddArgs p{};
  p.numel = hd[1];
  const bool has_b = hd[2];
  p.am = int32_t(hd[3]), p.as = int32_t(hd[4]), p.bm = int32_t(hd[5]), p.bs = int32_t(hd[6]);
  p.left = hd[7], p.bias = hd[8], p.om = int32_t(hd[9]), p.os = int32_t(hd[10]);
  p.zero_point = hd[11], p.qmin = hd[12], p.qmax = hd[13], p.out_levels = hd[14], p.out_signed = hd[15] != 0;
  const auto a = r.read<int32_t>(p.numel);
  const auto b = r.read<int32_t>(has_b ? p.numel : 0);
  std::vector<long long> status(1, 0);
  std::vector<int32_t> out(size_t(p.numel));
  SimLauncher l;
  l.launch(quant_add_kernel, dim3(3), dim3(64), 0, a.data(), ptr_or_null(b, has_b), p, status.data(), out.data());
  write_out(out_path, {status[0], 0, 0, 0, p.numel}, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: sim_driver IN OUT\n");
    return 2;
  }
  Reader r{std::fopen(argv[1], "rb")};
  if (r.f == nullptr) return 2;
  const auto hd = r.read<int64_t>(64);
  switch (hd[0]) {
    case 0:
      return hd[28] ? run_conv<int64_t>(r, hd, argv[2]) : run_conv<int32_t>(r, hd, argv[2]);
    case 1:
      return run_requantize(r, hd, argv[2]);
    case 2:
      return run_quant_add(r, hd, argv[2]);
    default:
      return 2;
  }
}
