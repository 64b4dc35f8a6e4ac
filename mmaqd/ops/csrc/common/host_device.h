// MMAQD_HOST_DEVICE marks the small inline functions that the CPU kernels and the CUDA kernels share
// (fixed_point.h, packing.h): `__host__ __device__` when nvcc compiles them, nothing for a C++ compiler, so the
// CPU build is the same code as before.
#pragma once

#if defined(__CUDACC__)
#define MMAQD_HOST_DEVICE __host__ __device__
#else
#define MMAQD_HOST_DEVICE
#endif
