#!/usr/bin/env bash
# The test command: set up (nvcc wheels so every kernel is compiled for every shipped arch,
# the default teacher for the golden tests), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-data
. scripts/env.sh
export KDAD_TEACHER="${KDAD_TEACHER:-$PWD/.kdad/weights/dinov2_vits14_imgfocus.safetensors}"
cargo build --release --quiet
bash scripts/ptxas-summary.sh
cargo test --release
