//! Training machinery shared by the methods: learning-rate schedules, trainable parameters,
//! optimisers, atomic checkpoints, the step log and progress bar, and the loop that drives
//! them.

pub mod checkpoint;
pub mod optim;
pub mod params;
pub mod progress;
pub mod runner;
pub mod schedule;
