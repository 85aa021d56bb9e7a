//! Streaming windows: where inputs cut them (the generator) and how an
//! operator lines them up across its input edges (the aligner).

mod aligner;
mod generator;
mod stop;

pub(crate) use aligner::{Action, AlignError, Aligner, Disposition, Incoming};
pub(crate) use generator::WindowGenerator;
pub use generator::{WindowMode, WindowStepper};
pub(crate) use stop::{StopAgreement, StopDecision};
