//! Test code shared by the integration tests. Each tests/*.rs file is its own crate that
//! includes this module and uses part of it (the CPU table test uses `coverage`, a GPU
//! backend's test only `run_table`), hence the dead-code allowance.
#![allow(dead_code)]

pub mod op_table;
pub mod reference;
