// Shared device code of the gated-delta-rule kernels: element types, the tensor-core
// product with f32-accurate operands, and the fragment loaders from shared memory.
//
// No CUDA headers are included on purpose: build.rs embeds each .cu with this file
// inlined, and the NVRTC fallback (PTX too new for the driver) compiles that text with
// no include paths. Conversions are written in PTX instead of cuda_bf16.h.
#pragma once

typedef unsigned int u32;
typedef unsigned short u16;

// LTM_HOST_EMU: the kernels compiled as host C++ by kernels/emu/ (a SIMT emulator for
// checking their indexing without a GPU); it defines the CUDA built-ins used below and
// host versions of the three PTX instructions.
#ifndef LTM_HOST_EMU
#define LTM_DYNAMIC_SMEM(name) extern __shared__ __align__(16) float name[]
#endif

// Tokens per chunk. Fixed on the GPU: every shared-memory tile below is sized for it, and
// 64 rows are four 16-row MMA tiles, one per warp in the 128-thread kernels.
#define LTM_CHUNK 64
// Largest key dimension the kernels take (padded to a multiple of 16 at load).
#define LTM_KMAX 128

// ---------------------------------------------------------------------------------------
// Element types of q, k, v. Storage tags only: everything is converted to f32 on load.

struct bf16_t { u16 bits; };
struct f16_t { u16 bits; };

// Type choice at compile time (no <type_traits> here, see the top of this file).
template <bool COND, typename A, typename B> struct Pick { typedef A type; };
template <typename A, typename B> struct Pick<false, A, B> { typedef B type; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) {
    return __uint_as_float(((u32)x.bits) << 16);
}
__device__ __forceinline__ float to_f32(f16_t x) {
#ifdef LTM_HOST_EMU
    return ltm_emu::f16_to_f32(x.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
#endif
}

// Values of this type are exact in bf16, so their MMA operand needs no low part.
template <typename T> struct ExactInBf16 { static constexpr bool value = false; };
template <> struct ExactInBf16<bf16_t> { static constexpr bool value = true; };

// ---------------------------------------------------------------------------------------
// Tensor-core products with f32-accurate operands.
//
// mma.sync m16n8k16 takes bf16 operands and accumulates in f32. An f32 operand x is
// split as x ≈ hi + lo with hi = bf16(x), lo = bf16(x − hi): 16 significant bits, a
// relative error near 2⁻¹⁷, and bf16 keeps f32's exponent range (f16 would flush the
// small decays exp(γ) and the low parts). A product takes hi·hi + hi·lo + lo·hi (lo·lo
// is below f32 rounding of the sum), so results track the CPU's f32 arithmetic to about
// 1e-5 relative. An operand that is exact in bf16 (bf16 inputs q, k) has lo = 0 and
// drops its terms: K Kᵀ and Q Kᵀ of bf16 inputs take one MMA, not three.

// Packs two floats to bf16x2 (round to nearest even); `lo_elem` goes to the low half,
// which mma.sync reads as the lower column/row index.
__device__ __forceinline__ u32 pack_bf16x2(float lo_elem, float hi_elem) {
#ifdef LTM_HOST_EMU
    return ltm_emu::pack_bf16x2(lo_elem, hi_elem);
#else
    u32 d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi_elem), "f"(lo_elem));
    return d;
#endif
}

// hi/lo split of a pair; `lo` is unused (and dead code) when EXACT.
template <bool EXACT>
__device__ __forceinline__ void split_pair(float x0, float x1, u32& hi, u32& lo) {
    hi = pack_bf16x2(x0, x1);
    if (!EXACT) {
        float r0 = x0 - __uint_as_float(hi << 16);
        float r1 = x1 - __uint_as_float(hi & 0xffff0000u);
        lo = pack_bf16x2(r0, r1);
    }
}

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const u32 (&a)[4], const u32 (&b)[2]) {
#ifdef LTM_HOST_EMU
    ltm_emu::mma_bf16_16816(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// A 16×16 A operand (row-major) as hi/lo bf16 fragments. Lane (g = lane/4, t = lane%4)
// holds rows g, g+8 and columns 2t, 2t+1, 2t+8, 2t+9 (PTX ISA, "mma.m16n8k16").
template <bool EXACT> struct FragA { u32 hi[4]; u32 lo[4]; };
// A 16×8 B operand: lane holds column n = g, rows 2t, 2t+1, 2t+8, 2t+9.
template <bool EXACT> struct FragB { u32 hi[2]; u32 lo[2]; };

// c += a · b with the split described above.
template <bool EA, bool EB>
__device__ __forceinline__ void mma_acc(float (&c)[4], const FragA<EA>& a, const FragB<EB>& b) {
    if (!EA) mma_bf16_16816(c, a.lo, b.hi);
    if (!EB) mma_bf16_16816(c, a.hi, b.lo);
    mma_bf16_16816(c, a.hi, b.hi);
}

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

// Fragment loaders from f32 shared memory. Two storage orders each, with the leading
// dimension (in floats) that makes a warp's loads free of bank conflicts:
//  - pairs along the row (`*_rows` for A, `*_cols` for B): float2 loads, a half-warp
//    touches rows g = 0..3 at words g·ld + 2t; distinct banks when ld ≡ 8 (mod 16);
//  - pairs across rows (`a_cols`, `b_rows`): scalar loads at words 2t·ld + g, distinct
//    banks when ld ≡ 4 (mod 16).

// A[m][k] = base[(m0 + m) * ld + k0 + k]
template <bool EXACT>
__device__ __forceinline__ FragA<EXACT> load_a_rows(const float* base, int ld, int m0, int k0) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
    FragA<EXACT> f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int row = m0 + g + ((i & 1) ? 8 : 0);
        const int col = k0 + 2 * t + ((i & 2) ? 8 : 0);
        const float2 x = *reinterpret_cast<const float2*>(base + row * ld + col);
        split_pair<EXACT>(x.x, x.y, f.hi[i], f.lo[i]);
    }
    return f;
}

// A[m][k] = base[(k0 + k) * ld + m0 + m]: A stored transposed (Kᵀ from a K tile).
template <bool EXACT>
__device__ __forceinline__ FragA<EXACT> load_a_cols(const float* base, int ld, int m0, int k0) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
    FragA<EXACT> f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int row = m0 + g + ((i & 1) ? 8 : 0);
        const int col = k0 + 2 * t + ((i & 2) ? 8 : 0);
        split_pair<EXACT>(base[col * ld + row], base[(col + 1) * ld + row], f.hi[i], f.lo[i]);
    }
    return f;
}

// B[k][n] = base[(k0 + k) * ld + n0 + n]: B stored row-major (S, V').
template <bool EXACT>
__device__ __forceinline__ FragB<EXACT> load_b_rows(const float* base, int ld, int k0, int n0) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
    FragB<EXACT> f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int k = k0 + 2 * t + (i ? 8 : 0);
        split_pair<EXACT>(base[k * ld + n0 + g], base[(k + 1) * ld + n0 + g], f.hi[i], f.lo[i]);
    }
    return f;
}

// B[k][n] = base[(n0 + n) * ld + k0 + k]: B stored transposed (Kᵀ from a K tile).
template <bool EXACT>
__device__ __forceinline__ FragB<EXACT> load_b_cols(const float* base, int ld, int k0, int n0) {
    const int g = lane_id() >> 2, t = lane_id() & 3;
    FragB<EXACT> f;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int k = k0 + 2 * t + (i ? 8 : 0);
        const float2 x = *reinterpret_cast<const float2*>(base + (n0 + g) * ld + k);
        split_pair<EXACT>(x.x, x.y, f.hi[i], f.lo[i]);
    }
    return f;
}

// Stage-1 outputs W, U, P are stored as f32, or as bf16 in the FAST path (half the
// bytes written by stage 1 and read back by the scan). Stores round to nearest even.
__device__ __forceinline__ void store_elem(float* dst, float x) { *dst = x; }
__device__ __forceinline__ void store_elem(bf16_t* dst, float x) {
    dst->bits = (u16)(pack_bf16x2(x, 0.0f) & 0xffffu);
}
// Two adjacent elements; `dst` is aligned to the pair (8 bytes f32, 4 bytes bf16).
__device__ __forceinline__ void store_pair(float* dst, float x0, float x1) {
    *reinterpret_cast<float2*>(dst) = make_float2(x0, x1);
}
__device__ __forceinline__ void store_pair(bf16_t* dst, float x0, float x1) {
    *reinterpret_cast<u32*>(dst) = pack_bf16x2(x0, x1);
}

// Row and column of accumulator element e (0..3) of a 16×8 tile at (m0, n0).
__device__ __forceinline__ int acc_row(int m0, int e) { return m0 + (lane_id() >> 2) + ((e & 2) ? 8 : 0); }
__device__ __forceinline__ int acc_col(int n0, int e) { return n0 + 2 * (lane_id() & 3) + (e & 1); }

// ---------------------------------------------------------------------------------------
// Loading an input tile: rows are tokens of one (sequence, head), `row_stride` elements
// apart in the [B, T, H, D] layout; tokens past `valid` and columns past `cols` read as 0
// (padding never touches memory outside the window buffers).
template <typename T>
__device__ __forceinline__ void load_tile(float* dst, int ld, const T* src, long long row_stride,
                                          int rows, int valid, int col0, int width, int cols) {
    for (int idx = threadIdx.x; idx < rows * width; idx += blockDim.x) {
        const int r = idx / width, c = idx - r * width;
        const int col = col0 + c;
        float x = 0.0f;
        if (r < valid && col < cols) x = to_f32(src[r * row_stride + col]);
        dst[r * ld + c] = x;
    }
}
