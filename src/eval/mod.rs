//! Evaluation: ranking metrics and AUPRO as the papers compute them, anomaly-map
//! post-processing, the generic evaluation driver, and reports (tables, JSON, CSV, heatmaps,
//! ROC plots).

pub mod aupro;
pub mod metrics;
pub mod postprocess;

pub use postprocess::Map;
