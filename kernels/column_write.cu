// Stage 1 of the chunked gated delta rule (DESIGN.md §1): everything about a chunk that
// does not depend on the state it starts from. One block per (chunk, head, sequence),
// all independent, so a window of N chunks is N·H·B blocks of dense work.
//
// For chunk rows i, j (C = 64 tokens), with γ the inclusive cumulative sum of g:
//   A = strictly_lower(diag(β) K Kᵀ ⊙ exp(γ_i − γ_j))
//   P = lower_incl(scale · Q Kᵀ ⊙ exp(γ_i − γ_j))                    (read mask, for the scan)
//   (I + A) W = diag(β e^γ) K,   (I + A) U = diag(β) V                (forward substitution)
// Outputs, f32, per (sequence, head, chunk), contiguous so the scan reads whole tiles:
//   W [C × KP], U [C × V], P [C × C], γ [C].
// The scan (scan.cu) then forms V' = U − W S₀, the outputs and the state write
// S₁ = e^{γ_C} S₀ + (diag(e^{γ_C − γ}) K)ᵀ V': the column write proper runs inside the
// sequential chain of the scan, fused there so per-chunk states never leave the chip.
//
// CPU twin: src/backend/cpu/column_write.rs (gather, prepare) and the solve of
// scan.rs::correct_values, which solves against R = diag(β)(V − diag(e^γ) K S₀) directly;
// here the same solve runs on [diag(β e^γ) K | diag(β) V] so it is state-free:
// V' = T R = U − W S₀ with T = (I + A)⁻¹.
#include "common.cuh"

struct PrepParams {
    const void* q;       // [B, t_stride, H, K] input type
    const void* k;       // [B, t_stride, H, K]
    const void* v;       // [B, t_stride, H, V]
    const float* beta;   // [B, t_stride, H]
    const float* g;      // [B, t_stride, H]
    float* w;            // [B, H, NC, C, KP]
    float* u;            // [B, H, NC, C, V]
    float* p;            // [B, H, NC, C, C]
    float* gamma;        // [B, H, NC, C]
    int batch, heads, key_dim, value_dim;
    int kp;              // key_dim rounded up to 16
    int t_stride;        // tokens per sequence in the window buffers
    int tokens;          // valid tokens per sequence in this window
    int num_chunks;      // ceil(tokens / C) == gridDim.x
    float scale;
    int pad_;
};

namespace prep {
constexpr int C = LTM_CHUNK;
constexpr int THREADS = 128;  // 4 warps: one 16-row MMA tile of the chunk each
// Key columns per Gram tile: Q and K tiles of C × 32 f32 plus A fit the 48 KB of static
// shared memory, so the kernel needs no opt-in and several blocks share an SM.
constexpr int KT = 32;
constexpr int LD_QK = KT + 8;  // float2 row pairs (A and Bᵀ operands): ≡ 8 mod 16
constexpr int LD_A = C + 8;    // A read as the row-major A operand: ≡ 8 mod 16
constexpr int XT = 64;         // right-hand-side columns solved per pass
constexpr int LD_X = XT + 4;   // X read as the row-major B operand: ≡ 4 mod 16
constexpr int TILE_FLOATS = (2 * C * LD_QK > C * LD_X) ? 2 * C * LD_QK : C * LD_X;
}  // namespace prep

// Inclusive cumulative sum of the chunk's gates in f64 (as the CPU twin sums them): the
// γ of a chunk drives every decay. Warps 0 and 1 scan 32 gates each with shuffles; warp 1
// then adds warp 0's total. Padding gates are 0, so padding rows share the last γ.
__device__ __forceinline__ void chunk_gammas(const float* g, long long gate0, long long stride,
                                             int valid, float* s_gamma, double* s_carry) {
    const int tid = threadIdx.x;
    double x = 0.0;
    if (tid < LTM_CHUNK) {
        x = tid < valid ? (double)g[gate0 + tid * stride] : 0.0;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const double y = __shfl_up_sync(0xffffffffu, x, off);
            if ((tid & 31) >= off) x += y;
        }
        if (tid == 31) *s_carry = x;
    }
    __syncthreads();
    if (tid < LTM_CHUNK) s_gamma[tid] = (float)(tid >= 32 ? x + *s_carry : x);
    __syncthreads();
}

// S: the storage type of W, U, P (float, or bf16_t in the FAST path).
template <typename T, typename S = float>
__device__ void chunk_prep(const PrepParams& P) {
    using namespace prep;
    constexpr bool EXACT = ExactInBf16<T>::value;
    __shared__ __align__(16) float s_a[C * LD_A];
    __shared__ __align__(16) float s_tile[TILE_FLOATS];
    __shared__ float s_gamma[C], s_beta[C], s_rowk[C];
    __shared__ double s_carry;

    const int chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid >> 5;
    const int t0 = chunk * C;
    const int valid = min(C, P.tokens - t0);
    const long long gate0 = ((long long)b * P.t_stride + t0) * P.heads + h;  // [B,T,H] index
    const long long qk_stride = (long long)P.heads * P.key_dim;              // elements per token
    const long long v_stride = (long long)P.heads * P.value_dim;
    const T* q = reinterpret_cast<const T*>(P.q) + gate0 * P.key_dim;
    const T* k = reinterpret_cast<const T*>(P.k) + gate0 * P.key_dim;
    const T* v = reinterpret_cast<const T*>(P.v) + gate0 * P.value_dim;
    const long long out_chunk = ((long long)b * P.heads + h) * P.num_chunks + chunk;

    // Gates: padding rows get β = 0, g = 0, so they neither read nor write the state.
    chunk_gammas(P.g, gate0, P.heads, valid, s_gamma, &s_carry);
    if (tid < C) {
        const float beta = tid < valid ? P.beta[gate0 + (long long)tid * P.heads] : 0.0f;
        s_beta[tid] = beta;
        s_rowk[tid] = beta * expf(s_gamma[tid]);  // row factor of W's right-hand side
        P.gamma[out_chunk * C + tid] = s_gamma[tid];
    }
    __syncthreads();

    // K Kᵀ and Q Kᵀ (C × C), one 16-row stripe per warp, over key tiles of KT columns.
    float* s_q = s_tile;
    float* s_k = s_tile + C * LD_QK;
    float acc_kk[8][4], acc_qk[8][4];
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_kk[n][e] = acc_qk[n][e] = 0.0f;
    const int m0 = warp * 16;
    for (int k0 = 0; k0 < P.kp; k0 += KT) {
        load_tile(s_q, LD_QK, q, qk_stride, C, valid, k0, KT, P.key_dim);
        load_tile(s_k, LD_QK, k, qk_stride, C, valid, k0, KT, P.key_dim);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < KT; kk += 16) {
            if (k0 + kk < P.kp) {
                const FragA<EXACT> ak = load_a_rows<EXACT>(s_k, LD_QK, m0, kk);
                const FragA<EXACT> aq = load_a_rows<EXACT>(s_q, LD_QK, m0, kk);
#pragma unroll
                for (int n = 0; n < 8; ++n) {
                    const FragB<EXACT> bk = load_b_cols<EXACT>(s_k, LD_QK, kk, n * 8);
                    mma_acc(acc_kk[n], ak, bk);
                    mma_acc(acc_qk[n], aq, bk);
                }
            }
        }
        __syncthreads();
    }

    // Masks and decays. exp(γ_i − γ_j) ≤ 1 on and below the diagonal (γ never rises);
    // above it the factor could overflow, so it is never evaluated there.
    S* p_out = reinterpret_cast<S*>(P.p) + out_chunk * C * C;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
            const int i = acc_row(m0, e), j = acc_col(n * 8, e);
            float a2[2], p2[2];
#pragma unroll
            for (int d = 0; d < 2; ++d) {
                const int jj = j + d;
                const float decay = jj <= i ? expf(s_gamma[i] - s_gamma[jj]) : 0.0f;
                a2[d] = jj < i ? s_beta[i] * acc_kk[n][e + d] * decay : 0.0f;
                p2[d] = jj <= i ? P.scale * acc_qk[n][e + d] * decay : 0.0f;
            }
            *reinterpret_cast<float2*>(s_a + i * LD_A + j) = make_float2(a2[0], a2[1]);
            store_pair(p_out + i * C + j, p2[0], p2[1]);
        }
    }
    __syncthreads();

    // (I + A) X = R for R = [diag(β e^γ) K | diag(β) V], XT columns at a time. Blocked
    // forward substitution as on the CPU: rows in blocks of 16; each block first takes
    // the product with all solved rows above it (tensor cores), then solves its own
    // 16 × 16 unit-lower triangle row by row (one thread per column).
    float* s_x = s_tile;
    const int w_tiles = (P.kp + XT - 1) / XT;
    const int u_tiles = (P.value_dim + XT - 1) / XT;
    for (int tile = 0; tile < w_tiles + u_tiles; ++tile) {
        const bool is_w = tile < w_tiles;
        const int c0 = (is_w ? tile : tile - w_tiles) * XT;
        if (is_w) {
            load_tile(s_x, LD_X, k, qk_stride, C, valid, c0, XT, P.key_dim);
        } else {
            load_tile(s_x, LD_X, v, v_stride, C, valid, c0, XT, P.value_dim);
        }
        __syncthreads();
        for (int idx = tid; idx < C * XT; idx += THREADS) {
            const int r = idx / XT, c = idx - r * XT;
            s_x[r * LD_X + c] *= is_w ? s_rowk[r] : s_beta[r];
        }
        __syncthreads();
#pragma unroll 1
        for (int r0 = 0; r0 < C; r0 += 16) {
            if (r0 > 0) {
                // X[r0:r0+16, 16w:16w+16] -= A[r0:r0+16, 0:r0] · X[0:r0, 16w:16w+16]
                float acc[2][4];
#pragma unroll
                for (int n = 0; n < 2; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
                for (int kk = 0; kk < r0; kk += 16) {
                    const FragA<false> fa = load_a_rows<false>(s_a, LD_A, r0, kk);
#pragma unroll
                    for (int n = 0; n < 2; ++n) {
                        const FragB<false> fb = load_b_rows<false>(s_x, LD_X, kk, warp * 16 + n * 8);
                        mma_acc(acc[n], fa, fb);
                    }
                }
#pragma unroll
                for (int n = 0; n < 2; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        s_x[acc_row(r0, e) * LD_X + acc_col(warp * 16 + n * 8, e)] -= acc[n][e];
                __syncthreads();
            }
            if (tid < XT) {
                float x[16];
#pragma unroll
                for (int r = 0; r < 16; ++r) x[r] = s_x[(r0 + r) * LD_X + tid];
#pragma unroll
                for (int r = 1; r < 16; ++r)
#pragma unroll
                    for (int j = 0; j < r; ++j) x[r] -= s_a[(r0 + r) * LD_A + r0 + j] * x[j];
#pragma unroll
                for (int r = 0; r < 16; ++r) s_x[(r0 + r) * LD_X + tid] = x[r];
            }
            __syncthreads();
        }
        // Store the solved columns: W keeps all KP columns (padding columns are 0),
        // U exactly V.
        const int width = is_w ? P.kp : P.value_dim;
        S* dst = is_w ? reinterpret_cast<S*>(P.w) + out_chunk * C * P.kp
                      : reinterpret_cast<S*>(P.u) + out_chunk * C * P.value_dim;
        for (int idx = tid; idx < C * XT; idx += THREADS) {
            const int r = idx / XT, c = idx - r * XT;
            if (c0 + c < width) store_elem(dst + r * width + c0 + c, s_x[r * LD_X + c]);
        }
        __syncthreads();
    }
}

#define LTM_PREP_ENTRY(NAME, T, S)                                       \
    extern "C" __global__ void __launch_bounds__(prep::THREADS)          \
    NAME(const PrepParams params) { chunk_prep<T, S>(params); }

LTM_PREP_ENTRY(ltm_chunk_prep_f32, float, float)
LTM_PREP_ENTRY(ltm_chunk_prep_f16, f16_t, float)
LTM_PREP_ENTRY(ltm_chunk_prep_bf16, bf16_t, float)
// The FAST path's stage 1: W, U, P stored as bf16 for ltm_scan_bf16_fast.
LTM_PREP_ENTRY(ltm_chunk_prep_bf16_fast, bf16_t, bf16_t)
