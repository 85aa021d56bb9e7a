//! Running a DAG: configuration, the stop handle, and the entry point.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use checkpoint_core::StorageAgent;

use crate::dag::Dag;
use crate::error::RunError;
use crate::fault::{Fault, Faults};
use crate::metrics::{Progress, RunReport};
use crate::supervisor::Supervisor;
use crate::window_gen::WindowMode;

/// The default number of times one operator may be restored before the job
/// gives up.
pub const DEFAULT_RESTART_LIMIT: u32 = 5;

/// How a job runs: where checkpoints go, how windows are cut, batching,
/// recovery.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use checkpoint_core::FsStorageAgent;
/// use checkpoint_runtime::{Config, WindowMode};
///
/// let dir = tempfile::tempdir()?;
/// let config = Config::default()
///     .storage(FsStorageAgent::new(dir.path())?)
///     .window_mode(WindowMode::Time(Duration::from_millis(200)))
///     .async_checkpoints(true)
///     .restart_limit(3);
/// # let _ = config;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) storage: Option<Arc<dyn StorageAgent>>,
    pub(crate) window_mode: WindowMode,
    pub(crate) window_base: Option<u32>,
    pub(crate) batch_size: usize,
    pub(crate) channel_capacity: usize,
    pub(crate) async_checkpoints: bool,
    pub(crate) restart_limit: u32,
    pub(crate) faults: Faults,
    pub(crate) replay_memory_cap: usize,
    pub(crate) spill_dir: Option<PathBuf>,
    pub(crate) save_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) recovery_scope: RecoveryScope,
}

/// What a failure restores, and so what a running job keeps for it
/// (DESIGN.md, "Failure and recovery").
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Config, RecoveryScope};
///
/// assert_eq!(RecoveryScope::default(), RecoveryScope::Partial);
/// let config = Config::default().recovery_scope(RecoveryScope::Global);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryScope {
    /// Apache Apex's model, the default: a failure restores the failed
    /// operator and everything downstream of it; the operators upstream
    /// keep running and replay what the restored ones need from their
    /// replay buffers, which hold every window since the last commit.
    #[default]
    Partial,
    /// Apache Flink's model: no replay buffers are kept at all; any failure
    /// restores every operator from its recovery checkpoint, and the inputs
    /// read again from the positions their checkpoints hold. Cheaper while
    /// running (nothing is kept per window), dearer per failure (the whole
    /// job goes back), and only for jobs whose inputs replay: idempotent
    /// inputs such as `io::LineInput`, or sources whose position is their
    /// checkpointed state.
    Global,
}

impl Default for Config {
    /// No checkpointing, 500 ms windows, batches of 16,384 tuples, 8
    /// batches per queue, asynchronous saves once storage is set, 5 restarts
    /// per operator, replay buffers spilling past 64 MiB each, 10 minutes
    /// for a checkpoint to become durable and 60 s for a thread to stop.
    fn default() -> Self {
        Config {
            storage: None,
            window_mode: WindowMode::default(),
            window_base: None,
            batch_size: 16 * 1024,
            channel_capacity: 8,
            async_checkpoints: true,
            restart_limit: DEFAULT_RESTART_LIMIT,
            faults: Faults::default(),
            replay_memory_cap: 64 << 20,
            spill_dir: None,
            save_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(60),
            recovery_scope: RecoveryScope::Partial,
        }
    }
}

impl Config {
    /// Checkpoints to `storage`. Without storage, checkpointing is off: no
    /// snapshots, no commits, no replay buffers, no recovery.
    pub fn storage(mut self, storage: impl StorageAgent + 'static) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Checkpoints to a shared storage agent (to inspect it after the run).
    pub fn shared_storage(mut self, storage: Arc<dyn StorageAgent>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// How streaming windows are cut (500 ms processing-time windows unless
    /// set).
    pub fn window_mode(mut self, mode: WindowMode) -> Self {
        self.window_mode = mode;
        self
    }

    /// Fixes the window base (the high 32 bits of every window id) of a new
    /// job instead of the current Unix time: for reproducible window ids in
    /// tests. A job resumed from storage keeps the base it started with.
    pub fn window_base(mut self, base_seconds: u32) -> Self {
        self.window_base = Some(base_seconds);
        self
    }

    /// Tuples per batch sent between threads (16,384 unless set; at least
    /// 1). Batches are also sent at every window end, so windows bound the
    /// latency; bigger batches mean fewer thread wake-ups (docs/BENCHMARKS.md).
    pub fn batch_size(mut self, tuples: usize) -> Self {
        self.batch_size = tuples.max(1);
        self
    }

    /// Batches a queue between two operators holds before the upstream
    /// blocks (8 unless set; at least 1).
    pub fn channel_capacity(mut self, batches: usize) -> Self {
        self.channel_capacity = batches.max(1);
        self
    }

    /// Whether snapshots are written on a background thread per operator
    /// (the operator thread pays only for encoding). On unless set off.
    /// Operators chained on another's thread and EXACTLY_ONCE operators
    /// always save synchronously.
    pub fn async_checkpoints(mut self, on: bool) -> Self {
        self.async_checkpoints = on;
        self
    }

    /// How many times one operator may be restored after failures before the
    /// job stops with an error naming it ([`DEFAULT_RESTART_LIMIT`] unless
    /// set).
    pub fn restart_limit(mut self, restarts: u32) -> Self {
        self.restart_limit = restarts;
        self
    }

    /// Injects a fault (see [`Fault`]): for tests and demonstrations. A
    /// fault for an operator the DAG does not have (a partition is
    /// `name#N`) makes [`Runtime::run`] fail with [`RunError::Config`]
    /// rather than never fire.
    pub fn inject(self, fault: Fault) -> Self {
        self.faults.add(fault);
        self
    }

    /// Bytes of tuples one output stream's replay buffer keeps in memory
    /// before it spills whole windows to files (64 MiB unless set).
    pub fn replay_memory_cap(mut self, bytes: usize) -> Self {
        self.replay_memory_cap = bytes;
        self
    }

    /// Where replay buffers spill (`checkpoint-replay` in the system's temp
    /// directory unless set). Each job makes its own directory in it,
    /// `job-<pid>-<n>`, locked while the job runs and removed when it ends;
    /// one that a killed job left behind is removed by the next job that
    /// starts on the same directory.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// How long an asynchronous checkpoint may take to become durable (10
    /// minutes unless set). An operator whose save is still not durable
    /// then fails, naming the window; the failure is recovered like any
    /// other, and past the restart limit the job stops with that error
    /// instead of hanging on a storage that never answers.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use checkpoint_runtime::Config;
    ///
    /// let config = Config::default().save_timeout(Duration::from_secs(30));
    /// # let _ = config;
    /// ```
    pub fn save_timeout(mut self, timeout: Duration) -> Self {
        self.save_timeout = timeout;
        self
    }

    /// How long an operator's thread may take to stop once told to (after
    /// a failure, or at the end of the job; 60 s unless set). A thread stuck
    /// in a hook that never returns then ends the job with an error naming
    /// it, instead of a job that never exits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use checkpoint_runtime::Config;
    ///
    /// let config = Config::default().stop_timeout(Duration::from_secs(5));
    /// # let _ = config;
    /// ```
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// What a failure restores ([`RecoveryScope::Partial`] unless set).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::{Config, RecoveryScope};
    ///
    /// let config = Config::default().recovery_scope(RecoveryScope::Global);
    /// # let _ = config;
    /// ```
    pub fn recovery_scope(mut self, scope: RecoveryScope) -> Self {
        self.recovery_scope = scope;
        self
    }
}

/// Asks a running job to stop gracefully: inputs end their window, a final
/// checkpoint is taken and commits are delivered.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::Runtime;
///
/// let runtime = Runtime::new(Default::default());
/// let stop = runtime.stop_handle();
/// // e.g. from a Ctrl-C handler, or another thread:
/// stop.stop();
/// assert!(stop.is_stopped());
/// ```
#[derive(Debug, Clone)]
pub struct StopHandle(pub(crate) Arc<AtomicBool>);

impl StopHandle {
    /// Requests the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs DAGs.
///
/// # Examples
///
/// See the crate documentation for a complete job.
#[derive(Debug)]
pub struct Runtime {
    config: Config,
    stop: Arc<AtomicBool>,
    progress: Progress,
}

impl Runtime {
    /// A runtime with `config`.
    pub fn new(config: Config) -> Self {
        Runtime {
            config,
            stop: Arc::new(AtomicBool::new(false)),
            progress: Progress::default(),
        }
    }

    /// A live view of the job's progress (for a progress line).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// A handle that stops the job gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// Runs `dag` until every input is done (or a stop is requested), then
    /// returns what happened.
    ///
    /// If the storage already holds this job (a job manifest), the job
    /// resumes: the manifest is checked against `dag` (a changed topology or
    /// partition count is an error), every operator is restored from its
    /// recovery checkpoint computed from what is on disk (a corrupt
    /// checkpoint counts as missing), and inputs continue from there with the
    /// job's original window base.
    ///
    /// An operator that fails is recovered as its processing mode says;
    /// past the restart limit the job stops with
    /// [`RunError::OperatorFailed`].
    pub fn run(&self, dag: Dag) -> Result<RunReport, RunError> {
        if let Err(mut errors) = dag.validate() {
            return Err(if errors.len() == 1 {
                RunError::Dag(errors.remove(0))
            } else {
                RunError::DagErrors(errors)
            });
        }
        if let WindowMode::Time(period) = self.config.window_mode
            && period < std::time::Duration::from_millis(1)
        {
            return Err(RunError::Config {
                detail: format!(
                    "a streaming window of {} µs is too short: use at least 1 ms",
                    period.as_micros()
                ),
            });
        }
        check_faults(&self.config.faults, &dag)?;
        Supervisor::new(&self.config, dag, Arc::clone(&self.stop), &self.progress)?.run()
    }
}

/// A fault injected into an operator the DAG does not have would never
/// fire: a test relying on it would pass without testing anything.
fn check_faults(faults: &Faults, dag: &Dag) -> Result<(), RunError> {
    let physical = dag.physical_names();
    let unknown: Vec<String> = faults
        .operators()
        .into_iter()
        .filter(|name| !physical.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let quoted = |names: &[String]| names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    Err(RunError::Config {
        detail: format!(
            "faults are injected into {}, which the DAG does not have; its operators are {} (a partition is \
             named `name#N`)",
            quoted(&unknown),
            quoted(&physical)
        ),
    })
}
