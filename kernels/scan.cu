// Stage 2 of the chunked gated delta rule (DESIGN.md §1): the state hand-off from chunk
// to chunk, fused with the outputs and the state write, so per-chunk states are never
// stored. Per chunk, from stage 1's W, U, P, γ (column_write.cu) and the state S₀:
//   V' = U − W S₀                                              corrected values, C × DV
//   O  = scale · diag(e^γ) Q S₀ + P V'                           outputs
//   S₁ = e^{γ_C} S₀ + Kᵀ diag(e^{γ_C − γ}) V'                    the column write
// CPU twin: src/backend/cpu/scan.rs (correct_values, read_outputs) and
// column_write.rs::write_state.
//
// Parallelism: value columns never mix (each column of S follows its own delta rule), so
// one block owns a DV = 32-column slice of one (sequence, head) and walks its chunks in
// order. When sequences × heads × slices are too few to fill the GPU (one long sequence,
// few heads), the chunks are cut into G segments and the two-level scan runs instead:
//   1. ltm_segment_maps_*: per segment but the last (whose map nothing uses; the host
//      launches G − 1 segments' blocks), the affine map S_end = M S_start + B, found by
//      running this same chunk loop on the augmented state [M | B] (K × (K + V)), from
//      [I | 0] with U read as [0 | U] (S₁ = (e^{γ_C} I − K̃ᵀ W) S₀ + K̃ᵀ U, applied to
//      M and B at once); all segments in parallel;
//   2. ltm_segment_combine: S_start(g+1) = M_g S_start(g) + B_g, short and sequential;
//   3. ltm_scan_*: every segment again from its start state, now with outputs.
#include "common.cuh"

struct ScanParams {
    const void* q;         // [B, t_stride, H, K] input type
    const void* k;         // [B, t_stride, H, K]
    const float* w;        // [B, H, NC, C, KP]  stage 1
    const float* u;        // [B, H, NC, C, V]
    const float* p;        // [B, H, NC, C, C]
    const float* gamma;    // [B, H, NC, C]
    const float* starts;   // scan: [G, B, H, K, V] state at each segment's start
    float* state_out;      // scan: [B, H, K, V] (last segment); maps: [G, B, H, K, K + V]
    float* out;            // scan: o [B, t_stride, H, V]
    int batch, heads, key_dim, value_dim;
    int kp;                // key_dim rounded up to 16
    int t_stride;          // tokens per sequence in the window buffers
    int tokens;            // valid tokens per sequence in this window
    int num_chunks;        // ceil(tokens / C)
    int chunks_per_segment;
    int num_segments;
    int slices;            // DV-column slices per (sequence, head); gridDim.x = slices · G
    float scale;
};

struct CombineParams {
    const float* state;    // [B, H, K, V] state at the window's start
    const float* maps;     // [G, B, H, K, K + V]
    float* starts;         // [G, B, H, K, V]
    int batch, heads, key_dim, value_dim;
    int num_segments;
    int pad_;
};

namespace scan {
constexpr int C = LTM_CHUNK;
constexpr int KMAX = LTM_KMAX;
// The wide variants (`*_k256`) take key_dim up to 256: each warp holds two 16-row
// stripes of the state, and Q and W pass through shared memory in two 128-column
// halves, so the tiles still fit an H100/H200's 227 KB (not an A100's 163 KB).
constexpr int KMAX_WIDE = 2 * KMAX;
// Columns per block. 32 keeps the state slice (K × 32 f32) in registers: with 8 warps,
// warp w holds rows 16w..16w+15 (and 128 + 16w.. in the wide kernels) as four 16×8
// accumulator tiles a stripe (16 floats a thread a stripe).
constexpr int DV = 32;
constexpr int THREADS = 256;
constexpr int COMBINE_THREADS = 256;

// Shared-memory layout (floats) of a scan block with NS state stripes a warp. Leading
// dimensions are chosen for conflict-free fragment loads (common.cuh).
template <int NS> struct Smem {
    static constexpr int LD_QW = KMAX + 8;       // Q, W: one 128-column half, A operands read along rows (float2)
    static constexpr int LD_K = NS * KMAX + 4;   // K, all columns: read transposed as the A operand of Kᵀ V'
    static constexpr int LD_P = C + 8;           // P: A operand read along rows
    static constexpr int LD_S = DV + 4;          // S, V': B operands read down columns
    static constexpr int OFF_Q = 0;
    static constexpr int OFF_W = OFF_Q + C * LD_QW;
    static constexpr int OFF_K = OFF_W + C * LD_QW;
    static constexpr int OFF_P = OFF_K + C * LD_K;
    static constexpr int OFF_S = OFF_P + C * LD_P;
    static constexpr int OFF_VP = OFF_S + NS * KMAX * LD_S;
    static constexpr int OFF_VS = OFF_VP + C * LD_S;
    static constexpr int OFF_EIN = OFF_VS + C * LD_S;
    static constexpr int OFF_EOUT = OFF_EIN + C;
    static constexpr int FLOATS = OFF_EOUT + C;
    static constexpr int BYTES = FLOATS * 4;
};
// 159,232 bytes (NS = 1) and 210,432 bytes (NS = 2): dynamic shared memory with the
// opt-in (A100: 163 KB, H100/H200: 227 KB). Everything a chunk needs is resident at once,
// so a chunk costs three barriers (four in the wide kernels: one more per Q/W half).
constexpr int SMEM_BYTES = Smem<1>::BYTES;
constexpr int SMEM_BYTES_WIDE = Smem<2>::BYTES;
}  // namespace scan

// Layout constants the host reads from the module itself, so they never drift apart:
// chunk, largest key dim, columns per scan block, scan threads, scan dynamic shared
// memory bytes, combine threads, then the wide kernels' largest key dim and dynamic
// shared memory bytes. The host launches ltm_scan_layout_query (an entry point
// is always visible in the module, unlike a module-scope variable); the array is the same
// numbers in the PTX text, where scripts/ptxas-report.py reads the shared memory size.
extern "C" {
__constant__ int ltm_scan_layout[8] = {
    scan::C, scan::KMAX, scan::DV, scan::THREADS, scan::SMEM_BYTES, scan::COMBINE_THREADS,
    scan::KMAX_WIDE, scan::SMEM_BYTES_WIDE};
}

extern "C" __global__ void ltm_scan_layout_query(int* out) {
    if (threadIdx.x < 8) out[threadIdx.x] = ltm_scan_layout[threadIdx.x];
}

// Copies `width` values of each of `rows` stage-1 rows, `src_ld` apart (width, src_ld
// and the rows' start multiples of 4 elements), into f32 shared memory with row stride
// `ld`: 16-byte loads of f32, 8-byte loads of bf16.
__device__ __forceinline__ void copy_rows(float* dst, int ld, const float* src, int src_ld, int rows, int width) {
    const int quads = width / 4;
    for (int idx = threadIdx.x; idx < rows * quads; idx += blockDim.x) {
        const int r = idx / quads, c = (idx - r * quads) * 4;
        *reinterpret_cast<float4*>(dst + r * ld + c) = *reinterpret_cast<const float4*>(src + r * src_ld + c);
    }
}
__device__ __forceinline__ void copy_rows(float* dst, int ld, const bf16_t* src, int src_ld, int rows, int width) {
    const int quads = width / 4;
    for (int idx = threadIdx.x; idx < rows * quads; idx += blockDim.x) {
        const int r = idx / quads, c = (idx - r * quads) * 4;
        const uint2 x = *reinterpret_cast<const uint2*>(src + r * src_ld + c);
        *reinterpret_cast<float4*>(dst + r * ld + c) =
            make_float4(__uint_as_float(x.x << 16), __uint_as_float(x.x & 0xffff0000u),
                        __uint_as_float(x.y << 16), __uint_as_float(x.y & 0xffff0000u));
    }
}

// FAST (bf16 inputs only): stage 1's W, U, P come as bf16 (ltm_chunk_prep_bf16_fast), and
// W, S, P and V' go to the tensor cores as single bf16 values, so every product is one
// MMA instead of two or three, at bf16 rounding of those operands (f32 accumulation and
// an f32 state kept in registers as before).
// NS: 16-row state stripes a warp, 1 (key_dim ≤ 128) or 2 (≤ 256, the `_k256` entries).
template <typename T, bool MAPS, bool FAST = false, int NS = 1>
__device__ void scan_chunks(const ScanParams& P) {
    using namespace scan;
    typedef Smem<NS> L;
    constexpr bool EXACT = ExactInBf16<T>::value;
    static_assert(!FAST || EXACT, "the FAST scan is for bf16 inputs");
    typedef typename Pick<FAST, bf16_t, float>::type S;  // stage-1 storage
    LTM_DYNAMIC_SMEM(smem);
    float* s_q = smem + L::OFF_Q;
    float* s_w = smem + L::OFF_W;
    float* s_k = smem + L::OFF_K;
    float* s_p = smem + L::OFF_P;
    float* s_s = smem + L::OFF_S;
    float* s_vp = smem + L::OFF_VP;
    float* s_vs = smem + L::OFF_VS;
    float* s_ein = smem + L::OFF_EIN;
    float* s_eout = smem + L::OFF_EOUT;

    const int slice = blockIdx.x % P.slices, seg = blockIdx.x / P.slices;
    const int h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid >> 5;
    const int K = P.key_dim, V = P.value_dim;
    const int width = MAPS ? K + V : V;  // columns of the (augmented) state
    const int v0 = slice * DV;
    const long long bh = (long long)b * P.heads + h;
    const long long qk_stride = (long long)P.heads * K;
    const int c_begin = seg * P.chunks_per_segment;
    const int c_end = min(P.num_chunks, c_begin + P.chunks_per_segment);

    // This warp's rows of the state slice, as MMA accumulators (see DV above): stripe i
    // is rows KMAX·i + 16w .. + 15.
    const int sm0 = warp * 16;
    float s[NS][4][4];
#pragma unroll
    for (int i = 0; i < NS; ++i)
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = acc_row(i * KMAX + sm0, e), col = v0 + acc_col(n * 8, e);
                float x = 0.0f;
                if (MAPS) {
                    x = (row < K && col == row) ? 1.0f : 0.0f;  // [I | 0]
                } else if (row < K && col < width) {
                    x = P.starts[(((long long)seg * P.batch + b) * P.heads + h) * K * V + (long long)row * V + col];
                }
                s[i][n][e] = x;
            }

    // Warp tiling of the C × DV products (V', O): rows 16·(w mod 4), columns 16·(w / 4).
    const int rm = 16 * (warp & 3), cn = 16 * (warp >> 2);

    for (int c = c_begin; c < c_end; ++c) {
        const int t0 = c * C;
        const int valid = min(C, P.tokens - t0);
        const long long gate0 = ((long long)b * P.t_stride + t0) * P.heads + h;
        const long long chunk = bh * P.num_chunks + c;
        const T* q = reinterpret_cast<const T*>(P.q) + gate0 * K;
        const S* w = reinterpret_cast<const S*>(P.w) + chunk * C * P.kp;

        // S₀ to shared memory, the B operand of W S₀ and Q S₀.
#pragma unroll
        for (int i = 0; i < NS; ++i) {
            if (i * KMAX + sm0 >= P.kp) continue;
#pragma unroll
            for (int n = 0; n < 4; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    s_s[acc_row(i * KMAX + sm0, e) * L::LD_S + acc_col(n * 8, e)] = s[i][n][e];
        }
        if (tid < C) {
            const float gm = P.gamma[chunk * C + tid];
            const float glast = P.gamma[chunk * C + C - 1];
            s_ein[tid] = expf(gm);
            s_eout[tid] = expf(glast - gm);
        }
        load_tile(s_k, L::LD_K, reinterpret_cast<const T*>(P.k) + gate0 * K, qk_stride, C, valid, 0, P.kp, K);
        if (!MAPS) copy_rows(s_p, L::LD_P, reinterpret_cast<const S*>(P.p) + chunk * C * C, C, C, C);

        // W S₀ and Q S₀ share the S₀ fragments; Q and W pass in KMAX-column halves.
        float vacc[2][4], oacc[2][4];
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) vacc[n][e] = oacc[n][e] = 0.0f;
#pragma unroll
        for (int half = 0; half < NS; ++half) {
            const int k0 = half * KMAX;
            if (k0 >= P.kp) break;
            const int kw = min(KMAX, P.kp - k0);
            if (half > 0) __syncthreads();  // every read of the previous half done
            copy_rows(s_w, L::LD_QW, w + k0, P.kp, C, kw);
            if (!MAPS) load_tile(s_q, L::LD_QW, q, qk_stride, C, valid, k0, kw, K);
            __syncthreads();
            for (int kk = 0; kk < kw; kk += 16) {
                const FragA<FAST> aw = load_a_rows<FAST>(s_w, L::LD_QW, rm, kk);
                FragA<EXACT> aq;
                if (!MAPS) aq = load_a_rows<EXACT>(s_q, L::LD_QW, rm, kk);
#pragma unroll
                for (int n = 0; n < 2; ++n) {
                    const FragB<FAST> bs = load_b_rows<FAST>(s_s, L::LD_S, k0 + kk, cn + n * 8);
                    mma_acc(vacc[n], aw, bs);
                    if (!MAPS) mma_acc(oacc[n], aq, bs);
                }
            }
        }
        // V' = U − W S₀ (padding rows: U and W rows are 0, so V' rows are 0: no write).
        const S* u = reinterpret_cast<const S*>(P.u) + chunk * C * V;
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = acc_row(rm, e), lc = acc_col(cn + n * 8, e), col = v0 + lc;
                const int ucol = MAPS ? col - K : col;  // maps: U is [0 | U]
                const float uval = (ucol >= 0 && col < width) ? to_f32(u[row * V + ucol]) : 0.0f;
                const float vp = uval - vacc[n][e];
                s_vp[row * L::LD_S + lc] = vp;
                s_vs[row * L::LD_S + lc] = vp * s_eout[row];
                if (!MAPS) oacc[n][e] *= P.scale * s_ein[row];
            }
        __syncthreads();  // V' complete; every read of S₀ in shared memory done

        if (!MAPS) {
            // O += P V'; P is lower triangular, so k-blocks right of the diagonal are 0.
            for (int kk = 0; kk <= rm; kk += 16) {
                const FragA<FAST> ap = load_a_rows<FAST>(s_p, L::LD_P, rm, kk);
#pragma unroll
                for (int n = 0; n < 2; ++n) {
                    const FragB<FAST> bv = load_b_rows<FAST>(s_vp, L::LD_S, kk, cn + n * 8);
                    mma_acc(oacc[n], ap, bv);
                }
            }
            float* out = P.out + (gate0 * V);
            const long long o_stride = (long long)P.heads * V;
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = acc_row(rm, e), col = v0 + acc_col(cn + n * 8, e);
                    if (row < valid && col < width) out[row * o_stride + col] = oacc[n][e];
                }
        }

        // S₁ = e^{γ_C} S₀ + Kᵀ (diag(e^{γ_C − γ}) V')
        const float total = s_ein[C - 1];
#pragma unroll
        for (int i = 0; i < NS; ++i) {
            const int r0 = i * KMAX + sm0;
            if (r0 >= P.kp) continue;
#pragma unroll
            for (int n = 0; n < 4; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[i][n][e] *= total;
#pragma unroll
            for (int kk = 0; kk < C; kk += 16) {
                const FragA<EXACT> ak = load_a_cols<EXACT>(s_k, L::LD_K, r0, kk);
#pragma unroll
                for (int n = 0; n < 4; ++n) {
                    const FragB<FAST> bv = load_b_rows<FAST>(s_vs, L::LD_S, kk, n * 8);
                    mma_acc(s[i][n], ak, bv);
                }
            }
        }
        __syncthreads();  // the next chunk overwrites every tile
    }

#pragma unroll
    for (int i = 0; i < NS; ++i) {
        if (i * KMAX + sm0 >= P.kp) continue;
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = acc_row(i * KMAX + sm0, e), col = v0 + acc_col(n * 8, e);
                if (row >= K || col >= width) continue;
                if (MAPS) {
                    const long long m = ((long long)seg * P.batch + b) * P.heads + h;
                    P.state_out[m * K * (K + V) + (long long)row * (K + V) + col] = s[i][n][e];
                } else if (seg == P.num_segments - 1) {
                    P.state_out[bh * K * V + (long long)row * V + col] = s[i][n][e];
                }
            }
    }
}

#define LTM_SCAN_ENTRY(NAME, T, MAPS, FAST, NS)                         \
    extern "C" __global__ void __launch_bounds__(scan::THREADS, 1)         \
    NAME(const ScanParams params) { scan_chunks<T, MAPS, FAST, NS>(params); }

LTM_SCAN_ENTRY(ltm_scan_f32, float, false, false, 1)
LTM_SCAN_ENTRY(ltm_scan_f16, f16_t, false, false, 1)
LTM_SCAN_ENTRY(ltm_scan_bf16, bf16_t, false, false, 1)
LTM_SCAN_ENTRY(ltm_scan_bf16_fast, bf16_t, false, true, 1)
LTM_SCAN_ENTRY(ltm_segment_maps_f32, float, true, false, 1)
LTM_SCAN_ENTRY(ltm_segment_maps_f16, f16_t, true, false, 1)
LTM_SCAN_ENTRY(ltm_segment_maps_bf16, bf16_t, true, false, 1)
LTM_SCAN_ENTRY(ltm_segment_maps_bf16_fast, bf16_t, true, true, 1)
LTM_SCAN_ENTRY(ltm_scan_f32_k256, float, false, false, 2)
LTM_SCAN_ENTRY(ltm_scan_f16_k256, f16_t, false, false, 2)
LTM_SCAN_ENTRY(ltm_scan_bf16_k256, bf16_t, false, false, 2)
LTM_SCAN_ENTRY(ltm_scan_bf16_fast_k256, bf16_t, false, true, 2)
LTM_SCAN_ENTRY(ltm_segment_maps_f32_k256, float, true, false, 2)
LTM_SCAN_ENTRY(ltm_segment_maps_f16_k256, f16_t, true, false, 2)
LTM_SCAN_ENTRY(ltm_segment_maps_bf16_k256, bf16_t, true, false, 2)
LTM_SCAN_ENTRY(ltm_segment_maps_bf16_fast_k256, bf16_t, true, true, 2)

// S_start(g + 1) = M_g S_start(g) + B_g for g = 0..G−2, and S_start(0) = the window's
// state. One block per (32 value columns, head, sequence); f32 FMAs in a fixed order, as
// the segments are few (a handful per window) and the maps must not lose precision.
// ROWS: the largest key_dim (KMAX, or KMAX_WIDE in ltm_segment_combine_k256).
template <int ROWS>
__device__ void combine_segments(const CombineParams& P) {
    using namespace scan;
    constexpr int ROWS_PER_THREAD = ROWS / (COMBINE_THREADS / DV);
    __shared__ float s_s[ROWS * (DV + 1)];
    const int h = blockIdx.y, b = blockIdx.z;
    const int K = P.key_dim, V = P.value_dim;
    const int lc = threadIdx.x % DV, col = blockIdx.x * DV + lc;
    const int r0 = threadIdx.x / DV, r_step = COMBINE_THREADS / DV;
    const long long bh = (long long)b * P.heads + h;
    const long long kv = (long long)K * V, kw = (long long)K * (K + V);
    const long long per_seg = (long long)P.batch * P.heads;

    float x[ROWS_PER_THREAD];
#pragma unroll
    for (int i = 0; i < ROWS_PER_THREAD; ++i) {
        const int row = r0 + i * r_step;
        x[i] = (row < K && col < V) ? P.state[bh * kv + (long long)row * V + col] : 0.0f;
        s_s[row * (DV + 1) + lc] = x[i];
        if (row < K && col < V) P.starts[bh * kv + (long long)row * V + col] = x[i];
    }
    for (int g = 0; g + 1 < P.num_segments; ++g) {
        __syncthreads();
        const float* map = P.maps + (g * per_seg + bh) * kw;
#pragma unroll
        for (int i = 0; i < ROWS_PER_THREAD; ++i) {
            const int row = r0 + i * r_step;
            if (row < K && col < V) {
                const float* m_row = map + (long long)row * (K + V);
                float acc = m_row[K + col];
                for (int j = 0; j < K; ++j) acc += m_row[j] * s_s[j * (DV + 1) + lc];
                x[i] = acc;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < ROWS_PER_THREAD; ++i) {
            const int row = r0 + i * r_step;
            s_s[row * (DV + 1) + lc] = x[i];
            if (row < K && col < V)
                P.starts[((g + 1) * per_seg + bh) * kv + (long long)row * V + col] = x[i];
        }
    }
}

extern "C" __global__ void __launch_bounds__(scan::COMBINE_THREADS, 1)
ltm_segment_combine(const CombineParams params) { combine_segments<scan::KMAX>(params); }
extern "C" __global__ void __launch_bounds__(scan::COMBINE_THREADS, 1)
ltm_segment_combine_k256(const CombineParams params) { combine_segments<scan::KMAX_WIDE>(params); }
