//! Test code shared by the integration tests (each tests/*.rs file is its own crate and
//! includes this module, using a different subset of it).
#![allow(dead_code)]

pub mod files;
pub mod op_table;
pub mod reference;

#[allow(unused_imports)] // only the data and eval tests use these
pub use files::*;
