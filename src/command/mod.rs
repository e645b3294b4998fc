//! The commands beside `sluice run` that the CLI (`main.rs`) dispatches to. `run` itself is
//! [`crate::topology::run`].

pub mod check;
