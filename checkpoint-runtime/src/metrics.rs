//! Counters the runtime keeps while a job runs, and the report it returns.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use checkpoint_core::WindowId;

/// Live counters of one physical operator.
///
/// Aligned to 128 bytes (two cache lines, as `crossbeam_utils::CachePadded`
/// does on x86-64): each operator's thread writes its own counters, and
/// counters of two operators side by side in one line would make those
/// threads invalidate each other's caches on every write.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct OperatorMetrics {
    pub(crate) tuples_in: AtomicU64,
    /// Emitted by the current incarnation (the emitter's own count).
    pub(crate) tuples_out: AtomicU64,
    /// Emitted by the incarnations a recovery replaced.
    tuples_out_before: AtomicU64,
    pub(crate) windows: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    pub(crate) checkpoint_bytes: AtomicU64,
    pub(crate) last_checkpoint: AtomicU64,
    pub(crate) replay_bytes: AtomicU64,
    pub(crate) replay_peak: AtomicU64,
    pub(crate) spilled_windows: AtomicU64,
    pub(crate) encode_nanos_last: AtomicU64,
    pub(crate) encode_nanos_max: AtomicU64,
    /// The last `RECENT_ENCODES` encode times, a ring indexed by
    /// `encodes % RECENT_ENCODES`, for the median.
    encode_nanos_recent: [AtomicU64; RECENT_ENCODES],
    encodes: AtomicU64,
    pub(crate) durable_nanos_last: AtomicU64,
    pub(crate) durable_nanos_max: AtomicU64,
    pub(crate) save_retries: AtomicU64,
    pub(crate) failed_checkpoints: AtomicU64,
    /// The largest emitted count published: a counter that never steps
    /// back while an incarnation hands its count over.
    published_out: AtomicU64,
}

/// How many recent checkpoint encodes the median pause is taken over.
const RECENT_ENCODES: usize = 32;

/// Live counters of a job.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) operators: Vec<OperatorMetrics>,
    pub(crate) committed: Mutex<Option<WindowId>>,
    /// The newest checkpoints, oldest first, at most `HISTORY` of them.
    history: Mutex<std::collections::VecDeque<CheckpointRecord>>,
}

/// How many checkpoints the run report's history keeps (the newest).
const HISTORY: usize = 10_000;

/// One checkpoint that became durable, in the run report's history.
///
/// # Examples
///
/// ```
/// # fn show(report: &checkpoint_runtime::RunReport) {
/// for c in &report.checkpoint_history {
///     println!("{} at {}: {} bytes, encoded in {:?}, durable {:?} later", c.operator, c.window, c.bytes, c.encode, c.durable);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointRecord {
    /// The physical operator.
    pub operator: String,
    /// The checkpoint's window.
    pub window: WindowId,
    /// Bytes it wrote (its snapshot, and for keyed state the chunks it
    /// wrote).
    pub bytes: u64,
    /// The encode (the operator's pause).
    pub encode: Duration,
    /// From the end of the encode until it was durable.
    pub durable: Duration,
}

impl Metrics {
    pub(crate) fn new(n: usize) -> Self {
        Metrics {
            operators: (0..n).map(|_| OperatorMetrics::default()).collect(),
            committed: Mutex::new(None),
            history: Mutex::default(),
        }
    }

    /// A checkpoint became durable: into the history, and to the `metrics`
    /// facade.
    pub(crate) fn checkpointed(&self, record: CheckpointRecord) {
        let operator = record.operator.clone();
        metrics::counter!("checkpoint_number_of_completed_checkpoints", "operator" => operator.clone()).increment(1);
        metrics::gauge!("checkpoint_last_checkpoint_size_bytes", "operator" => operator.clone())
            .set(record.bytes as f64);
        metrics::gauge!("checkpoint_last_checkpoint_duration_seconds", "operator" => operator.clone())
            .set((record.encode + record.durable).as_secs_f64());
        metrics::histogram!("checkpoint_size_bytes", "operator" => operator.clone()).record(record.bytes as f64);
        metrics::histogram!("checkpoint_durable_latency_seconds", "operator" => operator)
            .record(record.durable.as_secs_f64());
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(record);
    }

    /// The newest checkpoints as the manifest records them.
    pub(crate) fn manifest_history(&self) -> Vec<crate::manifest::ManifestCheckpoint> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        history
            .iter()
            .skip(history.len().saturating_sub(crate::manifest::MANIFEST_HISTORY))
            .map(|c| crate::manifest::ManifestCheckpoint {
                operator: c.operator.clone(),
                window: c.window,
                bytes: c.bytes,
                encode_us: micros(c.encode),
                durable_us: micros(c.durable),
            })
            .collect()
    }

    /// The newest checkpoints, oldest first.
    pub(crate) fn history(&self) -> Vec<CheckpointRecord> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Reports the counters kept here to the `metrics` facade (a no-op
    /// unless the program installed a recorder, such as a Prometheus
    /// exporter). Names follow Flink's metrics where it has one
    /// (`numRecordsIn`, `numRestarts`, `lastCheckpointSize`), in
    /// Prometheus' spelling, each prefixed `checkpoint_`.
    pub(crate) fn publish(&self, names: &[String], restarts: &[u32]) {
        let mut newest: Option<WindowId> = None;
        for (i, (m, name)) in self.operators.iter().zip(names).enumerate() {
            let label = || ("operator", name.clone());
            let now = m.tuples_out_before.load(Ordering::Relaxed) + m.tuples_out.load(Ordering::Relaxed);
            let tuples_out = m.published_out.fetch_max(now, Ordering::Relaxed).max(now);
            metrics::counter!("checkpoint_num_records_in", &[label()]).absolute(m.tuples_in.load(Ordering::Relaxed));
            metrics::counter!("checkpoint_num_records_out", &[label()]).absolute(tuples_out);
            metrics::counter!("checkpoint_windows", &[label()]).absolute(m.windows.load(Ordering::Relaxed));
            metrics::counter!("checkpoint_save_retries", &[label()]).absolute(m.save_retries.load(Ordering::Relaxed));
            metrics::counter!("checkpoint_number_of_failed_checkpoints", &[label()])
                .absolute(m.failed_checkpoints.load(Ordering::Relaxed));
            metrics::counter!("checkpoint_num_restarts", &[label()])
                .absolute(u64::from(restarts.get(i).copied().unwrap_or(0)));
            metrics::counter!("checkpoint_spilled_windows", &[label()])
                .absolute(m.spilled_windows.load(Ordering::Relaxed));
            metrics::gauge!("checkpoint_replay_bytes", &[label()]).set(m.replay_bytes.load(Ordering::Relaxed) as f64);
            if m.checkpoints.load(Ordering::Relaxed) > 0 {
                let last = WindowId::from_u64(m.last_checkpoint.load(Ordering::Relaxed));
                newest = newest.max(Some(last));
            }
        }
        let committed = *self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(committed) = committed {
            metrics::gauge!("checkpoint_committed_window").set(f64::from(committed.sequence()));
            // How far the commit trails the newest checkpoint, in windows.
            let lag = newest.map_or(0, |n| n.sequence().saturating_sub(committed.sequence()));
            metrics::gauge!("checkpoint_committed_window_lag").set(f64::from(lag));
        }
    }

    pub(crate) fn set_committed(&self, window: WindowId) {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner()) = Some(window);
    }
}

/// What one physical operator did during a run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorReport {
    /// The physical operator's name (`count#2` for a partition).
    pub name: String,
    /// Tuples it received, over the whole run: a window redone after a
    /// recovery counts again.
    pub tuples_in: u64,
    /// Tuples it emitted, over the whole run: a window redone after a
    /// recovery counts again.
    pub tuples_out: u64,
    /// Streaming windows it completed.
    pub windows: u64,
    /// Checkpoints it saved (the initial one included).
    pub checkpoints: u64,
    /// Size of its last checkpoint, in bytes.
    pub last_checkpoint_bytes: u64,
    /// The window of its last checkpoint.
    pub last_checkpoint: Option<WindowId>,
    /// Bytes its output stream's replay buffer held in memory at its last
    /// window (estimated: see `Config::replay_memory_cap`).
    pub replay_bytes: u64,
    /// The most bytes its output stream's replay buffer held in memory at
    /// any time of the run: at most the cap plus the window in progress.
    pub replay_peak_bytes: u64,
    /// Windows of its output stream written to disk because the replay
    /// buffer was over its cap, over the whole run.
    pub spilled_windows: u64,
    /// Times it was restored after a failure.
    pub restarts: u32,
    /// Time to encode its last checkpoint (the operator thread's pause).
    pub last_encode_time: Duration,
    /// The longest checkpoint encode.
    pub max_encode_time: Duration,
    /// The median of its last 32 checkpoint encodes (zero before the
    /// first).
    pub median_encode_time: Duration,
    /// From the end of the last checkpoint's encode until it was durable.
    pub last_durable_latency: Duration,
    /// The longest encode-to-durable latency.
    pub max_durable_latency: Duration,
    /// Writes of its checkpoints tried again after a failure that could
    /// pass (`Config::save_retries`).
    pub save_retries: u64,
    /// Its checkpoints that failed (after their retries, or past the save
    /// timeout) and were abandoned while tolerated
    /// (`Config::tolerable_failed_checkpoints`).
    pub failed_checkpoints: u64,
}

/// What a job did: returned by [`Runtime::run`](crate::Runtime::run).
///
/// # Examples
///
/// ```
/// # fn show(report: &checkpoint_runtime::RunReport) {
/// println!("committed {:?} in {:?}", report.committed, report.elapsed);
/// for op in &report.operators {
///     println!("{}: {} in, {} out, {} checkpoints", op.name, op.tuples_in, op.tuples_out, op.checkpoints);
/// }
/// for recovery in &report.recoveries {
///     println!("{} failed: {}; restored {:?}", recovery.operator, recovery.cause, recovery.restored);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunReport {
    /// The last committed window (`None` with checkpointing off).
    pub committed: Option<WindowId>,
    /// Per physical operator, in the order they were added.
    pub operators: Vec<OperatorReport>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Whether the job resumed from checkpoints already in storage (a
    /// restart), and from which windows.
    pub resumed_from: Vec<(String, WindowId)>,
    /// Every recovery from an operator failure, in order.
    pub recoveries: Vec<Recovery>,
    /// Things worth knowing that did not stop the job: corrupt checkpoints
    /// skipped on a restart, say.
    pub notes: Vec<String>,
    /// The checkpoints that became durable, oldest first (the newest
    /// 10,000 of a long run).
    pub checkpoint_history: Vec<CheckpointRecord>,
}

/// One recovery from an operator failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The operator that failed.
    pub operator: String,
    /// The window it failed in, if it had begun one.
    pub window: Option<WindowId>,
    /// The error or panic message.
    pub cause: String,
    /// The operators restored, each with the checkpoint it was restored
    /// from.
    pub restored: Vec<(String, WindowId)>,
}

impl RunReport {
    /// The report of the physical operator `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorReport> {
        self.operators.iter().find(|o| o.name == name)
    }
}

impl OperatorMetrics {
    pub(crate) fn encoded(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.encode_nanos_last.store(nanos, Ordering::Relaxed);
        self.encode_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        let n = self.encodes.fetch_add(1, Ordering::Relaxed);
        self.encode_nanos_recent[(n % RECENT_ENCODES as u64) as usize].store(nanos, Ordering::Relaxed);
    }

    fn median_encode(&self) -> Duration {
        let n = (self.encodes.load(Ordering::Relaxed) as usize).min(RECENT_ENCODES);
        let mut recent: Vec<u64> = self.encode_nanos_recent[..n]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        recent.sort_unstable();
        Duration::from_nanos(recent.get(n / 2).copied().unwrap_or(0))
    }

    pub(crate) fn durable(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.durable_nanos_last.store(nanos, Ordering::Relaxed);
        self.durable_nanos_max.fetch_max(nanos, Ordering::Relaxed);
    }

    /// A new incarnation of the operator starts (after a recovery): what
    /// the previous one emitted stays counted.
    pub(crate) fn new_incarnation(&self) {
        let emitted = self.tuples_out.swap(0, Ordering::Relaxed);
        self.tuples_out_before.fetch_add(emitted, Ordering::Relaxed);
    }

    pub(crate) fn report(&self, name: &str) -> OperatorReport {
        let last = self.last_checkpoint.load(Ordering::Relaxed);
        let checkpoints = self.checkpoints.load(Ordering::Relaxed);
        OperatorReport {
            name: name.to_owned(),
            tuples_in: self.tuples_in.load(Ordering::Relaxed),
            tuples_out: self
                .tuples_out_before
                .load(Ordering::Relaxed)
                .saturating_add(self.tuples_out.load(Ordering::Relaxed)),
            windows: self.windows.load(Ordering::Relaxed),
            checkpoints,
            last_checkpoint_bytes: self.checkpoint_bytes.load(Ordering::Relaxed),
            last_checkpoint: (checkpoints > 0).then(|| WindowId::from_u64(last)),
            replay_bytes: self.replay_bytes.load(Ordering::Relaxed),
            replay_peak_bytes: self.replay_peak.load(Ordering::Relaxed),
            spilled_windows: self.spilled_windows.load(Ordering::Relaxed),
            restarts: 0,
            last_encode_time: Duration::from_nanos(self.encode_nanos_last.load(Ordering::Relaxed)),
            max_encode_time: Duration::from_nanos(self.encode_nanos_max.load(Ordering::Relaxed)),
            median_encode_time: self.median_encode(),
            last_durable_latency: Duration::from_nanos(self.durable_nanos_last.load(Ordering::Relaxed)),
            max_durable_latency: Duration::from_nanos(self.durable_nanos_max.load(Ordering::Relaxed)),
            save_retries: self.save_retries.load(Ordering::Relaxed),
            failed_checkpoints: self.failed_checkpoints.load(Ordering::Relaxed),
        }
    }
}

/// A live view of a running job, for progress displays: clone it from
/// [`Runtime::progress`](crate::Runtime::progress) before `run`, read it
/// from another thread while the job runs.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::Runtime;
///
/// let runtime = Runtime::new(Default::default());
/// let progress = runtime.progress();
/// // Before the job starts there is nothing to show.
/// assert!(progress.snapshot().is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: std::sync::Arc<Mutex<Option<ProgressSource>>>,
}

#[derive(Debug)]
struct ProgressSource {
    metrics: std::sync::Arc<Metrics>,
    names: Vec<String>,
    inputs: Vec<bool>,
}

/// What a job has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressSnapshot {
    /// Streaming windows completed by the slowest input.
    pub windows: u64,
    /// Tuples emitted by all inputs.
    pub input_tuples: u64,
    /// The committed window.
    pub committed: Option<WindowId>,
    /// Checkpoints saved by all operators.
    pub checkpoints: u64,
    /// The newest checkpoint window of any operator.
    pub last_checkpoint: Option<WindowId>,
    /// The total size of every operator's last checkpoint, in bytes.
    pub last_checkpoint_bytes: u64,
    /// Per physical operator.
    pub operators: Vec<OperatorReport>,
}

impl Progress {
    pub(crate) fn attach(&self, metrics: std::sync::Arc<Metrics>, names: Vec<String>, inputs: Vec<bool>) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(ProgressSource { metrics, names, inputs });
    }

    /// The job's progress, or `None` before it started.
    pub fn snapshot(&self) -> Option<ProgressSnapshot> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let source = guard.as_ref()?;
        let operators: Vec<OperatorReport> = source
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| source.metrics.operators[i].report(name))
            .collect();
        let inputs = || {
            operators
                .iter()
                .zip(&source.inputs)
                .filter(|(_, input)| **input)
                .map(|(o, _)| o)
        };
        Some(ProgressSnapshot {
            windows: inputs().map(|o| o.windows).min().unwrap_or(0),
            input_tuples: inputs().map(|o| o.tuples_out).sum(),
            committed: *source.metrics.committed.lock().unwrap_or_else(|p| p.into_inner()),
            checkpoints: operators.iter().map(|o| o.checkpoints).sum(),
            last_checkpoint: operators.iter().filter_map(|o| o.last_checkpoint).max(),
            last_checkpoint_bytes: operators.iter().map(|o| o.last_checkpoint_bytes).sum(),
            operators,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operators_counters_have_cache_lines_of_their_own() {
        let metrics = Metrics::new(3);
        assert!(std::mem::align_of::<OperatorMetrics>() >= 128);
        let addresses: Vec<usize> = metrics.operators.iter().map(|m| m as *const _ as usize).collect();
        for pair in addresses.windows(2) {
            assert!(pair[1] - pair[0] >= 128, "{addresses:?}");
            assert_eq!(pair[0] % 128, 0);
        }
    }
}
