//! Remora's samples: runnable programs for a newcomer to read first.
//!
//! The programs are binaries (`src/bin/`); start with `demo`:
//!
//! ```text
//! cargo run --release -p remora-samples --bin demo
//! ```
//!
//! The multi-process samples start their node processes with `LocalCluster`, from
//! the `remora-testing` crate. The library holds their argument helpers and the
//! check that keeps the README honest: its Rust examples are compiled and run as
//! doc tests of this crate.

pub mod args;

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
