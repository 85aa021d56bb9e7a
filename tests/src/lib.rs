//! Cross-crate integration tests, the compile-fail suite and golden
//! snapshots live in this package's `tests/` directory; the library only
//! makes the README's code a doc test, and the `power-loss-job` binary is
//! the job `tests/power_loss.rs` cuts the power under.

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
