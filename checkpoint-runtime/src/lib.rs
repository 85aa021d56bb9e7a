//! The threaded streaming runtime: a DAG of operators, each on its own
//! thread (or chained on its upstream's), with streaming windows,
//! window-aligned checkpoints, committed windows, and the replay buffers that
//! recovery builds on. The semantics are Apache Apex's; DESIGN.md is the
//! contract.
//!
//! # Examples
//!
//! A complete job: numbers -> running sum, checkpointed to a directory.
//!
//! ```
//! use checkpoint_core::{Checkpoint, FsStorageAgent};
//! use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};
//!
//! #[derive(Checkpoint)]
//! struct Numbers { next: u64, end: u64 }
//! impl InputOperator for Numbers {
//!     type Output = u64;
//!     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
//!         if self.next == self.end {
//!             return Ok(Emit::Done);
//!         }
//!         out.emit(self.next);
//!         self.next += 1;
//!         Ok(Emit::Continue)
//!     }
//! }
//!
//! #[derive(Default, Checkpoint)]
//! struct Sum { total: u64 }
//! impl Operator for Sum {
//!     type Input = u64;
//!     type Output = ();
//!     fn process(&mut self, n: u64, _out: Output<'_, ()>) -> OperatorResult {
//!         self.total += n;
//!         Ok(())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let mut dag = Dag::new();
//! let numbers = dag.input("numbers", Numbers { next: 0, end: 1_000 });
//! let sum = dag.operator("sum", Sum::default());
//! dag.connect(&numbers, &sum).default_checkpoint_window_count(4);
//! let report = Runtime::new(
//!     Config::default()
//!         .storage(FsStorageAgent::new(dir.path())?)
//!         .window_mode(WindowMode::Tuples(100)),
//! )
//! .run(dag)?;
//! assert_eq!(report.operator("sum").map(|o| o.tuples_in), Some(1_000));
//! assert!(report.committed.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `testing` (off by default): the `testing` module, to call an
//!   operator's hooks by hand in a unit test without running a job
//!   (`testing::TestOutput`, `OperatorContext::for_test`). It is test
//!   support, not a stable API: enable it for dev-dependencies only,
//!   `checkpoint-runtime = { version = "0.1", features = ["testing"] }`.
#![warn(clippy::unwrap_used)]

mod config;
pub mod coordinator;
mod dag;
mod error;
mod failure;
mod fault;
mod fence;
pub mod io;
mod manifest;
mod metrics;
mod operator;
pub mod portable;
mod protocol;
mod recovery_plan;
mod replay;
mod runtime;
mod stream;
mod supervisor;
mod task;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod window;

pub use checkpoint_core::StableHash;
pub use config::{Config, DEFAULT_RESTART_LIMIT, RecoveryScope};
pub use dag::{DEFAULT_CHECKPOINT_WINDOW_COUNT, Dag, MAX_PHYSICAL_NAME_LEN, NoInput, Node};
pub use error::{DagError, RunError};
pub use fault::{Fault, FaultKind, FaultPoint};
pub use manifest::{
    JobManifest, MANIFEST_FORMAT, MANIFEST_HISTORY, ManifestCheckpoint, ManifestEdge, ManifestOperator, ManifestRescale,
};
pub use metrics::{CheckpointRecord, OperatorReport, Progress, ProgressSnapshot, Recovery, RunReport};
pub use operator::{Emit, InputOperator, Operator, OperatorContext, OperatorResult, Output, ProcessingMode, Tuple};
pub use recovery_plan::{BadCheckpoint, RestorePoint, StoredOperator, StoredPlan, plan_from_storage};
pub use runtime::{Runtime, StopHandle};
pub use stream::Emitter;
pub use window::{WindowMode, WindowStepper};
