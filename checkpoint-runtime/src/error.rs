//! Errors of building and running a job.

use checkpoint_core::{StorageError, WindowId};

/// A DAG that cannot run, found when it is built (before any thread
/// starts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    /// Two operators share a name.
    #[error("duplicate operator name {0:?}: every operator needs its own name (its checkpoints are stored under it)")]
    DuplicateName(String),
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
    /// An edge names an operator handle from another DAG.
    #[error("an edge refers to an operator that is not in this DAG")]
    ForeignNode,
}

/// Why a job did not run to completion.
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
    },
    /// The storage agent failed outside an operator (the manifest, a purge).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The storage already holds checkpoints of a job.
    #[error(
        "the storage already holds a job ({detail}); resuming from it is not supported yet: use an empty \
         checkpoint directory"
    )]
    StorageInUse {
        /// What is there.
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
