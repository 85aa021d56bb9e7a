//! Example jobs for the checkpoint workspace. Each example is a binary in
//! `src/bin/`; tests that run them live in `tests/`.
