//! How a job runs: `Config` and the settings it gathers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::{KeyGroups, StorageAgent};

use crate::fault::{Fault, Faults};
use crate::window::WindowMode;

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
    pub(crate) save_retry: SaveRetry,
    pub(crate) tolerable_failed_checkpoints: u32,
    pub(crate) stop_timeout: Duration,
    pub(crate) recovery_scope: RecoveryScope,
    pub(crate) key_groups: KeyGroups,
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
    /// per operator, replay buffers spilling past 512 MiB together, 10 minutes
    /// for a checkpoint to become durable and 60 s for a thread to stop,
    /// 128 key groups.
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
            replay_memory_cap: 512 << 20,
            spill_dir: None,
            save_timeout: Duration::from_secs(600),
            save_retry: SaveRetry::default(),
            tolerable_failed_checkpoints: 0,
            stop_timeout: Duration::from_secs(60),
            recovery_scope: RecoveryScope::Partial,
            key_groups: KeyGroups::default(),
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
    /// Without it, two fresh runs of one job have different window ids, and
    /// so an exactly-once sink names its output files differently, even in
    /// a deterministic window mode.
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
    /// `name#N`) makes [`Runtime::run`](crate::Runtime::run) fail with
    /// [`RunError::Config`](crate::RunError::Config) rather than never fire.
    pub fn inject(self, fault: Fault) -> Self {
        self.faults.add(fault);
        self
    }

    /// The job's key-group count (Flink's max parallelism; 128 unless set):
    /// how many parts its keys are split into. A keyed tuple goes to the
    /// partition that owns its key's group (each partition owns a
    /// contiguous range), and a [`KeyedMap`](checkpoint_core::KeyedMap) in
    /// an operator's state is split the same way, so its groups can move to
    /// other partitions when a job is restarted with another partition
    /// count. It is fixed for the life of the job (recorded in the job
    /// manifest: a resumed job with another count is an error), and it is
    /// the most partitions a keyed operator can have. More groups spread
    /// keys over more partitions evenly at the cost of a little memory per
    /// group.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::KeyGroups;
    ///
    /// let config = checkpoint_runtime::Config::default().key_groups(KeyGroups::new(1024)?);
    /// # let _ = config;
    /// # Ok::<(), checkpoint_core::InvalidKeyGroups>(())
    /// ```
    pub fn key_groups(mut self, key_groups: KeyGroups) -> Self {
        self.key_groups = key_groups;
        self
    }

    /// Bytes all of a job's replay buffers keep in memory together before
    /// they spill whole windows to files (512 MiB unless set, the default
    /// memory of Apex's buffer server). Past it, a buffer that ends a window
    /// writes its own oldest completed windows to disk until the job is
    /// back under the cap, so the buffers hold at most the cap plus each
    /// stream's window in progress, and a busy stream may use what idle ones
    /// leave. Bytes are real: buffers keep their batches encoded (postcard),
    /// counted as allocated. Size it to what a checkpoint interval of the
    /// job's streams takes to keep spilling rare (`docs/BENCHMARKS.md`
    /// shows what spilling costs). Irrelevant in
    /// [`RecoveryScope::Global`](crate::RecoveryScope::Global), which keeps
    /// no replay data.
    ///
    /// # Examples
    ///
    /// ```
    /// // Keep at most 8 MiB of replay data in memory, spilling under /var/tmp.
    /// let config = checkpoint_runtime::Config::default()
    ///     .replay_memory_cap(8 << 20)
    ///     .spill_dir("/var/tmp/my-job-replay");
    /// # let _ = config;
    /// ```
    pub fn replay_memory_cap(mut self, bytes: usize) -> Self {
        self.replay_memory_cap = bytes;
        self
    }

    /// Where replay buffers spill (`checkpoint-replay` in the system's temp
    /// directory unless set). Each job makes its own directory in it,
    /// `job-<pid>-<n>-<nanos>`, locked while the job runs and removed when it ends;
    /// one that a killed job left behind is removed by the next job that
    /// starts on the same directory.
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// How long a checkpoint may take to become durable, retries included
    /// (Flink's checkpoint timeout; 10 minutes unless set). A save still
    /// not durable then is abandoned: an agent that can cancel a request
    /// in flight (the object-store agent) gives up at this deadline
    /// ([`checkpoint_core::Deadline`]), and the checkpoint counts as failed
    /// (see [`tolerable_failed_checkpoints`](Config::tolerable_failed_checkpoints)).
    /// A save that cannot be cancelled and never answers fails its
    /// operator; the failure is recovered like any other, and past the
    /// restart limit the job stops with that error instead of hanging on a
    /// storage that never answers.
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

    /// How a checkpoint save that failed is tried again: up to `retries`
    /// more attempts of the write that failed, the first after `backoff`
    /// and each next one after twice the wait before it, at most
    /// `max_backoff`, all within the save timeout. A failure that cannot
    /// pass by waiting (a snapshot that does not belong where it is saved,
    /// storage another job took over) is not retried. The default: 3
    /// retries, from 50 ms up to 2 s. Each retry is counted in the run
    /// report ([`OperatorReport::save_retries`](crate::OperatorReport::save_retries))
    /// and logged (`tracing`, level warn).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use checkpoint_runtime::Config;
    ///
    /// let config = Config::default().save_retries(5, Duration::from_millis(100), Duration::from_secs(10));
    /// # let _ = config;
    /// ```
    pub fn save_retries(mut self, retries: u32, backoff: Duration, max_backoff: Duration) -> Self {
        self.save_retry = SaveRetry {
            retries,
            backoff,
            max_backoff: max_backoff.max(backoff),
        };
        self
    }

    /// How many checkpoints in a row an operator may fail to save before
    /// that counts as a failure of the operator (Flink's tolerable failed
    /// checkpoints; 0 unless set: the first failed save fails the
    /// operator, which is then recovered).
    ///
    /// A checkpoint fails when its save fails after its retries
    /// ([`save_retries`](Config::save_retries)) or is not durable within
    /// the [`save_timeout`](Config::save_timeout); it is then abandoned:
    /// what it wrote is removed, it is never reported durable (so the
    /// committed window never passes it), and the operator's next
    /// checkpoint writes its keyed state whole. Abandoned checkpoints are
    /// counted in the run report
    /// ([`OperatorReport::failed_checkpoints`](crate::OperatorReport::failed_checkpoints)).
    /// The initial checkpoint is never tolerated: without it there is
    /// nothing to recover to.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::Config;
    ///
    /// let config = Config::default().tolerable_failed_checkpoints(3);
    /// # let _ = config;
    /// ```
    pub fn tolerable_failed_checkpoints(mut self, count: u32) -> Self {
        self.tolerable_failed_checkpoints = count;
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

/// How a failed save is retried ([`Config::save_retries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SaveRetry {
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for SaveRetry {
    fn default() -> Self {
        SaveRetry {
            retries: 3,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}
