//! The op table on a real GPU through the cudarc launcher, when this machine has one (and the
//! binary was built with nvcc); elsewhere the test says why it skipped and passes.

mod common;

use common::cuda::gpu;
use common::op_table::{run_table, Storage, Tolerance};

/// The emulator's tolerances (tests/op_table_emu.rs, where the bounds are derived): the
/// kernels are the same, only the GPU's approximate `__expf`, FMA contraction and the tensor
/// cores' summation order differ, all far below bf16 rounding.
const GPU_BF16: Tolerance = Tolerance {
    forward: 1e-2,
    backward: 1e-2,
};
const GPU_BF16_STORE: Tolerance = Tolerance {
    forward: 1.4e-2,
    backward: 1e-2,
};

#[test]
fn cuda_matches_reference_cpu_and_finite_differences() {
    if let Some(g) = gpu() {
        run_table(&g, Storage::Exact, &GPU_BF16);
    }
}

#[test]
fn cuda_with_bf16_activations_matches_reference_cpu_and_finite_differences() {
    if let Some(g) = gpu() {
        run_table(&g, Storage::Activations, &GPU_BF16_STORE);
    }
}
