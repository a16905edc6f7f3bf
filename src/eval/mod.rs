//! Evaluation: ranking metrics and AUPRO as the papers compute them, anomaly-map
//! post-processing, the generic evaluation driver, and reports (tables, JSON, CSV, heatmaps,
//! ROC plots).

pub mod aupro;
pub mod driver;
pub mod heatmap;
pub mod metrics;
pub mod postprocess;
pub mod report;
pub mod roc_plot;

pub use driver::{evaluate, EvalOptions, ImageScore, PreparedImage, Scored};
pub use postprocess::Map;
pub use report::Report;
