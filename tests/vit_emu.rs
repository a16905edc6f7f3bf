//! The tiny ViT checks of `common::vit_step` on the emulated GPU and on the CPU with bf16
//! matmuls.

mod common;

use common::vit_step::{frozen_bf16_matches_f32_cpu, matches_f32_cpu};
use kdad::device::cpu::{Cpu, Precision};
use kdad::device::gpu::{emu::Emu, GpuBackend};

#[test]
fn tiny_frozen_vit_forward_on_emu_with_bf16_weights_matches_cpu() {
    frozen_bf16_matches_f32_cpu(&GpuBackend::new(Emu::new()));
}

#[test]
fn tiny_vit_training_step_on_emu_matches_cpu() {
    matches_f32_cpu(&GpuBackend::new(Emu::new()));
}

/// The CPU backend with bf16 matmul operands: the same class of rounding as the emulated
/// device (bf16 GEMM and attention operands) minus the bf16 activation storage, so the same
/// bounds hold.
#[test]
fn tiny_vit_training_step_with_bf16_cpu_matmuls_matches_f32_cpu() {
    matches_f32_cpu(&Cpu::with_precision(Precision::Bf16));
}
