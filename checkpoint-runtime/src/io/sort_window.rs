//! A window's tuples in sorted order: deterministic output from fan-in or
//! partitioned upstreams, whose batches interleave differently every run.

use std::fmt;

use checkpoint_core::{Checkpoint, WindowId};

use crate::operator::{Operator, OperatorResult, Output, Tuple};

/// Collects each application window's tuples from all its upstreams and
/// emits them sorted (by `Ord`; equal tuples in any order, which makes no
/// difference to what follows) at the window's end. Stateless: it holds
/// nothing between windows, so it is never saved, and a replayed window is
/// collected again.
///
/// Put it in front of an exactly-once sink fed by several partitions or
/// several upstreams, whose tuples otherwise arrive in an order that varies
/// from run to run (and so from a failure's replay to the first attempt).
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, MemoryStorageAgent};
/// use checkpoint_runtime::io::{ExactlyOnceFileSink, SortWindow, read_output};
/// use checkpoint_runtime::{Config, Dag, Emit, InputOperator, OperatorResult, Output, Runtime, WindowMode};
///
/// #[derive(Checkpoint)]
/// struct Numbers {
///     next: u64,
/// }
///
/// impl InputOperator for Numbers {
///     type Output = u64;
///     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
///         out.emit(9 - self.next);
///         self.next += 1;
///         Ok(if self.next == 10 { Emit::Done } else { Emit::Continue })
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let mut dag = Dag::new();
/// let numbers = dag.input("numbers", Numbers { next: 0 });
/// let sorted = dag.operator("sorted", SortWindow::<u64>::new());
/// let sink = dag.operator("sink", ExactlyOnceFileSink::<u64>::new(dir.path()));
/// dag.connect(&numbers, &sorted).connect(&sorted, &sink);
/// Runtime::new(Config::default().storage(MemoryStorageAgent::new()).window_mode(WindowMode::Tuples(5))).run(dag)?;
/// // Each window of 5 sorted: 9 8 7 6 5 | 4 3 2 1 0.
/// assert_eq!(read_output(dir.path())?, b"5\n6\n7\n8\n9\n0\n1\n2\n3\n4\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Checkpoint)]
#[checkpoint(stateless)]
pub struct SortWindow<T> {
    tuples: Vec<T>,
}

impl<T> SortWindow<T> {
    /// An empty sorter.
    pub fn new() -> Self {
        SortWindow { tuples: Vec::new() }
    }
}

impl<T> Default for SortWindow<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for SortWindow<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SortWindow").field("held", &self.tuples.len()).finish()
    }
}

impl<T: Tuple + Ord> Operator for SortWindow<T> {
    type Input = T;
    type Output = T;

    fn begin_window(&mut self, _window: WindowId) -> OperatorResult {
        self.tuples.clear();
        Ok(())
    }

    fn process(&mut self, tuple: T, _out: Output<'_, T>) -> OperatorResult {
        self.tuples.push(tuple);
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, T>) -> OperatorResult {
        self.tuples.sort_unstable();
        for tuple in self.tuples.drain(..) {
            out.emit(tuple);
        }
        Ok(())
    }
}
