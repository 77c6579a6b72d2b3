// Replays the CUDA backend's launch plans on kernels/column_write.cu, kernels/scan.cu
// and kernels/step.cu in the host SIMT emulator (emu.hpp), and compares outputs and final states with a
// float64 token-by-token recurrence of the gated delta rule on random inputs.
//
// The plans come from Rust (examples/emu_plans.rs, from src/backend/cuda/plan.rs): per
// case the window buffers with the bytes the backend allocates, then per window every
// launch (entry point, grid, block, shared memory, each parameter field), so what runs
// here is the backend's launch arithmetic, not a copy of it. This file only does what
// the host side of the backend does around the launches: copy each window's inputs in
// ([B, t_cap, H, D], rows past the window's tokens NaN), poison every output buffer with
// NaN, and copy the outputs out.
//
// Each case runs under several thread orders (emu.hpp, `Schedule`); every order must
// pass, and all orders must give bit-identical outputs and states (a difference is a
// race). Guard values around every buffer must survive, and reads past a buffer's end
// fault.
//
//   cargo run --release --example emu_plans -- target/emu-plans.txt
//   g++ -O2 -std=c++17 -o target/ltm-kernel-emu kernels/emu/check.cpp
//   target/ltm-kernel-emu target/emu-plans.txt [--seed N] [--orders N] [--only NAME] [--fail-fast]
#include "emu.hpp"
#include "replay.hpp"

#include "../column_write.cu"
#include "../scan.cu"
#include "../step.cu"

#include <fstream>
#include <map>
#include <sstream>

namespace {

constexpr uint32_t GUARD_BITS = 0x7fa5a5a5u;  // a NaN: a read of a guard shows in results

using ltm_replay::die;
using ltm_replay::Entry;
using ltm_replay::Fields;
using ltm_replay::LaunchSpec;

// ---------------------------------------------------------------------------------------
// Plan files (src/backend/cuda/plan.rs, `emu_plan_text`).

struct WindowSpec {
    int t0 = 0, len = 0;
    std::vector<LaunchSpec> launches;
};

struct CaseSpec {
    std::map<std::string, std::string> attr;
    std::vector<std::pair<std::string, size_t>> buffers;
    std::vector<WindowSpec> windows;
    std::string name() const { return attr.at("case"); }
    int i(const char* k) const { return std::stoi(attr.at(k)); }
    double d(const char* k) const { return std::stod(attr.at(k)); }
};

float float_bits(const std::string& v) {
    if (v.empty() || v[0] != 'f') die("a float is written as f<bits>, found " + v);
    return ltm_emu::bits_to_f32((uint32_t)std::stoul(v.substr(1)));
}

std::vector<CaseSpec> read_plans(const char* path) {
    std::ifstream in(path);
    if (!in) die(std::string("cannot read ") + path + " (write it with: cargo run --release --example emu_plans -- PATH)");
    std::vector<CaseSpec> cases;
    bool layout_seen = false;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string key;
        if (!(ls >> key) || key[0] == '#') continue;
        if (key == "layout") {
            // What the backend reads from the module at load time: it must be what the
            // kernels compiled here say.
            int v[8];
            for (int& x : v) ls >> x;
            const int want[8] = {scan::C,       scan::KMAX,          scan::DV,        scan::THREADS, scan::SMEM_BYTES,
                                 scan::COMBINE_THREADS, scan::KMAX_WIDE, scan::SMEM_BYTES_WIDE};
            if (!ls || !std::equal(v, v + 8, want)) die("the plan's layout differs from kernels/scan.cu (ScanLayout::OF_SOURCES)");
            layout_seen = true;
        } else if (key == "case") {
            CaseSpec c;
            std::string name, k, v;
            ls >> name;
            c.attr["case"] = name;
            while (ls >> k >> v) c.attr[k] = v;
            cases.push_back(c);
        } else if (cases.empty()) {
            die("plan file: `" + key + "` before any case");
        } else if (key == "buffer") {
            std::string name;
            size_t bytes;
            ls >> name >> bytes;
            cases.back().buffers.emplace_back(name, bytes);
        } else if (key == "window") {
            WindowSpec w;
            ls >> w.t0 >> w.len;
            cases.back().windows.push_back(w);
        } else if (key == "launch") {
            if (cases.back().windows.empty()) die("plan file: launch outside a window");
            LaunchSpec l;
            std::string g, b, s;
            ls >> l.entry >> g >> l.grid.x >> l.grid.y >> l.grid.z >> b >> l.block.x >> l.block.y >> l.block.z >> s >> l.smem;
            if (g != "grid" || b != "block" || s != "smem") die("plan file: bad launch line: " + line);
            cases.back().windows.back().launches.push_back(l);
        } else if (key == "param") {
            std::string name, value;
            ls >> name >> value;
            cases.back().windows.back().launches.back().params.emplace_back(name, value);
        } else if (key != "end" && key != "endcase") {
            die("plan file: unknown record `" + key + "`");
        }
    }
    if (!layout_seen) die("plan file without a layout line");
    return cases;
}

// ---------------------------------------------------------------------------------------
// Buffers: guarded regions (emu.hpp), NaN data, guard values in the slack around it.

struct Buf {
    ltm_emu::Region* r;
    explicit Buf(const std::string& name, size_t bytes) : r(ltm_emu::guarded_alloc(name, bytes)) {
        fill_guards();
        std::memset(r->data, 0xFF, r->bytes);
    }
    ~Buf() { ltm_emu::guarded_free(r); }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    float* f() { return (float*)r->data; }
    uint16_t* h() { return (uint16_t*)r->data; }
    size_t floats() const { return r->bytes / 4; }
    // The accessible bytes outside the data (before it up to the page, after it up to
    // the fault page).
    std::pair<char*, char*> before() const { return {r->map + ltm_emu::page_bytes(), r->data}; }
    std::pair<char*, char*> after() const {
        const size_t page = ltm_emu::page_bytes();
        return {r->data + r->bytes, r->map + r->map_bytes - page};
    }
    void fill_guards() {
        for (auto [a, b] : {before(), after()})
            for (char* p = a; p < b; ++p) *p = (char)((GUARD_BITS >> (8 * ((p - r->map) & 3))) & 0xff);
    }
    bool guards_ok() const {
        for (auto [a, b] : {before(), after()})
            for (char* p = a; p < b; ++p)
                if (*p != (char)((GUARD_BITS >> (8 * ((p - r->map) & 3))) & 0xff)) return false;
        return true;
    }
    void poison() { std::memset(r->data, 0xFF, r->bytes); }
};

// ---------------------------------------------------------------------------------------
// Parameter blocks, field by field from the plan: every field must be given exactly once.

using Buffers = std::map<std::string, std::unique_ptr<Buf>>;

const void* resolve(const Buffers& bufs, const std::string& v) {
    if (v == "null") return nullptr;
    auto it = bufs.find(v);
    if (it == bufs.end()) die("a parameter names an unknown buffer: " + v);
    return it->second->r->data;
}

const Buffers* g_bufs = nullptr;
#define PTR(P, f) {#f, [](P& p, const std::string& v) { p.f = (decltype(p.f))resolve(*g_bufs, v); }}
#define INT(P, f) {#f, [](P& p, const std::string& v) { p.f = std::stoi(v); }}
#define INT_AS(P, f, name) {name, [](P& p, const std::string& v) { p.f = std::stoi(v); }}
#define FLT(P, f) {#f, [](P& p, const std::string& v) { p.f = float_bits(v); }}

const Fields<PrepParams> PREP{{PTR(PrepParams, q), PTR(PrepParams, k), PTR(PrepParams, v), PTR(PrepParams, beta),
                               PTR(PrepParams, g), PTR(PrepParams, w), PTR(PrepParams, u), PTR(PrepParams, p),
                               PTR(PrepParams, gamma), INT(PrepParams, batch), INT(PrepParams, heads),
                               INT(PrepParams, key_dim), INT(PrepParams, value_dim), INT(PrepParams, kp),
                               INT(PrepParams, t_stride), INT(PrepParams, tokens), INT(PrepParams, num_chunks),
                               FLT(PrepParams, scale), INT_AS(PrepParams, pad_, "pad")}};
const Fields<ScanParams> SCAN{{PTR(ScanParams, q), PTR(ScanParams, k), PTR(ScanParams, w), PTR(ScanParams, u),
                               PTR(ScanParams, p), PTR(ScanParams, gamma), PTR(ScanParams, starts),
                               PTR(ScanParams, state_out), PTR(ScanParams, out), INT(ScanParams, batch),
                               INT(ScanParams, heads), INT(ScanParams, key_dim), INT(ScanParams, value_dim),
                               INT(ScanParams, kp), INT(ScanParams, t_stride), INT(ScanParams, tokens),
                               INT(ScanParams, num_chunks), INT(ScanParams, chunks_per_segment),
                               INT(ScanParams, num_segments), INT(ScanParams, slices), FLT(ScanParams, scale)}};
const Fields<CombineParams> COMBINE{{PTR(CombineParams, state), PTR(CombineParams, maps), PTR(CombineParams, starts),
                                     INT(CombineParams, batch), INT(CombineParams, heads),
                                     INT(CombineParams, key_dim), INT(CombineParams, value_dim),
                                     INT(CombineParams, num_segments), INT_AS(CombineParams, pad_, "pad")}};

const Fields<StepParams> STEP{{PTR(StepParams, q), PTR(StepParams, k), PTR(StepParams, v), PTR(StepParams, beta),
                               PTR(StepParams, g), PTR(StepParams, state), PTR(StepParams, out),
                               INT(StepParams, batch), INT(StepParams, heads), INT(StepParams, key_dim),
                               INT(StepParams, value_dim), INT(StepParams, t_stride), INT(StepParams, tokens),
                               INT(StepParams, slices), FLT(StepParams, scale)}};

// Launches the step kernels take only with exactly their block (see step.cu).
constexpr ltm_replay::Rules EXACT{true};
using ltm_replay::entry;

const std::map<std::string, Entry>& entries() {
    static const std::map<std::string, Entry> e = {
        {"ltm_chunk_prep_f32", entry(prep::THREADS, PREP, ltm_chunk_prep_f32)},
        {"ltm_chunk_prep_f16", entry(prep::THREADS, PREP, ltm_chunk_prep_f16)},
        {"ltm_chunk_prep_bf16", entry(prep::THREADS, PREP, ltm_chunk_prep_bf16)},
        {"ltm_chunk_prep_bf16_fast", entry(prep::THREADS, PREP, ltm_chunk_prep_bf16_fast)},
        {"ltm_scan_f32", entry(scan::THREADS, SCAN, ltm_scan_f32)},
        {"ltm_scan_f16", entry(scan::THREADS, SCAN, ltm_scan_f16)},
        {"ltm_scan_bf16", entry(scan::THREADS, SCAN, ltm_scan_bf16)},
        {"ltm_scan_bf16_fast", entry(scan::THREADS, SCAN, ltm_scan_bf16_fast)},
        {"ltm_segment_maps_f32", entry(scan::THREADS, SCAN, ltm_segment_maps_f32)},
        {"ltm_segment_maps_f16", entry(scan::THREADS, SCAN, ltm_segment_maps_f16)},
        {"ltm_segment_maps_bf16", entry(scan::THREADS, SCAN, ltm_segment_maps_bf16)},
        {"ltm_segment_maps_bf16_fast", entry(scan::THREADS, SCAN, ltm_segment_maps_bf16_fast)},
        {"ltm_segment_combine", entry(scan::COMBINE_THREADS, COMBINE, ltm_segment_combine)},
        {"ltm_scan_f32_k256", entry(scan::THREADS, SCAN, ltm_scan_f32_k256)},
        {"ltm_scan_f16_k256", entry(scan::THREADS, SCAN, ltm_scan_f16_k256)},
        {"ltm_scan_bf16_k256", entry(scan::THREADS, SCAN, ltm_scan_bf16_k256)},
        {"ltm_scan_bf16_fast_k256", entry(scan::THREADS, SCAN, ltm_scan_bf16_fast_k256)},
        {"ltm_segment_maps_f32_k256", entry(scan::THREADS, SCAN, ltm_segment_maps_f32_k256)},
        {"ltm_segment_maps_f16_k256", entry(scan::THREADS, SCAN, ltm_segment_maps_f16_k256)},
        {"ltm_segment_maps_bf16_k256", entry(scan::THREADS, SCAN, ltm_segment_maps_bf16_k256)},
        {"ltm_segment_maps_bf16_fast_k256", entry(scan::THREADS, SCAN, ltm_segment_maps_bf16_fast_k256)},
        {"ltm_segment_combine_k256", entry(scan::COMBINE_THREADS, COMBINE, ltm_segment_combine_k256)},
        {"ltm_step_f32", entry(step::THREADS, STEP, ltm_step_f32, EXACT)},
        {"ltm_step_f16", entry(step::THREADS, STEP, ltm_step_f16, EXACT)},
        {"ltm_step_bf16", entry(step::THREADS, STEP, ltm_step_bf16, EXACT)},
    };
    return e;
}

// ---------------------------------------------------------------------------------------
// Inputs and the float64 reference.

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

struct Inputs {
    int B, H, K, V, T;
    DT dt;
    float scale;
    std::vector<float> q, k, v, beta, g, s0;
    std::vector<double> ref_o, ref_s;
};

Inputs make_inputs(const CaseSpec& c, std::mt19937_64& rng) {
    Inputs in;
    in.B = c.i("batch"), in.H = c.i("heads"), in.K = c.i("key_dim"), in.V = c.i("value_dim"), in.T = c.i("tokens");
    const std::string dt = c.attr.at("dtype");
    in.dt = dt == "f32" ? DT::F32 : dt == "f16" ? DT::F16 : DT::BF16;
    in.scale = float_bits(c.attr.at("scale"));
    const int B = in.B, H = in.H, K = in.K, V = in.V, T = in.T;
    const double gate_scale = c.d("gate_scale"), beta_min = c.d("beta_min"), beta_max = c.d("beta_max");
    std::normal_distribution<float> nd(0.0f, 1.0f);
    // Rounded to the storage type first, so the reference sees the same values.
    auto round = [&](float x) {
        if (in.dt == DT::BF16) return ltm_emu::bits_to_f32((uint32_t)ltm_emu::f32_to_bf16(x) << 16);
        if (in.dt == DT::F16) return ltm_emu::f16_to_f32(f32_to_f16(x));
        return x;
    };
    in.q.resize((size_t)B * T * H * K), in.k.resize(in.q.size()), in.v.resize((size_t)B * T * H * V);
    in.beta.resize((size_t)B * T * H), in.g.resize(in.beta.size());
    for (size_t r = 0; r < in.beta.size(); ++r) {
        for (auto* m : {&in.q, &in.k}) {
            float norm = 0;
            for (int d = 0; d < K; ++d) norm += ((*m)[r * K + d] = nd(rng)) * (*m)[r * K + d];
            norm = std::sqrt(norm);
            for (int d = 0; d < K; ++d) (*m)[r * K + d] = round((*m)[r * K + d] / norm);
        }
        for (int d = 0; d < V; ++d) in.v[r * V + d] = round(nd(rng));
        const float z = nd(rng);
        in.beta[r] = (float)(beta_min + (beta_max - beta_min) / (1 + std::exp(-z)));
        in.g[r] = (float)(-std::log1p(std::exp(-z)) * gate_scale);
    }
    in.s0.assign((size_t)B * H * K * V, 0.0f);
    if (c.i("with_state"))
        for (auto& x : in.s0) x = nd(rng);

    in.ref_o.assign((size_t)B * T * H * V, 0.0);
    in.ref_s.assign(in.s0.begin(), in.s0.end());
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
            double* S = &in.ref_s[((size_t)b * H + h) * K * V];
            std::vector<double> u(V);
            for (int t = 0; t < T; ++t) {
                const size_t r = ((size_t)b * T + t) * H + h;
                const double decay = std::exp((double)in.g[r]);
                for (int i = 0; i < K * V; ++i) S[i] *= decay;
                for (int j = 0; j < V; ++j) {
                    double held = 0;
                    for (int a = 0; a < K; ++a) held += S[a * V + j] * in.k[r * K + a];
                    u[j] = in.beta[r] * (in.v[r * V + j] - held);
                }
                for (int a = 0; a < K; ++a)
                    for (int j = 0; j < V; ++j) S[a * V + j] += in.k[r * K + a] * u[j];
                for (int j = 0; j < V; ++j) {
                    double o = 0;
                    for (int a = 0; a < K; ++a) o += S[a * V + j] * in.q[r * K + a];
                    in.ref_o[r * V + j] = (double)in.scale * o;
                }
            }
        }
    return in;
}

double normalised_error(const float* got, const std::vector<double>& want) {
    double scale = 0, err = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        scale = std::max(scale, std::fabs(want[i]));
        err = std::max(err, std::fabs((double)got[i] - want[i]));
    }
    return scale > 0 ? err / scale : err;
}

// ---------------------------------------------------------------------------------------
// One case under one schedule: what the backend's forward does, launches from the plan.

struct Result {
    std::vector<float> o, state;
    bool ok = false;
};

Result run(const CaseSpec& c, const Inputs& in, ltm_emu::Schedule sched) {
    ltm_emu::st().schedule = sched;
    const int B = in.B, H = in.H, K = in.K, V = in.V, T = in.T;
    const int t_cap = c.i("t_cap");
    Buffers bufs;
    for (auto& [name, bytes] : c.buffers) bufs[name] = std::make_unique<Buf>(name, bytes);
    for (const char* need : {"q", "k", "v", "beta", "g", "w", "u", "p", "gamma", "o", "state", "starts", "maps"})
        if (!bufs.count(need)) die(c.name() + ": the plan has no buffer " + need);
    g_bufs = &bufs;
    const size_t es = in.dt == DT::F32 ? 4 : 2;
    auto need = [&](const char* name, size_t bytes) {
        if (bufs[name]->r->bytes < bytes)
            die(c.name() + ": buffer " + name + " holds " + std::to_string(bufs[name]->r->bytes) +
                " bytes, a window of its shape needs " + std::to_string(bytes));
    };
    need("q", (size_t)B * t_cap * H * K * es);
    need("v", (size_t)B * t_cap * H * V * es);
    need("beta", (size_t)B * t_cap * H * 4);
    need("o", (size_t)B * t_cap * H * V * 4);
    need("state", in.s0.size() * 4);
    std::memcpy(bufs["state"]->f(), in.s0.data(), in.s0.size() * 4);

    Result res;
    res.o.assign(in.ref_o.size(), NAN);
    int max_g = 1;
    bool all_step = !c.windows.empty();
    for (const WindowSpec& w : c.windows) {
        // Inputs of tokens t0..t0+len of every sequence; the rest of the window is NaN.
        auto upload = [&](const char* name, const std::vector<float>& x, int dim, bool narrow) {
            Buf& dst = *bufs[name];
            dst.poison();
            for (int b = 0; b < B; ++b)
                for (size_t i = 0; i < (size_t)w.len * H * dim; ++i) {
                    const float val = x[((size_t)b * T + w.t0) * H * dim + i];
                    const size_t at = (size_t)b * t_cap * H * dim + i;
                    if (!narrow) dst.f()[at] = val;
                    else dst.h()[at] = in.dt == DT::BF16 ? ltm_emu::f32_to_bf16(val) : f32_to_f16(val);
                }
        };
        const bool narrow = in.dt != DT::F32;
        upload("q", in.q, K, narrow);
        upload("k", in.k, K, narrow);
        upload("v", in.v, V, narrow);
        upload("beta", in.beta, 1, false);
        upload("g", in.g, 1, false);
        for (const char* out : {"w", "u", "p", "gamma", "o", "starts", "maps"}) bufs[out]->poison();
        for (const LaunchSpec& l : w.launches) {
            auto it = entries().find(l.entry);
            if (it == entries().end()) die(c.name() + ": the plan launches an unknown kernel " + l.entry);
            ltm_emu::st().where = c.name() + " [" + sched.name() + "] window " + std::to_string(w.t0) + " " + l.entry;
            for (auto& [k, v] : l.params)
                if (k == "num_segments") max_g = std::max(max_g, std::stoi(v));
            all_step &= l.entry.rfind("ltm_step_", 0) == 0;
            it->second.run(l);
        }
        for (int b = 0; b < B; ++b)
            std::memcpy(res.o.data() + ((size_t)b * T + w.t0) * H * V, bufs["o"]->f() + (size_t)b * t_cap * H * V,
                        (size_t)w.len * H * V * 4);
    }
    res.state.assign(bufs["state"]->f(), bufs["state"]->f() + in.s0.size());

    const double eo = T > 0 ? normalised_error(res.o.data(), in.ref_o) : 0.0;
    const double es_ = normalised_error(res.state.data(), in.ref_s);
    bool guards = true;
    for (auto& [name, b] : bufs)
        if (!b->guards_ok()) {
            std::printf("  %s [%s]: guard values of %s overwritten\n", c.name().c_str(), sched.name(), name.c_str());
            guards = false;
        }
    // f32 arithmetic (MMA operands split hi/lo) against float64: 1e-4; the FAST scan
    // rounds its operands to bf16: 1e-2, the bf16 tolerance. Windows that all ran token
    // by token (step.cu, plain f32 FMAs): 1e-5.
    const double tol = c.i("fast") && !all_step ? 1e-2 : all_step ? 1e-5 : 1e-4;
    res.ok = eo < tol && es_ < tol && guards;
    std::printf("%-32s B=%d H=%d K=%d V=%d T=%d G=%d windows=%zu%s [%s]: output %.2e, state %.2e %s\n",
                c.name().c_str(), B, H, K, V, T, max_g, c.windows.size(), all_step ? " step" : "", sched.name(), eo,
                es_, res.ok ? "ok" : "FAILED");
    std::fflush(stdout);
    g_bufs = nullptr;
    return res;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

}  // namespace

int main(int argc, char** argv) {
    const ltm_replay::Options opt =
        ltm_replay::parse_options(argc, argv, "ltm-kernel-emu PLANS [--seed N] [--orders N] [--only NAME] [--fail-fast]");
    const char* plans = opt.input;
    const uint64_t seed = opt.seed;
    const bool fail_fast = opt.fail_fast;
    const std::string& only = opt.only;
    ltm_emu::install_fault_handler();
    const size_t statics = ltm_emu::find_static_shared();
    if (statics == 0) die("no static __shared__ variables found in the symbol table (a stripped build?)");
    const std::vector<CaseSpec> cases = read_plans(plans);
    const std::vector<ltm_emu::Schedule> schedules = ltm_replay::schedules(opt.orders, seed);
    std::printf("kernel emulator: %zu cases from %s, %zu thread orders, %zu static shared variables poisoned, seed %llu\n",
                cases.size(), plans, schedules.size(), statics, (unsigned long long)seed);
    int failed = 0, ran = 0;
    for (size_t ci = 0; ci < cases.size(); ++ci) {
        const CaseSpec& c = cases[ci];
        if (!only.empty() && c.name().find(only) == std::string::npos) continue;
        std::mt19937_64 rng(seed + 7919 * ci);
        const Inputs in = make_inputs(c, rng);
        Result first;
        bool case_ok = true;
        for (size_t si = 0; si < schedules.size(); ++si) {
            Result r = run(c, in, schedules[si]);
            case_ok &= r.ok;
            if (si == 0) {
                first = std::move(r);
            } else if (!same_bits(r.o, first.o) || !same_bits(r.state, first.state)) {
                std::printf("  %s [%s]: outputs or state differ bit for bit from the numbered order: a race\n",
                            c.name().c_str(), schedules[si].name());
                case_ok = false;
            }
            if (!case_ok && fail_fast) break;
        }
        ++ran;
        failed += case_ok ? 0 : 1;
        if (!case_ok && fail_fast) break;
    }
    std::printf("%d passed, %d failed\n", ran - failed, failed);
    return failed ? 1 : 0;
}
