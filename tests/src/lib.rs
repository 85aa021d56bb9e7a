//! Cross-crate integration tests, the compile-fail suite and golden
//! snapshots live in this package's `tests/` directory; the library is empty.
