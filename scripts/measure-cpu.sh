#!/usr/bin/env bash
# Re-measures the CPU numbers of docs/benchmarks.md (and HashHop's 100M run, docs/hashhop.md)
# in one go; run it on a quiet machine.
# Writes everything under ${OUT:-measure-out}/ and prints a summary.
#   bash scripts/measure-cpu.sh            # benches, 1M and 100M-token runs
#   ANCHOR=1 bash scripts/measure-cpu.sh   # also the flash-linear-attention anchor
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-measure-out}
mkdir -p "$out"
cargo build --release --all-targets --examples >/dev/null

echo "== machine"
nproc; grep -m1 "model name" /proc/cpuinfo; uptime
cargo run --release --example cpu_peak | tee "$out/cpu_peak.txt"

echo "== forward bench"
cargo bench --bench forward -- --warm-up-time 1 --measurement-time 5 2>&1 | grep -E "^cpu_forward|time:|thrpt:" | tee "$out/forward.txt"

echo "== stream bench (compute only vs end to end, both models)"
cargo bench --bench stream -- --warm-up-time 1 --measurement-time 8 2>&1 | grep -E "^stream|^memory|time:|thrpt:" | tee "$out/stream.txt"

echo "== run: 1M and 100M tokens of synthetic text, both models"
for n in 1000000 100000000; do
    f="$out/ctx$n.txt"
    [ -f "$f" ] || ./target/release/examples/make_context "$f" "$n"
    for model in random-features memory; do
        tag="$model-$n"
        /usr/bin/time -v ./target/release/ltm-engine run --model "$model" --context-file "$f" --json \
            --save-state "$out/state-$tag.ltmstate" > "$out/run-$tag.json" 2> "$out/run-$tag.time"
        echo "$tag: $(cat "$out/run-$tag.json")"
        grep -E "Maximum resident|Elapsed" "$out/run-$tag.time"
    done
done

echo "== HashHop, 100M tokens, 16 GiB of state"
[ -d "$out/hh-100m" ] || ./target/release/ltm-engine hashhop generate --tokens 100000000 --hops 1 \
    --queries 10000 --seed 100 --out "$out/hh-100m" > /dev/null
/usr/bin/time -v ./target/release/ltm-engine hashhop eval --context-file "$out/hh-100m/prompt.txt" \
    --targets "$out/hh-100m/targets.json" --state-bytes 16GiB --json > "$out/hh-100m.json" 2> "$out/hh-100m.time"
cat "$out/hh-100m.json"; echo
grep -E "Maximum resident|Elapsed" "$out/hh-100m.time"

if [ "${ANCHOR:-0}" = 1 ]; then
    echo "== flash-linear-attention anchor"
    py=$(bash scripts/setup-anchor.sh | tail -1)
    "$py" scripts/fla_anchor.py --repeats 5 --json-out "$out/anchor.json" | tail -8
fi
uptime
