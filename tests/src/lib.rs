//! Cross-crate integration tests, the compile-fail suite and golden
//! snapshots live in this package's `tests/` directory; the library only
//! makes the README's code a doc test.

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
