#!/usr/bin/env bash
# Runs one ltm-engine binary over a fixed set of `run` commands and records what must
# not change across a refactor: output digests, the JSON summaries' numbers (timings
# and peak memory removed) and the state files. Compare two records with `diff -r`
# and `cmp`:
#
#   scripts/compare-runs.sh OLD_BINARY /tmp/runs-old
#   scripts/compare-runs.sh target/release/ltm-engine /tmp/runs-new
#   diff -r /tmp/runs-old /tmp/runs-new && echo identical
#
# The text is generated deterministically (no download), about 4 MB for the built-in
# models and 200 KB for the tiny language model in tests/fixtures.
set -euo pipefail
bin=$(realpath "$1")
out=$2
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Words, punctuation, non-ASCII letters, blank and indented lines, long words.
python3 - "$work/text.txt" "$work/small.txt" <<'PY'
import random, sys
rng = random.Random(20261130)
words = ["alpha", "beta", "Grüße", "world", "x_1", "naïve", "42", "the", "memory",
         "ÉCOLE", "данные", "漢字", "key", "value", "averyveryverylongwordthatiscut"]
punct = [",", ".", ";", "!", "?", " =", " (", ")", "'", "\""]
def text(nbytes):
    parts, n = [], 0
    while n < nbytes:
        line = " ".join(rng.choice(words) + (rng.choice(punct) if rng.random() < 0.2 else "")
                        for _ in range(rng.randint(0, 14)))
        if rng.random() < 0.05:
            line = "    " + line
        line += "\n"
        parts.append(line)
        n += len(line.encode())
    return "".join(parts)
open(sys.argv[1], "w", encoding="utf-8").write(text(4 << 20))
open(sys.argv[2], "w", encoding="utf-8").write(text(200 << 10))
PY

# The summary's numbers, timings and peak memory left out.
keep() { jq -S 'del(.wall_seconds, .tokens_per_second, .compute_seconds, .forward_seconds, .peak_host_bytes, .peak_device_bytes, .file)' ; }
run() { name=$1; shift; "$bin" run --json "$@" | keep > "$out/$name.json"; }

t=$work/text.txt
s=$work/small.txt
for m in memory random-features; do
  run "$m-whole" --model $m --context-file "$t" --digest --device cpu --state-bytes 64MiB --save-state "$out/$m-whole.state"
  run "$m-cp" --model $m --context-file "$t" --digest --device cpu --state-bytes 64MiB --checkpoint-every 100000 --save-state "$out/$m-cp.state"
  run "$m-part1" --model $m --context-file "$t" --digest --device cpu --state-bytes 64MiB --max-tokens 300000 --save-state "$out/$m-split.state"
  cp "$out/$m-split.state" "$out/$m-part1.state"
  run "$m-part2" --model $m --context-file "$t" --digest --device cpu --state-bytes 64MiB --load-state "$out/$m-split.state" --resume --save-state "$out/$m-split-end.state"
  run "$m-window" --model $m --context-file "$t" --digest --device cpu --state-bytes 64MiB --window-tokens 1000 --window-bytes 100KiB
done
for f in u32 bytes; do
  head -c 1000000 "$t" > "$work/ids.$f"
  run "rf-$f" --model random-features --format $f --context-file "$work/ids.$f" --digest --device cpu --save-state "$out/rf-$f.state"
done
lm=$here/tests/fixtures/gdn-tiny
run lm-whole --model "$lm" --context-file "$s" --device cpu --segment-tokens 5000 --save-state "$out/lm-whole.state"
run lm-cp --model "$lm" --context-file "$s" --device cpu --checkpoint-every 7000 --window-bytes 8KiB --save-state "$out/lm-cp.state"
run lm-part1 --model "$lm" --context-file "$s" --device cpu --max-tokens 20000 --save-state "$out/lm-split.state"
cp "$out/lm-split.state" "$out/lm-part1.state"
run lm-part2 --model "$lm" --context-file "$s" --device cpu --load-state "$out/lm-split.state" --resume --save-state "$out/lm-split-end.state"
run lm-noppl --model "$lm" --context-file "$s" --device cpu --no-perplexity --max-tokens 10000 --window-tokens 100
sha256sum "$out"/*.state | sed "s#$out/##" > "$out/states.sha256"
echo "recorded in $out"
