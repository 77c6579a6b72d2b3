#!/usr/bin/env bash
# Create (or reuse) the Python venv used by scripts/fla_cpu_prefill.py (flash-linear-attention
# 0.6.0's own Gated DeltaNet model on the CPU) and install scripts/requirements-fla-cpu.txt into
# it: the ordinary pins first, then the lines marked "# no-deps" with `pip install --no-deps`.
# Idempotent: when the venv already has every pinned version and fla's model imports with
# scripts/fla_cpu_patch.py, nothing is downloaded.  Progress goes to stderr; the last line on
# stdout is the venv's python path, e.g.
#   PY=$(bash scripts/setup-fla-cpu.sh) && "$PY" scripts/fla_cpu_prefill.py --model tests/fixtures/gdn-tiny
# Environment: PYTHON (interpreter to create the venv with, default python3; 3.11 tested),
#              FLA_VENV (venv folder, default <repo>/.venv-fla).
# A fresh install downloads about 3 GB (torch's CUDA wheels: PyPI has no CPU-only x86_64 torch).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${FLA_VENV:-$repo/.venv-fla}"
req="$here/requirements-fla-cpu.txt"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
    echo "setup-fla-cpu: creating venv $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
grep -v '# *no-deps' "$req" > "$tmp/deps.txt"
grep '# *no-deps' "$req" | sed 's/#.*//' > "$tmp/nodeps.txt"

check() {
    "$py" - "$req" "$here" <<'PYEOF' >&2
import sys
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
    print("setup-fla-cpu: not up to date: " + "; ".join(bad))
    sys.exit(1)
sys.path.insert(0, sys.argv[2])
import torch
import fla_cpu_patch  # noqa: F401
from fla.models import GatedDeltaNetForCausalLM  # noqa: F401
x = torch.randn(3) @ torch.randn(3)
PYEOF
}

if check 2>/dev/null; then
    echo "setup-fla-cpu: venv already up to date" >&2
else
    echo "setup-fla-cpu: installing $req (torch pulls the nvidia-* CUDA wheels, ~3 GB)" >&2
    pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@" >&2; }
    pip_install -r "$tmp/deps.txt"
    pip_install --no-deps -r "$tmp/nodeps.txt"
    check
    echo "setup-fla-cpu: installed" >&2
fi
echo "$py"
