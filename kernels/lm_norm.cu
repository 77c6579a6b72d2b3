// The row-wise pieces of a Gated DeltaNet language model around its GEMMs (cuBLAS, on
// the host side): embedding gather, RMSNorm fused with the residual add (also the final
// norm), the gated RMSNorm that feeds o_proj, and SwiGLU that feeds down_proj. Each norm
// or activation writes the next GEMM's input directly in that GEMM's dtype (f32, bf16,
// f16); GEMM outputs come in as f32. CPU twin: src/lm/session.rs (forward) and
// src/lm/ops.rs; the math is tests/fixtures/SEMANTICS.md.
//
// One block of LTM_LM_ROW_THREADS threads per token row (grid.x = rows): a row's
// reduction stays in one block, in a fixed tree (lm_common.cuh), so results do not depend
// on scheduling.
#include "lm_common.cuh"

struct LmEmbedParams {
    const u32* ids;        // [rows] token ids (checked against vocab on the host)
    const void* table;     // [vocab, dim] table dtype
    float* x;              // [rows, dim] the residual stream
    int rows, dim, vocab;
    int pad_;
};

template <typename T>
__device__ void embed(const LmEmbedParams& P) {
    const int row = blockIdx.x;
    const u32 id = P.ids[row];
    float* x = P.x + (long long)row * P.dim;
    const T* src = reinterpret_cast<const T*>(P.table) + (long long)id * P.dim;
    // An id outside the table gives NaN rows (never a read outside it).
    const bool ok = id < (u32)P.vocab;
    for (int c = threadIdx.x; c < P.dim; c += blockDim.x) x[c] = ok ? to_f32(src[c]) : __uint_as_float(0x7fc00000u);
}

struct LmAddNormParams {
    float* x;              // [rows, dim] residual stream, updated in place when delta is set
    const float* delta;    // [rows, dim] a GEMM's f32 output to add first, or null
    const float* weight;   // [dim] norm weight, f32
    void* out;             // [rows, out_stride] next GEMM's input, out dtype
    int rows, dim, out_stride;
    float eps;
};

// x += delta (if any); out = x / sqrt(mean(x²) + eps) · w.
template <typename O>
__device__ void add_rms_norm(const LmAddNormParams& P) {
    __shared__ float s_red[32];
    const int row = blockIdx.x;
    float* x = P.x + (long long)row * P.dim;
    const float* d = P.delta ? P.delta + (long long)row * P.dim : nullptr;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < P.dim; c += blockDim.x) {
        float v = x[c];
        if (d) {
            v += d[c];
            x[c] = v;
        }
        ss += v * v;
    }
    const float mean = block_sum(ss, s_red) / (float)P.dim;
    const float r = 1.0f / sqrtf(mean + P.eps);
    O* out = reinterpret_cast<O*>(P.out) + (long long)row * P.out_stride;
    // Each thread reads back only the columns it wrote itself: no barrier needed.
    for (int c = threadIdx.x; c < P.dim; c += blockDim.x) store_as(out + c, x[c] * r * P.weight[c]);
}

struct LmGatedNormParams {
    const float* o;        // [rows, value_heads · value_dim] the memory's output (f32)
    const float* proj;     // [rows, proj_stride] in_proj output; the gate at gate_col
    const float* weight;   // [value_dim] o_norm weight, f32
    void* out;             // [rows, value_heads · value_dim] o_proj's input, out dtype
    int rows, value_heads, value_dim, proj_stride;
    int gate_col;          // first column of g_proj in proj; -1: no gate (use_gate false)
    int gate_sigmoid;      // 1: · sigmoid(gate), 0: · silu(gate)
    float eps;
    int pad_;
};

// Per value head: RMSNorm over value_dim, × weight, × act(gate). One warp per head at a
// time (heads strided over warps), the head's sum a warp butterfly.
template <typename O>
__device__ void gated_norm(const LmGatedNormParams& P) {
    const int row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int V = P.value_dim, width = P.value_heads * V;
    const float* o = P.o + (long long)row * width;
    const float* gate = P.gate_col >= 0 ? P.proj + (long long)row * P.proj_stride + P.gate_col : nullptr;
    O* out = reinterpret_cast<O*>(P.out) + (long long)row * width;
    for (int h = warp; h < P.value_heads; h += warps) {
        const float* oh = o + h * V;
        float ss = 0.0f;
        for (int j = lane; j < V; j += 32) ss += oh[j] * oh[j];
        const float r = 1.0f / sqrtf(warp_sum(ss) / (float)V + P.eps);
        for (int j = lane; j < V; j += 32) {
            float y = oh[j] * r * P.weight[j];
            if (gate) {
                const float gv = gate[h * V + j];
                y *= P.gate_sigmoid ? sigmoid_f(gv) : silu_f(gv);
            }
            store_as(out + h * V + j, y);
        }
    }
}

struct LmSwigluParams {
    const float* mlp;      // [rows, 2 · inter] gate_proj | up_proj outputs (f32)
    void* out;             // [rows, inter] down_proj's input, out dtype
    int rows, inter;
};

// silu(gate) · up; grid (rows, column blocks).
template <typename O>
__device__ void swiglu(const LmSwigluParams& P) {
    const int row = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= P.inter) return;
    const float* m = P.mlp + (long long)row * 2 * P.inter;
    store_as(reinterpret_cast<O*>(P.out) + (long long)row * P.inter + c, silu_f(m[c]) * m[P.inter + c]);
}

#define LTM_LM_ENTRIES(STEM, FN, PARAMS)                                                        \
    extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) STEM##_f32(const PARAMS p) { \
        FN<float>(p);                                                                          \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) STEM##_bf16(const PARAMS p) { \
        FN<bf16_t>(p);                                                                         \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) STEM##_f16(const PARAMS p) { \
        FN<f16_t>(p);                                                                          \
    }

// The embedding table's dtype; the norms' and SwiGLU's output (GEMM input) dtype.
LTM_LM_ENTRIES(ltm_lm_embed, embed, LmEmbedParams)
LTM_LM_ENTRIES(ltm_lm_add_rms_norm, add_rms_norm, LmAddNormParams)
LTM_LM_ENTRIES(ltm_lm_gated_norm, gated_norm, LmGatedNormParams)
LTM_LM_ENTRIES(ltm_lm_swiglu, swiglu, LmSwigluParams)
