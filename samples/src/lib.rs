//! Remora's samples: runnable programs for a newcomer to read first.
//!
//! The programs are binaries (`src/bin/`); start with `demo`:
//!
//! ```text
//! cargo run --release -p remora-samples --bin demo
//! ```
//!
//! The library holds [`cluster::LocalCluster`], which the multi-process samples use
//! to start their node processes, and the check that keeps the README honest: its
//! Rust examples are compiled and run as doc tests of this crate.

pub mod args;
pub mod cluster;

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
