//! Test code shared by the integration tests. Each tests/*.rs file is its own crate that
//! includes this module and uses a different subset of it (the CPU table test uses
//! `coverage`, a GPU backend's test only `run_table`), hence the dead-code allowance.
#![allow(dead_code)]

pub mod cuda;
pub mod files;
pub mod op_table;
pub mod reference;
pub mod vit_step;

#[allow(unused_imports)] // only the data and eval tests use these
pub use files::*;
