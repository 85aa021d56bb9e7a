//! Saving checkpoints: encoding the state (or, when it holds keyed maps and
//! the storage keeps chunks, freezing it), saving it on the operator's
//! thread or handing it to the operator's saver thread, with a deadline,
//! and reporting it durable.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use checkpoint_core::{ChunkRef, FrozenSnapshot, Snapshot, SnapshotMeta, StorageAgent, WindowId};
use crossbeam_channel::{Select, Sender, TryRecvError};

use crate::failure::{Failure, panic_message};
use crate::protocol::{Control, Event};

use super::{Core, Lifecycle, NodeEnv};

/// Saves a snapshot, a panic in the storage agent turned into an error.
fn save_caught(storage: &dyn StorageAgent, name: &str, window: WindowId, bytes: &[u8]) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| storage.save(name, window, bytes))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic_message(&*panic)),
    }
}

struct SaveJob {
    window: WindowId,
    work: SaveWork,
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
    result: Result<Option<Vec<ChunkRef>>, String>,
    bytes: u64,
}

/// Performs one save: for a frozen state, its new chunks (durable first)
/// then the snapshot; the snapshot never refers to a chunk that is not
/// durable.
fn perform(storage: &dyn StorageAgent, name: &str, window: WindowId, work: SaveWork) -> SaveDone {
    match work {
        SaveWork::Whole(bytes) => {
            let result = save_caught(storage, name, window, &bytes).map(|()| None);
            let len = bytes.len() as u64;
            SaveDone {
                buffer: bytes,
                result,
                bytes: len,
            }
        }
        SaveWork::Frozen(frozen) => {
            let finished = catch_unwind(AssertUnwindSafe(|| {
                frozen.finish(|chunks| storage.save_chunks(name, chunks))
            }));
            let finished = match finished {
                Ok(Ok(finished)) => finished,
                Ok(Err(e)) => {
                    return SaveDone {
                        buffer: Vec::new(),
                        result: Err(e.to_string()),
                        bytes: 0,
                    };
                }
                Err(panic) => {
                    return SaveDone {
                        buffer: Vec::new(),
                        result: Err(panic_message(&*panic)),
                        bytes: 0,
                    };
                }
            };
            let result = save_caught(storage, name, window, &finished.bytes).map(|()| Some(finished.chunks));
            SaveDone {
                buffer: finished.payload_buffer,
                result,
                bytes: finished.written_bytes + finished.bytes.len() as u64,
            }
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
        let thread = std::thread::Builder::new()
            .name(format!("save:{name}"))
            .spawn(move || {
                for job in rx {
                    let done = perform(&*storage, &name, job.window, job.work);
                    metrics.operators[node]
                        .checkpoint_bytes
                        .store(done.bytes, Ordering::Relaxed);
                    // A failed save leaves nothing behind (the storage
                    // contract): no clean-up here, which could delete a
                    // checkpoint a newer incarnation saved meanwhile. A
                    // failed save's chunks are referred to by no snapshot;
                    // retention removes them.
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
        self.env.metrics.operators[self.env.node].encoded(started.elapsed());
        self.last_checkpoint = Some(window);
        self.save_started = Some(std::time::Instant::now());
        if let Some(jobs) = self
            .saver
            .as_ref()
            .and_then(|s| s.jobs.as_ref())
            .filter(|_| !synchronous)
        {
            self.in_flight = Some(window);
            jobs.send(SaveJob { window, work }).map_err(|_| Failure::Aborted)?;
            return Ok(());
        }
        if let Err(e) = self.save_within_timeout(&storage, window, work) {
            return Err(self.fail(format!("saving its checkpoint at {window}: {e}")));
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
    ) -> Result<(), String> {
        let (done, result) = crossbeam_channel::bounded(1);
        let name = self.env.ctx.name.clone();
        let storage = Arc::clone(storage);
        std::thread::Builder::new()
            .name(format!("save:{name}"))
            .spawn(move || {
                let _ = done.send(perform(&*storage, &name, window, work));
            })
            .map_err(|e| format!("starting a thread to save it: {e}"))?;
        // Not cut short by a kill: a save must be over before the job
        // returns, or it would write after the job let go of its storage.
        match result.recv_timeout(self.env.save_timeout) {
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
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                Err("its save thread ended without an answer".to_owned())
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(format!(
                "it did not become durable within {:?} (the save timeout); the storage may be hanging",
                self.env.save_timeout
            )),
        }
    }

    pub(super) fn saved(&mut self, window: WindowId) {
        let metrics = &self.env.metrics.operators[self.env.node];
        metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        metrics.last_checkpoint.store(window.as_u64(), Ordering::Relaxed);
        if let Some(started) = self.save_started.take() {
            metrics.durable(started.elapsed());
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
            let left = self.env.save_timeout.saturating_sub(started.elapsed());
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
