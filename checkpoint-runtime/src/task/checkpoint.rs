//! Saving checkpoints: encoding the state (or, when it holds keyed maps and
//! the storage keeps chunks, freezing it), saving it on the operator's
//! thread or handing it to the operator's saver thread, with a deadline,
//! and reporting it durable.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use checkpoint_core::{
    ChunkId, ChunkRef, Deadline, FrozenSnapshot, Snapshot, SnapshotMeta, StorageAgent, StorageError, WindowId,
};
use crossbeam_channel::{Select, Sender, TryRecvError};

use crate::config::SaveRetry;
use crate::failure::{Failure, panic_message};
use crate::metrics::OperatorMetrics;
use crate::protocol::{Control, Event, SaveFailed};

use super::{Core, Lifecycle, NodeEnv};

/// How long after a save's deadline its answer is waited for: an agent
/// that gives up at the deadline needs a moment to say so.
const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How one save is carried out: within its deadline, each write that fails
/// for a reason that may pass tried again after a growing wait.
struct Attempts<'a> {
    storage: &'a dyn StorageAgent,
    name: &'a str,
    window: WindowId,
    retry: SaveRetry,
    deadline: Instant,
    metrics: &'a OperatorMetrics,
    /// Retries made so far in this save.
    retried: std::cell::Cell<u32>,
}

impl Attempts<'_> {
    /// Runs `write` until it succeeds, fails for good, runs out of retries
    /// or of time; a panic in the storage agent is a failure for good.
    fn run<T>(&self, mut write: impl FnMut() -> Result<T, StorageError>) -> Result<T, StorageError> {
        let mut wait = self.retry.backoff;
        let mut tries = 0;
        loop {
            let result = catch_unwind(AssertUnwindSafe(|| Deadline::scope(self.deadline, &mut write)));
            let error = match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(panic) => {
                    return Err(StorageError::Io {
                        action: "saving (the storage agent panicked)",
                        path: self.name.into(),
                        source: std::io::Error::other(panic_message(&*panic)),
                    });
                }
            };
            let in_time = Instant::now() + wait < self.deadline;
            if !(error.is_transient() && tries < self.retry.retries && in_time) {
                return Err(error);
            }
            tries += 1;
            self.retried.set(self.retried.get() + 1);
            self.metrics.save_retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                operator = %self.name,
                window = %self.window,
                retry = tries,
                wait = ?wait,
                error = %error,
                "checkpoint save failed; retrying"
            );
            std::thread::sleep(wait);
            wait = (wait * 2).min(self.retry.max_backoff);
        }
    }

    /// The error of a save that failed, with its retries.
    fn describe(&self, error: &dyn std::fmt::Display) -> String {
        match self.retried.get() {
            0 => error.to_string(),
            n => format!("{error} (after {n} retries)"),
        }
    }
}

struct SaveJob {
    window: WindowId,
    work: SaveWork,
    /// When the save is abandoned (the save timeout after it was handed
    /// over).
    deadline: Instant,
}

/// What a save writes.
enum SaveWork {
    /// A whole snapshot, encoded on the operator's thread.
    Whole(Vec<u8>),
    /// A frozen state: its changed key groups are encoded and written as
    /// chunks first, then the snapshot that refers to them and, for the
    /// unchanged groups, to the chunks of the operator's last snapshot.
    Frozen(FrozenSnapshot),
}

/// What a finished save gives back: the buffer for the next encode, and,
/// for a frozen state, the new snapshot's chunk table.
struct SaveDone {
    buffer: Vec<u8>,
    result: Result<Option<Vec<ChunkRef>>, SaveFailed>,
    bytes: u64,
}

/// Performs one save: for a frozen state, its new chunks (durable first)
/// then the snapshot; the snapshot never refers to a chunk that is not
/// durable. A failed save deletes nothing here: the operator's thread
/// abandons it (removes what it wrote) only if the failure is tolerated
/// and the operator goes on; otherwise a newer incarnation may save under
/// the same names, and what is left is removed by retention.
fn perform(attempts: &Attempts<'_>, work: SaveWork) -> SaveDone {
    let (storage, name, window) = (attempts.storage, attempts.name, attempts.window);
    let mut written: Vec<ChunkId> = Vec::new();
    let failed = |message: String, written: Vec<ChunkId>| SaveFailed {
        message,
        written,
        running: false,
    };
    match work {
        SaveWork::Whole(bytes) => {
            let result = attempts.run(|| storage.save(name, window, &bytes)).map(|()| None);
            let len = bytes.len() as u64;
            SaveDone {
                buffer: bytes,
                result: result.map_err(|e| failed(attempts.describe(&e), Vec::new())),
                bytes: len,
            }
        }
        SaveWork::Frozen(frozen) => {
            // Encoding the groups runs the state's own code: a panic there
            // is this save's failure, not the saver thread's end.
            let finished = catch_unwind(AssertUnwindSafe(|| {
                frozen.finish(|chunks| {
                    written.extend(chunks.iter().map(|(id, _)| *id));
                    attempts.run(|| storage.save_chunks(name, chunks))
                })
            }));
            let finished = match finished {
                Ok(finished) => finished.map_err(|e| attempts.describe(&e)),
                Err(panic) => Err(format!("encoding its keyed state: {}", panic_message(&*panic))),
            };
            match finished {
                Ok(finished) => {
                    let result = attempts
                        .run(|| storage.save(name, window, &finished.bytes))
                        .map(|()| Some(finished.chunks))
                        .map_err(|e| failed(attempts.describe(&e), written));
                    SaveDone {
                        buffer: finished.payload_buffer,
                        result,
                        bytes: finished.written_bytes + finished.bytes.len() as u64,
                    }
                }
                Err(message) => SaveDone {
                    buffer: Vec::new(),
                    result: Err(failed(message, written)),
                    bytes: 0,
                },
            }
        }
    }
}

/// Removes what an abandoned save may have written: its snapshot (a write
/// the store completed after the runtime gave up on it), then its chunks
/// (named by no snapshot). Best effort: chunks left behind are removed by
/// retention once a later checkpoint is durable.
fn abandon(storage: &dyn StorageAgent, name: &str, window: WindowId, chunks: &[ChunkId]) {
    let removed = catch_unwind(AssertUnwindSafe(|| {
        storage.delete(name, window)?;
        for id in chunks {
            storage.delete_chunk(name, *id)?;
        }
        Ok::<(), StorageError>(())
    }));
    match removed {
        Ok(Ok(())) => {
            tracing::warn!(operator = %name, window = %window, chunks = chunks.len(), "checkpoint abandoned; what it wrote is removed");
        }
        Ok(Err(e)) => {
            tracing::warn!(operator = %name, window = %window, error = %e, "checkpoint abandoned; removing what it wrote failed (retention removes its chunks later)");
        }
        Err(_) => {
            tracing::warn!(operator = %name, window = %window, "checkpoint abandoned; the storage agent panicked removing what it wrote");
        }
    }
}

pub(super) struct Saver {
    jobs: Option<Sender<SaveJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Saver {
    /// A thread that writes this operator's snapshots, one at a time, and
    /// reports each to the operator (first) and the coordinator (second),
    /// so `checkpointed` always precedes a commit that covers it.
    pub(super) fn spawn(env: &NodeEnv, storage: Arc<dyn StorageAgent>) -> Result<Saver, Failure> {
        let (jobs, rx) = crossbeam_channel::bounded::<SaveJob>(1);
        let name = env.ctx.name.clone();
        let node = env.node;
        let control = env.control_tx.clone();
        let events = env.events.clone();
        let epoch = env.epoch;
        let metrics = Arc::clone(&env.metrics);
        let retry = env.save_retry;
        let thread = std::thread::Builder::new()
            .name(format!("save:{name}"))
            .spawn(move || {
                for job in rx {
                    let attempts = Attempts {
                        storage: &*storage,
                        name: &name,
                        window: job.window,
                        retry,
                        deadline: job.deadline,
                        metrics: &metrics.operators[node],
                        retried: std::cell::Cell::new(0),
                    };
                    let done = perform(&attempts, job.work);
                    metrics.operators[node]
                        .checkpoint_bytes
                        .store(done.bytes, Ordering::Relaxed);
                    let durable = done.result.is_ok();
                    let saved = Control::Saved {
                        window: job.window,
                        buffer: done.buffer,
                        result: done.result,
                    };
                    if control.send((node, saved)).is_err() {
                        break;
                    }
                    let event = Event::Checkpointed {
                        node,
                        epoch,
                        window: job.window,
                    };
                    if durable && events.send(event).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Failure::operator(&env.ctx.name, None, format!("starting its checkpoint thread: {e}")))?;
        Ok(Saver {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Ends the saver once its save in flight is done, waiting at most
    /// `patience`: a save stuck in storage that never answers must not hang
    /// the operator's teardown, so such a thread is left to finish on its
    /// own (its reports then go nowhere). Any other save completes before
    /// the job returns, so nothing writes to storage after it.
    pub(super) fn stop(&mut self, patience: std::time::Duration) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + patience;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("a checkpoint save did not finish within the save timeout; left running");
            }
        }
    }
}

impl<L: Lifecycle> Core<L> {
    /// Encodes the state and saves it, synchronously or by handing it to
    /// the saver (after the previous save, if still in flight, is done).
    pub(super) fn save(&mut self, window: WindowId, synchronous: bool) -> Result<(), Failure> {
        let Some(storage) = self.env.storage.clone() else {
            return Ok(());
        };
        self.wait_for_save()?;
        let meta = SnapshotMeta::new(&self.env.ctx.name, window);
        let started = std::time::Instant::now();
        let incremental = storage.supports_chunks();
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            if incremental {
                // Keyed maps are only frozen here (a reference count per
                // key group); their groups are encoded by the save.
                let buffer = std::mem::take(&mut self.buffer);
                Snapshot::freeze(self.op.state(), meta, buffer, &self.chunks).map(SaveWork::Frozen)
            } else {
                Snapshot::encode_into(self.op.state(), meta, &mut self.buffer).map(|()| SaveWork::Whole(Vec::new()))
            }
        }));
        let work = match encoded {
            Ok(Ok(work)) => work,
            Ok(Err(e)) => return Err(self.fail(format!("encoding its checkpoint at {window}: {e}"))),
            Err(panic) => return Err(self.fail(format!("encoding its checkpoint: {}", panic_message(&*panic)))),
        };
        let work = match work {
            SaveWork::Whole(_) => {
                let len = self.buffer.len();
                if self.buffer.capacity() > len + len / 4 {
                    // Grown by doubling while encoding: keep room for a state
                    // that grows a little, not twice the state for the rest
                    // of the run.
                    self.buffer.shrink_to(len + len / 8);
                }
                self.env.metrics.operators[self.env.node]
                    .checkpoint_bytes
                    .store(len as u64, Ordering::Relaxed);
                SaveWork::Whole(std::mem::take(&mut self.buffer))
            }
            frozen => frozen,
        };
        let encode = started.elapsed();
        self.env.metrics.operators[self.env.node].encoded(encode);
        metrics::histogram!("checkpoint_encode_seconds", "operator" => self.env.ctx.name.clone())
            .record(encode.as_secs_f64());
        self.last_checkpoint = Some(window);
        let now = Instant::now();
        self.save_started = Some(now);
        let deadline = now + self.env.save_timeout;
        if let Some(jobs) = self
            .saver
            .as_ref()
            .and_then(|s| s.jobs.as_ref())
            .filter(|_| !synchronous)
        {
            self.in_flight = Some(window);
            jobs.send(SaveJob { window, work, deadline })
                .map_err(|_| Failure::Aborted)?;
            return Ok(());
        }
        if let Err(failed) = self.save_within_timeout(&storage, window, work, deadline) {
            return self.save_failed(window, failed);
        }
        self.saved(window);
        if window != self.activation() {
            self.call(|op, _| op.checkpointed(window))?;
        }
        self.report_checkpointed(window)
    }

    /// Saves the encoded buffer on a helper thread and waits for it at most
    /// the save timeout, so a storage that never answers fails the operator
    /// instead of hanging it (the initial checkpoint, synchronous and
    /// exactly-once saves, chained operators). The buffer comes back for
    /// reuse; after a timeout the helper is left to finish on its own.
    fn save_within_timeout(
        &mut self,
        storage: &Arc<dyn StorageAgent>,
        window: WindowId,
        work: SaveWork,
        deadline: Instant,
    ) -> Result<(), SaveFailed> {
        let (done, result) = crossbeam_channel::bounded(1);
        let name = self.env.ctx.name.clone();
        let storage = Arc::clone(storage);
        let (retry, metrics, node) = (self.env.save_retry, Arc::clone(&self.env.metrics), self.env.node);
        std::thread::Builder::new()
            .name(format!("save:{name}"))
            .spawn(move || {
                let attempts = Attempts {
                    storage: &*storage,
                    name: &name,
                    window,
                    retry,
                    deadline,
                    metrics: &metrics.operators[node],
                    retried: std::cell::Cell::new(0),
                };
                let _ = done.send(perform(&attempts, work));
            })
            .map_err(|e| SaveFailed {
                message: format!("starting a thread to save it: {e}"),
                written: Vec::new(),
                running: false,
            })?;
        // Not cut short by a kill: a save must be over before the job
        // returns, or it would write after the job let go of its storage.
        // An agent that honours the deadline answers by then; a little
        // more is allowed for its answer to arrive.
        let patience = deadline.saturating_duration_since(Instant::now()) + ANSWER_GRACE;
        match result.recv_timeout(patience) {
            Ok(done) => {
                self.buffer = done.buffer;
                self.env.metrics.operators[self.env.node]
                    .checkpoint_bytes
                    .store(done.bytes, Ordering::Relaxed);
                let chunks = done.result?;
                if let Some(chunks) = chunks {
                    self.chunks = chunks;
                }
                Ok(())
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(SaveFailed {
                message: "its save thread ended without an answer".to_owned(),
                written: Vec::new(),
                running: false,
            }),
            // The save is still running: abandoning it now could race its
            // writes, so nothing it wrote is named.
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(SaveFailed {
                message: format!(
                    "it did not become durable within {:?} (the save timeout); the storage may be hanging",
                    self.env.save_timeout
                ),
                written: Vec::new(),
                running: true,
            }),
        }
    }

    /// A checkpoint whose save failed (after its retries, or past its
    /// deadline), already abandoned: tolerated while fewer than
    /// `Config::tolerable_failed_checkpoints` failed in a row, else a
    /// failure of the operator. A tolerated one is never reported durable,
    /// and the next checkpoint writes every key group (the one abandoned
    /// may have been the first to leave some out).
    pub(super) fn save_failed(&mut self, window: WindowId, failed: SaveFailed) -> Result<(), Failure> {
        let error = failed.message;
        let initial = window == self.activation();
        if initial || self.failed_in_a_row >= self.env.tolerable_failed_checkpoints {
            return Err(self.fail(format!("saving its checkpoint at {window}: {error}")));
        }
        // This incarnation goes on past the window, so nothing else will
        // save under its names: what the save wrote can go, within a bound
        // (what stays, retention removes).
        if let (Some(storage), false) = (&self.env.storage, failed.running) {
            let deadline = Instant::now() + self.env.save_timeout.min(std::time::Duration::from_secs(10));
            Deadline::scope(deadline, || {
                abandon(&**storage, &self.env.ctx.name, window, &failed.written)
            });
        }
        self.failed_in_a_row += 1;
        self.chunks.clear();
        self.save_started = None;
        self.env.metrics.operators[self.env.node]
            .failed_checkpoints
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            operator = %self.env.ctx.name,
            window = %window,
            error = %error,
            in_a_row = self.failed_in_a_row,
            tolerated = self.env.tolerable_failed_checkpoints,
            "checkpoint failed and abandoned; the operator goes on"
        );
        Ok(())
    }

    pub(super) fn saved(&mut self, window: WindowId) {
        self.failed_in_a_row = 0;
        let metrics = &self.env.metrics.operators[self.env.node];
        metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        metrics.last_checkpoint.store(window.as_u64(), Ordering::Relaxed);
        if let Some(started) = self.save_started.take() {
            let durable = started.elapsed();
            metrics.durable(durable);
            self.env.metrics.checkpointed(crate::metrics::CheckpointRecord {
                operator: self.env.ctx.name.clone(),
                window,
                bytes: metrics.checkpoint_bytes.load(Ordering::Relaxed),
                encode: std::time::Duration::from_nanos(metrics.encode_nanos_last.load(Ordering::Relaxed)),
                durable,
            });
        }
        tracing::debug!(
            operator = %self.env.ctx.name,
            window = %window,
            bytes = metrics.checkpoint_bytes.load(Ordering::Relaxed),
            "checkpoint durable"
        );
    }

    /// Blocks until no save is in flight (asynchronous saving only).
    pub(super) fn wait_for_save(&mut self) -> Result<(), Failure> {
        while let Some(window) = self.in_flight {
            let Some(control) = self.env.control.clone() else {
                // Chained operators save synchronously.
                return Ok(());
            };
            let started = self.save_started.unwrap_or_else(std::time::Instant::now);
            // The saver gives up at the deadline itself when its storage
            // can cancel; this is for one that cannot.
            let left = (self.env.save_timeout + ANSWER_GRACE).saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(self.fail(format!(
                    "its checkpoint at {window} did not become durable within {:?} (the save timeout); the storage \
                     may be hanging",
                    self.env.save_timeout
                )));
            }
            // Recovered downstreams reading this thread's stores go on
            // meanwhile.
            let mut select = Select::new();
            select.recv(&control);
            select.recv(&self.env.kill);
            match self.env.cursors.ready_timeout(select, 2, left)? {
                Some(0) => match control.try_recv() {
                    Ok(message) => self.accept(message)?,
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return Err(Failure::Aborted),
                },
                Some(_) => return Err(Failure::Aborted),
                None => {}
            }
        }
        Ok(())
    }
}
