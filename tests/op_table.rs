//! The op table on the CPU backend: every Backend op against a naive f64 reference, every
//! backward against finite differences, every operand against a wrong shape.

mod common;

use common::op_table::{coverage, run_table, Storage, Tolerance};
use kdad::device::cpu::Cpu;

/// f32 arithmetic with f64 row reductions: errors are a few f32 ulps of the largest value,
/// amplified by long dot products (k = 768) and by the f32 inputs the backward receives.
const CPU_F32: Tolerance = Tolerance {
    forward: 2e-5,
    backward: 2e-5,
};

#[test]
fn cpu_matches_reference_and_finite_differences() {
    run_table(&Cpu::new(), Storage::Activations, &CPU_F32);
}

#[test]
fn table_covers_every_backend_op() {
    coverage(include_str!("../src/device/mod.rs"));
}
