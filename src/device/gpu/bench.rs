//! Kernel benchmarks (`kdad bench kernels`).
