// Runs kernels/column_write.cu and kernels/scan.cu in the host SIMT emulator (emu.hpp)
// and compares outputs and final states with a float64 token-by-token recurrence of the
// gated delta rule, on random inputs: the plain scan and the segment scan, f32 / f16 /
// bf16 inputs, lengths around the chunk, padding dims. Launch setup follows
// src/backend/cuda/launch.rs. Input rows past the valid tokens and every output buffer
// start as NaN, and guard values around every output must survive.
//
//   g++ -O2 -std=c++17 -o /tmp/ltm-emu kernels/emu/check.cpp && /tmp/ltm-emu
#include "emu.hpp"

#include "../column_write.cu"
#include "../scan.cu"

#include <random>
#include <string>

namespace {

constexpr int C = 64;
constexpr size_t GUARD = 64;
constexpr uint32_t GUARD_BITS = 0x7fa5a5a5u;

// A float buffer with NaN data and guard values on both sides.
struct Buf {
    std::vector<float> v;
    size_t n;
    std::string name;
    Buf(const std::string& nm, size_t count) : v(count + 2 * GUARD), n(count), name(nm) {
        for (auto& x : v) x = ltm_emu::bits_to_f32(GUARD_BITS);
        std::fill(v.begin() + GUARD, v.begin() + GUARD + n, NAN);
    }
    float* p() { return v.data() + GUARD; }
    float& operator[](size_t i) { return v[GUARD + i]; }
    bool guards_ok() const {
        for (size_t i = 0; i < GUARD; ++i)
            if (ltm_emu::f32_to_bits(v[i]) != GUARD_BITS || ltm_emu::f32_to_bits(v[GUARD + n + i]) != GUARD_BITS)
                return false;
        return true;
    }
};

enum class DT { F32, F16, BF16 };

uint16_t f32_to_f16(float f) {  // round to nearest even, normal range only (inputs here are small)
    uint32_t u = ltm_emu::f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    int exp = (int)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (exp <= 0) return (uint16_t)sign;  // flush tiny values to zero
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
    return (uint16_t)h;
}

struct Case {
    const char* name;
    int B, H, K, V, T;
    DT dt;
    int segments;
    bool with_state;
    double gate_scale;  // g = logsigmoid(z) * gate_scale
    double beta_min;    // β = beta_min + (1 − beta_min)·sigmoid(z)
    bool fast = false;  // the FAST bf16 path: W, U, P stored and every MMA operand in bf16
};

double normalised_error(const float* got, const std::vector<double>& want) {
    double scale = 0, err = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        scale = std::max(scale, std::fabs(want[i]));
        err = std::max(err, std::fabs((double)got[i] - want[i]));
    }
    return scale > 0 ? err / scale : err;
}

bool run_case(const Case& c, std::mt19937_64& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int B = c.B, H = c.H, K = c.K, V = c.V, T = c.T;
    const int kp = (K + 15) / 16 * 16;
    const int t_cap = std::max(1, (T + C - 1) / C) * C;
    const int nc = (T + C - 1) / C;
    const float scale = 1.0f / std::sqrt((float)K);
    // Inputs, rounded to the storage type first so the reference sees the same values.
    auto round = [&](float x) {
        if (c.dt == DT::BF16) return ltm_emu::bits_to_f32((uint32_t)ltm_emu::f32_to_bf16(x) << 16);
        if (c.dt == DT::F16) return ltm_emu::f16_to_f32(f32_to_f16(x));
        return x;
    };
    std::vector<float> q((size_t)B * T * H * K), k(q.size()), v((size_t)B * T * H * V), beta((size_t)B * T * H), g(beta.size());
    for (size_t r = 0; r < beta.size(); ++r) {
        for (auto* m : {&q, &k}) {
            float norm = 0;
            for (int d = 0; d < K; ++d) norm += ((*m)[r * K + d] = nd(rng)) * (*m)[r * K + d];
            norm = std::sqrt(norm);
            for (int d = 0; d < K; ++d) (*m)[r * K + d] = round((*m)[r * K + d] / norm);
        }
        for (int d = 0; d < V; ++d) v[r * V + d] = round(nd(rng));
        const float z = nd(rng);
        beta[r] = (float)(c.beta_min + (1 - c.beta_min) / (1 + std::exp(-z)));
        g[r] = (float)(-std::log1p(std::exp(-z)) * c.gate_scale);
    }
    std::vector<float> s0((size_t)B * H * K * V, 0.0f);
    if (c.with_state)
        for (auto& x : s0) x = nd(rng);

    // float64 reference.
    std::vector<double> ref_o((size_t)B * T * H * V), ref_s(s0.begin(), s0.end());
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
            double* S = &ref_s[((size_t)b * H + h) * K * V];
            std::vector<double> u(V);
            for (int t = 0; t < T; ++t) {
                const size_t r = ((size_t)b * T + t) * H + h;
                const double decay = std::exp((double)g[r]);
                for (int i = 0; i < K * V; ++i) S[i] *= decay;
                for (int j = 0; j < V; ++j) {
                    double held = 0;
                    for (int a = 0; a < K; ++a) held += S[a * V + j] * k[r * K + a];
                    u[j] = beta[r] * (v[r * V + j] - held);
                }
                for (int a = 0; a < K; ++a)
                    for (int j = 0; j < V; ++j) S[a * V + j] += k[r * K + a] * u[j];
                for (int j = 0; j < V; ++j) {
                    double o = 0;
                    for (int a = 0; a < K; ++a) o += S[a * V + j] * q[r * K + a];
                    ref_o[r * V + j] = (double)scale * o;
                }
            }
        }

    // Device-side buffers: [B, t_cap, H, *], rows past T are NaN (must never be read).
    auto store = [&](const std::vector<float>& x, int dim) {
        std::vector<uint32_t> bits((size_t)B * t_cap * H * dim, 0xffffffffu);
        std::vector<uint16_t> half((size_t)B * t_cap * H * dim, 0xffffu);
        for (int b = 0; b < B; ++b)
            for (size_t i = 0; i < (size_t)T * H * dim; ++i) {
                const float val = x[(size_t)b * T * H * dim + i];
                const size_t dst = (size_t)b * t_cap * H * dim + i;
                bits[dst] = ltm_emu::f32_to_bits(val);
                half[dst] = c.dt == DT::BF16 ? ltm_emu::f32_to_bf16(val) : f32_to_f16(val);
            }
        return std::make_pair(bits, half);
    };
    auto [q32, q16] = store(q, K);
    auto [k32, k16] = store(k, K);
    auto [v32, v16] = store(v, V);
    auto [b32, b16_unused] = store(beta, 1);
    auto [g32, g16_unused] = store(g, 1);
    (void)b16_unused;
    (void)g16_unused;
    const bool wide = c.dt == DT::F32;
    const void* dq = wide ? (const void*)q32.data() : (const void*)q16.data();
    const void* dk = wide ? (const void*)k32.data() : (const void*)k16.data();
    const void* dv = wide ? (const void*)v32.data() : (const void*)v16.data();

    const size_t rows = (size_t)B * H * std::max(nc, 1) * C;
    Buf w("W", rows * kp), u("U", rows * V), p("P", rows * C), gam("gamma", rows), o("o", (size_t)B * t_cap * H * V);
    Buf state("state", s0.size());
    std::copy(s0.begin(), s0.end(), state.p());
    const int G = std::max(1, std::min(c.segments, std::max(nc, 1)));
    const int per_seg = (std::max(nc, 1) + G - 1) / G;
    const int g_eff = (std::max(nc, 1) + per_seg - 1) / per_seg;
    Buf starts("starts", (size_t)g_eff * s0.size()), maps("maps", (size_t)g_eff * B * H * K * (K + V));

    if (T > 0) {
        PrepParams pp{dq, dk, dv, (const float*)b32.data(), (const float*)g32.data(), w.p(), u.p(), p.p(), gam.p(),
                      B, H, K, V, kp, t_cap, T, nc, scale, 0};
        ltm_emu::launch({(unsigned)nc, (unsigned)H, (unsigned)B}, {prep::THREADS}, 0, [&] {
            if (c.fast) ltm_chunk_prep_bf16_fast(pp);
            else if (c.dt == DT::F32) ltm_chunk_prep_f32(pp);
            else if (c.dt == DT::F16) ltm_chunk_prep_f16(pp);
            else ltm_chunk_prep_bf16(pp);
        });
        const int slices = (V + scan::DV - 1) / scan::DV;
        ScanParams base{dq, dk, w.p(), u.p(), p.p(), gam.p(), state.p(), state.p(), o.p(),
                        B, H, K, V, kp, t_cap, T, nc, per_seg, g_eff, slices, scale};
        auto run_scan = [&](const ScanParams& sp, unsigned blocks, bool is_maps) {
            ltm_emu::launch({blocks, (unsigned)H, (unsigned)B}, {scan::THREADS}, scan::SMEM_BYTES, [&] {
                if (c.fast) {
                    if (is_maps) ltm_segment_maps_bf16_fast(sp);
                    else ltm_scan_bf16_fast(sp);
                } else if (is_maps) {
                    if (c.dt == DT::F32) ltm_segment_maps_f32(sp);
                    else if (c.dt == DT::F16) ltm_segment_maps_f16(sp);
                    else ltm_segment_maps_bf16(sp);
                } else {
                    if (c.dt == DT::F32) ltm_scan_f32(sp);
                    else if (c.dt == DT::F16) ltm_scan_f16(sp);
                    else ltm_scan_bf16(sp);
                }
            });
        };
        if (g_eff > 1) {
            const int aug = (K + V + scan::DV - 1) / scan::DV;
            ScanParams mp = base;
            mp.starts = nullptr;
            mp.out = nullptr;
            mp.state_out = maps.p();
            mp.slices = aug;
            run_scan(mp, (unsigned)(aug * (g_eff - 1)), true);  // the last segment's map is never used
            CombineParams cp{state.p(), maps.p(), starts.p(), B, H, K, V, g_eff, 0};
            ltm_emu::launch({(unsigned)slices, (unsigned)H, (unsigned)B}, {scan::COMBINE_THREADS}, 0,
                            [&] { ltm_segment_combine(cp); });
            ScanParams op = base;
            op.starts = starts.p();
            run_scan(op, (unsigned)(slices * g_eff), false);
        } else {
            run_scan(base, (unsigned)slices, false);
        }
    }

    // Outputs back to [B, T, H, V].
    std::vector<float> got_o(ref_o.size());
    for (int b = 0; b < B; ++b)
        std::copy(o.p() + (size_t)b * t_cap * H * V, o.p() + (size_t)b * t_cap * H * V + (size_t)T * H * V,
                  got_o.begin() + (size_t)b * T * H * V);
    const double eo = T > 0 ? normalised_error(got_o.data(), ref_o) : 0.0;
    const double es = normalised_error(state.p(), ref_s);
    bool guards = true;
    for (Buf* bf : {&w, &u, &p, &gam, &o, &state, &starts, &maps})
        if (!bf->guards_ok()) {
            std::printf("  %s: guard values of %s overwritten\n", c.name, bf->name.c_str());
            guards = false;
        }
    // f32 arithmetic (MMA operands split hi/lo) against float64: 1e-4; the FAST scan
    // rounds its operands to bf16: 1e-2, the bf16 tolerance.
    const double tol = c.fast ? 1e-2 : 1e-4;
    const bool ok = eo < tol && es < tol && guards;
    std::printf("%-28s B=%d H=%d K=%d V=%d T=%d G=%d: output %.2e, state %.2e %s\n", c.name, B, H, K, V, T, g_eff, eo, es,
                ok ? "ok" : "FAILED");
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : std::random_device{}();
    std::printf("kernel emulator check, seed %llu\n", (unsigned long long)seed);
    std::mt19937_64 rng(seed);
    const Case cases[] = {
        {"f32 plain", 1, 1, 32, 32, 100, DT::F32, 1, false, 1.0 / 16, 0.0},
        {"f32 odd dims, state", 2, 2, 7, 5, 70, DT::F32, 1, true, 1.0 / 16, 0.0},
        {"f32 one token", 1, 2, 16, 16, 1, DT::F32, 1, true, 1.0 / 16, 0.0},
        {"f32 exactly one chunk", 1, 1, 48, 40, 64, DT::F32, 1, true, 1.0 / 16, 0.0},
        {"f32 K=V=128", 1, 1, 128, 128, 130, DT::F32, 1, true, 1.0 / 16, 0.0},
        {"bf16 inputs", 1, 2, 64, 48, 129, DT::BF16, 1, true, 1.0 / 16, 0.0},
        {"f16 inputs", 1, 1, 33, 40, 65, DT::F16, 1, true, 1.0 / 16, 0.0},
        {"strong decay, beta near 1", 1, 1, 32, 32, 150, DT::F32, 1, true, 5.0, 0.999},
        {"segments=3", 1, 1, 32, 64, 583, DT::F32, 3, true, 1.0 / 16, 0.0},
        {"segments=4 bf16 K=40 V=20", 1, 1, 40, 20, 300, DT::BF16, 4, true, 1.0 / 16, 0.0},
        {"batch and heads, segments=2", 2, 3, 16, 40, 200, DT::F32, 2, true, 1.0 / 16, 0.0},
        {"bf16 K=128 V=100", 1, 1, 128, 100, 70, DT::BF16, 1, true, 1.0 / 16, 0.0},
        {"no decay", 1, 2, 32, 32, 257, DT::F32, 1, true, 0.0, 0.0},
        {"empty", 1, 1, 16, 16, 0, DT::F32, 1, true, 1.0 / 16, 0.0},
        {"bf16 fast", 1, 2, 64, 48, 129, DT::BF16, 1, true, 1.0 / 16, 0.0, true},
        {"bf16 fast K=V=128, long", 1, 1, 128, 128, 1500, DT::BF16, 1, true, 1.0 / 64, 0.0, true},
        {"bf16 fast segments=4", 1, 1, 64, 64, 1000, DT::BF16, 4, true, 1.0 / 16, 0.0, true},
        {"bf16 fast no decay, beta near 1", 1, 1, 32, 32, 600, DT::BF16, 2, true, 0.0, 0.9, true},
    };
    int failed = 0;
    for (const Case& c : cases) failed += run_case(c, rng) ? 0 : 1;
    std::printf("%d passed, %d failed\n", (int)(sizeof(cases) / sizeof(cases[0])) - failed, failed);
    return failed ? 1 : 0;
}
