//! The flagship method: one frozen DINOv2 teacher, two heterogeneous students, one Noisy-OR
//! score (research/methods.md §1-2).
//!
//! * [`ed`]: the encoder-decoder student, Dinomaly exactly (patch level, pixel maps).
//! * [`ee`]: the encoder-encoder student, a ViT from scratch regressing the teacher's class
//!   token (image level, semantic anomalies). Our design where the paper is unreadable.
//! * [`noisy_or`]: raw scores to probabilities and their Noisy-OR; which parts are our
//!   reconstruction is written there.
//! * [`train()`]: teacher features cached once ([`cache`]), both students stepped together,
//!   checkpoints, resume, calibration. [`DualStudent`]: load a checkpoint, score images.
//! * [`cli`]: the `kdad train` / `kdad score` / `kdad eval` entry points.
//!
//! Embedding (no global state; any backend):
//! ```no_run
//! # fn main() -> kdad::Result<()> {
//! use kdad::methods::dual_student::{cli::preprocess, DualStudent};
//! use std::sync::Arc;
//! let backend = Arc::new(kdad::device::cpu::Cpu::new());
//! let mut model = DualStudent::load("runs/metal_plate".as_ref(), None, backend)?;
//! let g = kdad::data::preprocess::Geometry { resize: 256, crop: 224 };
//! let img = preprocess(&kdad::data::ImageSource::File("part.png".into()), g)?;
//! for s in model.score_batch(&[img])? {
//!     println!("local {} semantic {} joint {}", s.local, s.semantic, s.joint);
//! }
//! # Ok(())
//! # }
//! ```

pub mod cache;
pub mod cli;
pub mod config;
pub mod ed;
pub mod ee;
pub mod maps;
pub mod model;
pub mod noisy_or;
pub mod teacher;
pub mod train;

pub use config::DualStudentConfig;
pub use model::{DualStudent, Score, METHOD};
pub use noisy_or::{Calibration, Link};
pub use train::{train, TrainOptions, TrainReport};

#[cfg(test)]
mod tests;
