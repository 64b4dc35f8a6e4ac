// A host simulator for mmaqd's CUDA kernels (mmaqd/ops/csrc/cuda/*.cuh compiled by a C++ compiler with
// MMAQD_CUDA_SIM): every CUDA thread of a block runs as a fiber (ucontext) on one OS thread, __syncthreads and the
// warp-collective instructions are barriers between the fibers, and the collectives compute what the PTX ISA says
// they compute:
//   mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 from the fragment layouts of "Matrix Fragments for
//     mma.m16n8k32" (lane 4g + t: A rows g, g + 8, bytes 4t..4t+3 and 16 + 4t..; B column g, the same K bytes;
//     D rows g, g + 8, columns 2t, 2t + 1),
//   ldmatrix.sync.aligned.m8n8.x4.shared.b16 (lane i addresses row i % 8 of matrix i / 8; lane 4g + t receives word
//     t of row g of each matrix),
//   cp.async (done at once, zero-filled when invalid), __byte_perm, __vsub4, atomics.
// Blocks run one after another. It checks the kernels' indexing, tiling, fragment bookkeeping, pipelining order (a
// read of a stage before its barrier shows up as stale data only if that stage was written earlier, so it is weaker
// there than a GPU) and the launch logic; it says nothing about speed, and nothing about what only hardware can
// show (the asm syntax is nvcc's to check, the timing of cp.async is not modelled).
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};

namespace mmaqd_sim {

struct Barrier {
  int expected = 0, count = 0;
  long generation = 0;
};

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;
  dim3 tid;
  bool done = false;
};

struct WarpExchange {
  const unsigned char* ptr[32];
  uint32_t a[32][4], b[32][2];
};

struct Block {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int current = 0;
  long progress = 0;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<WarpExchange> exchange;
  std::vector<unsigned char> smem;
  dim3 block_idx, block_dim, grid_dim;
  const std::function<void()>* body = nullptr;
};

inline Block*& current_block() {
  static Block* block = nullptr;
  return block;
}
inline Fiber& current_fiber() { return current_block()->fibers[size_t(current_block()->current)]; }
inline int linear_tid() {
  const dim3 t = current_fiber().tid, d = current_block()->block_dim;
  return int(t.x + d.x * (t.y + d.y * t.z));
}
inline unsigned char* dynamic_smem() { return current_block()->smem.data(); }

inline void yield() {
  Block* b = current_block();
  swapcontext(&b->fibers[size_t(b->current)].ctx, &b->scheduler);
}

inline void arrive_and_wait(Barrier& bar) {
  const long gen = bar.generation;
  ++current_block()->progress;
  if (++bar.count == bar.expected) {
    bar.count = 0;
    ++bar.generation;
    return;
  }
  while (bar.generation == gen) yield();
}

inline void syncthreads() { arrive_and_wait(current_block()->block_barrier); }
inline void warp_sync() { arrive_and_wait(current_block()->warp_barriers[size_t(linear_tid() / 32)]); }

inline void fiber_entry() {
  Block* b = current_block();
  (*b->body)();
  b->fibers[size_t(b->current)].done = true;
  ++b->progress;
}  // returns to the scheduler through uc_link

// one block to completion: its threads as fibers, switched at barriers until all have returned
inline void run_block(Block& b, int n, char* const* stacks, size_t stack_bytes) {
  b.block_barrier.expected = n;
  const int warps = (n + 31) / 32;
  b.warp_barriers.resize(size_t(warps));
  for (int w = 0; w < warps; ++w) b.warp_barriers[size_t(w)].expected = std::min(32, n - 32 * w);
  b.exchange.resize(size_t(warps));
  b.fibers.resize(size_t(n));
  const dim3 d = b.block_dim;
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[size_t(i)];
    f.tid = dim3(unsigned(i) % d.x, (unsigned(i) / d.x) % d.y, unsigned(i) / (d.x * d.y));
    f.stack = stacks[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = stack_bytes;
    f.ctx.uc_link = &b.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  current_block() = &b;
  for (;;) {
    bool all_done = true;
    const long before = b.progress;
    for (int i = 0; i < n; ++i) {
      if (b.fibers[size_t(i)].done) continue;
      b.current = i;
      swapcontext(&b.scheduler, &b.fibers[size_t(i)].ctx);
      all_done = all_done && b.fibers[size_t(i)].done;
    }
    if (all_done) break;
    if (b.progress == before) {
      std::fprintf(stderr, "cuda_sim: deadlock in block (%u, %u, %u): threads wait at a barrier that others never "
                   "reach\n", b.block_idx.x, b.block_idx.y, b.block_idx.z);
      std::abort();
    }
  }
  current_block() = nullptr;
}

// run body for every thread of every block; shared: the dynamic shared memory bytes per block
inline void launch(dim3 grid, dim3 block_dim, size_t shared, const std::function<void()>& body) {
  const int n = int(block_dim.x * block_dim.y * block_dim.z);
  constexpr size_t kStack = 256 * 1024;
  std::vector<std::unique_ptr<char[]>> owned;
  std::vector<char*> stacks;
  for (int i = 0; i < n; ++i) {
    owned.emplace_back(new char[kStack]);
    stacks.push_back(owned.back().get());
  }
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b;
        b.block_idx = dim3(bx, by, bz), b.block_dim = block_dim, b.grid_dim = grid, b.body = &body;
        b.smem.assign(shared + 16, 0xA5);  // garbage, as on a GPU
        run_block(b, n, stacks.data(), kStack);
      }
}

// ------------------------------------------------------------------------------------------ instructions
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const int lane = linear_tid() & 31;
  WarpExchange& x = current_block()->exchange[size_t(linear_tid() / 32)];
  x.ptr[lane] = static_cast<const unsigned char*>(row);
  warp_sync();
  for (int j = 0; j < 4; ++j) std::memcpy(&r[j], x.ptr[j * 8 + lane / 4] + 4 * (lane % 4), 4);
  warp_sync();
}

inline void mma_s8_16832(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int lane = linear_tid() & 31;
  WarpExchange& x = current_block()->exchange[size_t(linear_tid() / 32)];
  for (int i = 0; i < 4; ++i) x.a[lane][i] = a[i];
  x.b[lane][0] = b[0], x.b[lane][1] = b[1];
  warp_sync();
  const auto A = [&](int row, int k) {  // A[row][k] of the 16 x 32 tile
    const int owner = (row % 8) * 4 + (k % 16) / 4, reg = (row >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0);
    return int(int8_t(uint8_t(x.a[owner][reg] >> (8 * (k % 4)))));
  };
  const auto B = [&](int k, int col) {  // B[k][col] of the 32 x 8 tile
    const int owner = col * 4 + (k % 16) / 4, reg = k >= 16 ? 1 : 0;
    return int(int8_t(uint8_t(x.b[owner][reg] >> (8 * (k % 4)))));
  };
  int32_t result[4];
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    int32_t sum = d[i];
    for (int k = 0; k < 32; ++k) sum += A(row, k) * B(k, col);
    result[i] = sum;
  }
  warp_sync();
  for (int i = 0; i < 4; ++i) d[i] = result[i];
}

inline void cp_async16(void* dst, const void* src, bool valid) {
  if (valid) {
    std::memcpy(dst, src, 16);
  } else {
    std::memset(dst, 0, 16);
  }
}

inline uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
  const uint64_t bytes = uint64_t(x) | (uint64_t(y) << 32);
  uint32_t r = 0;
  for (int n = 0; n < 4; ++n) r |= uint32_t((bytes >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
  return r;
}

inline uint32_t vsub4(uint32_t a, uint32_t b) {
  uint32_t r = 0;
  for (int n = 0; n < 4; ++n) r |= (((a >> (8 * n)) - (b >> (8 * n))) & 0xFFu) << (8 * n);
  return r;
}

}  // namespace mmaqd_sim

#define threadIdx (mmaqd_sim::current_fiber().tid)
#define blockIdx (mmaqd_sim::current_block()->block_idx)
#define blockDim (mmaqd_sim::current_block()->block_dim)
#define gridDim (mmaqd_sim::current_block()->grid_dim)

inline void __syncthreads() { mmaqd_sim::syncthreads(); }
// fibers switch only at barriers, so read-modify-write is atomic here
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
inline long long atomicMin(long long* p, long long v) {
  const long long old = *p;
  *p = v < old ? v : old;
  return old;
}
inline long long atomicMax(long long* p, long long v) {
  const long long old = *p;
  *p = v > old ? v : old;
  return old;
}
