#!/usr/bin/env python3
"""Reads `cargo build --message-format=json` on stdin and prints the OUT_DIR of the
ltm-engine build script (where build.rs wrote the PTX it embedded)."""
import json
import sys

out = None
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    pid = msg.get("package_id", "")
    if msg.get("reason") == "build-script-executed" and ("#ltm-engine@" in pid or pid.startswith("ltm-engine ")):
        out = msg.get("out_dir")
if not out:
    sys.exit("no build-script-executed message for ltm-engine")
print(out)
