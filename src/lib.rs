//! kdad: visual anomaly detection by knowledge distillation from a frozen DINOv2 ViT teacher,
//! on a CPU backend (the numerical reference) and hand-written CUDA kernels.

pub mod atomic;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod info;
pub mod methods;
pub mod tensor;
pub mod train;
pub mod vit;

pub use error::{Error, Result};
