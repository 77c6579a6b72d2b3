#!/usr/bin/env bash
# The language-model numbers of docs/language-models.md, side by side in one run (quiet machine):
#  1. this CPU's FMA peak (examples/cpu_peak.rs);
#  2. gdn-tiny prefill, ours vs flash-linear-attention's own PyTorch model on the same
#     4,096 tokens of the same text, windows of 512, alternating rounds, medians;
#  3. lm_bench: the 1024-hidden random model's prefill as a share of the FMA floor;
#     decode after 1K and 1M tokens beside attention's decode;
#  4. RSS of `run --model gdn-tiny` over 1M and 10M tokens (/usr/bin/time -v).
# Usage: bash scripts/measure-lm.sh [OUT_DIR]   (FLA=0 skips step 2's fla side;
#        LONG=0 skips step 4)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-measure-out/lm}"
mkdir -p "$out"
cargo build --release --quiet --examples
cargo build --release --quiet
bin=target/release/ltm-engine
text="$out/prefill.txt"
cat README.md docs/design.md tests/fixtures/SEMANTICS.md > "$text"

echo "== 1. FMA peak" >&2
peak_line="$(target/release/examples/cpu_peak)"
echo "$peak_line" | tee "$out/peak.txt" >&2
peak="$(echo "$peak_line" | sed -E 's/.*: ([0-9.]+) GFLOP.*/\1/')"

echo "== 2. gdn-tiny prefill: ours vs fla (PyTorch, CPU), alternating" >&2
: > "$out/prefill.jsonl"
PY=""
if [ "${FLA:-1}" = 1 ]; then PY="$(bash scripts/setup-fla-cpu.sh | tail -n1)"; fi
for round in 1 2 3; do
    "$bin" run --model tests/fixtures/gdn-tiny --context-file "$text" --max-tokens 4096 \
        --window-tokens 512 --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print(json.dumps({"impl":"ltm-engine","round":'"$round"',"tokens":j["tokens"],"seconds":j["compute_seconds"],"tokens_per_second":j["tokens"]/j["compute_seconds"],"mean_nll":j["mean_nll"]}))' \
        | tee -a "$out/prefill.jsonl"
    if [ -n "$PY" ]; then
        "$PY" scripts/fla_cpu_prefill.py --model tests/fixtures/gdn-tiny --text "$text" \
            --tokens 4096 --window 512 --runs 1 | tee -a "$out/prefill.jsonl"
    fi
done

echo "== 3. lm_bench" >&2
target/release/examples/lm_bench prefill-large --runs 5 --peak-gflops "$peak" | tee "$out/lm_bench.jsonl"
target/release/examples/lm_bench prefill-tiny --runs 5 | tee -a "$out/lm_bench.jsonl"
target/release/examples/lm_bench decode --runs 5 | tee -a "$out/lm_bench.jsonl"

if [ "${LONG:-1}" = 1 ]; then
    echo "== 4. 1M and 10M tokens through gdn-tiny: time, perplexity, peak RSS" >&2
    ctx="$out/ctx.txt"
    [ -f "$ctx" ] || target/release/examples/make_context "$ctx" 14000000 >&2
    for n in 1000000 10000000; do
        /usr/bin/time -v "$bin" run --model tests/fixtures/gdn-tiny --context-file "$ctx" \
            --max-tokens "$n" --json > "$out/run-$n.json" 2> "$out/run-$n.time"
        echo "$n tokens: $(cat "$out/run-$n.json")" >&2
        grep "Maximum resident" "$out/run-$n.time" >&2
    done
fi
