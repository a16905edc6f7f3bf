#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler wheels into a Python venv and prints nvcc's path.
#
# Why pinned: nvcc 13.0 writes PTX ISA 9.0, the newest that the GPU machines' driver (580,
# CUDA 13.0) can JIT; a newer nvcc's PTX fails to load there. cccl is needed because
# cuda_bf16.h includes <nv/target>.
#
# Usage: scripts/setup-nvcc.sh [VENV_DIR]   (default: .venv in the repository root)
# Idempotent: does nothing when the venv already holds nvcc 13.0.88.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo_root/.venv}"
want="13.0.88"
wheels=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-cuda-runtime==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-cccl==13.0.85"
)

# The wheels put the toolkit under site-packages/nvidia/cu13; the python3.X part varies.
find_nvcc() {
    local candidate
    for candidate in "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
        if [[ -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# nvcc 13.0.88 alone is not enough: bf16 kernels also need cccl's <nv/target>.
is_complete() {
    local nvcc="$1"
    "$nvcc" --version 2>/dev/null | grep -q "V$want" &&
        [[ -e "$(dirname "$nvcc")/../include/nv/target" ]]
}

if nvcc="$(find_nvcc)" && is_complete "$nvcc"; then
    echo "$nvcc"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv $venv" >&2
    python3 -m venv "$venv"
fi
echo "installing ${wheels[*]} into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${wheels[@]}" >&2

if ! nvcc="$(find_nvcc)" || ! is_complete "$nvcc"; then
    echo "error: nvcc $want with cccl headers not found under $venv after installing" >&2
    exit 1
fi
# build.rs looked for nvcc when it last ran and cannot watch a venv that did not exist yet:
# make the next cargo build run it again, so that the kernels get compiled.
touch "$repo_root/build.rs"
echo "$nvcc"
