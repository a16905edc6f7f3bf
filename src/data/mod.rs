//! Data sets and their preparation: loaders for the standard anomaly-detection layouts, all
//! producing `Sample`s grouped into per-category `Split`s; decoding, Dinomaly's
//! preprocessing, and a prefetching loader on worker threads.

pub mod decode;
pub mod fsutil;
pub mod mvtec;
pub mod prefetch;
pub mod preprocess;
pub mod sample;

pub use sample::{Category, Dataset, ImageSource, Label, MaskSource, RawImage, Sample, Split};
