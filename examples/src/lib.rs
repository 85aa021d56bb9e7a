//! Example jobs for the checkpoint workspace. Each example is a binary in
//! `src/bin/`; tests that run them live in `tests/`.
pub mod ads;
/// The `--checkpoints` argument the jobs share (now in `checkpoint-object-store`).
pub use checkpoint_object_store::location;
pub mod metrics;
pub mod progress;
pub mod ride_totals;
pub mod rides;
