#!/usr/bin/env bash
# Installs a CUDA compiler (nvcc, ptxas, headers) from PyPI into a local virtual
# environment, without a CUDA toolkit, and prints the nvcc path on the last line.
#
#   NVCC=$(bash scripts/install-nvcc.sh | tail -n1) cargo build --release
#
# All five pins matter (DESIGN.md §4): an unpinned nvidia-nvvm brings a newer compiler
# whose PTX (ISA 9.5) a CUDA 13.0 driver and ptxas reject. Running it again is cheap: an
# environment whose nvcc already reports the pinned release is reused as it is.
# LTM_NVCC_VENV overrides the location (default: .venv-nvcc at the repository root).
# `--nvrtc` also installs libnvrtc (nvidia-cuda-nvrtc, same release) into
# site-packages/nvidia/cu13/lib, for examples/nvrtc_check.rs.
set -euo pipefail
with_nvrtc=0
[ "${1:-}" = "--nvrtc" ] && with_nvrtc=1
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LTM_NVCC_VENV:-$root/.venv-nvcc}"
pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)
want_release="release 13.0, V13.0.88"

find_nvcc() {
    local py="$venv/bin/python"
    [ -x "$py" ] || return 1
    local site
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || return 1
    local nvcc="$site/nvidia/cu13/bin/nvcc"
    [ -x "$nvcc" ] || return 1
    "$nvcc" -V 2>/dev/null | grep -q "$want_release" || return 1
    echo "$nvcc"
}

if nvcc="$(find_nvcc)"; then
    echo "install-nvcc: reusing $venv" >&2
else
    python="${PYTHON:-python3}"
    command -v "$python" >/dev/null || { echo "install-nvcc: $python not found" >&2; exit 1; }
    echo "install-nvcc: creating $venv with ${pins[*]}" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
    nvcc="$(find_nvcc)" || {
        echo "install-nvcc: nvcc missing or not $want_release after the install" >&2
        exit 1
    }
fi
if [ $with_nvrtc = 1 ] && ! ls "$(dirname "$nvcc")/../lib/libnvrtc.so."* >/dev/null 2>&1; then
    echo "install-nvcc: adding nvidia-cuda-nvrtc==13.0.88" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nvidia-cuda-nvrtc==13.0.88 >&2
fi
echo "install-nvcc: $("$nvcc" -V | tail -n1)" >&2
echo "$nvcc"
