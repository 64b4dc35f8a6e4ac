// quant_conv2d on CUDA: the kernels and their launch sequence, free of ATen so that nvcc compiles them alone and
// the host simulator (tests/test_ops/cuda_sim) runs them; quant_conv2d_cuda.cu binds them to torch. Bit for bit
// what mmaqd/ops/quant_conv.py's reference computes (AQD, arXiv 2007.06919, section 3.3; Jacob et al., CVPR 2018,
// section 2.2-2.4):
//
//   A = conv(x, v), v = 2c - q          the integer conv of the activation values with the odd weight values
//   S = conv(x, ones)                   per pixel (the LIQ offset term needs it)
//   acc = A 2^F + RDBPOT(mu~ S, G - F) + bias     int64, must fit int32 (else the op raises)
//   out = clamp(MBQM(acc, M0, shift) + zero_point, qmin, qmax) as values (2c - q when out_signed), or acc
//
// Two conv kernels:
// * tc_conv_kernel, implicit GEMM on the int8 tensor cores (mma.sync m16n8k32 s8.s8.s32, sm_80 / sm_90): M = output
//   pixels (N * OH * OW), N = output channels, K = kh * kw * C_in/16-padded channels in (u, v, c) order. Block tile
//   128 x BN (BN = 128, or 64 for <= 64 GEMM columns) x 64, 4 warps of 64 x BN/2, two shared-memory stages:
//   activations by cp.async (16 bytes, zero-filled beyond K) from an int8 NHWC copy of x that is zero-padded in
//   space; weights read in their 2-/4-bit packing (or int8) and unpacked in registers on their way into shared
//   memory (v = 2c - q per byte with byte permutes); the output stage fused in the epilogue. Activations: int8
//   values x (range [-128, 127], zero point 0) or 8-bit codes [0, 255] stored as x - 128 (zero point 128: the
//   spatial padding holds -128, i.e. x = 0, and the epilogue adds 128 * (column sum of B)). Weights: v fits int8 for
//   <= 7 bits; an 8-bit code c = 128 h + l becomes two int8 GEMM columns h and l (adjacent, so one thread holds
//   both accumulators) and A = 256 dot(x, h) + 2 dot(x, l) - 255 S. One group only.
// * generic_conv_kernel, a plain CUDA-core kernel (one output per thread, int64 sums, any groups, bits, range):
//   every other case, and the tensor-core path's fallback when x is out of both int8 ranges (the 8-bit signed
//   image of the stem, say). Which one runs is decided on the device from x's range (x_range_kernel), so that
//   choosing costs no host synchronisation: both are launched and the one that does not apply returns at once.
#pragma once
#include <climits>
#include <cstdint>

#include "device_compat.cuh"
#include "fixed_point.h"
#include "packing.h"

namespace mmaqd {
namespace cuda {

constexpr int kBM = 128;          // GEMM rows (output pixels) per block
constexpr int kBK = 64;           // K per shared-memory stage: two mma k-steps of 32
constexpr int kThreads = 128;     // 4 warps: 2 (M) x 2 (N), each 64 x BN/2
constexpr int kRow = kBK + 16;    // shared row stride in bytes (20 words: ldmatrix and cp.async conflict-free)
constexpr int kChanAlign = 16;    // channels padded to 16: a 16-byte cp.async never straddles two taps
constexpr int64_t kMaxK = 65536;  // int32 MMA sums stay exact: |dot| <= K * 128 * 128 < 2^31

// the status words of one op call, in device memory: [0] 1 when an accumulator left int32, [1] min(x), [2] max(x)
constexpr int kStatusWords = 4;

struct ConvGeom {
  int64_t n, c_in, h, w, c_out, cg, kh, kw, sh, sw, ph, pw, dh, dw, groups, oh, ow;
  int w_bits;
};

// the output stage's per-channel tables (device pointers; nullptr when absent) and scalars
struct Stage {
  const int32_t* w_offset;  // (C_out,) mu~ at G fractional bits
  const int32_t* bias;      // (C_out,)
  const int32_t* m0;        // (C_out,) or nullptr: the accumulators are the output
  const int32_t* shift;
  int frac_bits, offset_shift;  // F, G - F
  int64_t zero_point, qmin, qmax, out_levels;
  bool out_signed;
};

// acc = a 2^F + RDBPOT(mu~ s, G - F) + bias, then the requantization; ok becomes false when acc leaves int32
__host__ __device__ inline int32_t output_stage(int64_t a, int64_t s, int64_t o, const Stage& st, bool& ok) {
  int64_t acc = a * (int64_t(1) << st.frac_bits);
  if (st.w_offset != nullptr) acc += rounding_divide_by_pot(int64_t(st.w_offset[o]) * s, st.offset_shift);
  if (st.bias != nullptr) acc += st.bias[o];
  ok = ok && acc >= kInt32Min && acc <= kInt32Max;
  if (st.m0 == nullptr) return int32_t(acc);
  const int64_t c = multiply_by_quantized_multiplier(acc, st.m0[o], st.shift[o]) + st.zero_point;
  return int32_t(clamp_to_value(c, st.qmin, st.qmax, st.out_signed, st.out_levels));
}

// the activations' zero point on the tensor cores: 0 for int8 values, 128 for 8-bit codes, -1: neither (generic)
__host__ __device__ inline int act_zero_point(long long lo, long long hi) {
  if (lo >= -128 && hi <= 127) return 0;
  if (lo >= 0 && hi <= 255) return 128;
  return -1;
}

// ------------------------------------------------------------------------------------------ weight layout
// The tensor-core kernel's weights ("prepacked", a uint8 buffer made once per weight): GEMM column n (an output
// channel; with 8-bit weights columns 2o and 2o + 1 are channel o's h and l), K in (u, v, c) order with cgp channel
// slots per tap, tiled as [N tile][K tile][BN rows][64 K values] so that one stage of one block is contiguous;
// each value in a field of fb bits (first value of a byte in its low bits): fb = 2 or 4 holds codes c (the kernel
// computes 2c - q), fb = 8 int8 values (2c - q for 5-7 bits, h or l for 8). Then, from colsum_offset, int32 column
// sums of B over the real K (for the zero point 128). mmaqd/ops/extension.py (cuda_prepack_bytes) mirrors the size.
struct TcLayout {
  bool eligible;  // the tensor-core path applies (one group, K small enough)
  int fb, bn;
  bool split8;
  int64_t cgp, taps, kt, n_cols, nt, row_bytes, b_bytes, colsum_offset, bytes;
};

__host__ __device__ inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

__host__ __device__ inline TcLayout tc_layout(int w_bits, int64_t c_out, int64_t cg, int64_t kh, int64_t kw,
                                              int64_t groups) {
  TcLayout l{};
  l.fb = w_bits <= 2 ? 2 : (w_bits <= 4 ? 4 : 8);
  l.split8 = w_bits == 8;
  l.cgp = round_up(cg, kChanAlign);
  l.taps = kh * kw;
  l.kt = (l.taps * l.cgp + kBK - 1) / kBK;
  l.n_cols = c_out * (l.split8 ? 2 : 1);
  l.bn = l.n_cols <= 64 ? 64 : 128;
  l.nt = (l.n_cols + l.bn - 1) / l.bn;
  l.row_bytes = kBK * l.fb / 8;
  l.b_bytes = l.nt * l.kt * l.bn * l.row_bytes;
  l.colsum_offset = round_up(l.b_bytes, 16);
  l.bytes = l.colsum_offset + 4 * l.nt * l.bn;
  l.eligible = groups == 1 && w_bits >= 1 && w_bits <= 8 && c_out > 0 && cg > 0 && l.taps * l.cgp <= kMaxK;
  if (!l.eligible) l.bytes = 0;
  return l;
}

// the int8 value the tensor cores see for GEMM column n, K index k (0 on padding); packed: the op's weight
// (C_out, w_row_bytes) in (c, u, v) order
__device__ __forceinline__ int b_value(const uint8_t* packed, int64_t w_row_bytes, int w_bits, int64_t cg,
                                       int64_t kh, int64_t kw, const TcLayout& l, int64_t n, int64_t k) {
  const int64_t tap = k / l.cgp, c = k - tap * l.cgp;
  if (n >= l.n_cols || tap >= l.taps || c >= cg) return 0;
  const int64_t o = l.split8 ? n / 2 : n, u = tap / kw, v = tap - u * kw;
  const int code = unpack_code(packed + o * w_row_bytes, (c * kh + u) * kw + v, field_bits(w_bits));
  if (l.split8) return (n & 1) ? (code & 127) : (code >> 7);
  return 2 * code - ((1 << w_bits) - 1);
}

// one byte of the tiled B per thread (grid-stride)
__global__ void prepack_kernel(const uint8_t* __restrict__ packed, int64_t w_row_bytes, int w_bits, int64_t cg,
                               int64_t kh, int64_t kw, TcLayout l, uint8_t* __restrict__ out) {
  const int per_byte = 8 / l.fb;
  const int64_t chunk_bytes = int64_t(l.bn) * l.row_bytes;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.b_bytes;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t chunk = i / chunk_bytes, within = i - chunk * chunk_bytes;
    const int64_t nt = chunk / l.kt, kt = chunk - nt * l.kt;
    const int64_t r = within / l.row_bytes, byte = within - r * l.row_bytes;
    const int64_t n = nt * l.bn + r, k0 = kt * kBK + byte * per_byte;
    uint32_t value = 0;
    for (int j = 0; j < per_byte; ++j) {
      const int64_t k = k0 + j;
      uint32_t field;
      if (l.fb == 8) {
        field = uint32_t(uint8_t(int8_t(b_value(packed, w_row_bytes, w_bits, cg, kh, kw, l, n, k))));
      } else {  // the code itself (2c - q in the kernel); padding: code 0, multiplied by x = 0 there
        const int64_t tap = k / l.cgp, c = k - tap * l.cgp;
        field = 0;
        if (n < l.n_cols && tap < l.taps && c < cg) {
          const int64_t u = tap / kw, v = tap - u * kw;
          field = uint32_t(unpack_code(packed + n * w_row_bytes, (c * kh + u) * kw + v, l.fb));
        }
      }
      value |= field << (j * l.fb);
    }
    out[i] = uint8_t(value);
  }
}

// int32 column sums of B over the real K, one column per thread
__global__ void colsum_kernel(const uint8_t* __restrict__ packed, int64_t w_row_bytes, int w_bits, int64_t cg,
                              int64_t kh, int64_t kw, TcLayout l, int32_t* __restrict__ colsum) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= l.nt * l.bn) return;
  int32_t sum = 0;  // |sum| <= kMaxK * 255
  for (int64_t tap = 0; tap < l.taps; ++tap)
    for (int64_t c = 0; c < cg; ++c) sum += b_value(packed, w_row_bytes, w_bits, cg, kh, kw, l, n, tap * l.cgp + c);
  colsum[n] = sum;
}

// ------------------------------------------------------------------------------------------ activations
__global__ void init_status_kernel(long long* status) {
  status[0] = 0;
  status[1] = LLONG_MAX;
  status[2] = LLONG_MIN;
  status[3] = 0;
}

// min and max of x into status[1], status[2]: a block reduction in shared memory, one atomic per block
template <typename T>
__global__ void x_range_kernel(const T* __restrict__ x, int64_t numel, long long* status) {
  MMAQD_DYNAMIC_SMEM(smem);  // 2 * blockDim.x long longs
  long long* lo_s = reinterpret_cast<long long*>(smem);
  long long* hi_s = lo_s + blockDim.x;
  long long lo = LLONG_MAX, hi = LLONG_MIN;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel; i += int64_t(gridDim.x) * blockDim.x) {
    const long long v = static_cast<long long>(x[i]);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  lo_s[threadIdx.x] = lo;
  hi_s[threadIdx.x] = hi;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      lo_s[threadIdx.x] = lo_s[threadIdx.x + half] < lo_s[threadIdx.x] ? lo_s[threadIdx.x + half] : lo_s[threadIdx.x];
      hi_s[threadIdx.x] = hi_s[threadIdx.x + half] > hi_s[threadIdx.x] ? hi_s[threadIdx.x + half] : hi_s[threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicMin(status + 1, lo_s[0]);
    atomicMax(status + 2, hi_s[0]);
  }
}

// x (N, C, H, W) -> x8 (N, Hp, Wp, cgp) int8, x - zp inside, -zp on the spatial padding of the real channels, 0 on
// the padded channels; csum (N, Hp, Wp) += the pixel's sum of x (zero outside; zeroed before). One thread per
// padded pixel and group of 16 channels, pixels fastest (coalesced reads of x). Does nothing when x fits neither
// int8 range (the generic kernel runs instead).
template <typename T>
__global__ void prep_kernel(const T* __restrict__ x, ConvGeom g, int64_t cgp, int64_t hp, int64_t wp,
                            const long long* status, int8_t* __restrict__ x8, int32_t* __restrict__ csum) {
  const int zp = act_zero_point(status[1], status[2]);
  if (zp < 0) return;
  const int64_t npad = g.n * hp * wp, total = npad * (cgp / kChanAlign);
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t pix = i % npad, c0 = (i / npad) * kChanAlign;
  const int64_t img = pix / (hp * wp), yx = pix - img * hp * wp, yp = yx / wp, xp = yx - yp * wp;
  const int64_t y = yp - g.ph, xx = xp - g.pw;
  const bool inside = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
  uint32_t words[4] = {0, 0, 0, 0};
  int32_t sum = 0;
  for (int j = 0; j < kChanAlign; ++j) {
    const int64_t c = c0 + j;
    int v = 0;
    if (c < g.c_in) {
      const int xv = inside ? int(x[((img * g.c_in + c) * g.h + y) * g.w + xx]) : 0;
      sum += xv;
      v = xv - zp;
    }
    words[j / 4] |= uint32_t(uint8_t(int8_t(v))) << (8 * (j % 4));
  }
  uint4 packed;
  packed.x = words[0], packed.y = words[1], packed.z = words[2], packed.w = words[3];
  *reinterpret_cast<uint4*>(x8 + pix * cgp + c0) = packed;
  if (sum != 0) atomicAdd(csum + pix, sum);
}

// ------------------------------------------------------------------------------------------ tensor-core conv
struct TcArgs {
  int64_t m, npix, ow, hp, wp;  // GEMM rows N * OH * OW; OH * OW; OW; the padded input's height and width
  int64_t sh, sw, dh, dw, kw, taps, cgp, kt, c_out, colsum_offset;
  int q;  // 2^bits - 1: the kernel turns 2- and 4-bit codes c into 2c - q
  bool split8;
};

// the packed weights of one thread's share of a B row -> int8 values (kIn words in, kIn * 8 / FB words out)
template <int FB, int kIn>
__device__ __forceinline__ void unpack_b(const uint32_t (&in)[kIn], uint32_t (&out)[kIn * 8 / FB], uint32_t qqqq) {
#pragma unroll
  for (int i = 0; i < kIn; ++i) {
    const uint32_t w = in[i];
    if constexpr (FB == 8) {
      out[i] = w;
    } else if constexpr (FB == 4) {  // byte b: codes 2b (low nibble), 2b + 1
      const uint32_t lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
      out[2 * i] = vsub4(byte_perm(lo, hi, 0x5140) << 1, qqqq);
      out[2 * i + 1] = vsub4(byte_perm(lo, hi, 0x7362) << 1, qqqq);
    } else {  // FB == 2, byte b: codes 4b .. 4b + 3 from the low bits
      const uint32_t f0 = w & 0x03030303u, f1 = (w >> 2) & 0x03030303u;
      const uint32_t f2 = (w >> 4) & 0x03030303u, f3 = (w >> 6) & 0x03030303u;
      const uint32_t a_lo = byte_perm(f0, f1, 0x5140), a_hi = byte_perm(f0, f1, 0x7362);  // c0 c1 c4 c5 | c8 ..
      const uint32_t b_lo = byte_perm(f2, f3, 0x5140), b_hi = byte_perm(f2, f3, 0x7362);  // c2 c3 c6 c7 | ..
      out[4 * i] = vsub4(byte_perm(a_lo, b_lo, 0x5410) << 1, qqqq);
      out[4 * i + 1] = vsub4(byte_perm(a_lo, b_lo, 0x7632) << 1, qqqq);
      out[4 * i + 2] = vsub4(byte_perm(a_hi, b_hi, 0x5410) << 1, qqqq);
      out[4 * i + 3] = vsub4(byte_perm(a_hi, b_hi, 0x7632) << 1, qqqq);
    }
  }
}

template <int BN>
constexpr size_t tc_smem_bytes() {
  return size_t(2) * kBM * kRow + size_t(2) * BN * kRow + sizeof(int32_t) * kBM;
}

template <int FB, int BN>
__global__ void __launch_bounds__(kThreads) tc_conv_kernel(const int8_t* __restrict__ x8,
                                                           const int32_t* __restrict__ csum,
                                                           const uint8_t* __restrict__ wpre, TcArgs a, Stage st,
                                                           long long* status, int32_t* __restrict__ out) {
  constexpr int kWN = BN / 2, kNI = kWN / 8, kMI = 4;    // warp tile 64 x kWN: 4 x kNI mma tiles
  constexpr int kTpr = kThreads / BN;                    // threads per B row: 1 or 2
  constexpr int kInBytes = kBK * FB / 8 / kTpr;          // packed bytes of one stage per thread
  constexpr int kIn = kInBytes / 4, kOut = kIn * 8 / FB;  // words in, int8 words out
  static_assert(kInBytes % 4 == 0 && kOut % 4 == 0, "B loader: whole words, whole 16-byte stores");
  const int zp = act_zero_point(status[1], status[2]);
  if (zp < 0) return;  // x fits no int8 range: generic_conv_kernel does this conv (uniform for the whole grid)

  MMAQD_DYNAMIC_SMEM(smem);
  int8_t* as = reinterpret_cast<int8_t*>(smem);  // [2][kBM][kRow]
  int8_t* bs = as + 2 * kBM * kRow;              // [2][BN][kRow]
  int32_t* ss = reinterpret_cast<int32_t*>(bs + 2 * BN * kRow);  // [kBM]: S of each row
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp >> 1, wn = warp & 1;
  const int64_t m0 = int64_t(blockIdx.x) * kBM, nt = blockIdx.y;

  // A: thread tid copies 16-byte chunk (tid % 4) of rows tid / 4 + 32 i; each row's padded input pixel of tap 0
  const int a_chunk = tid & 3;
  int64_t a_pix[4];
  bool a_row_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + (tid >> 2) + 32 * i;
    a_row_ok[i] = m < a.m;
    const int64_t mm = a_row_ok[i] ? m : 0, img = mm / a.npix, p = mm - img * a.npix;
    const int64_t oy = p / a.ow, ox = p - oy * a.ow;
    a_pix[i] = (img * a.hp + oy * a.sh) * a.wp + ox * a.sw;
  }
  {  // S of row tid (kBM == kThreads): the channel sums of its receptive field
    const int64_t m = m0 + tid;
    int32_t s = 0;
    if (m < a.m) {
      const int64_t img = m / a.npix, p = m - img * a.npix, oy = p / a.ow, ox = p - oy * a.ow;
      const int64_t top = (img * a.hp + oy * a.sh) * a.wp + ox * a.sw;
      for (int64_t tap = 0; tap < a.taps; ++tap) {
        const int64_t u = tap / a.kw, v = tap - u * a.kw;
        s += csum[top + u * a.dh * a.wp + v * a.dw];
      }
    }
    ss[tid] = s;
  }
  const auto load_a = [&](int64_t kt, int buf) {
    const int64_t k = kt * kBK + a_chunk * 16, tap = k / a.cgp, c = k - tap * a.cgp;
    const int64_t u = tap / a.kw, v = tap - u * a.kw, off = u * a.dh * a.wp + v * a.dw;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool ok = a_row_ok[i] && tap < a.taps;
      const int8_t* src = ok ? x8 + (a_pix[i] + off) * a.cgp + c : x8;
      cp_async16(as + (buf * kBM + (tid >> 2) + 32 * i) * kRow + a_chunk * 16, src, ok);
    }
  };

  // B: thread tid unpacks bytes [tid * kInBytes, +kInBytes) of the stage's contiguous chunk: row tid / kTpr
  uint32_t b_in[kIn];
  const uint32_t qqqq = uint32_t(a.q) * 0x01010101u;
  const auto fetch_b = [&](int64_t kt) {
    const uint8_t* src = wpre + ((nt * a.kt + kt) * BN) * (kBK * FB / 8) + tid * kInBytes;
    if constexpr (kIn % 4 == 0) {
#pragma unroll
      for (int i = 0; i < kIn / 4; ++i) {
        const uint4 v = reinterpret_cast<const uint4*>(src)[i];
        b_in[4 * i] = v.x, b_in[4 * i + 1] = v.y, b_in[4 * i + 2] = v.z, b_in[4 * i + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kIn / 2; ++i) {
        const uint2 v = reinterpret_cast<const uint2*>(src)[i];
        b_in[2 * i] = v.x, b_in[2 * i + 1] = v.y;
      }
    }
  };
  const auto store_b = [&](int buf) {
    uint32_t w[kOut];
    unpack_b<FB, kIn>(b_in, w, qqqq);
    int8_t* dst = bs + (buf * BN + tid / kTpr) * kRow + (tid % kTpr) * (kBK / kTpr);
#pragma unroll
    for (int i = 0; i < kOut / 4; ++i) {
      uint4 v;
      v.x = w[4 * i], v.y = w[4 * i + 1], v.z = w[4 * i + 2], v.w = w[4 * i + 3];
      reinterpret_cast<uint4*>(dst)[i] = v;
    }
  };

  int32_t acc[kMI][kNI][4];
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0;

  const auto compute = [&](int buf) {
#pragma unroll
    for (int ks = 0; ks < kBK / 32; ++ks) {
      uint32_t af[kMI][4], bf[kNI][2];
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
        ldmatrix_x4(af[mi], as + (buf * kBM + wm * 64 + mi * 16 + (lane & 15)) * kRow + ks * 32 + (lane >> 4) * 16);
#pragma unroll
      for (int nj = 0; nj < kNI / 2; ++nj) {
        uint32_t r[4];
        ldmatrix_x4(r, bs + (buf * BN + wn * kWN + nj * 16 + ((lane >> 4) << 3) + (lane & 7)) * kRow + ks * 32 +
                           ((lane >> 3) & 1) * 16);
        bf[2 * nj][0] = r[0], bf[2 * nj][1] = r[1], bf[2 * nj + 1][0] = r[2], bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int ni = 0; ni < kNI; ++ni) mma_s8_16832(acc[mi][ni], af[mi], bf[ni]);
    }
  };

  // two stages: the next stage's activations (cp.async) and packed weights (registers) are in flight while the
  // tensor cores work on this one
  load_a(0, 0);
  cp_async_commit();
  fetch_b(0);
  store_b(0);
  cp_async_wait_all();
  __syncthreads();
  for (int64_t kt = 0; kt < a.kt; ++kt) {
    const int buf = int(kt & 1);
    const bool more = kt + 1 < a.kt;
    if (more) {
      load_a(kt + 1, buf ^ 1);
      cp_async_commit();
      fetch_b(kt + 1);
    }
    compute(buf);
    if (more) store_b(buf ^ 1);
    cp_async_wait_all();
    __syncthreads();
  }

  // epilogue: zero point, 8-bit split, then the output stage, straight to the NCHW int32 output
  const int32_t* colsum = reinterpret_cast<const int32_t*>(wpre + a.colsum_offset);
  const int g = lane >> 2, t = lane & 3;
  bool ok = true;
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wm * 64 + mi * 16 + g + 8 * h;
      const int64_t m = m0 + r;
      if (m >= a.m) continue;
      const int64_t s = ss[r], img = m / a.npix, p = m - img * a.npix;
      int32_t* out_px = out + img * a.c_out * a.npix + p;
#pragma unroll
      for (int ni = 0; ni < kNI; ++ni) {
        const int64_t n = nt * BN + wn * kWN + ni * 8 + 2 * t;
        const int64_t d0 = int64_t(acc[mi][ni][2 * h]) + int64_t(zp) * colsum[n];
        const int64_t d1 = int64_t(acc[mi][ni][2 * h + 1]) + int64_t(zp) * colsum[n + 1];
        if (a.split8) {
          const int64_t o = n / 2;
          if (o < a.c_out) out_px[o * a.npix] = output_stage(256 * d0 + 2 * d1 - 255 * s, s, o, st, ok);
        } else {
          if (n < a.c_out) out_px[n * a.npix] = output_stage(d0, s, n, st, ok);
          if (n + 1 < a.c_out) out_px[(n + 1) * a.npix] = output_stage(d1, s, n + 1, st, ok);
        }
      }
    }
  if (!ok) status[0] = 1;
}

// ------------------------------------------------------------------------------------------ generic conv
// One output (img, o, p) per thread step (grid-stride, pixels fastest), int64 sums over the group's
// C_in/g * kh * kw inputs read straight from x (N, C, H, W) and the packed weights. only_if_wide: run only when
// x fits neither int8 range (the tensor-core kernel did the work otherwise).
template <typename T>
__global__ void generic_conv_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed, int64_t w_row_bytes,
                                    ConvGeom g, Stage st, long long* status, int32_t* __restrict__ out,
                                    bool only_if_wide) {
  if (only_if_wide && act_zero_point(status[1], status[2]) >= 0) return;
  const int64_t npix = g.oh * g.ow, total = g.n * g.c_out * npix, og = g.c_out / g.groups;
  const int fb = field_bits(g.w_bits), q = (1 << g.w_bits) - 1;
  bool ok = true;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i % npix, o = (i / npix) % g.c_out, img = i / (npix * g.c_out);
    const int64_t oy = p / g.ow, ox = p - oy * g.ow, grp = o / og;
    const uint8_t* row = packed + o * w_row_bytes;
    int64_t acc = 0, s = 0;
    for (int64_t c = 0; c < g.cg; ++c) {
      const T* plane = x + (img * g.c_in + grp * g.cg + c) * g.h * g.w;
      for (int64_t u = 0; u < g.kh; ++u) {
        const int64_t iy = oy * g.sh - g.ph + u * g.dh;
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t v = 0; v < g.kw; ++v) {
          const int64_t ix = ox * g.sw - g.pw + v * g.dw;
          if (ix < 0 || ix >= g.w) continue;
          const int64_t xv = static_cast<int64_t>(plane[iy * g.w + ix]);
          acc += xv * (2 * unpack_code(row, (c * g.kh + u) * g.kw + v, fb) - q);
          s += xv;
        }
      }
    }
    out[i] = output_stage(acc, s, o, st, ok);
  }
  if (!ok) status[0] = 1;
}

// ------------------------------------------------------------------------------------------ launch sequence
// L: launch(kernel, grid, block, shared bytes, args...), zero(pointer, bytes), sms (multiprocessors). The torch
// binding (quant_conv2d_cuda.cu) and the host simulator both call these, so the simulator checks the launch logic
// too.

struct ConvBuffers {
  int8_t* x8;         // (N, Hp, Wp, cgp) when the tensor-core path may run
  int32_t* csum;      // (N, Hp, Wp)
  long long* status;  // kStatusWords
  int32_t* out;       // (N, C_out, OH, OW)
};

inline int64_t grid_for(int64_t work, int64_t threads, int64_t cap) {
  const int64_t blocks = (work + threads - 1) / threads;
  return blocks < 1 ? 1 : (blocks < cap ? blocks : cap);
}

template <class L>
void launch_prepack(L& l, const uint8_t* packed, int64_t w_row_bytes, int w_bits, int64_t cg, int64_t kh,
                    int64_t kw, const TcLayout& lay, uint8_t* out) {
  l.launch(prepack_kernel, dim3(unsigned(grid_for(lay.b_bytes, 256, 65535))), dim3(256), 0, packed, w_row_bytes,
           w_bits, cg, kh, kw, lay, out);
  l.launch(colsum_kernel, dim3(unsigned(grid_for(lay.nt * lay.bn, 128, 1 << 20))), dim3(128), 0, packed,
           w_row_bytes, w_bits, cg, kh, kw, lay, reinterpret_cast<int32_t*>(out + lay.colsum_offset));
}

// the buffers' sizes for one call: x8 bytes and csum entries (0 when the tensor-core path cannot run)
inline void conv_workspace(const ConvGeom& g, const TcLayout& lay, bool use_tc, int64_t& x8_bytes,
                           int64_t& csum_count) {
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
  x8_bytes = use_tc ? g.n * hp * wp * lay.cgp : 0;
  csum_count = use_tc ? g.n * hp * wp : 0;
}

template <int FB, class L>
void launch_tc(L& l, const ConvBuffers& b, const uint8_t* wpre, const TcLayout& lay, const TcArgs& a,
               const Stage& st) {
  const dim3 grid(unsigned((a.m + kBM - 1) / kBM), unsigned(lay.nt));
  if (lay.bn == 64) {
    l.launch(tc_conv_kernel<FB, 64>, grid, dim3(kThreads), tc_smem_bytes<64>(), b.x8, b.csum, wpre, a, st, b.status,
             b.out);
  } else {
    l.launch(tc_conv_kernel<FB, 128>, grid, dim3(kThreads), tc_smem_bytes<128>(), b.x8, b.csum, wpre, a, st,
             b.status, b.out);
  }
}

// the whole op: status words, then either the tensor-core path (x's range, the int8 copy of x and its channel
// sums, the tensor-core kernel, the generic kernel in case x is too wide) or the generic kernel alone.
// wpre: the prepacked weights (launch_prepack) when use_tc.
template <class L, typename T>
void launch_quant_conv2d(L& l, const ConvGeom& g, const Stage& st, const T* x, const uint8_t* packed,
                         int64_t w_row_bytes, const TcLayout& lay, const uint8_t* wpre, bool use_tc,
                         const ConvBuffers& b) {
  l.launch(init_status_kernel, dim3(1), dim3(1), 0, b.status);
  const int64_t total = g.n * g.c_out * g.oh * g.ow;
  const unsigned generic_grid = unsigned(grid_for(total, 256, int64_t(l.sms) * 16));
  if (!use_tc) {
    l.launch(generic_conv_kernel<T>, dim3(generic_grid), dim3(256), 0, x, packed, w_row_bytes, g, st, b.status,
             b.out, false);
    return;
  }
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw, numel = g.n * g.c_in * g.h * g.w;
  l.launch(x_range_kernel<T>, dim3(unsigned(grid_for(numel, 256, int64_t(l.sms) * 4))), dim3(256),
           2 * 256 * sizeof(long long), x, numel, b.status);
  l.zero(b.csum, size_t(g.n * hp * wp) * sizeof(int32_t));
  const int64_t prep_threads = g.n * hp * wp * (lay.cgp / kChanAlign);
  l.launch(prep_kernel<T>, dim3(unsigned(grid_for(prep_threads, 256, int64_t(1) << 31))), dim3(256), 0, x, g,
           lay.cgp, hp, wp, static_cast<const long long*>(b.status), b.x8, b.csum);
  TcArgs a{};
  a.m = g.n * g.oh * g.ow, a.npix = g.oh * g.ow, a.ow = g.ow, a.hp = hp, a.wp = wp;
  a.sh = g.sh, a.sw = g.sw, a.dh = g.dh, a.dw = g.dw, a.kw = g.kw, a.taps = lay.taps, a.cgp = lay.cgp;
  a.kt = lay.kt, a.c_out = g.c_out, a.colsum_offset = lay.colsum_offset, a.q = (1 << g.w_bits) - 1;
  a.split8 = lay.split8;
  if (lay.fb == 2) {
    launch_tc<2>(l, b, wpre, lay, a, st);
  } else if (lay.fb == 4) {
    launch_tc<4>(l, b, wpre, lay, a, st);
  } else {
    launch_tc<8>(l, b, wpre, lay, a, st);
  }
  l.launch(generic_conv_kernel<T>, dim3(generic_grid), dim3(256), 0, x, packed, w_row_bytes, g, st, b.status, b.out,
           true);
}

}  // namespace cuda
}  // namespace mmaqd
