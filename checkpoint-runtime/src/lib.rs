//! The threaded streaming runtime: DAG builder, operator lifecycle, window
//! generator, checkpoint coordination and recovery.
//!
//! Not built yet: this crate is a placeholder in the workspace so the layout
//! of DESIGN.md is in place. It exports nothing.
