//! Data sets and their preparation: loaders for the standard anomaly-detection layouts, all
//! producing `Sample`s grouped into per-category `Split`s; decoding, Dinomaly's
//! preprocessing, and a prefetching loader on worker threads.

pub mod cifar;
pub mod decode;
pub mod elpv;
pub mod folder;
pub mod fsutil;
pub mod idx;
pub mod loco;
pub mod mvtec;
pub mod pickle;
pub mod prefetch;
pub mod preprocess;
pub mod pyrandom;
pub mod realiad;
pub mod sample;
pub mod semantic;
pub mod visa;

pub use sample::{Category, Dataset, ImageSource, Label, MaskSource, RawImage, Sample, Split};
