// CUDA compatibility layer: lets g++ compile the kernels in this directory as plain C++ so that the
// host loop in shim_host.cpp can run them on the CPU (tests, CI without a GPU).
//
// Both builds get `fp16` (an IEEE binary16 value in memory) and `to_fp16` (float -> fp16, round to
// nearest even). On the GPU it is the raw 16 bits converted with one PTX instruction, so the kernels
// include no header at all (NVRTC, as CuPy uses it, often cannot find a matching cuda_fp16.h).
// For g++ this header also defines exactly what the kernels use, with CUDA's semantics:
// execution-space qualifiers, the built-in index variables (one copy per host thread, set by the host
// loop before each simulated CUDA thread runs), __ldg, the vector types with CUDA's alignment,
// __float2int_rn (round half to even) and __funnelshift_r.
#pragma once

#ifdef __CUDACC__
typedef unsigned short fp16;
__device__ __forceinline__ fp16 to_fp16(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
#else
#include <cmath>

#define __global__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

template <typename T>
__forceinline__ T __ldg(const T* p) { return *p; }

struct alignas(2) uchar2 { unsigned char x, y; };
struct alignas(4) uchar4 { unsigned char x, y, z, w; };
struct alignas(8) float2 { float x, y; };

__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }

// nearbyintf rounds in the current mode, which is round-to-nearest-even unless someone changed it.
__forceinline__ int __float2int_rn(float x) { return static_cast<int>(std::nearbyintf(x)); }

// The 32 bits of (hi:lo) >> (shift & 31), as the funnel shifter does.
__forceinline__ unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int shift) {
    const unsigned long long both = (static_cast<unsigned long long>(hi) << 32) | lo;
    return static_cast<unsigned int>(both >> (shift & 31u));
}

typedef _Float16 fp16;
__forceinline__ fp16 to_fp16(float v) { return static_cast<fp16>(v); }
#endif
