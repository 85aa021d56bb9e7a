//! The typed side of [`Instance`]: an operator or input with its emitter,
//! whose subscribers encode and route what it emits, and the subscribers.

use std::sync::Arc;

use checkpoint_core::{ChunkRef, KeyGroups, Snapshot, SnapshotMeta, WindowId};

use super::{Instance, Outbox, Route, Routed, drain};
use crate::error::RunError;
use crate::failure::Failure;
use crate::operator::{Emit, InputOperator, Operator, OperatorContext, Tuple};
use crate::stream::{Emitter, Subscriber};
use crate::task::{AsInput, AsOperator, Lifecycle};

/// An operator's or input's value with its emitter.
pub(crate) struct Portable<L: Hooks> {
    name: String,
    ctx: OperatorContext,
    value: L,
    emitter: Emitter<<L as Lifecycle>::Out>,
    outbox: Outbox,
    window: Option<WindowId>,
    /// Inside an application window (its `begin_window` ran).
    in_app_window: bool,
    /// `end_of_stream` ran.
    ended: bool,
    /// The chunk table of its last snapshot (or of the one it was restored
    /// from): the next one refers to its chunks for unchanged key groups.
    chunks: Vec<ChunkRef>,
    /// The payload buffer, reused from one snapshot to the next.
    buffer: Vec<u8>,
}

/// What an instance needs beyond the lifecycle hooks the threaded
/// runtime's tasks use ([`Lifecycle`]): a tuple of the input, or a call of
/// the input's `emit_tuples`.
pub(crate) trait Hooks: Lifecycle {
    type In: Tuple;
    fn process(&mut self, tuple: Self::In, out: &mut Emitter<Self::Out>) -> crate::OperatorResult;
    fn emit(&mut self, out: &mut Emitter<Self::Out>) -> crate::OperatorResult<Emit>;
}

impl<O: Operator> Hooks for AsOperator<O> {
    type In = O::Input;
    fn process(&mut self, tuple: O::Input, out: &mut Emitter<O::Output>) -> crate::OperatorResult {
        self.0.process(tuple, out)
    }
    fn emit(&mut self, _out: &mut Emitter<O::Output>) -> crate::OperatorResult<Emit> {
        Err("an operator that is not an input was asked to emit".into())
    }
}

impl<I: InputOperator> Hooks for AsInput<I> {
    // Never decoded: an input is given no batch.
    type In = ();
    fn process(&mut self, _tuple: (), _out: &mut Emitter<I::Output>) -> crate::OperatorResult {
        Err("an input was given a batch".into())
    }
    fn emit(&mut self, out: &mut Emitter<I::Output>) -> crate::OperatorResult<Emit> {
        self.0.emit_tuples(out)
    }
}

impl<L: Hooks> Portable<L> {
    pub(crate) fn new(
        ctx: &OperatorContext,
        value: L,
        subscribers: Vec<Box<dyn Subscriber<L::Out>>>,
        outbox: Outbox,
        batch_size: usize,
        chunks: Vec<ChunkRef>,
    ) -> Self {
        Portable {
            name: ctx.name.clone(),
            ctx: ctx.clone(),
            value,
            emitter: Emitter::new(batch_size, subscribers, None, crate::stream::Cursors::default()),
            outbox,
            window: None,
            in_app_window: false,
            ended: false,
            chunks,
            buffer: Vec::new(),
        }
    }

    fn failed(&self, error: Box<dyn std::error::Error + Send + Sync>) -> RunError {
        RunError::OperatorFailed {
            operator: self.name.clone(),
            window: self.window,
            cause: error.to_string(),
            source: Some(error),
        }
    }

    fn runtime(&self, failure: Failure) -> RunError {
        RunError::OperatorFailed {
            operator: self.name.clone(),
            window: self.window,
            cause: failure.to_string(),
            source: None,
        }
    }

    fn flushed(&mut self) -> Result<(), RunError> {
        self.emitter.flush();
        self.emitter.take_failure().map_err(|failure| self.runtime(failure))
    }
}

impl<L: Hooks> Instance for Portable<L> {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&mut self) -> Result<(), RunError> {
        self.value.setup(&self.ctx).map_err(|e| self.failed(e))
    }

    fn begin_window(&mut self, window: WindowId) -> Result<(), RunError> {
        self.window = Some(window);
        self.emitter.begin_window(window).map_err(|f| self.runtime(f))?;
        if !self.in_app_window {
            self.in_app_window = true;
            self.value.begin_window(window).map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    fn process(&mut self, batch: &[u8]) -> Result<(), RunError> {
        let tuples: Vec<L::In> = postcard::from_bytes(batch).map_err(|e| {
            self.runtime(Failure::operator(
                &self.name,
                self.window,
                format!("decoding a batch: {e}"),
            ))
        })?;
        for tuple in tuples {
            self.value
                .process(tuple, &mut self.emitter)
                .map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    fn emit(&mut self) -> Result<Emit, RunError> {
        let emitted = self.value.emit(&mut self.emitter).map_err(|e| self.failed(e))?;
        if emitted == Emit::Done {
            self.flushed()?;
        }
        Ok(emitted)
    }

    fn emitted_in_window(&self) -> u64 {
        self.emitter.emitted_in_window()
    }

    fn end_window(&mut self, last: bool) -> Result<(), RunError> {
        let Some(window) = self.window else {
            return Err(self.runtime(Failure::operator(
                &self.name,
                None,
                "internal error: the engine ended a window it never began",
            )));
        };
        let app_end = last || window.ends_group_of(self.ctx.application_window_count);
        if app_end && self.in_app_window {
            self.value.end_window(&mut self.emitter).map_err(|e| self.failed(e))?;
            self.in_app_window = false;
        }
        if last && !self.ended {
            self.ended = true;
            self.value
                .end_of_stream(&mut self.emitter)
                .map_err(|e| self.failed(e))?;
        }
        self.emitter.end_window(window, last).map_err(|f| self.runtime(f))?;
        self.flushed()
    }

    fn end_of_stream(&mut self) -> Result<(), RunError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.value
            .end_of_stream(&mut self.emitter)
            .map_err(|e| self.failed(e))?;
        self.flushed()
    }

    fn take_output(&mut self) -> Vec<Routed> {
        drain(&self.outbox)
    }

    fn snapshot(&mut self, window: WindowId) -> Result<Vec<u8>, RunError> {
        self.value.before_checkpoint(window).map_err(|e| self.failed(e))?;
        let meta = SnapshotMeta::new(&self.name, window);
        let encoding = |e: checkpoint_core::SnapshotError| {
            Failure::operator(&self.name, Some(window), format!("encoding its state: {e}"))
        };
        let Some(storage) = self.ctx.storage.clone().filter(|s| s.supports_chunks()) else {
            return Snapshot::encode(self.value.state(), meta).map_err(|e| self.runtime(encoding(e)));
        };
        // Keyed groups in chunks, as the threaded runtime saves them: only
        // the changed ones are written, and a restart with another
        // partition count can split them.
        let buffer = std::mem::take(&mut self.buffer);
        let finished = Snapshot::freeze(self.value.state(), meta, buffer, &self.chunks)
            .and_then(|frozen| frozen.finish(|chunks| storage.save_chunks(&self.name, chunks)));
        let finished = match finished {
            Ok(finished) => finished,
            Err(e) => return Err(self.runtime(encoding(e))),
        };
        self.chunks = finished.chunks;
        self.buffer = finished.payload_buffer;
        Ok(finished.bytes)
    }

    fn checkpointed(&mut self, window: WindowId) -> Result<(), RunError> {
        self.value.checkpointed(window).map_err(|e| self.failed(e))
    }

    fn committed(&mut self, window: WindowId) -> Result<(), RunError> {
        self.value.committed(window).map_err(|e| self.failed(e))
    }

    fn teardown(&mut self) {
        self.value.teardown();
    }
}

/// Encodes a batch for the outbox.
fn encode<T: serde::Serialize>(name: &str, tuples: &[T]) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    crate::replay::encode_into(tuples, &mut out)
        .map_err(|e| Failure::operator(name, None, format!("encoding a batch for another engine: {e}")))?;
    Ok(out)
}

/// A subscriber that encodes what it is given and routes it.
pub(crate) struct PortableSubscriber<T> {
    pub(crate) edge: usize,
    pub(crate) outbox: Outbox,
    pub(crate) routing: Routing<T>,
}

/// How a portable subscriber routes a batch.
pub(crate) enum Routing<T> {
    /// Everything to one partition.
    To(usize),
    /// Everything to every partition.
    All,
    /// Each tuple to the partition owning its key's group.
    Keyed {
        key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
        key_groups: KeyGroups,
        partitions: usize,
    },
}

impl<T: Tuple> Subscriber<T> for PortableSubscriber<T> {
    // Window boundaries are the engine's (timestamps), not messages.
    fn begin_window(&mut self, _window: WindowId) -> Result<(), Failure> {
        Ok(())
    }

    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let mut routed = Vec::new();
        match &self.routing {
            Routing::To(partition) => routed.push((Route::Partition(*partition), encode("", batch.as_slice())?)),
            Routing::All => routed.push((Route::All, encode("", batch.as_slice())?)),
            Routing::Keyed {
                key,
                key_groups,
                partitions,
            } => {
                let mut split: Vec<Vec<&T>> = (0..*partitions).map(|_| Vec::new()).collect();
                for tuple in batch.iter() {
                    let partition = crate::stream::partition_of(*key_groups, key(tuple), *partitions);
                    split[partition].push(tuple);
                }
                for (partition, part) in split.into_iter().enumerate() {
                    if !part.is_empty() {
                        routed.push((Route::Partition(partition), encode("", part.as_slice())?));
                    }
                }
            }
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        outbox.extend(routed.into_iter().map(|(route, batch)| Routed {
            edge: self.edge,
            route,
            batch,
        }));
        Ok(())
    }

    fn end_window(&mut self, _window: WindowId, _last: bool) -> Result<(), Failure> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), Failure> {
        Ok(())
    }
}
