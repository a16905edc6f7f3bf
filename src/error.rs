//! One error type for the library. Every variant names the thing that was wrong and what was
//! expected, so a user can act on the message without reading the code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was handed tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A backend that cannot be used on this machine or build.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// Weights files: missing, unexpected or wrongly shaped tensors, corrupt files.
    #[error("weights {path}: {detail}")]
    Weights { path: PathBuf, detail: String },
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any other invalid input (flags, configs, datasets), with a message naming it.
    #[error("{0}")]
    Invalid(String),
    /// A numerical failure (NaN or Inf loss) that stopped a run.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// A failure inside a device runtime (CUDA driver, emulator).
    #[error("device error: {0}")]
    Device(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for a shape error: `shape_err("matmul", format!(...))`.
pub fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        detail: detail.into(),
    })
}
