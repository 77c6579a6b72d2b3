#!/usr/bin/env bash
# Runs on a GPU machine from the prebuilt binaries of scripts/gpu-bundle.sh (no Rust
# toolchain needed): device info, the GPU tests, then the GPU benchmark, and writes a
# short report. Under 8 minutes: the steps' time limits add up to 460 s.
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
: > "$report"

log "# GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
log '```'
cat BUILD 2>/dev/null | tee -a "$report"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$report"
timeout 20 ./ltm-engine info 2>&1 | tee -a "$report"
log '```'

# 1. GPU tests (each is #[ignore]d in normal runs). One thread: they share the device.
log "## tests"
timeout 210 ./gpu_forward --ignored --test-threads=1 > "$out/gpu-tests.log" 2>&1
rc=$?
log '```'
grep -E "^test |test result|: output|stage 1|^scan " "$out/gpu-tests.log" | tail -n 60 | tee -a "$report"
grep -A2 "panicked" "$out/gpu-tests.log" | head -n 40 | tee -a "$report"
log '```'
if [ $rc -ne 0 ]; then status=1; log "tests: FAILED (exit $rc; 124 = timed out); full log: gpu-tests.log"; else log "tests: passed"; fi

# 2. Forward throughput, inputs resident on the device, B=1 T=65536 H=16 K=V=128.
log "## bench"
log '```'
for dtype in bf16 f32; do
    timeout 40 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype $dtype --repeats 5 2>&1 | tee -a "$report"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
# 3. One sequence of 100M tokens at that layer shape (windows of 65536 tokens back to
#    back, state carried), if the bf16 rate just measured says it fits in 110 s;
#    else 10M tokens, and the report says which.
rate=$(grep -o '"tokens_per_second":[0-9.e+]*' "$report" | head -n1 | cut -d: -f2)
total=10000000
if [ -n "$rate" ] && awk -v r="$rate" 'BEGIN { exit !(r > 0 && 1e8 / r < 110) }'; then
    total=100000000
fi
log "single sequence of $total tokens:"
timeout 150 ./gpu_bench --tokens 65536 --heads 16 --dim 128 --dtype bf16 --total-tokens $total 2>&1 | tee -a "$report"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
log '```'
log "elapsed: $(( $(date +%s) - start )) s; exit status $status"
exit $status
