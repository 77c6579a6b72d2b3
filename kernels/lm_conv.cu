// A Gated DeltaNet layer between in_proj and the memory: the causal depthwise short
// convolution over the q, k, v channels (with the conv cache, SiLU), fused with the
// l2-norm of q and k per head, the repetition of q/k heads for grouped value heads
// (GVA), and the β and g gates; it writes the memory's inputs in the layout and dtype
// the column-write and scan kernels read (window buffers q, k, v [B, t_stride, HV, K|V]
// in the input type, β and g [B, t_stride, HV] f32; batch 1 here, rows = tokens).
// CPU twin: src/lm/session.rs (forward) with ops.rs short_conv, l2_normalize, sigmoid,
// softplus.
//
// ltm_lm_conv_* reads the cache and never writes it; ltm_lm_conv_cache, launched after
// it, shifts the window's last inputs into the cache. (Doing both in one launch would
// let one block overwrite cache entries another block still reads.)
#include "lm_common.cuh"

struct LmConvParams {
    const float* proj;       // [rows, proj_stride] in_proj output (f32): q | k | v | g | a | b
    const float* taps;       // [conv_size, channels] oldest tap first (LayerWeights::conv)
    const float* cache;      // [channels, conv_size] the inputs before this window, oldest first
    const float* decay_rate; // [value_heads] −exp(A_log)
    const float* dt_bias;    // [value_heads]
    void* q;                 // [rows, value_heads, head_dim] memory input type
    void* k;                 // [rows, value_heads, head_dim]
    void* v;                 // [rows, value_heads, value_dim]
    float* beta;             // [rows, value_heads]
    float* g;                // [rows, value_heads]
    int rows, proj_stride;
    int heads, value_heads, head_dim, value_dim, conv_size;
    int col_a, col_b;        // first columns of a_proj and b_proj outputs in proj
    int allow_neg_eigval;    // β = 2 · sigmoid(b)
};

// One token row per block. Dynamic shared memory: the row's conv outputs (channels =
// 2·H·K + HV·V floats), then the 2·H inverse norms of its q and k heads.
template <typename T>
__device__ void conv_qkv(const LmConvParams& P) {
    LTM_DYNAMIC_SMEM(smem);
    const int row = blockIdx.x, tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int K = P.head_dim, V = P.value_dim, W = P.conv_size;
    const int dk = P.heads * K, channels = 2 * dk + P.value_heads * V;
    const int group = P.value_heads / P.heads;
    float* s_x = smem;
    float* s_inv = smem + channels;

    // Input s of channel c for this row's window position j (0 = oldest tap): rows
    // before the window come from the cache's slots 1..W-1.
    for (int c = tid; c < channels; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < W; ++j) {
            const int s = row - (W - 1) + j;
            const float x = s >= 0 ? P.proj[(long long)s * P.proj_stride + c] : P.cache[(long long)c * W + W + s];
            acc += P.taps[(long long)j * channels + c] * x;
        }
        s_x[c] = silu_f(acc);
    }
    __syncthreads();

    // 1 / sqrt(Σx² + 1e-6) of each q and k head (fla's l2-norm), a warp per head.
    for (int h = warp; h < 2 * P.heads; h += warps) {
        const float* x = s_x + h * K;
        float ss = 0.0f;
        for (int d = lane; d < K; d += 32) ss += x[d] * x[d];
        ss = warp_sum(ss);
        if (lane == 0) s_inv[h] = 1.0f / sqrtf(ss + 1e-6f);
    }
    __syncthreads();

    const long long qk_row = (long long)row * P.value_heads * K;
    for (int i = tid; i < P.value_heads * K; i += blockDim.x) {
        const int vh = i / K, d = i - vh * K, h = vh / group;
        store_as(reinterpret_cast<T*>(P.q) + qk_row + i, s_x[h * K + d] * s_inv[h]);
        store_as(reinterpret_cast<T*>(P.k) + qk_row + i, s_x[dk + h * K + d] * s_inv[P.heads + h]);
    }
    const int dv = P.value_heads * V;
    for (int i = tid; i < dv; i += blockDim.x)
        store_as(reinterpret_cast<T*>(P.v) + (long long)row * dv + i, s_x[2 * dk + i]);
    const float* prow = P.proj + (long long)row * P.proj_stride;
    for (int i = tid; i < P.value_heads; i += blockDim.x) {
        const float b = sigmoid_f(prow[P.col_b + i]);
        P.beta[(long long)row * P.value_heads + i] = P.allow_neg_eigval ? 2.0f * b : b;
        P.g[(long long)row * P.value_heads + i] = P.decay_rate[i] * softplus_f(prow[P.col_a + i] + P.dt_bias[i]);
    }
}

struct LmConvCacheParams {
    const float* proj;       // [rows, proj_stride] the window's in_proj output
    float* cache;            // [channels, conv_size] updated in place
    int rows, proj_stride, channels, conv_size;
};

// The cache after the window: its last conv_size inputs, older ones from the cache
// when the window is shorter. One thread per channel; it reads that channel's cache
// before writing it, and no other thread touches it.
__device__ void conv_cache(const LmConvCacheParams& P) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= P.channels) return;
    const int W = P.conv_size;
    float* cache = P.cache + (long long)c * W;
    float old[LTM_LM_CONV_MAX];
#pragma unroll
    for (int i = 0; i < LTM_LM_CONV_MAX; ++i) old[i] = i < W ? cache[i] : 0.0f;
    // Position r of [cache slots 1..W-1, window rows] (length W-1+rows).
#pragma unroll
    for (int i = 0; i < LTM_LM_CONV_MAX; ++i) {
        if (i >= W) break;
        const int r = P.rows - 1 + i;  // (W - 1 + rows) - W + i
        if (r < 0) continue;           // an empty window keeps the cache
        cache[i] = r < W - 1 ? old[1 + r] : P.proj[(long long)(r - (W - 1)) * P.proj_stride + c];
    }
}

#define LTM_LM_CONV_ENTRY(NAME, T)                                                         \
    extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) NAME(const LmConvParams p) { \
        conv_qkv<T>(p);                                                                    \
    }
// The memory's input type (the window's q, k, v).
LTM_LM_CONV_ENTRY(ltm_lm_conv_f32, float)
LTM_LM_CONV_ENTRY(ltm_lm_conv_bf16, bf16_t)
LTM_LM_CONV_ENTRY(ltm_lm_conv_f16, f16_t)

extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) ltm_lm_conv_cache(const LmConvCacheParams p) {
    conv_cache(p);
}
