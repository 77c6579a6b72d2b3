// After the output head (a cuBLAS GEMM into f32 logits): the negative log-likelihood of
// each row's next token for the perplexity, and the choice of the next token (greedy, or
// temperature / top-k / top-p with a seeded counter-based generator). CPU twin:
// src/lm/ops.rs (log_sum_exp, next_token_nll) and src/lm/sample.rs (Sampler::pick,
// argmax), whose choices these reproduce (see ltm_lm_sample below).
#include "lm_common.cuh"

struct LmNllParams {
    const float* logits;   // [rows, vocab] f32
    const u32* targets;    // [rows] the next token of each row
    double* nll;           // [rows] log Σ exp(logits) − logits[target], nats
    int rows, vocab;
};

// One block per row: the max, then Σ exp(x − max) (f32 per thread, f64 across threads,
// as the CPU folds its f32 lanes in f64).
__device__ void nll_row(const LmNllParams& P) {
    __shared__ float s_red[32];
    __shared__ double s_sum[32];
    const int row = blockIdx.x;
    const float* x = P.logits + (long long)row * P.vocab;
    float m = LTM_NEG_INF;
    for (int c = threadIdx.x; c < P.vocab; c += blockDim.x) m = fmaxf(m, x[c]);
    m = block_max(m, s_red);
    float part = 0.0f;
    // A row with no finite maximum (all −inf, or +inf somewhere) has lse = max, as on
    // the CPU; NaN logits propagate.
    const bool finite = m - m == 0.0f;
    if (finite)
        for (int c = threadIdx.x; c < P.vocab; c += blockDim.x) part += expf(x[c] - m);
    const double sum = block_sum((double)part, s_sum);
    if (threadIdx.x == 0) {
        const u32 t = P.targets[row];
        const double lse = finite ? (double)m + log(sum) : (double)m;
        P.nll[row] = t < (u32)P.vocab ? lse - (double)x[t] : __longlong_as_double(0x7ff8000000000000ll);
    }
}

extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) ltm_lm_nll(const LmNllParams p) { nll_row(p); }

struct LmSampleParams {
    const float* logits;   // [rows, vocab] f32
    u32* out;              // [rows] the chosen ids
    u64 seed;              // Sampling::seed
    u64 draw;              // draws the sampler made before row 0's (row r uses draw + r)
    int rows, vocab;
    int top_k;             // 1..=LTM_LM_SAMPLE_KMAX (ltm_lm_sample); unused by argmax
    float temperature;     // > 0 (ltm_lm_sample); unused by argmax
    float top_p;           // (0, 1]
    int pad_;
};

// Greedy: the largest logit, the first of equals; NaN never wins; id 0 when no logit
// exceeds −inf (as argmax in sample.rs).
__device__ void argmax_row(const LmSampleParams& P) {
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    const int row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float* x = P.logits + (long long)row * P.vocab;
    float bv = LTM_NEG_INF;
    int bi = 0x7fffffff;
    for (int c = threadIdx.x; c < P.vocab; c += blockDim.x)
        if (x[c] > bv) bv = x[c], bi = c;  // columns ascend per thread: first of equals
    // (value, index) pairs: larger value, then smaller index, wins; symmetric, so every
    // lane ends with the same pair.
    auto take = [&](float v, int i) {
        if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
    };
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, bv, m);
        const int i = __shfl_xor_sync(0xffffffffu, bi, m);
        take(v, i);
    }
    if (lane == 0) s_v[warp] = bv, s_i[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        bv = lane < warps ? s_v[lane] : LTM_NEG_INF;
        bi = lane < warps ? s_i[lane] : 0x7fffffff;
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) {
            const float v = __shfl_xor_sync(0xffffffffu, bv, m);
            const int i = __shfl_xor_sync(0xffffffffu, bi, m);
            take(v, i);
        }
        if (lane == 0) P.out[row] = bv > LTM_NEG_INF ? (u32)bi : 0u;
    }
}

extern "C" __global__ void __launch_bounds__(LTM_LM_ROW_THREADS) ltm_lm_argmax(const LmSampleParams p) {
    argmax_row(p);
}

// SplitMix64 (src/hash.rs): draw n (counted from 0) is mix64(seed + (n + 1)·γ), so a
// draw needs only the seed and its index: the same numbers as the CPU sampler's
// generator after n draws.
__device__ __forceinline__ u64 splitmix64_at(u64 seed, u64 n) {
    u64 x = seed + (n + 1ull) * 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The order Sampler::pick sorts in (f32::total_cmp descending, then index ascending),
// as one unsigned key: larger key first. NaN gets 0 and is never a candidate.
__device__ __forceinline__ u64 order_key(float y, int i) {
    const u32 b = __float_as_uint(y);
    if ((b & 0x7fffffffu) > 0x7f800000u) return 0ull;
    const u32 o = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)o << 32) | (u64)(0xffffffffu - (u32)i);
}

// Temperature, top-k (k ≤ LTM_LM_SAMPLE_KMAX), then top-p, then one draw, exactly as
// Sampler::pick: the k largest of logits/T by a radix select on the keys above (eight
// byte passes, integer shared-memory histograms, which are exact whatever the order of
// the increments), sorted (bitonic, one key per thread), then thread 0 walks them in
// order with the CPU's f64 arithmetic: p = exp(y − max) kept as f32, total in f64, the
// top-p cut, u = (r >> 11) / 2⁵³ · total, the first with u < Σp.
__device__ void sample_row(const LmSampleParams& P) {
    constexpr int N = LTM_LM_SAMPLE_KMAX;
    __shared__ u32 s_hist[256];
    __shared__ u64 s_keys[N];
    __shared__ u64 s_prefix;
    __shared__ int s_remaining, s_count, s_valid;
    const int row = blockIdx.x, tid = threadIdx.x;
    const float* x = P.logits + (long long)row * P.vocab;
    const float inv_t = 1.0f / P.temperature;

    if (tid == 0) s_valid = 0;
    __syncthreads();
    int valid = 0;
    for (int c = tid; c < P.vocab; c += blockDim.x) valid += order_key(__fmul_rn(x[c], inv_t), c) != 0ull;
    atomicAdd(&s_valid, valid);
    __syncthreads();
    const int k = min(P.top_k, s_valid);
    if (k == 0) {  // every logit NaN
        if (tid == 0) P.out[row] = 0u;
        return;
    }

    // The k-th largest key, a byte at a time from the top.
    u64 prefix = 0ull, mask = 0ull;
    int remaining = k;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x) s_hist[i] = 0u;
        __syncthreads();
        for (int c = tid; c < P.vocab; c += blockDim.x) {
            const u64 key = order_key(__fmul_rn(x[c], inv_t), c);
            if (key != 0ull && (key & mask) == prefix) atomicAdd(&s_hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            int above = 0, bin = 255;
            for (; bin > 0; --bin) {
                if (above + (int)s_hist[bin] >= remaining) break;
                above += (int)s_hist[bin];
            }
            s_prefix = prefix | ((u64)bin << shift);
            s_remaining = remaining - above;
        }
        __syncthreads();
        // s_prefix is next written after the next pass's two barriers: no third here.
        prefix = s_prefix;
        remaining = s_remaining;
        mask |= 255ull << shift;
    }
    // prefix is now the k-th largest key itself (keys are distinct: they hold the index).
    for (int i = tid; i < N; i += blockDim.x) s_keys[i] = 0ull;
    if (tid == 0) s_count = 0;
    __syncthreads();
    for (int c = tid; c < P.vocab; c += blockDim.x) {
        const u64 key = order_key(__fmul_rn(x[c], inv_t), c);
        if (key != 0ull && key >= prefix) s_keys[atomicAdd(&s_count, 1)] = key;  // slot order is sorted next
    }
    __syncthreads();
    // Bitonic sort, descending, over N keys (zeros last).
    for (int size = 2; size <= N; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < N; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const u64 a = s_keys[i], b = s_keys[j];
                    const bool descending = (i & size) == 0;
                    if (descending ? a < b : a > b) s_keys[i] = b, s_keys[j] = a;
                }
            }
            __syncthreads();
        }
    }
    // A top scaled logit of ±inf (logits/T overflowed, or nothing above −inf) would make
    // every p = exp(y − max) NaN: greedy then, as Sampler::pick does (its draw counted
    // by the host all the same). Uniform across the block, so every thread takes it.
    const float max = __fmul_rn(x[0xffffffffu - (u32)(s_keys[0] & 0xffffffffu)], inv_t);
    if ((__float_as_uint(max) & 0x7f800000u) == 0x7f800000u) {  // ±inf or NaN
        argmax_row(P);
        return;
    }
    if (tid != 0) return;
    // The walk of Sampler::pick over the k candidates.
    double total = 0.0;
    for (int i = 0; i < k; ++i) {
        const u32 id = 0xffffffffu - (u32)(s_keys[i] & 0xffffffffu);
        total += exp((double)__fsub_rn(__fmul_rn(x[id], inv_t), max));
    }
    int keep = k;
    if (P.top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < k; ++i) {
            const u32 id = 0xffffffffu - (u32)(s_keys[i] & 0xffffffffu);
            cum += (double)(float)exp((double)__fsub_rn(__fmul_rn(x[id], inv_t), max)) / total;
            if (cum >= (double)P.top_p) {
                keep = i + 1;
                break;
            }
        }
        total = 0.0;
        for (int i = 0; i < keep; ++i) {
            const u32 id = 0xffffffffu - (u32)(s_keys[i] & 0xffffffffu);
            total += (double)(float)exp((double)__fsub_rn(__fmul_rn(x[id], inv_t), max));
        }
    }
    const u64 r = splitmix64_at(P.seed, P.draw + (u64)row);
    const double u = (double)(r >> 11) / 9007199254740992.0 * total;
    double cum = 0.0;
    u32 pick = 0xffffffffu - (u32)(s_keys[keep - 1] & 0xffffffffu);
    for (int i = 0; i < keep; ++i) {
        const u32 id = 0xffffffffu - (u32)(s_keys[i] & 0xffffffffu);
        cum += (double)(float)exp((double)__fsub_rn(__fmul_rn(x[id], inv_t), max));
        if (u < cum) {
            pick = id;
            break;
        }
    }
    P.out[row] = pick;
}

extern "C" __global__ void __launch_bounds__(LTM_LM_SAMPLE_THREADS) ltm_lm_sample(const LmSampleParams p) {
    sample_row(p);
}
