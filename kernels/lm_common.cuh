// Shared device code of the language-model kernels (lm_*.cu): the element stores of a
// GEMM's input dtype, and deterministic reductions (a fixed tree, so every run and every
// thread order gives the same bits; no floating-point atomics).
//
// Like common.cuh: no CUDA headers, so the embedded source compiles with NVRTC as is.
#pragma once
#include "common.cuh"

// Threads of the row kernels (one block per token row, columns strided over threads).
#define LTM_LM_ROW_THREADS 256
// Widest short convolution the kernels take (fla's default is 4).
#define LTM_LM_CONV_MAX 8
// Threads of the sampling kernel, and the largest top-k it draws from (one candidate per
// thread in the final sort).
#define LTM_LM_SAMPLE_THREADS 1024
#define LTM_LM_SAMPLE_KMAX 1024

typedef unsigned long long u64;
#define LTM_NEG_INF __uint_as_float(0xff800000u)

// f32 -> f16, round to nearest even (cvt.rn.f16.f32).
__device__ __forceinline__ u16 f32_to_f16_bits(float x) {
#ifdef LTM_HOST_EMU
    return ltm_emu::f32_to_f16(x);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
#endif
}

// One element of a GEMM input (or of the memory's q, k, v) in its storage type.
__device__ __forceinline__ void store_as(float* dst, float x) { *dst = x; }
__device__ __forceinline__ void store_as(bf16_t* dst, float x) {
    dst->bits = (u16)(pack_bf16x2(x, 0.0f) & 0xffffu);
}
__device__ __forceinline__ void store_as(f16_t* dst, float x) { dst->bits = f32_to_f16_bits(x); }

// Sum over a warp by an xor butterfly: every lane adds the same pairs (in swapped
// order, which is exact), so every lane holds the same bits.
template <typename F>
__device__ __forceinline__ F warp_sum(F x) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, m));
    return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `red` is 32 entries of shared memory; the call ends with the block in step,
// so `red` may be reused by the next call.
template <typename F>
__device__ __forceinline__ F block_sum(F x, F* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = warp_sum(x);
    if (lane == 0) red[warp] = x;
    __syncthreads();
    F y = lane < warps ? red[lane] : (F)0;
    y = warp_sum(y);
    __syncthreads();  // every warp has read `red` before it is written again
    return y;
}

__device__ __forceinline__ float block_max(float x, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = warp_max(x);
    if (lane == 0) red[warp] = x;
    __syncthreads();
    float y = lane < warps ? red[lane] : LTM_NEG_INF;
    y = warp_max(y);
    __syncthreads();
    return y;
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
// fla's softplus: x itself above 20.
__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
