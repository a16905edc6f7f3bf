//! The op table on the emulated GPU device: every Backend op against the naive f64 reference,
//! the CPU backend and finite differences, through the same kernels and launch code a real
//! GPU runs.

mod common;

use common::op_table::{run_table, Tolerance};
use kdad::device::gpu::emu::Emu;
use kdad::device::gpu::GpuBackend;

/// The GPU rounds the operands of its tensor-core work (matmul, flash attention's q, k, v,
/// P, dO and dS) to bf16: 8 significant bits, a relative rounding error of 2^-9 = 2e-3 per
/// operand, ~4e-3 per product of two, more where a rounded product feeds another (P·V, and
/// the backward's dS = P∘(dO·Vᵀ - δ) feeding dS·K). Measured worst, relative to the largest
/// output: 5.5e-3 (attention_bwd over 789 tokens). Element-wise and reduction kernels are f32
/// and sit far below this.
const GPU_BF16: Tolerance = Tolerance {
    forward: 1e-2,
    backward: 1e-2,
};

#[test]
fn emu_matches_reference_cpu_and_finite_differences() {
    run_table(&GpuBackend::new(Emu::new()), &GPU_BF16);
}
