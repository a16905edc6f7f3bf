//! The tiny ViT checks of `common::vit_step` on a real GPU, when this machine has one (and
//! the binary was built with nvcc); elsewhere each test says why it skipped and passes. The
//! bounds are the emulator's: the GPU differs from it only by its approximate `__expf`, FMA
//! contraction and the tensor cores' summation order, all far below bf16 rounding.

mod common;

use common::cuda::gpu;

use common::vit_step::{frozen_bf16_matches_f32_cpu, matches_f32_cpu};

#[test]
fn tiny_frozen_vit_forward_on_cuda_with_bf16_weights_matches_cpu() {
    if let Some(g) = gpu() {
        frozen_bf16_matches_f32_cpu(&g);
    }
}

#[test]
fn tiny_vit_training_step_on_cuda_matches_cpu() {
    if let Some(g) = gpu() {
        matches_f32_cpu(&g);
    }
}
