# Sourced by the other scripts: point the build at the pinned nvcc in .venv when present, so
# build.rs compiles the fatbins (NVCC is one of its rerun triggers, so setting it here also
# rebuilds the kernels after the wheels were installed).
for _nvcc in "$PWD"/.venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc; do
  if [ -x "$_nvcc" ]; then export NVCC="$_nvcc"; fi
done
unset _nvcc
