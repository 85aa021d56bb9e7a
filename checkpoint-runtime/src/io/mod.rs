//! Exactly-once I/O: an idempotent input and an exactly-once sink, the two
//! ends DESIGN.md's "Failure and recovery" builds end-to-end exactly-once
//! output from (with the default AT_LEAST_ONCE processing in between).
//!
//! - [`WindowDataManager`] (Apex's `WindowDataManager`) records, durably and
//!   per window, what an input read, so a window replayed after a failure or
//!   a restart emits exactly the same tuples.
//! - [`LineInput`] reads a text file line by line on top of it, recording
//!   each window's byte range.
//! - [`ExactlyOnceFileSink`] writes each window to a pending file, makes the
//!   pending files durable with every checkpoint and publishes a window (an
//!   atomic rename) once it is committed, skipping windows it already
//!   published; [`read_output`] reads what it published.
//!
//! Replay is exact only if every operator between the two is deterministic
//! per window: the same tuples in the same window give the same output, in
//! the same order. Keyed results collected in a `HashMap` must be emitted
//! sorted (a `HashMap`'s iteration order differs between processes).
//!
//! # Examples
//!
//! A file -> per-window line count -> published files, checkpointed to a
//! directory:
//!
//! ```
//! use checkpoint_core::{Checkpoint, FsStorageAgent};
//! use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput, read_output};
//! use checkpoint_runtime::{Config, Dag, Operator, OperatorResult, Output, Runtime, WindowMode};
//!
//! /// Emits, at the end of every window, how many lines it saw.
//! #[derive(Default, Checkpoint)]
//! struct LinesPerWindow {
//!     lines: u64,
//! }
//!
//! impl Operator for LinesPerWindow {
//!     type Input = String;
//!     type Output = u64;
//!     fn process(&mut self, _line: String, _out: Output<'_, u64>) -> OperatorResult {
//!         self.lines += 1;
//!         Ok(())
//!     }
//!     fn end_window(&mut self, out: Output<'_, u64>) -> OperatorResult {
//!         out.emit(std::mem::take(&mut self.lines));
//!         Ok(())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let text = dir.path().join("input.txt");
//! std::fs::write(&text, "a\nb\nc\nd\ne\n")?;
//! let out = dir.path().join("out");
//!
//! let mut dag = Dag::new();
//! let lines = dag.input("lines", LineInput::new(&text).lines_per_call(1));
//! let count = dag.operator("count", LinesPerWindow::default());
//! let sink = dag.operator("sink", ExactlyOnceFileSink::<u64>::new(&out));
//! dag.connect(&lines, &count).connect(&count, &sink);
//! Runtime::new(
//!     Config::default()
//!         .storage(FsStorageAgent::new(dir.path().join("checkpoints"))?)
//!         .window_mode(WindowMode::Tuples(2)),
//! )
//! .run(dag)?;
//! // Windows of 2, 2 and 1 lines, each published as its own file.
//! assert_eq!(read_output(&out)?, b"2\n2\n1\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod file_sink;
mod line_input;
mod sort_window;
mod window_data;

pub use error::FileOperatorError;
pub use file_sink::{ExactlyOnceFileSink, published_windows, read_output};
pub use line_input::LineInput;
pub use sort_window::SortWindow;
pub use window_data::{WindowDataError, WindowDataManager};
