// What both emulator checks (check.cpp: the memory's launch plans; lm_check.cpp: the
// language-model kernels' cases) need to replay a launch written by Rust: the launch
// record, parameter blocks set field by field (every field exactly once), and entry
// points that refuse a launch a GPU would refuse.
#pragma once

#include "emu.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace ltm_replay {

[[noreturn]] inline void die(const std::string& msg) {
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    std::exit(2);
}

// One launch: entry point, geometry, and each parameter field as text.
struct LaunchSpec {
    std::string entry;
    ltm_emu::Dim3 grid, block;
    size_t smem = 0;
    std::vector<std::pair<std::string, std::string>> params;
};

// How to set each field of a parameter struct P from its text.
template <typename P>
struct Fields {
    std::map<std::string, std::function<void(P&, const std::string&)>> set;
};

// The parameter block of `l`; `source` names where the launch came from ("plan",
// "case") in the errors.
template <typename P>
P build(const Fields<P>& fields, const LaunchSpec& l, const char* source) {
    P p;
    std::memset(&p, 0, sizeof(p));
    std::map<std::string, int> seen;
    for (auto& [name, value] : l.params) {
        auto it = fields.set.find(name);
        if (it == fields.set.end())
            die(l.entry + ": the " + source + " sets `" + name + "`, which the kernel's struct lacks");
        if (seen[name]++) die(l.entry + ": `" + name + "` set twice");
        it->second(p, value);
    }
    for (auto& [name, f] : fields.set)
        if (!seen.count(name)) die(l.entry + ": the " + source + " leaves `" + name + "` unset");
    return p;
}

// What a launch of an entry point must respect besides its __launch_bounds__.
struct Rules {
    // The kernel maps its work onto exactly max_threads threads (a smaller block would
    // run on a GPU and leave work undone).
    bool exact_threads = false;
    // Dynamic shared memory a launch may ask for (48 KB without the opt-in).
    size_t max_smem = SIZE_MAX;
    const char* source = "plan";
};

struct Entry {
    int max_threads;
    std::function<void(const LaunchSpec&)> run;
};

// An entry point by its thread count (__launch_bounds__), fields and kernel function.
template <typename P, typename F>
Entry entry(int max_threads, const Fields<P>& fields, F kernel, Rules rules = {}) {
    return Entry{max_threads, [&fields, kernel, max_threads, rules](const LaunchSpec& l) {
                     if ((int)l.block.x > max_threads)
                         die(l.entry + ": block of " + std::to_string(l.block.x) +
                             " threads, beyond its __launch_bounds__ (the launch fails on a GPU)");
                     if (rules.exact_threads && (int)l.block.x != max_threads)
                         die(l.entry + ": block of " + std::to_string(l.block.x) + " threads, the kernel needs " +
                             std::to_string(max_threads));
                     if (l.smem > rules.max_smem)
                         die(l.entry + ": more dynamic shared memory than a launch gets without the opt-in");
                     const P p = build(fields, l, rules.source);
                     ltm_emu::launch(l.grid, l.block, l.smem, [&] { kernel(p); });
                 }};
}

// Command-line options both checks take: INPUT [--seed N] [--orders N] [--only TEXT]
// [--fail-fast].
struct Options {
    const char* input = nullptr;
    uint64_t seed = std::random_device{}();
    int orders = 6;
    bool fail_fast = false;
    std::string only;
};

inline Options parse_options(int argc, char** argv, const std::string& usage) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--seed" && i + 1 < argc) o.seed = std::strtoull(argv[++i], nullptr, 10);
        else if (a == "--orders" && i + 1 < argc) o.orders = std::atoi(argv[++i]);
        else if (a == "--only" && i + 1 < argc) o.only = argv[++i];
        else if (a == "--fail-fast") o.fail_fast = true;
        else if (!o.input && a[0] != '-') o.input = argv[i];
        else die("usage: " + usage);
    }
    if (!o.input) die("usage: " + usage);
    return o;
}

// The first `orders` thread orders: numbered, reversed, then skewed and shuffled in
// turn, seeded from the run's seed.
inline std::vector<ltm_emu::Schedule> schedules(int orders, uint64_t seed) {
    std::vector<ltm_emu::Schedule> s = {{ltm_emu::Order::Numbered, 0}, {ltm_emu::Order::Reversed, 0}};
    for (int i = 2; i < orders; ++i)
        s.push_back({i % 2 ? ltm_emu::Order::Shuffled : ltm_emu::Order::Skewed, seed + (uint64_t)i});
    s.resize(std::max(1, std::min<int>(orders, (int)s.size())));
    return s;
}

}  // namespace ltm_replay
