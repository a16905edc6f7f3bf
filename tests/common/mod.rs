//! Test code shared by the integration tests (each tests/*.rs file is its own crate and
//! includes this module).

pub mod op_table;
pub mod reference;
