#!/usr/bin/env bash
# Builds, on a machine with a Rust toolchain and no GPU, everything a GPU machine (no
# Rust there) needs to run the GPU tests and benchmark, into gpu-bundle/ (gitignored):
#   ltm-engine     the CLI (with kernels: the build fails without them)
#   gpu_forward    the GPU-only test executable (tests/gpu_forward.rs)
#   backend_suite  the shared suite (tests/backend_suite.rs); its CUDA cases are the ignored ones
#   session_copies the device-resident session copies the state only at open/snapshot/hand-back
#   lm_gpu         language models on CUDA (cuBLAS products, the model forward)
#   lm_suite       the language models' shared suite (tests/lm_suite.rs); its CUDA cases are the ignored ones
#   gpu_bench      examples/gpu_bench.rs
#   lm_gpu_bench   examples/lm_gpu_bench.rs (cuBLAS rate, 1.3B-class prefill, stream, decode)
#   gpu-check.sh   what to run there:  bash gpu-bundle/gpu-check.sh
#   gpu_anchor.py  the side-by-side run against flash-linear-attention's Triton kernel
#   wheels/        fla-core (pure Python; that machine has torch and Triton but no fla
#                  and no network)
#   BUILD          commit, nvcc and rustc versions
# Then carry gpu-bundle/ to the GPU machine (the device tool's `carry`) and run the check.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
NVCC="${NVCC:-$(bash scripts/install-nvcc.sh | tail -n1)}"
export NVCC LTM_REQUIRE_KERNELS=1
bundle=gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle"

cargo build --release --bin ltm-engine --example gpu_bench --example lm_gpu_bench
cp target/release/ltm-engine target/release/examples/gpu_bench target/release/examples/lm_gpu_bench "$bundle/"
for test in gpu_forward backend_suite session_copies lm_gpu lm_suite; do
    test_exe=$(cargo test --release --test "$test" --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$test")
    [ -n "$test_exe" ] || { echo "gpu-bundle: no $test test executable" >&2; exit 1; }
    cp "$test_exe" "$bundle/$test"
done
cp scripts/gpu-check.sh scripts/gpu_anchor.py "$bundle/"
fla_pin=$(grep -E '^fla-core==' scripts/requirements-anchor.txt)
python3 -m pip download -q --no-deps --only-binary=:all: -d "$bundle/wheels" "$fla_pin"
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nvcc: $("$NVCC" -V | tail -n1)"
    echo "rustc: $(rustc -V)"
} > "$bundle/BUILD"
strip "$bundle/ltm-engine" "$bundle/gpu_bench" "$bundle/lm_gpu_bench" "$bundle/gpu_forward" "$bundle/backend_suite" "$bundle/session_copies" "$bundle/lm_gpu" "$bundle/lm_suite" 2>/dev/null || true
"$bundle/ltm-engine" info
du -sh "$bundle"
echo "gpu-bundle: ready; on the GPU machine: bash gpu-bundle/gpu-check.sh"
