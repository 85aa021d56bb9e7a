//! Errors of building and running a job.

use checkpoint_core::{StorageError, WindowId};

/// A DAG that cannot run, found when it is built (before any thread
/// starts).
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Dag, DagError};
///
/// let dag = Dag::new(); // no input operator
/// let errors = dag.validate().unwrap_err();
/// assert!(errors.contains(&DagError::NoInput));
/// assert!(errors[0].to_string().contains("Dag::input"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    /// Two operators share a name.
    #[error("duplicate operator name {0:?}: every operator needs its own name (its checkpoints are stored under it)")]
    DuplicateName(String),
    /// Two operator names differ only by case (`Count` and `count`): on a
    /// case-insensitive file system (macOS, Windows) their checkpoints
    /// would share one directory.
    #[error(
        "operator names {first:?} and {second:?} differ only by case: on a case-insensitive file system their \
         checkpoints would be stored in one directory; rename one of them"
    )]
    NamesDifferOnlyInCase {
        /// The name added first.
        first: String,
        /// The name added later.
        second: String,
    },
    /// An operator name cannot name its checkpoints.
    #[error("invalid operator name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The DAG has no input operator.
    #[error("the DAG has no input operator: add one with `Dag::input`")]
    NoInput,
    /// An operator has no upstream, or an input has no downstream.
    #[error("operator {0:?} is not connected: an operator needs an upstream and an input a downstream")]
    Unconnected(String),
    /// The edges form a cycle.
    #[error("the DAG has a cycle through {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A checkpoint window count is not a multiple of an application window count.
    #[error(
        "operator {operator:?}: checkpoint window count {checkpoint} is not a multiple of its application window \
         count {application}; checkpoints can only be taken at application window boundaries"
    )]
    CheckpointNotAligned {
        /// The operator.
        operator: String,
        /// Its checkpoint window count.
        checkpoint: u32,
        /// Its application window count.
        application: u32,
    },
    /// A window count or partition count of zero.
    #[error("operator {operator:?}: {what} must be at least 1")]
    Zero {
        /// The operator.
        operator: String,
        /// Which setting.
        what: &'static str,
    },
    /// A plain edge into a partitioned operator.
    #[error(
        "operator {downstream:?} has {partitions} partitions: connect {upstream:?} to it with `connect_by_key`, \
         so each tuple goes to one partition"
    )]
    PartitionedNeedsKey {
        /// The upstream.
        upstream: String,
        /// The partitioned downstream.
        downstream: String,
        /// Its partition count.
        partitions: usize,
    },
    /// A thread-local edge that cannot be one.
    #[error("thread-local edge {upstream:?} -> {downstream:?}: {reason}")]
    ThreadLocal {
        /// The upstream.
        upstream: String,
        /// The downstream.
        downstream: String,
        /// Why not.
        reason: &'static str,
    },
    /// An operator downstream of an AT_MOST_ONCE or EXACTLY_ONCE operator
    /// that is not AT_MOST_ONCE.
    #[error(
        "operator {downstream:?} is {downstream_mode} but its upstream {upstream:?} is {upstream_mode}: operators \
         downstream of an at-most-once or exactly-once operator must be at-most-once (set \
         `dag.processing_mode(&node, ProcessingMode::AtMostOnce)`)"
    )]
    ProcessingMode {
        /// The upstream.
        upstream: String,
        /// Its mode.
        upstream_mode: &'static str,
        /// The downstream.
        downstream: String,
        /// Its mode.
        downstream_mode: &'static str,
    },
    /// An edge names an operator handle from another DAG.
    #[error("an edge refers to an operator that is not in this DAG")]
    ForeignNode,
}

/// Why a job did not run to completion.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Config, Dag, RunError, Runtime};
///
/// match Runtime::new(Config::default()).run(Dag::new()) {
///     Err(RunError::Dag(e)) => println!("cannot run: {e}"),
///     Err(RunError::OperatorFailed { operator, window, cause, .. }) => {
///         println!("{operator} failed at {window:?}: {cause}")
///     }
///     Err(other) => println!("{other}"),
///     Ok(report) => println!("committed {:?}", report.committed),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The DAG cannot run.
    #[error("invalid DAG: {0}")]
    Dag(#[from] DagError),
    /// Several problems with the DAG, all reported at once.
    #[error("invalid DAG:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    DagErrors(Vec<DagError>),
    /// An operator failed (returned an error or panicked).
    #[error("operator {operator:?} failed{}: {cause}", .window.map(|w| format!(" at window {w}")).unwrap_or_default())]
    OperatorFailed {
        /// The physical operator (`count#2` for a partition).
        operator: String,
        /// The window it was in, if it had begun one.
        window: Option<WindowId>,
        /// The error or panic message.
        cause: String,
        /// The error the operator returned, with its type: a program gets
        /// its own error type back with `downcast_ref` (also through
        /// [`std::error::Error::source`]). `None` for a panic, or a failure
        /// of the runtime's own making (a save that failed, say).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An operator's checkpoint does not decode as its state type: a layout
    /// that does not match (a struct changed without a version bump,
    /// [`SnapshotError::LayoutMismatch`](checkpoint_core::SnapshotError::LayoutMismatch),
    /// with the type, its version and both fingerprints), a version its
    /// chain of previous versions does not reach, or damaged bytes. No
    /// restart can help; nothing was deleted.
    #[error("operator {operator:?} cannot be restored from its checkpoint at {window}: {source}; nothing was deleted")]
    Restore {
        /// The physical operator.
        operator: String,
        /// The checkpoint's window.
        window: WindowId,
        /// Why it does not decode.
        #[source]
        source: checkpoint_core::SnapshotError,
    },
    /// The storage agent failed outside an operator (the manifest, a purge).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The storage holds checkpoints but no job manifest: not a job this
    /// runtime can resume.
    #[error("the storage holds {detail}: use an empty checkpoint directory, or the one of this job")]
    StorageInUse {
        /// What is there.
        detail: String,
    },
    /// The job manifest in storage does not match the DAG, or cannot be
    /// read.
    #[error("cannot resume the job in storage: {detail}")]
    Manifest {
        /// What does not match.
        detail: String,
    },
    /// The checkpoint chosen to restore an operator from could not be
    /// loaded (an I/O error, or bytes that no longer verify); nothing was
    /// deleted.
    #[error("the checkpoint of operator {operator:?} at window {window} cannot be used: {detail}; nothing was deleted")]
    UnusableCheckpoint {
        /// The physical operator.
        operator: String,
        /// The checkpoint's window.
        window: WindowId,
        /// What went wrong.
        detail: String,
    },
    /// An operator has no checkpoint it could be restored from.
    #[error("operator {operator:?} has no usable checkpoint to restore from")]
    NoCheckpoint {
        /// The physical operator.
        operator: String,
    },
    /// An input reached the last window id of the job's base (sequence
    /// `u32::MAX`: 68 years of 500 ms windows) and cannot begin another.
    /// No recovery can help: run the job again on new storage, which gives
    /// it a new window base.
    #[error(
        "operator {operator:?} cannot begin a window after {last}: the job's window sequence (the low 32 bits of \
         a window id) is exhausted; run the job on new storage to start a new window base"
    )]
    WindowSequenceExhausted {
        /// The physical operator.
        operator: String,
        /// The last window it could be in.
        last: WindowId,
    },
    /// A setting of the [`Config`](crate::Config) cannot work.
    #[error("invalid configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// A runtime thread could not be started.
    #[error("starting thread {name:?}: {source}")]
    Spawn {
        /// The thread.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
