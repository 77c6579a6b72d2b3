#!/usr/bin/env bash
# Create (or reuse) the Python venv used by scripts/fla_anchor.py and install
# scripts/requirements-anchor.txt into it.  Idempotent: when the venv already
# has the pinned packages, nothing is downloaded.  Progress goes to stderr;
# the last line on stdout is the venv's python path, e.g.
#   PY=$(bash scripts/setup-anchor.sh) && "$PY" scripts/fla_anchor.py --self-check
# Environment: PYTHON (interpreter to create the venv with, default python3),
#              ANCHOR_VENV (venv folder, default <repo>/.venv-anchor).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${ANCHOR_VENV:-$repo/.venv-anchor}"
req="$here/requirements-anchor.txt"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
    echo "setup-anchor: creating venv $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi

check() {
    "$py" - "$req" <<'PYEOF' >&2
import sys, importlib.util
from importlib.metadata import version, PackageNotFoundError
want = {}
for line in open(sys.argv[1]):
    line = line.split('#', 1)[0].strip()
    if '==' in line:
        name, ver = line.split('==', 1)
        want[name.strip()] = ver.strip()
bad = []
for name, ver in want.items():
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != ver:
        bad.append(f"{name}: want {ver}, have {have}")
if bad:
    print("setup-anchor: not up to date: " + "; ".join(bad))
    sys.exit(1)
import torch
x = torch.randn(3) @ torch.randn(3)
spec = importlib.util.find_spec("fla")
import os
naive = os.path.join(os.path.dirname(spec.origin), "ops", "gated_delta_rule", "naive.py")
assert os.path.isfile(naive), naive
PYEOF
}

if check 2>/dev/null; then
    echo "setup-anchor: venv already up to date" >&2
else
    echo "setup-anchor: installing $req (torch pulls the nvidia-* CUDA wheels, ~3 GB)" >&2
    "$py" -m pip install --disable-pip-version-check -q -r "$req" >&2
    check
    echo "setup-anchor: installed" >&2
fi
echo "$py"
