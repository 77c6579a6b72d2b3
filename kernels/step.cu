// The gated delta rule token by token, straight on the resident state: the path for
// windows of a few tokens (language-model decode feeds one token per layer per step),
// where stage 1 + the scan (column_write.cu, scan.cu) would pay a whole padded 64-token
// chunk through two kernels. Per token t, with q already multiplied by `scale`:
//   sk = Sᵀk_t,  sq = Sᵀq_t  (columns of the old state),  kq = k_t·q_t,  d = e^{g_t}
//   u  = β_t (v_t − d·sk)
//   o_t = d·sq + kq·u        (= S'ᵀq_t with S' = d·S + k_t uᵀ)
//   S  ← d·S + k_t uᵀ
// the form of the CPU twin, src/backend/cpu/step.rs (head_impl): one pass over the old
// state gives both reads, a second writes the new state.
//
// Parallelism: value columns never mix, so one block owns a DV = 32-column slice of one
// (sequence, head) and runs the window's tokens in order. Lane = column, warp = a group
// of rows (rows w, w + 8, w + 16, …): the slice lives in registers, ROWS floats a thread.
// The sums over rows go in a fixed order (each thread its rows in turn, then the 8 warp
// partials in warp order, read from shared memory by every thread of the column), so
// results never depend on scheduling and every thread of a column holds the same u.
// f32 throughout, no tensor cores: a token is ~3·K·V FMAs, too little to feed them.
#include "common.cuh"

struct StepParams {
    const void* q;       // [B, t_stride, H, K] input type
    const void* k;       // [B, t_stride, H, K]
    const void* v;       // [B, t_stride, H, V]
    const float* beta;   // [B, t_stride, H]
    const float* g;      // [B, t_stride, H] log decay
    float* state;        // [B, H, K, V] read at the start, written at the end (in place)
    float* out;          // o [B, t_stride, H, V]
    int batch, heads, key_dim, value_dim;  // key_dim ≤ step::KMAX (the plan checks it)
    int t_stride;        // tokens per sequence in the window buffers
    int tokens;          // valid tokens per sequence in this window
    int slices;          // DV-column slices per (sequence, head) == gridDim.x
    float scale;
};

namespace step {
// Largest key dimension (every row of the slice in registers: KMAX / GROUPS a thread).
constexpr int KMAX = 256;
constexpr int DV = 32;                 // columns per block: one per lane
constexpr int THREADS = 256;
constexpr int GROUPS = THREADS / DV;   // row groups, one per warp
constexpr int ROWS = KMAX / GROUPS;    // state rows a thread holds
// Tokens whose inputs are staged in shared memory at once: their global loads are paid
// together, not once per token in the sequential chain. 8 tokens of K = 256 take 16 KB.
constexpr int TB = 8;
}  // namespace step

template <typename T>
__device__ void step_tokens(const StepParams& P) {
    using namespace step;
    __shared__ float s_q[TB * KMAX];   // scale · q, per staged token
    __shared__ float s_k[TB * KMAX];
    __shared__ float s_v[TB * DV];     // this slice's columns of v
    __shared__ float s_beta[TB];
    __shared__ float s_decay[TB];
    // Warp partials of Sᵀk, Sᵀq and k·q, double-buffered by token parity: a thread reads
    // token t's partials between barrier t and barrier t + 1, and token t + 2 writes the
    // same buffer only after barrier t + 1, so one barrier a token suffices.
    __shared__ float s_sk[2 * GROUPS * DV];
    __shared__ float s_sq[2 * GROUPS * DV];
    __shared__ float s_kq[2 * GROUPS];

    const int tid = threadIdx.x, lane = tid % DV, grp = tid / DV;
    const int h = blockIdx.y, b = blockIdx.z;
    const int K = P.key_dim, V = P.value_dim;
    const int v0 = blockIdx.x * DV, col = v0 + lane;
    const bool has_col = col < V;
    const long long bh = (long long)b * P.heads + h;
    float* S = P.state + bh * K * V;
    const T* q = reinterpret_cast<const T*>(P.q);
    const T* k = reinterpret_cast<const T*>(P.k);
    const T* v = reinterpret_cast<const T*>(P.v);

    // This thread's rows of the slice; rows past K and columns past V stay 0.
    float s[ROWS];
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int row = grp + i * GROUPS;
        s[i] = (row < K && has_col) ? S[(long long)row * V + col] : 0.0f;
    }

    for (int t0 = 0; t0 < P.tokens; t0 += TB) {
        const int n = min(TB, P.tokens - t0);
        for (int idx = tid; idx < n * K; idx += THREADS) {
            const int t = idx / K, a = idx - t * K;
            const long long r = ((long long)b * P.t_stride + t0 + t) * P.heads + h;
            s_q[t * KMAX + a] = to_f32(q[r * K + a]) * P.scale;
            s_k[t * KMAX + a] = to_f32(k[r * K + a]);
        }
        for (int idx = tid; idx < n * DV; idx += THREADS) {
            const int t = idx / DV, c = idx - t * DV;
            const long long r = ((long long)b * P.t_stride + t0 + t) * P.heads + h;
            s_v[idx] = v0 + c < V ? to_f32(v[r * V + v0 + c]) : 0.0f;
        }
        if (tid < n) {
            const long long r = ((long long)b * P.t_stride + t0 + tid) * P.heads + h;
            s_beta[tid] = P.beta[r];
            s_decay[tid] = expf(P.g[r]);
        }
        __syncthreads();  // the staged inputs are complete

        for (int t = 0; t < n; ++t) {
            const float* kt = s_k + t * KMAX;
            const float* qt = s_q + t * KMAX;
            float sk = 0.0f, sq = 0.0f, kq = 0.0f;
#pragma unroll
            for (int i = 0; i < ROWS; ++i) {
                const int row = grp + i * GROUPS;
                if (row < K) {
                    sk += kt[row] * s[i];
                    sq += qt[row] * s[i];
                    kq += kt[row] * qt[row];
                }
            }
            const int par = (t0 + t) & 1;
            float* psk = s_sk + par * GROUPS * DV;
            float* psq = s_sq + par * GROUPS * DV;
            float* pkq = s_kq + par * GROUPS;
            psk[grp * DV + lane] = sk;
            psq[grp * DV + lane] = sq;
            if (lane == 0) pkq[grp] = kq;  // the same in every lane of the warp
            __syncthreads();  // every warp's partials are in

            float sk_all = 0.0f, sq_all = 0.0f, kq_all = 0.0f;
#pragma unroll
            for (int w = 0; w < GROUPS; ++w) {
                sk_all += psk[w * DV + lane];
                sq_all += psq[w * DV + lane];
                kq_all += pkq[w];
            }
            const float d = s_decay[t];
            const float u = s_beta[t] * (s_v[t * DV + lane] - d * sk_all);
            if (grp == 0 && has_col) {
                const long long r = ((long long)b * P.t_stride + t0 + t) * P.heads + h;
                P.out[r * V + col] = d * sq_all + kq_all * u;
            }
#pragma unroll
            for (int i = 0; i < ROWS; ++i) {
                const int row = grp + i * GROUPS;
                if (row < K) s[i] = d * s[i] + kt[row] * u;
            }
        }
        __syncthreads();  // every read of this batch's staged inputs is done
    }

#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int row = grp + i * GROUPS;
        if (row < K && has_col) S[(long long)row * V + col] = s[i];
    }
}

#define LTM_STEP_ENTRY(NAME, T)                                        \
    extern "C" __global__ void __launch_bounds__(step::THREADS)         \
    NAME(const StepParams params) { step_tokens<T>(params); }

LTM_STEP_ENTRY(ltm_step_f32, float)
LTM_STEP_ENTRY(ltm_step_f16, f16_t)
LTM_STEP_ENTRY(ltm_step_bf16, bf16_t)
