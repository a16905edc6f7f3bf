#!/usr/bin/env bash
# Print one line per (kernel, arch) from the newest build's `ptxas -v` report: registers,
# spill bytes, shared memory. Exits non-zero when any kernel spills, so CI shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
report=$(ls -t target/release/build/kdad-*/out/ptxas-report.txt 2>/dev/null | head -1 || true)
if [ -z "$report" ]; then
  echo "ptxas report: none (built without nvcc)"
  exit 0
fi
awk '
  /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART+1, RLENGTH-2);
                               match($0, /sm_[0-9]+/); arch = substr($0, RSTART, RLENGTH); smem = 0 }
  /spill stores/ { st = $5; ld = $9 }
  /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); regs = substr($0, RSTART+5, RLENGTH-5);
                            if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH-11);
                            printf "%-28s %-6s %4d regs  %6d B smem  spill %d/%d\n", fn, arch, regs, smem, st, ld;
                            if (st + ld > 0) spilled++ ; n++ }
  END { printf "ptxas: %d kernel builds, %d with spills\n", n, spilled + 0; exit (spilled > 0) }
' "$report"
