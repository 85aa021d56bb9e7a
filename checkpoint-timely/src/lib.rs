//! Runs a `checkpoint-runtime` [`Dag`] on timely dataflow workers.
//!
//! The same operator structs, state and snapshots as the threaded runtime,
//! on `timely` (pinned to 0.32.0; the adapter is this crate alone):
//!
//! - **Windows are timely timestamps.** An input's window `W` (a fixed
//!   count of tuples, as [`WindowMode::Tuples`](checkpoint_runtime::WindowMode::Tuples))
//!   is timestamp `W`; an operator runs `begin_window(W)`, its batches and
//!   `end_window` once its input frontier has passed `W`, windows in order,
//!   empty ones included.
//! - **Partitions are workers.** An operator with a keyed input runs one
//!   partition per worker (partition `p` on worker `p`), each owning the key
//!   groups `KeyGroups::range_of_partition(p, workers)`; an input runs the
//!   partitions the DAG gave it (`Dag::input_partitioned`), partition `p`
//!   on worker `p % workers`; every other operator runs one partition, on
//!   worker 0. Batches cross workers as postcard bytes through timely's
//!   exchange.
//! - **Checkpoints** are taken at the same windows as in the threaded
//!   runtime (each operator every `checkpoint_window_count` windows), with
//!   the same snapshots, into the storage given (a shared directory or an
//!   object store prefix), and
//! - **the committed window** is the largest window at which every
//!   stateful operator on every worker has saved a checkpoint (with
//!   different counts, every least common multiple of them), known to
//!   every worker from timely's progress tracking (a probe on every
//!   operator's durability stream), with no coordinator; operators are told
//!   with `committed(W)` on their worker.
//!
//! - **Restart.** Each worker records its committed window in the storage
//!   (`timely-worker#<i>`, with its run's worker count); a run on storage
//!   that holds a job resumes it after the smallest window every worker of
//!   a run recorded: every operator restored from its checkpoint there,
//!   inputs replaying from their checkpointed position.
//!
//! - **Rescaling** is a restart on another worker count: keyed state is
//!   saved in chunks by key group, and each new partition of a keyed
//!   operator takes its groups from the old partitions' checkpoints. The
//!   old layout is kept until the new run commits a window.
//!
//! - **Several processes** ([`Cluster`]): the same job in each, over TCP;
//!   a failure in one ends it, and timely ends the others.
//!
//! - **One job per storage**: the storage's lock is held by the process
//!   (process 0 of a cluster) for the whole run; a second job on the same
//!   storage is refused.
//!
//! An at-most-once operator is refused (every restart is whole-job).
//! Not yet: saves off the worker's thread.
//!
//! # Examples
//!
//! ```
//! use checkpoint_core::{Checkpoint, WindowId};
//! use checkpoint_runtime::{Dag, Emit, InputOperator, Operator, OperatorResult, Output};
//! use checkpoint_timely::TimelyJob;
//!
//! #[derive(Checkpoint)]
//! struct Numbers { next: u64 }
//! impl InputOperator for Numbers {
//!     type Output = u64;
//!     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
//!         out.emit(self.next);
//!         self.next += 1;
//!         Ok(if self.next == 100 { Emit::Done } else { Emit::Continue })
//!     }
//! }
//! #[derive(Default, Checkpoint)]
//! struct Sum { total: u64 }
//! impl Operator for Sum {
//!     type Input = u64;
//!     type Output = ();
//!     fn process(&mut self, n: u64, _: Output<'_, ()>) -> OperatorResult { self.total += n; Ok(()) }
//! }
//!
//! let report = TimelyJob::new(2).window_tuples(10).run(|| {
//!     let mut dag = Dag::new();
//!     let numbers = dag.input("numbers", Numbers { next: 0 });
//!     let sum = dag.operator("sum", Sum::default());
//!     dag.connect(&numbers, &sum);
//!     dag
//! })?;
//! assert_eq!(report.windows, 10);
//! # Ok::<(), checkpoint_timely::TimelyError>(())
//! ```

mod commit;
mod dataflow;
mod frontier;
mod inputs;
mod operator;
mod placement;
mod rescale;

use std::sync::Arc;

use checkpoint_core::{KeyGroups, StorageAgent, WindowId};
use checkpoint_runtime::{Dag, RunError};

pub use placement::Placement;

/// Why a timely run failed.
#[derive(Debug)]
pub enum TimelyError {
    /// An operator failed, or the DAG cannot run.
    Run(RunError),
    /// Timely could not start its workers.
    Setup(String),
    /// A worker thread panicked.
    WorkerPanicked(String),
}

impl std::fmt::Display for TimelyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimelyError::Run(e) => write!(f, "{e}"),
            TimelyError::Setup(e) => write!(f, "timely could not start: {e}"),
            TimelyError::WorkerPanicked(e) => write!(f, "a timely worker panicked: {e}"),
        }
    }
}

impl std::error::Error for TimelyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimelyError::Run(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RunError> for TimelyError {
    fn from(e: RunError) -> Self {
        TimelyError::Run(e)
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelyReport {
    /// Workers that ran.
    pub workers: usize,
    /// Seconds from the first worker's start (after timely connected the
    /// processes) to the last one's end, in this process.
    pub seconds: f64,
    /// Windows the inputs opened.
    pub windows: u64,
    /// The committed window at the end, if a checkpoint was committed.
    pub committed: Option<WindowId>,
}

/// This process's place in a job of several processes: its index, and
/// every process's `host:port`, in process order (the same list for all).
///
/// # Examples
///
/// ```
/// use checkpoint_timely::{Cluster, TimelyJob};
///
/// let addresses = vec!["127.0.0.1:2101".to_owned(), "127.0.0.1:2102".to_owned()];
/// let job = TimelyJob::new(1).cluster(Cluster { process: 1, addresses });
/// # let _ = job;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index in `addresses`.
    pub process: usize,
    /// Every process's address, `host:port`.
    pub addresses: Vec<String>,
}

/// A job to run on timely workers: threads of this process, or of several
/// processes ([`TimelyJob::cluster`]).
#[derive(Clone)]
pub struct TimelyJob {
    cluster: Option<Cluster>,
    workers: usize,
    window_tuples: u64,
    window_base: u32,
    storage: Option<Arc<dyn StorageAgent>>,
    key_groups: KeyGroups,
    windows_ahead: u64,
}

impl std::fmt::Debug for TimelyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelyJob")
            .field("workers", &self.workers)
            .field("window_tuples", &self.window_tuples)
            .field("window_base", &self.window_base)
            .field("storage", &self.storage.is_some())
            .field("windows_ahead", &self.windows_ahead)
            .finish()
    }
}

impl TimelyJob {
    /// A job on `workers` worker threads (at least 1), windows of 1,024
    /// tuples, no checkpoints.
    pub fn new(workers: usize) -> Self {
        TimelyJob {
            cluster: None,
            workers: workers.max(1),
            window_tuples: 1024,
            window_base: 0,
            storage: None,
            key_groups: KeyGroups::default(),
            windows_ahead: 8,
        }
    }

    /// Runs as one process of several: `workers` threads here, as many in
    /// each other process, connected over TCP. A failure in this process
    /// ends it at once with exit status 1 (the others then stop too: timely
    /// stops a cluster that loses a process), so that no window is
    /// committed that a failed operator did not save.
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The same job on `workers` worker threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Each input ends a window after `tuples` tuples (at least 1).
    pub fn window_tuples(mut self, tuples: u64) -> Self {
        self.window_tuples = tuples.max(1);
        self
    }

    /// The window ids' base (their high 32 bits).
    pub fn window_base(mut self, base: u32) -> Self {
        self.window_base = base;
        self
    }

    /// Where checkpoints go; without storage none is taken.
    pub fn storage(mut self, storage: Arc<dyn StorageAgent>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// How many windows an input may run ahead of the durable frontier
    /// (at least 1): timely's queues are unbounded, so this bounds memory.
    pub fn windows_ahead(mut self, windows: u64) -> Self {
        self.windows_ahead = windows.max(1);
        self
    }

    /// The job's key groups.
    pub fn key_groups(mut self, key_groups: KeyGroups) -> Self {
        self.key_groups = key_groups;
        self
    }

    /// Runs the DAG `dag` builds (once per worker: each worker builds its
    /// own operator values) to the end of its inputs.
    pub fn run<F>(&self, dag: F) -> Result<TimelyReport, TimelyError>
    where
        F: Fn() -> Dag + Send + Sync + 'static,
    {
        // One job per storage: held by this process (process 0 of a
        // cluster) for the whole run, as the threaded runtime does.
        let _lock = match (&self.storage, &self.cluster) {
            (Some(storage), None) => Some(storage.lock()),
            (Some(storage), Some(cluster)) if cluster.process == 0 => Some(storage.lock()),
            _ => None,
        }
        .transpose()
        .map_err(|e| TimelyError::Run(RunError::Storage(e)))?;
        let job = self.clone();
        let dag = Arc::new(dag);
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let config = match &self.cluster {
            None => timely::Config::process(self.workers),
            Some(cluster) => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: self.workers,
                    process: cluster.process,
                    addresses: cluster.addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
        };
        let guards = timely::execute(config, move |worker| {
            dataflow::run_worker(worker, &job, &*dag, Arc::clone(&failed))
        })
        .map_err(TimelyError::Setup)?;
        let processes = self.cluster.as_ref().map_or(1, |c| c.addresses.len());
        let mut report = TimelyReport {
            workers: self.workers * processes,
            seconds: 0.0,
            windows: 0,
            committed: None,
        };
        let mut failure = None;
        for result in guards.join() {
            match result {
                Ok(Ok(worker)) => {
                    report.seconds = report.seconds.max(worker.seconds);
                    report.windows = report.windows.max(worker.windows);
                    report.committed = match (report.committed, worker.committed) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(TimelyError::Run(e));
                }
                Err(panic) => {
                    failure.get_or_insert(TimelyError::WorkerPanicked(panic));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}
