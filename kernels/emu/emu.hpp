// A small SIMT emulator that runs the kernels of kernels/*.cu as host C++, so their
// indexing, masking, fragment layouts and barriers can be checked without a GPU.
//
// Each CUDA thread of a block is a coroutine on one OS thread (a stack of its own and a
// six-register switch, x86-64 only: swapcontext's signal-mask system call per switch
// was most of the run time); blocks run one after another. __syncthreads, warp shuffles and mma.sync are barriers: a thread that
// arrives yields until its whole group (block or warp) has arrived. mma.sync exchanges
// fragments through a per-warp buffer and computes the 16×8 tile exactly as the PTX ISA
// lays fragments out, so a wrong fragment index gives wrong numbers here too.
//
// What a GPU would break and a fixed schedule hides:
//  - Thread order. Between two barriers a thread runs alone until it reaches the next
//    one; the order in which threads get their turn is a `Schedule`: as numbered,
//    reversed, a fresh seeded shuffle at every pass, or shuffled with random warps
//    sitting out each pass so that warps drift apart. A missing barrier lets a thread
//    read what another has not written yet (or has already overwritten), which some
//    order exposes; the caller also compares results bit for bit across orders, which
//    must agree when there is no race.
//  - Stale shared memory. Static __shared__ variables (function-local statics here) are
//    found in the executable's symbol table and filled with 0xFF (NaN as f32 and f64)
//    before every block; dynamic shared memory is filled with NaN.
//  - Out-of-bounds reads. Dynamic shared memory and every buffer the caller allocates
//    with `guarded_alloc` end at an inaccessible page, so reading or writing one element
//    past the end faults, and the fault is reported with the buffer's name.
// What it cannot show: timing, bank conflicts, memory-model effects finer than one
// barrier interval, and ptxas/JIT issues.
#pragma once

#include <elf.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define LTM_EMU_ASAN 1
#endif

#define LTM_HOST_EMU 1
#define __device__
#define __global__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { uint32_t x, y; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
using std::min;
using std::max;

namespace ltm_emu {

struct Dim3 { unsigned x = 1, y = 1, z = 1; };

struct Barrier {
    int count = 0, arrived = 0;
    unsigned generation = 0;
};

// Saves the callee-saved registers on the current stack, stores its stack pointer in
// *save_sp and resumes the coroutine whose stack pointer is new_sp.
extern "C" void ltm_emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl ltm_emu_switch
    .type ltm_emu_switch, @function
ltm_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ltm_emu_switch, .-ltm_emu_switch
)");

struct Fiber {
    void* sp = nullptr;
    bool done = false;
    Dim3 thread;
    char* stack = nullptr;
};

struct WarpBuf {
    uint32_t a[32][4];
    uint32_t b[32][2];
    double d[32];
    uint64_t raw[32];  // __shfl_xor_sync of any 4- or 8-byte value
};

// The order in which the threads of a block get their turn at every pass.
// Skewed: every pass a random half of the warps sits out, so warps drift apart by many
// steps (with every warp taking its turn at each pass, warps advance in lockstep, one
// warp-level barrier per pass, and a block barrier whose only job is to stop one warp
// overwriting what another is still reading would never be missed).
enum class Order { Numbered, Reversed, Shuffled, Skewed };
struct Schedule {
    Order order = Order::Numbered;
    uint64_t seed = 0;
    const char* name() const {
        switch (order) {
            case Order::Numbered: return "numbered";
            case Order::Reversed: return "reversed";
            case Order::Shuffled: return "shuffled";
            default: return "skewed";
        }
    }
};

// A host allocation whose end touches an inaccessible page (and whose start follows
// one), so an access past the end faults.
struct Region {
    std::string name;
    char* map = nullptr;
    size_t map_bytes = 0;
    char* data = nullptr;
    size_t bytes = 0;
};

#ifdef LTM_EMU_ASAN
constexpr size_t STACK_BYTES = 1024 * 1024;
#else
constexpr size_t STACK_BYTES = 256 * 1024;
#endif

struct State {
    Dim3 block_dim, block;
    std::vector<Fiber> fibers;
    std::vector<std::unique_ptr<char[]>> stacks;
    int current = -1;
    void* scheduler_sp = nullptr;
    Barrier block_barrier;
    std::vector<Barrier> warp_barriers;
    std::vector<WarpBuf> warp_bufs;
    Region* dynamic_smem = nullptr;
    std::function<void()> body;
    Schedule schedule;
    uint64_t launches = 0;
    // Static __shared__ variables of the kernels: (address, bytes).
    std::vector<std::pair<char*, size_t>> static_smem;
    // Every live guarded region, for naming a fault.
    std::vector<Region*> regions;
    std::string where;  // what runs, for fault reports
#ifdef LTM_EMU_ASAN
    void* fake_stack = nullptr;
    const void* sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
#endif
};

inline State& st() {
    static State s;
    return s;
}

inline size_t page_bytes() { return (size_t)sysconf(_SC_PAGESIZE); }

// `bytes` of memory ending (16-byte aligned, as cudaMalloc'd data is far more) at an
// inaccessible page; the bytes between the previous page and the start, and the at
// most 15 bytes of alignment slack at the end, are left to the caller's guard values.
inline Region* guarded_alloc(const std::string& name, size_t bytes) {
    const size_t page = page_bytes();
    const size_t span = (bytes + 15) / 16 * 16;
    const size_t body = std::max(page, (span + page - 1) / page * page);
    Region* r = new Region;
    r->name = name;
    r->bytes = bytes;
    r->map_bytes = body + 2 * page;
    void* m = mmap(nullptr, r->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        std::perror("mmap");
        std::exit(2);
    }
    r->map = (char*)m;
    mprotect(r->map, page, PROT_NONE);
    mprotect(r->map + page + body, page, PROT_NONE);
    r->data = r->map + page + body - span;
    st().regions.push_back(r);
    return r;
}

inline void guarded_free(Region* r) {
    auto& v = st().regions;
    v.erase(std::remove(v.begin(), v.end(), r), v.end());
    munmap(r->map, r->map_bytes);
    delete r;
}

// Names the buffer an invalid address belongs to (or lies just outside of).
inline void on_fault(int, siginfo_t* info, void* uctx) {
    const char* addr = (const char*)info->si_addr;
    const char* what = "access";
#if defined(__x86_64__)
    const ucontext_t* uc = (const ucontext_t*)uctx;
    what = (uc->uc_mcontext.gregs[REG_ERR] & 2) ? "write" : "read";
#else
    (void)uctx;
#endif
    State& s = st();
    for (const Region* r : s.regions)
        if (addr >= r->map && addr < r->map + r->map_bytes) {
            const long long off = (long long)(addr - r->data);
            std::fprintf(stderr,
                         "FAULT: out-of-bounds %s of %s at byte %lld (size %zu), block (%u,%u,%u) thread %d, %s\n",
                         what, r->name.c_str(), off, r->bytes, s.block.x, s.block.y, s.block.z,
                         s.current >= 0 ? (int)s.fibers[s.current].thread.x : -1, s.where.c_str());
            std::fflush(stderr);
            _exit(3);
        }
    std::fprintf(stderr, "FAULT: invalid %s at %p (no emulator buffer), %s\n", what, (const void*)addr,
                 s.where.c_str());
    std::fflush(stderr);
    _exit(3);
}

inline void install_fault_handler() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
}

// Function-local statics named s_* of this executable: the kernels' static __shared__
// variables (they cannot be gathered into one section, as template instances live in
// their own COMDAT sections). Read from the ELF symbol table of /proc/self/exe.
inline int exe_bias_cb(dl_phdr_info* info, size_t, void* out) {
    *(uintptr_t*)out = (uintptr_t)info->dlpi_addr;
    return 1;  // the first object is the executable
}

inline size_t find_static_shared() {
    State& s = st();
    FILE* f = std::fopen("/proc/self/exe", "rb");
    if (!f) return 0;
    std::vector<char> file;
    char chunk[1 << 16];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) file.insert(file.end(), chunk, chunk + n);
    std::fclose(f);
    uintptr_t bias = 0;
    dl_iterate_phdr(exe_bias_cb, &bias);
    const auto* eh = (const Elf64_Ehdr*)file.data();
    const auto* sh = (const Elf64_Shdr*)(file.data() + eh->e_shoff);
    // The local name `s_...` (optionally with a discriminator) ends a local entity's
    // mangled name _ZZ<function>E<length><name>.
    const std::regex shared_local("^_ZZ.*E[0-9]+s_[A-Za-z0-9]+(_[0-9]+)?$");
    for (int i = 0; i < eh->e_shnum; ++i) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        const char* names = file.data() + sh[sh[i].sh_link].sh_offset;
        const auto* sym = (const Elf64_Sym*)(file.data() + sh[i].sh_offset);
        const size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t j = 0; j < count; ++j) {
            if (ELF64_ST_TYPE(sym[j].st_info) != STT_OBJECT || sym[j].st_size == 0) continue;
            const char* name = names + sym[j].st_name;
            if (std::strncmp(name, "_ZZ", 3) != 0 || !std::regex_match(name, shared_local)) continue;
            s.static_smem.emplace_back((char*)(bias + sym[j].st_value), (size_t)sym[j].st_size);
        }
    }
    return s.static_smem.size();
}

// 0xFF bytes: NaN as f32 and f64. Written byte by byte through a volatile pointer, with
// no sanitizer instrumentation: ASan may keep redzones next to these objects.
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize_address))
#endif
inline void poison_static_shared() {
    for (auto& [p, n] : st().static_smem) {
        volatile unsigned char* b = (volatile unsigned char*)p;
        for (size_t i = 0; i < n; ++i) b[i] = 0xFF;
    }
}

inline void to_scheduler() {
    State& s = st();
#ifdef LTM_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, s.sched_stack_bottom, s.sched_stack_size);
    ltm_emu_switch(&s.fibers[s.current].sp, s.scheduler_sp);
    __sanitizer_finish_switch_fiber(fake, &s.sched_stack_bottom, &s.sched_stack_size);
#else
    ltm_emu_switch(&s.fibers[s.current].sp, s.scheduler_sp);
#endif
}

inline void wait(Barrier& b) {
    const unsigned gen = b.generation;
    if (++b.arrived == b.count) {
        b.arrived = 0;
        ++b.generation;
        return;
    }
    while (b.generation == gen) to_scheduler();
}

inline const Dim3& thread_idx() { return st().fibers[st().current].thread; }
inline int lane() { return (int)(thread_idx().x & 31); }
inline int warp() { return (int)(thread_idx().x >> 5); }
inline void sync_block() { wait(st().block_barrier); }
inline void sync_warp() { wait(st().warp_barriers[warp()]); }

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// cvt.rn.bf16.f32: round to nearest even (NaN stays NaN).
inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
inline uint32_t pack_bf16x2(float lo, float hi) {
    return (uint32_t)f32_to_bf16(lo) | ((uint32_t)f32_to_bf16(hi) << 16);
}
inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return bits_to_f32(sign);
        float f = std::ldexp((float)man, -24);
        return sign ? -f : f;
    }
    return bits_to_f32(sign | ((uint32_t)(exp + 112) << 23) | (man << 13));
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragment layout of the PTX ISA.
inline void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    State& s = st();
    WarpBuf& wb = s.warp_bufs[warp()];
    const int l = lane();
    for (int i = 0; i < 4; ++i) wb.a[l][i] = a[i];
    for (int i = 0; i < 2; ++i) wb.b[l][i] = b[i];
    sync_warp();
    // Only this lane's rows (g, g + 8) of A and columns (2t, 2t + 1) of B, read from
    // the lanes that hold them; the sum runs over k in order as before.
    const int g = l >> 2, t = l & 3;
    auto a_at = [&](int row, int k) {
        const uint32_t w = wb.a[(row & 7) * 4 + ((k & 7) >> 1)][(row >> 3) | ((k >> 3) << 1)];
        return bits_to_f32((k & 1) ? (w & 0xffff0000u) : (w << 16));
    };
    auto b_at = [&](int k, int col) {
        const uint32_t w = wb.b[col * 4 + ((k & 7) >> 1)][k >> 3];
        return bits_to_f32((k & 1) ? (w & 0xffff0000u) : (w << 16));
    };
    float A[2][16], B[16][2];
    for (int k = 0; k < 16; ++k) {
        A[0][k] = a_at(g, k);
        A[1][k] = a_at(g + 8, k);
        B[k][0] = b_at(k, 2 * t);
        B[k][1] = b_at(k, 2 * t + 1);
    }
    sync_warp();  // every lane has read the fragments before any lane writes new ones
    for (int e = 0; e < 4; ++e) {
        float acc = c[e];
        for (int k = 0; k < 16; ++k) acc += A[e >> 1][k] * B[k][e & 1];  // bf16 products are exact in f32
        c[e] = acc;
    }
}

// __shfl_xor_sync: every lane of the warp posts its value, then reads its partner's.
template <typename T>
inline T shfl_xor(T x, int mask) {
    static_assert(sizeof(T) <= 8, "shuffles move 4 or 8 bytes");
    WarpBuf& wb = st().warp_bufs[warp()];
    uint64_t raw = 0;
    std::memcpy(&raw, &x, sizeof(T));
    wb.raw[lane()] = raw;
    sync_warp();
    const uint64_t r = wb.raw[lane() ^ (mask & 31)];
    sync_warp();
    T y;
    std::memcpy(&y, &r, sizeof(T));
    return y;
}

// cvt.rn.f16.f32: round to nearest even, with subnormals, overflow to inf, NaN kept.
inline uint16_t f32_to_f16(float f) {
    const uint32_t u = f32_to_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to ≥ 65520: inf
    if (a < 0x38800000u) {                                     // below 2^-14: subnormal f16
        const float m = std::fabs(f) * 16777216.0f;            // units of 2^-24, exact
        return (uint16_t)(sign | (uint16_t)std::nearbyint(m)); // ties to even (default mode)
    }
    const uint32_t exp = (a >> 23) - 112, man = a & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    const uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
    return (uint16_t)(sign | h);
}

inline double shfl_up(double x, int off) {
    State& s = st();
    WarpBuf& wb = s.warp_bufs[warp()];
    wb.d[lane()] = x;
    sync_warp();
    const double r = lane() >= off ? wb.d[lane() - off] : x;
    sync_warp();
    return r;
}

[[noreturn]] inline void fiber_entry() {
    State& s = st();
#ifdef LTM_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &s.sched_stack_bottom, &s.sched_stack_size);
#endif
    s.body();
    s.fibers[s.current].done = true;
#ifdef LTM_EMU_ASAN
    // This fiber's stack is never resumed.
    __sanitizer_start_switch_fiber(nullptr, s.sched_stack_bottom, s.sched_stack_size);
#endif
    void* dead;
    ltm_emu_switch(&dead, s.scheduler_sp);
    std::abort();
}

// A new coroutine's stack as ltm_emu_switch leaves one: six zero registers, then
// fiber_entry as the return address, entered with the stack aligned as after a call.
inline void* fresh_stack(char* stack, size_t bytes) {
#ifdef LTM_EMU_ASAN
    // The last block's coroutines never unwound: their frames' redzones are still marked.
    __asan_unpoison_memory_region(stack, bytes);
#endif
    uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
    void** p = (void**)(top - 8);
    *p = nullptr;  // fiber_entry's own return address: it never returns
    *--p = (void*)&fiber_entry;
    for (int i = 0; i < 6; ++i) *--p = nullptr;
    return p;
}

// Maximum threads a kernel's __launch_bounds__ allows, and the most dynamic shared
// memory a block may opt into (H100/H200: 227 KB): a launch beyond either fails on a
// GPU, so it fails here.
constexpr size_t MAX_DYNAMIC_SMEM = 227 * 1024;

// Runs `body` as every thread of every block of `grid`, blocks in order, threads in
// the order `st().schedule` gives. Shared memory is poisoned before each block.
inline void launch(Dim3 grid, Dim3 block, size_t smem_bytes, std::function<void()> body) {
    State& s = st();
    if (smem_bytes > MAX_DYNAMIC_SMEM || block.y != 1 || block.z != 1 || block.x == 0 || block.x > 1024) {
        std::fprintf(stderr, "launch refused: block (%u,%u,%u), %zu bytes of dynamic shared memory (%s)\n",
                     block.x, block.y, block.z, smem_bytes, s.where.c_str());
        std::exit(3);
    }
    s.block_dim = block;
    s.body = std::move(body);
    const int n = (int)(block.x * block.y * block.z);
    const int warps = (n + 31) / 32;
    s.dynamic_smem = smem_bytes ? guarded_alloc("dynamic shared memory", smem_bytes) : nullptr;
    while ((int)s.stacks.size() < n) s.stacks.emplace_back(new char[STACK_BYTES]);
    std::mt19937_64 rng(s.schedule.seed * 0x9e3779b97f4a7c15ull + ++s.launches);
    std::vector<int> turn(n);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                s.block = Dim3{x, y, z};
                if (s.dynamic_smem) {
                    float* d = (float*)s.dynamic_smem->data;
                    std::fill(d, d + smem_bytes / 4, NAN);
                }
                poison_static_shared();
                s.block_barrier = Barrier{n, 0, 0};
                s.warp_barriers.assign(warps, Barrier{32, 0, 0});
                s.warp_bufs.assign(warps, WarpBuf{});
                s.fibers.clear();
                s.fibers.resize(n);
                for (int t = 0; t < n; ++t) {
                    Fiber& f = s.fibers[t];
                    f.thread = Dim3{(unsigned)t, 0, 0};
                    f.stack = s.stacks[t].get();
                    f.sp = fresh_stack(f.stack, STACK_BYTES);
                }
                int live = n;
                std::vector<char> sits_out(warps, 0);
                while (live > 0) {
                    const Order order = s.schedule.order;
                    for (int t = 0; t < n; ++t) turn[t] = order == Order::Reversed ? n - 1 - t : t;
                    if (order == Order::Shuffled || order == Order::Skewed) std::shuffle(turn.begin(), turn.end(), rng);
                    if (order == Order::Skewed)
                        for (auto& w : sits_out) w = (char)(rng() & 1);
                    live = 0;
                    for (int t : turn) {
                        if (s.fibers[t].done) continue;
                        if (sits_out[t >> 5]) {
                            ++live;
                            continue;
                        }
                        s.current = t;
#ifdef LTM_EMU_ASAN
                        __sanitizer_start_switch_fiber(&s.fake_stack, s.fibers[t].stack, STACK_BYTES);
                        ltm_emu_switch(&s.scheduler_sp, s.fibers[t].sp);
                        __sanitizer_finish_switch_fiber(s.fake_stack, nullptr, nullptr);
#else
                        ltm_emu_switch(&s.scheduler_sp, s.fibers[t].sp);
#endif
                        if (!s.fibers[t].done) ++live;
                    }
                }
                s.current = -1;
            }
    if (s.dynamic_smem) guarded_free(s.dynamic_smem);
    s.dynamic_smem = nullptr;
}

}  // namespace ltm_emu

#define threadIdx (ltm_emu::thread_idx())
#define blockIdx (ltm_emu::st().block)
#define blockDim (ltm_emu::st().block_dim)
#define LTM_DYNAMIC_SMEM(name) float* name = (float*)ltm_emu::st().dynamic_smem->data
inline void __syncthreads() { ltm_emu::sync_block(); }
inline double __shfl_up_sync(unsigned, double x, int off) { return ltm_emu::shfl_up(x, off); }
inline float __uint_as_float(unsigned u) { return ltm_emu::bits_to_f32(u); }
inline unsigned __float_as_uint(float f) { return ltm_emu::f32_to_bits(f); }
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
template <typename T> inline T __shfl_xor_sync(unsigned, T x, int mask) { return ltm_emu::shfl_xor(x, mask); }
// Threads run one at a time between switches, so a plain read-modify-write is atomic.
inline int atomicAdd(int* p, int v) { const int old = *p; *p = old + v; return old; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { const unsigned old = *p; *p = old + v; return old; }
// Single roundings that the compiler must not fuse into an FMA.
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
