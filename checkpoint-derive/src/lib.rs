//! `#[derive(Checkpoint)]` for `checkpoint-core`.
//!
//! The derive itself lands with the derive issue; until then this crate
//! exports nothing, and `checkpoint-core`'s `derive` feature re-exports
//! nothing from it.
