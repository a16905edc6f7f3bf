//! The op table on the emulated GPU device: every Backend op against the naive f64 reference,
//! the CPU backend and finite differences, through the same kernels and launch code a real
//! GPU runs; once with every operand in f32 storage, once with the models' activations in
//! bf16 storage.

mod common;

use common::op_table::{run_table, Storage, Tolerance};
use kdad::device::gpu::emu::Emu;
use kdad::device::gpu::GpuBackend;

/// The GPU rounds the operands of its tensor-core work (matmul, flash attention's q, k, v,
/// P, dO and dS) to bf16: 8 significant bits, a relative rounding error of at most
/// u = 2^-8 = 3.9e-3 per operand, ~2u per product of two, more where a rounded product feeds
/// another (P·V, and the backward's dS = P∘(dO·Vᵀ - δ) feeding dS·K); errors of independent
/// roundings partly cancel in long sums. Measured worst, relative to the largest output:
/// 5.5e-3 (attention_bwd over 789 tokens) with f32 random inputs; 2.4e-3 (attention_fwd)
/// since the table's inputs are bf16-representable, so that only the rounding of derived
/// values (P, dS, products) remains. Element-wise and reduction kernels are f32 and sit far
/// below this.
const GPU_BF16: Tolerance = Tolerance {
    forward: 1e-2,
    backward: 1e-2,
};

/// With activations stored in bf16, every activation an op writes is rounded once more, by
/// at most u = 2^-8 of its own magnitude, so by at most 2^-8 = 3.9e-3 of the largest output:
/// the forward bound grows by that, 1e-2 + 3.9e-3 < 1.4e-2. The inputs are bf16-representable
/// (the table's random values), so reading them from bf16 adds nothing; backward outputs are
/// gradients (f32), and the one saved activation the table derives rather than draws,
/// attention's output O (in δ = Σ dO·O), is rounded by u per element: δ's error is at most
/// u·Σ|dO·O|, of the order of the bf16 rounding the backward already has. Measured worst:
/// 3.4e-3 forward (attention_fwd over 789 tokens: 2.4e-3 before its output is stored, plus
/// the store), under 2.3e-3 backward.
const GPU_BF16_STORE: Tolerance = Tolerance {
    forward: 1.4e-2,
    backward: 1e-2,
};

#[test]
fn emu_matches_reference_cpu_and_finite_differences() {
    run_table(&GpuBackend::new(Emu::new()), Storage::Exact, &GPU_BF16);
}

#[test]
fn emu_with_bf16_activations_matches_reference_cpu_and_finite_differences() {
    run_table(
        &GpuBackend::new(Emu::new()),
        Storage::Activations,
        &GPU_BF16_STORE,
    );
}
