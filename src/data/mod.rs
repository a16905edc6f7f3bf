//! Data sets and their preparation: loaders for the standard anomaly-detection layouts, all
//! producing `Sample`s grouped into per-category `Split`s; decoding, Dinomaly's
//! preprocessing, and a prefetching loader on worker threads.
//!
//! Bad input, decided case by case (each message names the file or folder):
//!
//! | case | outcome | why |
//! |---|---|---|
//! | missing data-set or class folder | error when the data set is opened | nothing to evaluate |
//! | empty class folder, no training images, a test set without normal or anomalous images | error when opened | metrics would be undefined or silently skip a class |
//! | defective image without its mask | error when opened | its pixels would count as normal |
//! | unreadable or truncated image or mask | error during evaluation | a score for a missing image would be invented |
//! | mask of another size than its image | error during evaluation | most likely a mis-paired mask |
//! | grey mask with values other than 0 and 255 | warning in the report, every value > 0 anomalous (as Dinomaly) | JPEG or anti-aliased masks are common and still usable |
//!
//! An error stops the evaluation before anything is written, so no earlier report is replaced
//! by a partial one (see `eval::report`).

pub mod cifar;
pub mod decode;
pub mod elpv;
pub mod folder;
pub mod fsutil;
pub mod idx;
pub mod loader;
pub mod loco;
pub mod mvtec;
pub mod open;
pub mod pickle;
pub mod prefetch;
pub mod preprocess;
pub mod pyrandom;
pub mod realiad;
pub mod sample;
pub mod semantic;
pub mod visa;

pub use open::{open_dataset, DATASETS};
pub use sample::{Category, Dataset, ImageSource, Label, MaskSource, RawImage, Sample, Split};
