//! Example jobs for the checkpoint workspace. Each example is a binary in
//! `src/bin/`; tests that run them live in `tests/`.
pub mod ads;
pub mod location;
pub mod metrics;
pub mod progress;
pub mod ride_totals;
pub mod rides;
