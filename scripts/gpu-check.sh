#!/usr/bin/env bash
# Runs on a GPU machine from the prebuilt binaries of scripts/gpu-bundle.sh (no Rust
# toolchain needed): device info; the language models first (their GPU tests, then
# their benchmarks: the cuBLAS bf16 rate, prefill of a 1.3B-class model as a share of
# it, a 10M-token stream with 100M extrapolated, decode after 1K and 1M tokens, and one
# layer's memory of that model alone); then
# the memory's GPU tests, our GPU benchmark, one long sequence, and the side-by-side run
# against flash-linear-attention's Triton kernel; and writes a short report. Under 8
# minutes: every step has a time limit, and a step whose limit would end past 470 s is
# skipped and reported as such (fla's Triton compile runs beside the memory's tests,
# after the language-model benchmarks, so that it never shares the GPU with a timing).
#
#   bash gpu-bundle/gpu-check.sh [REPORT_DIR]      (default: $OUT if set, else gpu-bundle/)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:-$here}}"
mkdir -p "$out"
report="$out/gpu-report.md"
cd "$here"
start=$(date +%s)
status=0
log() { echo "$*" | tee -a "$report"; }
elapsed() { echo "$(( $(date +%s) - start )) s"; }
# fits N: true when a step limited to N seconds still ends inside the 470-s budget.
fits() {
    if [ $(( $(date +%s) - start + $1 )) -le 470 ]; then return 0; fi
    log "(skipped: a $1-s step would end past the 470-s budget at $(elapsed))"; status=1; return 1
}
: > "$report"

log "# GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
log '```'
cat BUILD 2>/dev/null | tee -a "$report"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$report"
timeout 20 ./ltm-engine info 2>&1 | tee -a "$report"
log '```'

# fla-core travels as a wheel (pure Python): unpack it where python3 can import it, and
# let Triton compile and autotune fla's kernels while our tests run (it takes a minute
# or more on a fresh machine and must not be timed).
site=/tmp/ltm-fla-site
rm -rf "$site" && mkdir -p "$site"
for w in wheels/*.whl; do python3 -m zipfile -e "$w" "$site" || status=1; done
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=/tmp/ltm-triton-cache TRITON_CACHE_AUTOTUNING=1
# The driver's JIT cache of our compute_80 PTX: every test process after the first loads
# the compiled code instead of compiling it again.
export CUDA_CACHE_PATH=/tmp/ltm-cuda-cache
anchor_args=(--engine ./ltm-engine --bench ./gpu_bench --tokens 65536 --heads 16 --dim 128)

# Runs the ignored tests of the given test executables, each in a process of its own
# (a kernel fault poisons its CUDA context, and must not fail every test after it),
# within BUDGET seconds in all and at most 60 s a test; appends to gpu-tests.log and
# reports failures. Usage: run_tests BUDGET exe...
: > "$out/gpu-tests.log"
run_tests() {
    local budget=$1; shift
    local failed=() passed=0 t0 left limit first f
    t0=$(date +%s)
    for t in $(for exe in "$@"; do
                   ./$exe --list --ignored 2>/dev/null | sed -n "s|^\(.*\): test\$|$exe/\1|p"
               done); do
        left=$(( budget - ($(date +%s) - t0) ))
        if [ $left -le 5 ]; then failed+=("$t(not run: out of time)"); continue; fi
        limit=$(( left < 60 ? left : 60 ))
        if timeout -k 5 $limit ./"${t%%/*}" --ignored --exact "${t#*/}" --test-threads=1 --show-output \
            >> "$out/gpu-tests.log" 2>&1; then
            passed=$((passed + 1))
        else
            failed+=("$t")
        fi
    done
    if [ ${#failed[@]} -gt 0 ] || [ $passed -eq 0 ]; then
        status=1
        log "tests ($*): $passed passed, ${#failed[@]} FAILED: ${failed[*]:-(none ran)}; full log: gpu-tests.log"
    else
        log "tests ($*): all $passed passed"
    fi
}

# 0. Language models on the GPU (tests/lm_gpu.rs, tests/session_copies.rs, the CUDA
#    instantiation of tests/lm_suite.rs; then examples/lm_gpu_bench.rs). Nothing else
#    uses the GPU meanwhile.
log "## language models on the GPU"
run_tests 160 session_copies lm_gpu lm_suite
log '```'
grep -E "on the GPU|session on the device|gemm (F32|F16|BF16)|bf16|F16|BF16|1M tokens|panicked" "$out/gpu-tests.log" \
    | grep -v "^stack" | head -n 40 | tee -a "$report"
log '```'
log "benchmarks (cuBLAS bf16 rate; prefill of the 1.3B-class random bf16 model, share of that rate, goal 0.5;"
log "a stream of up to 10M tokens in 60 s, 100M EXTRAPOLATED from it; decode after 1K and 1M tokens):"
log '```'
if fits 190; then
    timeout -k 5 190 ./lm_gpu_bench all --max-seconds 60 2>&1 | tee "$out/lm-bench.json" | grep -v '^\s*[0-9]*:\|^note:' | tee -a "$report"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
# The prefill's memory part alone: one layer's memory of the 1.3B model (6 heads of
# K = 256, V = 512, the wide kernels) over the bench's 4096-token windows, 16 windows
# streamed with the state carried; ×24 layers against the prefill time above says how
# much of it the scan takes.
log "one layer's memory of the 1.3B model (6 x K=256 x V=512, bf16, windows of 4096):"
if fits 20; then
    timeout 20 ./gpu_bench --tokens 4096 --heads 6 --dim 256 --value-dim 512 --dtype bf16 \
        --total-tokens 65536 --repeats 5 2>&1 | tee "$out/bench-1.3b-memory.json" | tee -a "$report"
fi
log '```'
log "($(elapsed))"

timeout 200 python3 gpu_anchor.py "${anchor_args[@]}" --warm-only > "$out/fla-warm.log" 2>&1 &
warm_pid=$!

# 1. GPU tests (each is #[ignore]d in normal runs), each in a process of its own: a kernel
#    fault poisons its CUDA context, and must not fail every test after it.
log "## tests"
failed=()
passed=0
tests_start=$(date +%s)
# backend_suite: the CUDA instantiation of the shared suite (its ignored tests), first;
# gpu_forward: what only CUDA has. Each test is named exe/test. 80 s in all (was 150:
# the language models' steps above took the rest).
for t in $(for exe in backend_suite gpu_forward; do
               ./$exe --list --ignored 2>/dev/null | sed -n "s|^\(.*\): test\$|$exe/\1|p"
           done); do
    left=$(( 80 - ($(date +%s) - tests_start) ))
    if [ $left -le 5 ]; then failed+=("$t(not run: out of time)"); continue; fi
    # At most 40 s a test, so one hang cannot take the others' time; --show-output keeps
    # the errors that passing tests measured.
    limit=$(( left < 40 ? left : 40 ))
    if timeout -k 5 $limit ./"${t%%/*}" --ignored --exact "${t#*/}" --test-threads=1 --show-output \
        >> "$out/gpu-tests.log" 2>&1; then
        passed=$((passed + 1))
    else
        failed+=("$t")
    fi
done
log '```'
# The errors each test measured (its eprintln lines), then the first panics.
grep -E ": (B=|stage 1)|error [0-9]|\]: output [0-9]" "$out/gpu-tests.log" | tail -n 60 | tee -a "$report"
grep -A2 "panicked" "$out/gpu-tests.log" | grep -v "^stack backtrace\|^note:" | head -n 30 | tee -a "$report"
log '```'
if [ ${#failed[@]} -gt 0 ] || [ $passed -eq 0 ]; then
    status=1
    log "tests: $passed passed, ${#failed[@]} FAILED: ${failed[*]:-(none ran)}; full log: gpu-tests.log"
    # The first failure once more under compute-sanitizer's memcheck (Firecracker
    # machines run it), for the kernel and address of a bad access.
    first=""
    for f in "${failed[@]:-}"; do  # not the million-token test: too slow under memcheck
        case "$f" in */a_million_tokens*|"") ;; *) first="${f%%(*}"; break ;; esac
    done
    if [ -n "$first" ] && command -v compute-sanitizer >/dev/null && fits 60; then
        log "compute-sanitizer memcheck on $first:"
        log '```'
        timeout 60 compute-sanitizer --tool memcheck --print-limit 5 ./"${first%%/*}" --ignored --exact "${first#*/}" \
            --test-threads=1 > "$out/sanitizer.log" 2>&1
        grep -E "=========|panicked" "$out/sanitizer.log" | head -n 30 | tee -a "$report"
        log '```'
    fi
else
    log "tests: all $passed passed"
fi
log "($(elapsed))"

# fla's compile must be over before anything is timed.
wait "$warm_pid"
log "fla warm-up: exit $? ($(tail -n1 "$out/fla-warm.log")); ($(elapsed))"

# 2. Forward throughput, inputs resident on the device, B=1 T=65536 H=16 K=V=128.
log "## bench"
log '```'
for dtype in bf16 f32; do
    fits 20 && timeout 20 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype $dtype --repeats 10 2>&1 | tee "$out/bench-$dtype.json" | tee -a "$report"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
# Where the time goes: stage 1 alone, the scan's segment count (1 = plain scan; the
# bench above used the backend's own choice), and the FAST bf16 scan.
if fits 45; then
    timeout 45 bash -c '
        timeout 10 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype bf16 --repeats 5 --bf16-fast
        timeout 10 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype bf16 --repeats 5 --prep-only
        for g in 1 2 4 8 16; do
            timeout 10 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype bf16 --repeats 5 --segments $g
        done' 2>&1 | tee -a "$report"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
# Short windows (decode is one token a layer): the token-by-token kernel (step.cu, the
# plan's choice up to 16 tokens) against stage 1 + the scan on the same windows, 2000
# windows back to back, to place plan::STEP_MAX_TOKENS.
log "short windows, token by token vs chunked (B=1 H=16 K=V=128 bf16, 2000 windows each):"
if fits 25; then
    timeout 25 bash -c '
        for t in 1 4 16 32; do
            for path in "" --chunked; do
                timeout 5 ./gpu_bench --tokens $t --total-tokens $((2000 * t)) --heads 16 --dim 128 --dtype bf16 $path
            done
        done' 2>&1 | tee -a "$report"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
# 3. One sequence of 100M tokens at that layer shape (windows of 65536 tokens back to
#    back, state carried), if the bf16 rate just measured says it fits in 50 s;
#    else 10M tokens, and the report says which.
rate=$(grep -o '"tokens_per_second":[0-9.e+]*' "$out/bench-bf16.json" 2>/dev/null | head -n1 | cut -d: -f2)
total=10000000
if [ -n "$rate" ] && awk -v r="$rate" 'BEGIN { exit !(r > 0 && 1e8 / r < 50) }'; then
    total=100000000
fi
log "single sequence of $total tokens:"
# (The --bf16-fast variant of this run is left out since the language models' steps
# came first: the FAST scan's rate is in the bench lines above.)
for variant in ""; do
    if fits 60; then
        timeout 60 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype bf16 --total-tokens $total $variant 2>&1 | tee -a "$report"
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    fi
done
log '```'
log "($(elapsed))"

# The command line end to end on the GPU (the dense path; the built-in memory model has
# no CUDA op yet): `run` over this script's own text, state saved, against the CPU.
log "## ltm-engine run --device cuda"
log '```'
if fits 30; then
    for dev in cuda cpu; do
        timeout 15 ./ltm-engine run --context-file gpu-check.sh --model random-features --device $dev \
            --json --save-state "$out/run-$dev.state" 2>&1 | tail -n 1 | tee -a "$report"
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    done
fi
log '```'

# 4. Side by side with fla's Triton chunk_gated_delta_rule, ceilings, floor, agreement.
log "## against flash-linear-attention (same card, same run)"
log '```'
rc=124
fits 100 && { # Autotune afresh on the idle GPU (compiled kernels come from the cache): choices made
# while our tests shared the GPU must not be reused for fla's timed run.
TRITON_CACHE_AUTOTUNING=0 FLA_CACHE_RESULTS=0 \
    timeout -k 5 100 python3 gpu_anchor.py "${anchor_args[@]}" --rounds 3 --repeats 10 \
    --json-out "$out/anchor.json" > "$out/anchor.log" 2>&1; rc=$?; }
grep -v '^{"[a-z_]*": ' "$out/anchor.log" | grep -v '^\[' | tail -n 30 | tee -a "$report"
log '```'
[ $rc -eq 0 ] || { status=1; log "anchor: FAILED (exit $rc; 124 = timed out); full log: anchor.log"; }
log "elapsed: $(elapsed); exit status $status"
exit $status
