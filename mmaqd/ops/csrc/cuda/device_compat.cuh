// The few GPU instructions the kernels use, each in one small function: the int8 tensor-core MMA
// (mma.sync m16n8k32 s8 x s8 -> s32, sm_80 and sm_90), ldmatrix, 16-byte cp.async with zero fill, byte permutes,
// and the kernels' dynamic shared memory.
//
// With MMAQD_CUDA_SIM defined (a C++ compiler, no nvcc) the same kernels compile for the host simulator of
// tests/test_ops/cuda_sim/cuda_sim.h, which runs every CUDA thread as a fiber and implements each warp-collective
// instruction from the PTX ISA's fragment layouts; that is how the kernels' indexing is checked on a machine
// without a GPU. Nothing here changes the CUDA build.
#pragma once
#include <cstdint>

#ifdef MMAQD_CUDA_SIM
#include "cuda_sim.h"
#else
#include <cuda_runtime.h>
#endif

#if !defined(MMAQD_CUDA_SIM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "mmaqd's CUDA kernels need sm_80 or newer (mma.sync m16n8k32 s8, cp.async, ldmatrix)"
#endif

namespace mmaqd {
namespace cuda {

// the block's dynamic shared memory (launch with its size); a kernel declares it once
#ifdef MMAQD_CUDA_SIM
#define MMAQD_DYNAMIC_SMEM(name) unsigned char* name = mmaqd_sim::dynamic_smem()
#else
#define MMAQD_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// D += A * B for one 16x8x32 tile: A (16x32, row) in a[4], B (32x8, col) in b[2], D (16x8) in d[4] (PTX ISA,
// "mma.m16n8k32": lane = 4 g + t holds A rows g and g + 8, bytes 4t..4t+3 and 16+4t..; B column g, bytes 4t..
// and 16+4t..; D rows g and g + 8, columns 2t and 2t + 1)
__device__ __forceinline__ void mma_s8_16832(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef MMAQD_CUDA_SIM
  mmaqd_sim::mma_s8_16832(d, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// four 8x8 b16 matrices (8 rows of 16 bytes each) from shared memory: lane i gives the address of row i % 8 of
// matrix i / 8; matrix j lands in r[j], lane 4 g + t receiving 32-bit word t of row g
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#ifdef MMAQD_CUDA_SIM
  mmaqd_sim::ldmatrix_x4(r, smem_row);
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// 16 bytes global -> shared, asynchronously (L2 only); zeros when !valid (src is then not read)
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src, bool valid) {
#ifdef MMAQD_CUDA_SIM
  mmaqd_sim::cp_async16(smem_dst, gmem_src, valid);
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifndef MMAQD_CUDA_SIM
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#ifndef MMAQD_CUDA_SIM
  asm volatile("cp.async.wait_all;\n" ::);
#endif
}

// result byte n = byte (s >> 4n) & 7 of the 8 bytes (x: 0-3, y: 4-7)
__device__ __forceinline__ uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#ifdef MMAQD_CUDA_SIM
  return mmaqd_sim::byte_perm(x, y, s);
#else
  return __byte_perm(x, y, s);
#endif
}

// per-byte a - b modulo 256
__device__ __forceinline__ uint32_t vsub4(uint32_t a, uint32_t b) {
#ifdef MMAQD_CUDA_SIM
  return mmaqd_sim::vsub4(a, b);
#else
  return __vsub4(a, b);
#endif
}

}  // namespace cuda
}  // namespace mmaqd
