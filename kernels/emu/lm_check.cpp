// Runs the language-model kernels (kernels/lm_*.cu) in the host SIMT emulator (emu.hpp)
// on the CPU forward's stage inputs of real models, and compares with the CPU's stage
// outputs. The cases come from Rust (examples/emu_lm_cases.rs): per step the buffers,
// their contents, the launches exactly as the geometry functions of
// src/lm/kernels/geometry.rs return them, and the expected outputs (format in that
// file). This program only allocates, fills, launches and compares.
//
// Every step runs under several thread orders; each must pass, and all must leave
// bit-identical buffers (a difference is a race). Buffers end at an inaccessible page
// (a read or write past the end faults, named), guard values around them must survive,
// unwritten memory is NaN, static __shared__ memory is poisoned before every block.
//
//   cargo run --release --example emu_lm_cases -- target/emu-lm-cases.bin
//   g++ -O2 -std=c++17 -o target/ltm-lm-emu kernels/emu/lm_check.cpp
//   target/ltm-lm-emu target/emu-lm-cases.bin [--orders N] [--seed N] [--only TEXT] [--fail-fast]
#include "emu.hpp"
#include "replay.hpp"

#include "../lm_conv.cu"
#include "../lm_head.cu"
#include "../lm_norm.cu"

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

namespace {

constexpr uint32_t GUARD_BITS = 0x7fa5a5a5u;

using ltm_replay::die;
using ltm_replay::Entry;
using ltm_replay::Fields;
using ltm_replay::LaunchSpec;

// ---------------------------------------------------------------------------------------
// Case files.

struct Data {
    std::string buf, kind;
    double tol = 0;
    size_t count = 0;
    const char* bytes = nullptr;
};

struct Step {
    std::string name;
    std::vector<std::pair<std::string, size_t>> buffers;
    std::vector<Data> fills, expects;
    std::vector<LaunchSpec> launches;
};

size_t elem_bytes(const std::string& kind) {
    if (kind == "f32" || kind == "u32") return 4;
    if (kind == "bf16" || kind == "f16") return 2;
    if (kind == "f64") return 8;
    die("unknown data kind " + kind);
}

std::vector<Step> read_cases(const std::string& file) {
    std::vector<Step> steps;
    size_t at = 0;
    auto line = [&]() {
        const size_t end = file.find('\n', at);
        if (end == std::string::npos) die("case file: truncated line");
        std::string l = file.substr(at, end - at);
        at = end + 1;
        return l;
    };
    auto data = [&](std::istringstream& ls, bool expect) {
        Data d;
        ls >> d.buf >> d.kind;
        if (expect) ls >> d.tol;
        ls >> d.count;
        if (!ls) die("case file: bad data line");
        // An expectation of a bf16/f16 output holds the CPU's f32 values.
        const size_t n = d.count * (expect && (d.kind == "bf16" || d.kind == "f16") ? 4 : elem_bytes(d.kind));
        if (at + n + 1 > file.size() || file[at + n] != '\n') die("case file: data of " + d.buf + " truncated");
        d.bytes = file.data() + at;
        at += n + 1;
        return d;
    };
    Step* cur = nullptr;
    while (at < file.size()) {
        std::istringstream ls(line());
        std::string key;
        if (!(ls >> key) || key[0] == '#') continue;
        if (key == "step") {
            steps.emplace_back();
            cur = &steps.back();
            ls >> cur->name;
        } else if (!cur) {
            die("case file: `" + key + "` outside a step");
        } else if (key == "buffer") {
            std::string name;
            size_t bytes;
            ls >> name >> bytes;
            cur->buffers.emplace_back(name, bytes);
        } else if (key == "fill") {
            cur->fills.push_back(data(ls, false));
        } else if (key == "expect") {
            cur->expects.push_back(data(ls, true));
        } else if (key == "launch") {
            LaunchSpec l;
            std::string g, b, s;
            ls >> l.entry >> g >> l.grid.x >> l.grid.y >> l.grid.z >> b >> l.block.x >> l.block.y >> l.block.z >> s >> l.smem;
            if (g != "grid" || b != "block" || s != "smem" || !ls) die("case file: bad launch line");
            cur->launches.push_back(l);
        } else if (key == "param") {
            if (cur->launches.empty()) die("case file: param before a launch");
            std::string name, value;
            ls >> name >> value;
            cur->launches.back().params.emplace_back(name, value);
        } else if (key == "endstep") {
            cur = nullptr;
        } else {
            die("case file: unknown record `" + key + "`");
        }
    }
    return steps;
}

// ---------------------------------------------------------------------------------------
// Guarded buffers (as in check.cpp).

struct Buf {
    ltm_emu::Region* r;
    Buf(const std::string& name, size_t bytes) : r(ltm_emu::guarded_alloc(name, bytes)) {
        for (auto [a, b] : {before(), after()})
            for (char* p = a; p < b; ++p) *p = guard_byte(p);
        std::memset(r->data, 0xFF, r->bytes);
    }
    ~Buf() { ltm_emu::guarded_free(r); }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    char guard_byte(const char* p) const { return (char)((GUARD_BITS >> (8 * ((p - r->map) & 3))) & 0xff); }
    std::pair<char*, char*> before() const { return {r->map + ltm_emu::page_bytes(), r->data}; }
    std::pair<char*, char*> after() const {
        return {r->data + r->bytes, r->map + r->map_bytes - ltm_emu::page_bytes()};
    }
    bool guards_ok() const {
        for (auto [a, b] : {before(), after()})
            for (const char* p = a; p < b; ++p)
                if (*p != guard_byte(p)) return false;
        return true;
    }
};

using Buffers = std::map<std::string, std::unique_ptr<Buf>>;
const Buffers* g_bufs = nullptr;

void* pointer(const std::string& v) {
    if (v == "null") return nullptr;
    if (v.rfind("p:", 0) != 0) die("a pointer is p:NAME+OFFSET or null, found " + v);
    const size_t plus = v.find('+');
    const std::string name = v.substr(2, plus - 2);
    const size_t off = std::stoull(v.substr(plus + 1));
    auto it = g_bufs->find(name);
    if (it == g_bufs->end()) die("a parameter names an unknown buffer: " + name);
    if (off > it->second->r->bytes) die("a parameter points past the end of " + name);
    return it->second->r->data + off;
}
long long integer(const std::string& v, char tag) {
    if (v.size() < 3 || v[0] != tag || v[1] != ':') die(std::string("expected ") + tag + ":N, found " + v);
    return std::stoll(v.substr(2));
}

#define PTR(P, f) {#f, [](P& p, const std::string& v) { p.f = (decltype(p.f))pointer(v); }}
#define INT(P, f) {#f, [](P& p, const std::string& v) { p.f = (int)integer(v, 'i'); }}
#define PAD(P, f) {"pad", [](P& p, const std::string& v) { p.f = (int)integer(v, 'i'); }}
#define FLT(P, f) {#f, [](P& p, const std::string& v) { p.f = ltm_emu::bits_to_f32((uint32_t)integer(v, 'f')); }}
#define U64(P, f) {#f, [](P& p, const std::string& v) { p.f = (u64)std::stoull(v.substr(2)); }}

const Fields<LmEmbedParams> EMBED{{PTR(LmEmbedParams, ids), PTR(LmEmbedParams, table), PTR(LmEmbedParams, x),
                                   INT(LmEmbedParams, rows), INT(LmEmbedParams, dim), INT(LmEmbedParams, vocab),
                                   PAD(LmEmbedParams, pad_)}};
const Fields<LmAddNormParams> ADD_NORM{{PTR(LmAddNormParams, x), PTR(LmAddNormParams, delta),
                                        PTR(LmAddNormParams, weight), PTR(LmAddNormParams, out),
                                        INT(LmAddNormParams, rows), INT(LmAddNormParams, dim),
                                        INT(LmAddNormParams, out_stride), FLT(LmAddNormParams, eps)}};
const Fields<LmConvParams> CONV{{PTR(LmConvParams, proj), PTR(LmConvParams, taps), PTR(LmConvParams, cache),
                                 PTR(LmConvParams, decay_rate), PTR(LmConvParams, dt_bias), PTR(LmConvParams, q),
                                 PTR(LmConvParams, k), PTR(LmConvParams, v), PTR(LmConvParams, beta),
                                 PTR(LmConvParams, g), INT(LmConvParams, rows), INT(LmConvParams, proj_stride),
                                 INT(LmConvParams, heads), INT(LmConvParams, value_heads),
                                 INT(LmConvParams, head_dim), INT(LmConvParams, value_dim),
                                 INT(LmConvParams, conv_size), INT(LmConvParams, col_a), INT(LmConvParams, col_b),
                                 INT(LmConvParams, allow_neg_eigval)}};
const Fields<LmConvCacheParams> CONV_CACHE{{PTR(LmConvCacheParams, proj), PTR(LmConvCacheParams, cache),
                                            INT(LmConvCacheParams, rows), INT(LmConvCacheParams, proj_stride),
                                            INT(LmConvCacheParams, channels), INT(LmConvCacheParams, conv_size)}};
const Fields<LmGatedNormParams> GATED{{PTR(LmGatedNormParams, o), PTR(LmGatedNormParams, proj),
                                       PTR(LmGatedNormParams, weight), PTR(LmGatedNormParams, out),
                                       INT(LmGatedNormParams, rows), INT(LmGatedNormParams, value_heads),
                                       INT(LmGatedNormParams, value_dim), INT(LmGatedNormParams, proj_stride),
                                       INT(LmGatedNormParams, gate_col), INT(LmGatedNormParams, gate_sigmoid),
                                       FLT(LmGatedNormParams, eps), PAD(LmGatedNormParams, pad_)}};
const Fields<LmSwigluParams> SWIGLU{{PTR(LmSwigluParams, mlp), PTR(LmSwigluParams, out),
                                     INT(LmSwigluParams, rows), INT(LmSwigluParams, inter)}};
const Fields<LmNllParams> NLL{{PTR(LmNllParams, logits), PTR(LmNllParams, targets), PTR(LmNllParams, nll),
                               INT(LmNllParams, rows), INT(LmNllParams, vocab)}};
const Fields<LmSampleParams> SAMPLE{{PTR(LmSampleParams, logits), PTR(LmSampleParams, out),
                                     U64(LmSampleParams, seed), U64(LmSampleParams, draw),
                                     INT(LmSampleParams, rows), INT(LmSampleParams, vocab),
                                     INT(LmSampleParams, top_k), FLT(LmSampleParams, temperature),
                                     FLT(LmSampleParams, top_p), PAD(LmSampleParams, pad_)}};

// The LM kernels take no shared-memory opt-in: 48 KB of dynamic shared memory at most.
template <typename P, typename F>
Entry lm_entry(int max_threads, const Fields<P>& fields, F kernel) {
    return ltm_replay::entry(max_threads, fields, kernel, ltm_replay::Rules{false, 48 * 1024, "case"});
}

const std::map<std::string, Entry>& entries() {
    constexpr int R = LTM_LM_ROW_THREADS;
    static const std::map<std::string, Entry> e = {
        {"ltm_lm_embed_f32", lm_entry(R, EMBED, ltm_lm_embed_f32)},
        {"ltm_lm_embed_bf16", lm_entry(R, EMBED, ltm_lm_embed_bf16)},
        {"ltm_lm_embed_f16", lm_entry(R, EMBED, ltm_lm_embed_f16)},
        {"ltm_lm_add_rms_norm_f32", lm_entry(R, ADD_NORM, ltm_lm_add_rms_norm_f32)},
        {"ltm_lm_add_rms_norm_bf16", lm_entry(R, ADD_NORM, ltm_lm_add_rms_norm_bf16)},
        {"ltm_lm_add_rms_norm_f16", lm_entry(R, ADD_NORM, ltm_lm_add_rms_norm_f16)},
        {"ltm_lm_gated_norm_f32", lm_entry(R, GATED, ltm_lm_gated_norm_f32)},
        {"ltm_lm_gated_norm_bf16", lm_entry(R, GATED, ltm_lm_gated_norm_bf16)},
        {"ltm_lm_gated_norm_f16", lm_entry(R, GATED, ltm_lm_gated_norm_f16)},
        {"ltm_lm_swiglu_f32", lm_entry(R, SWIGLU, ltm_lm_swiglu_f32)},
        {"ltm_lm_swiglu_bf16", lm_entry(R, SWIGLU, ltm_lm_swiglu_bf16)},
        {"ltm_lm_swiglu_f16", lm_entry(R, SWIGLU, ltm_lm_swiglu_f16)},
        {"ltm_lm_conv_f32", lm_entry(R, CONV, ltm_lm_conv_f32)},
        {"ltm_lm_conv_bf16", lm_entry(R, CONV, ltm_lm_conv_bf16)},
        {"ltm_lm_conv_f16", lm_entry(R, CONV, ltm_lm_conv_f16)},
        {"ltm_lm_conv_cache", lm_entry(R, CONV_CACHE, ltm_lm_conv_cache)},
        {"ltm_lm_nll", lm_entry(R, NLL, ltm_lm_nll)},
        {"ltm_lm_argmax", lm_entry(R, SAMPLE, ltm_lm_argmax)},
        {"ltm_lm_sample", lm_entry(LTM_LM_SAMPLE_THREADS, SAMPLE, ltm_lm_sample)},
    };
    return e;
}

// ---------------------------------------------------------------------------------------
// Comparison.

// Element i of an array at `base`, which may be unaligned (data inside the case file).
template <typename T>
T load(const char* base, size_t i) {
    T x;
    std::memcpy(&x, base + i * sizeof(T), sizeof(T));
    return x;
}

double value(const Data& d, const char* base, size_t i) {
    if (d.kind == "f32") return ltm_emu::bits_to_f32(load<uint32_t>(base, i));
    if (d.kind == "bf16") return ltm_emu::bits_to_f32((uint32_t)load<uint16_t>(base, i) << 16);
    if (d.kind == "f16") return ltm_emu::f16_to_f32(load<uint16_t>(base, i));
    if (d.kind == "f64") return load<double>(base, i);
    return load<uint32_t>(base, i);
}

// max |got − want| / max |want| (u32: the count of differing entries); NaN never passes.
double error(const Data& want, const Buf& got) {
    const size_t need = want.count * elem_bytes(want.kind);
    if (got.r->bytes < need) die("buffer " + want.buf + " smaller than its expectation");
    if (want.kind == "u32") {
        size_t wrong = 0;
        for (size_t i = 0; i < want.count; ++i)
            wrong += load<uint32_t>(got.r->data, i) != load<uint32_t>(want.bytes, i);
        return (double)wrong;
    }
    // The expectation is f32 even where the output is bf16/f16 (the CPU's values), f64
    // for f64 outputs.
    Data w = want;
    if (w.kind == "bf16" || w.kind == "f16") w.kind = "f32";
    double scale = 0, err = 0;
    for (size_t i = 0; i < want.count; ++i) {
        const double a = value(want, got.r->data, i), b = value(w, want.bytes, i);
        if (std::isnan(a) != std::isnan(b)) return INFINITY;
        if (std::isnan(b) || a == b) continue;  // equal infinities and NaNs where the CPU has them
        if (!std::isfinite(a) || !std::isfinite(b)) return INFINITY;
        scale = std::max(scale, std::fabs(b));
        err = std::max(err, std::fabs(a - b));
    }
    return scale > 0 ? err / scale : err;
}

struct Result {
    bool ok = true;
    double worst = 0;  // the largest error / tolerance of the step's expectations
    std::string detail;
    std::vector<std::vector<char>> contents;
};

Result run(const Step& s, ltm_emu::Schedule sched) {
    ltm_emu::st().schedule = sched;
    Buffers bufs;
    for (auto& [name, bytes] : s.buffers) bufs[name] = std::make_unique<Buf>(name, bytes);
    g_bufs = &bufs;
    for (const Data& f : s.fills) {
        auto it = bufs.find(f.buf);
        if (it == bufs.end()) die(s.name + ": fill of an unknown buffer " + f.buf);
        const size_t n = f.count * elem_bytes(f.kind);
        if (n > it->second->r->bytes) die(s.name + ": fill larger than buffer " + f.buf);
        std::memcpy(it->second->r->data, f.bytes, n);
    }
    for (const LaunchSpec& l : s.launches) {
        auto it = entries().find(l.entry);
        if (it == entries().end()) die(s.name + ": unknown kernel " + l.entry);
        ltm_emu::st().where = s.name + " [" + sched.name() + "] " + l.entry;
        it->second.run(l);
    }
    Result r;
    std::ostringstream detail;
    for (const Data& e : s.expects) {
        auto it = bufs.find(e.buf);
        if (it == bufs.end()) die(s.name + ": expectation of an unknown buffer " + e.buf);
        const double err = error(e, *it->second);
        const bool pass = e.kind == "u32" ? err == 0 : err <= e.tol;
        r.ok &= pass;
        const double ratio = e.kind == "u32" ? (err == 0 ? 0 : INFINITY) : (e.tol > 0 ? err / e.tol : err);
        r.worst = std::max(r.worst, ratio);
        if (!pass) detail << " " << e.buf << " (" << e.kind << ") error " << err << " > " << e.tol << ";";
    }
    for (auto& [name, b] : bufs) {
        if (!b->guards_ok()) {
            r.ok = false;
            detail << " guard values of " << name << " overwritten;";
        }
        r.contents.emplace_back(b->r->data, b->r->data + b->r->bytes);
    }
    r.detail = detail.str();
    g_bufs = nullptr;
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    const ltm_replay::Options opt =
        ltm_replay::parse_options(argc, argv, "ltm-lm-emu CASES [--seed N] [--orders N] [--only TEXT] [--fail-fast]");
    const char* path = opt.input;
    const uint64_t seed = opt.seed;
    const bool fail_fast = opt.fail_fast;
    const std::string& only = opt.only;
    std::ifstream in(path, std::ios::binary);
    if (!in) die(std::string("cannot read ") + path + " (write it with: cargo run --release --example emu_lm_cases -- PATH)");
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::vector<Step> steps = read_cases(file);
    if (steps.empty()) die("no steps in the case file");
    ltm_emu::install_fault_handler();
    const size_t statics = ltm_emu::find_static_shared();
    if (statics == 0) die("no static __shared__ variables found in the symbol table (a stripped build?)");
    const std::vector<ltm_emu::Schedule> schedules = ltm_replay::schedules(opt.orders, seed);
    std::printf("LM kernel emulator: %zu steps from %s, %zu thread orders, %zu static shared variables poisoned, seed %llu\n",
                steps.size(), path, schedules.size(), statics, (unsigned long long)seed);
    int failed = 0, ran = 0;
    for (const Step& s : steps) {
        if (!only.empty() && s.name.find(only) == std::string::npos) continue;
        Result first;
        bool ok = true;
        double worst = 0;
        for (size_t i = 0; i < schedules.size(); ++i) {
            Result r = run(s, schedules[i]);
            worst = std::max(worst, r.worst);
            if (!r.ok) std::printf("  %s [%s]: FAILED:%s\n", s.name.c_str(), schedules[i].name(), r.detail.c_str());
            ok &= r.ok;
            if (i == 0) {
                first = std::move(r);
            } else if (r.contents != first.contents) {
                std::printf("  %s [%s]: buffers differ bit for bit from the numbered order: a race\n", s.name.c_str(),
                            schedules[i].name());
                ok = false;
            }
            if (!ok && fail_fast) break;
        }
        std::printf("%-44s %zu launches, worst error %.3f of its tolerance %s\n", s.name.c_str(), s.launches.size(),
                    worst, ok ? "ok" : "FAILED");
        std::fflush(stdout);
        ++ran;
        failed += ok ? 0 : 1;
        if (!ok && fail_fast) break;
    }
    std::printf("%d passed, %d failed\n", ran - failed, failed);
    return failed || ran == 0 ? 1 : 0;
}
