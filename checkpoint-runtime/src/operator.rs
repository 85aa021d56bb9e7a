//! The operator traits: what a user implements.

use std::time::Duration;

use checkpoint_core::{Checkpoint, WindowId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stream::Emitter;

/// What a hook returns: `Err` is a failure of the operator at the current
/// window.
pub type OperatorResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A value that can travel on a stream: sent between threads, shared
/// between subscribers (`Sync`: one batch allocation serves every
/// downstream), cloned for fan-out, and serializable so replay buffers can
/// spill it to disk.
///
/// Implemented for every type with those properties.
pub trait Tuple: Send + Sync + Clone + Serialize + DeserializeOwned + 'static {}

impl<T: Send + Sync + Clone + Serialize + DeserializeOwned + 'static> Tuple for T {}

/// Where an operator emits its output tuples.
///
/// Tuples are collected into batches and sent downstream when a batch is
/// full and at every `end_window`.
pub type Output<'a, T> = &'a mut Emitter<T>;

/// What an input operator's [`emit_tuples`](InputOperator::emit_tuples) says
/// about its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// It emitted and may have more right away.
    Continue,
    /// Nothing is available now; the runtime calls again a little later.
    Idle,
    /// The source is exhausted: the runtime ends the current window and
    /// sends end-of-stream downstream.
    Done,
}

/// What an operator knows about where it runs (Apex's `OperatorContext`).
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Operator, OperatorContext, OperatorResult, Output};
/// use checkpoint_core::Checkpoint;
///
/// #[derive(Default, Checkpoint)]
/// #[checkpoint(stateless)]
/// struct Tagger { tag: String }
///
/// impl Operator for Tagger {
///     type Input = u64;
///     type Output = String;
///     fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
///         self.tag = format!("{}#{}", ctx.operator(), ctx.partition());
///         Ok(())
///     }
///     fn process(&mut self, n: u64, out: Output<'_, String>) -> OperatorResult {
///         out.emit(format!("{} {n}", self.tag));
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct OperatorContext {
    pub(crate) name: String,
    pub(crate) operator: String,
    pub(crate) partition: usize,
    pub(crate) partitions: usize,
    pub(crate) activation_window: WindowId,
    pub(crate) streaming_window: Duration,
    pub(crate) application_window_count: u32,
    pub(crate) checkpoint_window_count: u32,
    pub(crate) storage: Option<std::sync::Arc<dyn checkpoint_core::StorageAgent>>,
}

impl OperatorContext {
    /// The physical operator's name, used for its checkpoints: the logical
    /// name, with `#<partition>` for a partitioned operator (`count#2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The logical operator's name, as given to the DAG.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// This partition's index, 0 for an operator that is not partitioned.
    pub fn partition(&self) -> usize {
        self.partition
    }

    /// The number of partitions of the logical operator.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The window the operator was activated at (Apex's
    /// `ACTIVATION_WINDOW_ID`): the checkpoint it starts from, so its first
    /// window is the one after. For a fresh job this is the initial
    /// checkpoint, just before the job's first window.
    pub fn activation_window(&self) -> WindowId {
        self.activation_window
    }

    /// The length of a streaming window in time-based window mode.
    pub fn streaming_window(&self) -> Duration {
        self.streaming_window
    }

    /// Streaming windows per application window for this operator.
    pub fn application_window_count(&self) -> u32 {
        self.application_window_count
    }

    /// Streaming windows between this operator's checkpoints.
    pub fn checkpoint_window_count(&self) -> u32 {
        self.checkpoint_window_count
    }

    /// The job's storage agent, `None` with checkpointing off. Operators
    /// that keep their own durable records (an idempotent input's window
    /// data, say) store them here, under names of their own that do not
    /// collide with operator names.
    pub fn storage(&self) -> Option<&std::sync::Arc<dyn checkpoint_core::StorageAgent>> {
        self.storage.as_ref()
    }
}

/// An operator: receives tuples of `Input`, keeps state, emits `Output`.
///
/// Its state is its `Checkpoint` implementation (usually derived): the
/// runtime saves it after the `end_window` of every checkpoint window and
/// restores it after a failure, then calls `setup` again so transient
/// resources are re-created.
///
/// The hooks run on the operator's own thread, in this order per
/// application window: `begin_window`, `process` for each tuple,
/// `end_window`; at a checkpoint window `before_checkpoint` then (once the
/// snapshot is durable) `checkpointed`; `committed(W)` between windows once
/// every operator's recovery point has reached `W`; after the last window's
/// `end_window`, once every input has ended, `end_of_stream`.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use checkpoint_runtime::{Operator, OperatorResult, Output};
/// use checkpoint_core::Checkpoint;
///
/// #[derive(Default, Checkpoint)]
/// struct Counter { counts: HashMap<u64, u64> }
///
/// impl Operator for Counter {
///     type Input = u64;
///     type Output = (u64, u64);
///     fn process(&mut self, key: u64, out: Output<'_, (u64, u64)>) -> OperatorResult {
///         let count = self.counts.entry(key).or_default();
///         *count += 1;
///         out.emit((key, *count));
///         Ok(())
///     }
/// }
/// ```
pub trait Operator: Checkpoint + Send + 'static {
    /// The tuples it receives. An operator with several upstreams of
    /// different types uses an enum and wraps on each edge
    /// ([`Dag::connect_with`](crate::Dag::connect_with)).
    type Input: Tuple;
    /// The tuples it emits; `()` for a sink.
    type Output: Tuple;

    /// Called once before the first window, and again after every restore.
    fn setup(&mut self, _ctx: &OperatorContext) -> OperatorResult {
        Ok(())
    }

    /// Called at the start of every application window.
    fn begin_window(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }

    /// Called for every tuple.
    fn process(&mut self, tuple: Self::Input, out: Output<'_, Self::Output>) -> OperatorResult;

    /// Called at the end of every application window.
    fn end_window(&mut self, _out: Output<'_, Self::Output>) -> OperatorResult {
        Ok(())
    }

    /// Called once when every input of the operator has ended, right after
    /// the `end_window` of the last window and still inside it: what it
    /// emits here belongs to that window, and its state afterwards is what
    /// the final checkpoint saves. The place to flush what it holds (open
    /// sessions, unmatched join rows). A failure in the last window replays
    /// it, and this is called again on the restored state.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::BTreeMap;
    ///
    /// use checkpoint_core::Checkpoint;
    /// use checkpoint_runtime::{Operator, OperatorResult, Output};
    ///
    /// /// Sums per key; the sums go out when the stream ends.
    /// #[derive(Default, Checkpoint)]
    /// struct Totals {
    ///     sums: BTreeMap<u64, u64>,
    /// }
    ///
    /// impl Operator for Totals {
    ///     type Input = (u64, u64);
    ///     type Output = (u64, u64);
    ///     fn process(&mut self, (key, n): (u64, u64), _out: Output<'_, (u64, u64)>) -> OperatorResult {
    ///         *self.sums.entry(key).or_default() += n;
    ///         Ok(())
    ///     }
    ///     fn end_of_stream(&mut self, out: Output<'_, (u64, u64)>) -> OperatorResult {
    ///         for (key, sum) in std::mem::take(&mut self.sums) {
    ///             out.emit((key, sum));
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn end_of_stream(&mut self, _out: Output<'_, Self::Output>) -> OperatorResult {
        Ok(())
    }

    /// Called once when the operator stops, whether the job succeeded or not.
    fn teardown(&mut self) {}

    /// Called after `end_window` of a checkpoint window, before the state is
    /// encoded.
    fn before_checkpoint(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }

    /// Called once the checkpoint at `window` is durable.
    fn checkpointed(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }

    /// Called when `window` is committed: no window up to it will ever be
    /// replayed to anyone. Covers every earlier window too.
    fn committed(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }
}

/// An input operator: brings tuples into the job.
///
/// The runtime calls [`emit_tuples`](InputOperator::emit_tuples) in a loop;
/// window boundaries fall between two calls, never inside one.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Emit, InputOperator, OperatorResult, Output};
/// use checkpoint_core::Checkpoint;
///
/// /// Emits 0, 1, 2, ... up to `end`, 100 per call.
/// #[derive(Checkpoint)]
/// struct Numbers { next: u64, end: u64 }
///
/// impl InputOperator for Numbers {
///     type Output = u64;
///     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
///         let stop = (self.next + 100).min(self.end);
///         for n in self.next..stop {
///             out.emit(n);
///         }
///         self.next = stop;
///         Ok(if self.next == self.end { Emit::Done } else { Emit::Continue })
///     }
/// }
/// ```
pub trait InputOperator: Checkpoint + Send + 'static {
    /// The tuples it emits.
    type Output: Tuple;

    /// Called once before the first window, and again after every restore.
    fn setup(&mut self, _ctx: &OperatorContext) -> OperatorResult {
        Ok(())
    }

    /// Called at the start of every application window.
    fn begin_window(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }

    /// Emits what is available now.
    fn emit_tuples(&mut self, out: Output<'_, Self::Output>) -> OperatorResult<Emit>;

    /// Called at the end of every application window.
    fn end_window(&mut self, _out: Output<'_, Self::Output>) -> OperatorResult {
        Ok(())
    }

    /// Called once when the operator stops, whether the job succeeded or not.
    fn teardown(&mut self) {}

    /// Called after `end_window` of a checkpoint window, before the state is
    /// encoded.
    fn before_checkpoint(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }

    /// Called once the checkpoint at `window` is durable.
    fn checkpointed(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }

    /// Called when `window` is committed.
    fn committed(&mut self, _window: WindowId) -> OperatorResult {
        Ok(())
    }
}

/// How an operator recovers from a failure (Apex's processing modes).
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::ProcessingMode;
///
/// assert_eq!(ProcessingMode::default(), ProcessingMode::AtLeastOnce);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ProcessingMode {
    /// The failed operator and everything downstream of it are restored from
    /// their recovery checkpoints and the windows since are replayed: no
    /// window is lost, a window may be processed twice.
    #[default]
    AtLeastOnce,
    /// The failed operator is restored from its newest checkpoint and
    /// rejoins at the start of the next application window: what it missed
    /// is lost, no window is processed twice.
    AtMostOnce,
    /// The operator checkpoints after every application window, durably,
    /// before the next begins: no window is processed twice in its state.
    ExactlyOnce,
}

impl ProcessingMode {
    /// The name used in the job manifest.
    pub fn name(self) -> &'static str {
        match self {
            ProcessingMode::AtLeastOnce => "at-least-once",
            ProcessingMode::AtMostOnce => "at-most-once",
            ProcessingMode::ExactlyOnce => "exactly-once",
        }
    }
}
