#!/usr/bin/env bash
# Builds the bundle scripts/gpu-check.sh runs on a GPU machine without a Rust toolchain, into
# .dev/ (git-ignored through .git/info/exclude): stripped release builds of kdad and the CUDA
# tests, the PyTorch peer, and with --e2e a bf16 copy of the teacher and a downsized MVTec-layout
# category for an end-to-end run (to stay inside a transfer limit).
# Usage: scripts/gpu-bundle.sh [--e2e TEACHER.safetensors CATEGORY_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
out=.dev
rm -rf "$out"
mkdir -p "$out/bin"
cargo build --release --quiet
cp target/release/kdad "$out/bin/"
for t in op_table_cuda vit_cuda; do
    exe=$(cargo test --release --no-run --message-format=json --test "$t" 2>/dev/null |
        python3 -c 'import sys, json
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m["target"]["name"] == sys.argv[1]: print(m["executable"])' "$t")
    cp "$exe" "$out/bin/$t"
done
strip "$out"/bin/*
# Compressed: the binaries are mostly embedded fatbins, which shrink to a third.
tar -C "$out" -czf "$out/bin.tar.gz" bin
rm -r "$out/bin"
cp benches/peer/torch_gpu.py "$out/"
peer=../shared/peer/peer_train_cpu.py
[ -e "$peer" ] && cp "$peer" "$out/"
if [ "${1:-}" = "--e2e" ]; then
    .venv/bin/python scripts/dev/to_bf16.py "$2" "$out/teacher.safetensors"
    .venv/bin/python scripts/dev/shrink_mvtec.py "$3" 256 "$out/data"
fi
du -sh "$out"
