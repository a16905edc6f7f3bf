#!/usr/bin/env bash
# The GPU checks, run on a machine with an NVIDIA GPU but no Rust toolchain, from the bundle
# scripts/gpu-bundle.sh builds (default .dev/): correctness first (the op table and the tiny
# ViT step against the CPU reference, the tiny step under compute-sanitizer), then speed
# (every kernel, the ViT forward, the training step), an end-to-end train + eval when the
# bundle holds a teacher and data, and the PyTorch peer on the same GPU when python3 has
# torch and timm. Each step has a time limit and the next runs whatever happened; the log is
# written to $OUT/gpu-check.log (or /tmp) as it goes.
set -uo pipefail
bundle=$(realpath "${1:-.dev}")
out=${OUT:-/tmp}
log=$out/gpu-check.log
exec > >(tee -a "$log") 2>&1
bin=$(mktemp -d)/bin
tar -C "$(dirname "$bin")" -xzf "$bundle/bin.tar.gz"

step() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $?, $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
# cuBLASLt comes from the CUDA toolkit or a pip wheel; cudarc dlopens it by name.
if ! ldconfig -p | grep -q 'libcublasLt\.so\.13'; then
    lt=$(find /usr/local /usr/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
    [ -n "$lt" ] && export LD_LIBRARY_PATH=$(dirname "$lt")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
echo "cuBLASLt: ${lt:-from ldconfig}"
# cuBLASLt prints why a call it refuses is invalid (level 1: errors only; 2 and up trace
# every call).
export CUBLASLT_LOG_LEVEL=${CUBLASLT_LOG_LEVEL:-1}

step "kdad info" 30 "$bin/kdad" info
step "op table on cuda" 240 "$bin/op_table_cuda" --nocapture
step "tiny ViT on cuda" 120 "$bin/vit_cuda" --nocapture
if command -v compute-sanitizer >/dev/null; then
    step "tiny ViT under compute-sanitizer" 240 compute-sanitizer --error-exitcode 9 \
        "$bin/vit_cuda" tiny_vit_training_step
    step "a ViT-S training step under compute-sanitizer" 90 compute-sanitizer --error-exitcode 9 \
        "$bin/kdad" --device cuda bench train-step --model s14 --steps 1
fi
step "bench kernels" 180 "$bin/kdad" --device cuda bench kernels
step "bench vit B/14 224" 120 "$bin/kdad" --device cuda bench vit --batch 1,8,32,64,128 --reps 20
step "bench vit B/14 392" 120 "$bin/kdad" --device cuda bench vit --size 392 --batch 1,8,32 --reps 20
step "bench vit S/14 224" 120 "$bin/kdad" --device cuda bench vit --model s14 --batch 1,64 --reps 20
for b in 2 16; do
    step "bench train-step batch $b" 120 "$bin/kdad" --device cuda bench train-step --batch "$b" --steps 10
done
# Where the time goes: GPU time per kernel and GEMM shape (warm-up included).
export KDAD_CUDA_PROFILE=1
step "profile vit B/14 224 batch 64" 60 "$bin/kdad" --device cuda bench vit --batch 64 --reps 3
step "profile train-step batch 16" 60 "$bin/kdad" --device cuda bench train-step --batch 16 --steps 3
unset KDAD_CUDA_PROFILE
if [ -e "$bundle/teacher.safetensors" ] && [ -d "$bundle/data" ]; then
    run=/tmp/kdad-e2e
    rm -rf "$run"
    step "train on cuda" 240 "$bin/kdad" --device cuda train --root "$bundle/data" \
        --teacher "$bundle/teacher.safetensors" --out "$run" --steps "${E2E_STEPS:-120}"
    step "eval on cuda" 180 "$bin/kdad" --device cuda eval --checkpoint "$run" \
        --root "$bundle/data" --out "$run/eval"
    cp "$run"/eval/*.json "$out/" 2>/dev/null
fi
if python3 -c 'import torch, timm' 2>/dev/null; then
    step "PyTorch peer" 300 python3 "$bundle/torch_gpu.py" --peer-dir "$bundle"
fi
# Why the attention kernels run where they do: Nsight Compute's speed-of-light, occupancy and
# warp-stall sections for the first launches of each (one replayed launch each).
if command -v ncu >/dev/null; then
    step "ncu attention kernels" 180 ncu --clock-control none -k 'regex:flash_attn|linear_attn' -c 5 \
        --section SpeedOfLight --section Occupancy --section WarpStateStats \
        "$bin/kdad" --device cuda bench kernels --reps 1
fi
