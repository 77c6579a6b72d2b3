// A small SIMT emulator that runs the kernels of kernels/*.cu as host C++, so their
// indexing, masking, fragment layouts and barriers can be checked without a GPU.
//
// Each CUDA thread of a block is a ucontext coroutine on one OS thread; blocks run one
// after another. __syncthreads, warp shuffles and mma.sync are barriers: a thread that
// arrives yields until its whole group (block or warp) has arrived. mma.sync exchanges
// fragments through a per-warp buffer and computes the 16×8 tile exactly as the PTX ISA
// lays fragments out, so a wrong fragment index gives wrong numbers here too.
// What it cannot show: timing, bank conflicts, races that a real GPU would expose
// (the schedule here is deterministic round-robin), and ptxas/JIT issues.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define LTM_HOST_EMU 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { uint32_t x, y; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
using std::min;
using std::max;

namespace ltm_emu {

struct Dim3 { unsigned x = 1, y = 1, z = 1; };

struct Barrier {
    int count = 0, arrived = 0;
    unsigned generation = 0;
};

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
    Dim3 thread;
};

struct WarpBuf {
    uint32_t a[32][4];
    uint32_t b[32][2];
    double d[32];
};

struct State {
    Dim3 block_dim, block;
    std::vector<Fiber> fibers;
    int current = -1;
    ucontext_t scheduler;
    Barrier block_barrier;
    std::vector<Barrier> warp_barriers;
    std::vector<WarpBuf> warp_bufs;
    std::vector<float> dynamic_smem;
    std::function<void()> body;
};

inline State& st() {
    static State s;
    return s;
}

inline void yield() {
    State& s = st();
    swapcontext(&s.fibers[s.current].ctx, &s.scheduler);
}

inline void wait(Barrier& b) {
    const unsigned gen = b.generation;
    if (++b.arrived == b.count) {
        b.arrived = 0;
        ++b.generation;
        return;
    }
    while (b.generation == gen) yield();
}

inline const Dim3& thread_idx() { return st().fibers[st().current].thread; }
inline int lane() { return (int)(thread_idx().x & 31); }
inline int warp() { return (int)(thread_idx().x >> 5); }
inline void sync_block() { wait(st().block_barrier); }
inline void sync_warp() { wait(st().warp_barriers[warp()]); }

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// cvt.rn.bf16.f32: round to nearest even (NaN stays NaN).
inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
inline uint32_t pack_bf16x2(float lo, float hi) {
    return (uint32_t)f32_to_bf16(lo) | ((uint32_t)f32_to_bf16(hi) << 16);
}
inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return bits_to_f32(sign);
        float f = std::ldexp((float)man, -24);
        return sign ? -f : f;
    }
    return bits_to_f32(sign | ((uint32_t)(exp + 112) << 23) | (man << 13));
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragment layout of the PTX ISA.
inline void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    State& s = st();
    WarpBuf& wb = s.warp_bufs[warp()];
    const int l = lane();
    for (int i = 0; i < 4; ++i) wb.a[l][i] = a[i];
    for (int i = 0; i < 2; ++i) wb.b[l][i] = b[i];
    sync_warp();
    float A[16][16], B[16][8];
    for (int src = 0; src < 32; ++src) {
        const int g = src >> 2, t = src & 3;
        for (int i = 0; i < 4; ++i) {
            const int row = g + ((i & 1) ? 8 : 0), col = 2 * t + ((i & 2) ? 8 : 0);
            A[row][col] = bits_to_f32(wb.a[src][i] << 16);
            A[row][col + 1] = bits_to_f32(wb.a[src][i] & 0xffff0000u);
        }
        for (int i = 0; i < 2; ++i) {
            const int k = 2 * t + (i ? 8 : 0);
            B[k][g] = bits_to_f32(wb.b[src][i] << 16);
            B[k + 1][g] = bits_to_f32(wb.b[src][i] & 0xffff0000u);
        }
    }
    sync_warp();  // every lane has read the fragments before any lane writes new ones
    const int g = l >> 2, t = l & 3;
    for (int e = 0; e < 4; ++e) {
        const int row = g + ((e & 2) ? 8 : 0), col = 2 * t + (e & 1);
        float acc = c[e];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];  // bf16 products are exact in f32
        c[e] = acc;
    }
}

inline double shfl_up(double x, int off) {
    State& s = st();
    WarpBuf& wb = s.warp_bufs[warp()];
    wb.d[lane()] = x;
    sync_warp();
    const double r = lane() >= off ? wb.d[lane() - off] : x;
    sync_warp();
    return r;
}

inline void fiber_entry() {
    State& s = st();
    s.body();
    s.fibers[s.current].done = true;
}

// Runs `body` as every thread of every block of `grid`, blocks in order; dynamic shared
// memory is poisoned with NaN before each block.
inline void launch(Dim3 grid, Dim3 block, size_t smem_bytes, std::function<void()> body) {
    State& s = st();
    s.block_dim = block;
    s.body = std::move(body);
    const int n = (int)(block.x * block.y * block.z);
    const int warps = (n + 31) / 32;
    s.dynamic_smem.assign(smem_bytes / 4 + 4, NAN);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                s.block = Dim3{x, y, z};
                std::fill(s.dynamic_smem.begin(), s.dynamic_smem.end(), NAN);
                s.block_barrier = Barrier{n, 0, 0};
                s.warp_barriers.assign(warps, Barrier{32, 0, 0});
                s.warp_bufs.assign(warps, WarpBuf{});
                s.fibers.clear();
                s.fibers.resize(n);
                for (int t = 0; t < n; ++t) {
                    Fiber& f = s.fibers[t];
                    f.thread = Dim3{(unsigned)t, 0, 0};
                    f.stack.resize(256 * 1024);
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &s.scheduler;
                    makecontext(&f.ctx, fiber_entry, 0);
                }
                int live = n;
                while (live > 0) {
                    live = 0;
                    for (int t = 0; t < n; ++t) {
                        if (s.fibers[t].done) continue;
                        s.current = t;
                        swapcontext(&s.scheduler, &s.fibers[t].ctx);
                        if (!s.fibers[t].done) ++live;
                    }
                }
                s.current = -1;
            }
}

}  // namespace ltm_emu

#define threadIdx (ltm_emu::thread_idx())
#define blockIdx (ltm_emu::st().block)
#define blockDim (ltm_emu::st().block_dim)
#define LTM_DYNAMIC_SMEM(name) float* name = ltm_emu::st().dynamic_smem.data()
inline void __syncthreads() { ltm_emu::sync_block(); }
inline double __shfl_up_sync(unsigned, double x, int off) { return ltm_emu::shfl_up(x, off); }
inline float __uint_as_float(unsigned u) { return ltm_emu::bits_to_f32(u); }
