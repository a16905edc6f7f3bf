//! The flagship method: one frozen DINOv2 teacher, two heterogeneous students, one Noisy-OR
//! score (research/methods.md §1-2).

pub mod config;
pub mod noisy_or;

pub use config::DualStudentConfig;
pub use noisy_or::{Calibration, Link};
