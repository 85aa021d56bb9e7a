//! Type-erased node factories: what `input`/`operator` capture while the
//! types are known, so that the supervisor (or another engine) can build
//! each partition, fresh or restored, from a DAG whose nodes all have one
//! type.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, KeyGroups, Snapshot, StorageAgent};
use crossbeam_channel::Receiver;

use crate::failure::Failure;
use crate::operator::{InputOperator, Operator, OperatorContext};
use crate::portable::instance::Portable;
use crate::portable::{Instance, Outbox};
use crate::replay::{ReplayBuffer, SpillPolicy};
use crate::stream::{Emitter, Message, Subscriber};
use crate::task::{AsInput, AsOperator, Core, InlineSubscriber, NodeEnv};
use crate::task::{StopFlag, run_input, run_operator};
use crate::window::WindowGenerator;

/// A type-erased value whose type the two ends of an edge agree on.
pub(crate) type Erased = Box<dyn Any + Send>;

/// A partition's thread body.
pub(crate) type ThreadBody = Box<dyn FnOnce() -> Result<(), Failure> + Send>;

/// What a node's factory gets to build one partition.
pub(crate) struct NodeParts {
    pub(crate) env: NodeEnv,
    /// `Box<dyn Subscriber<Out>>` per outgoing connection.
    pub(crate) subscribers: Vec<Box<dyn Any + Send>>,
    /// `Receiver<Message<In>>` per incoming queued edge.
    pub(crate) inputs: Vec<Box<dyn Any + Send>>,
    pub(crate) batch_size: usize,
    /// Where its output stream's replay buffer spills; `None` with
    /// checkpointing off (no buffer).
    pub(crate) replay: Option<SpillPolicy>,
    pub(crate) generator: WindowGenerator,
    pub(crate) stop: StopFlag,
}

/// What a partition is built from.
pub(crate) enum Restore {
    /// The user's value (first run).
    Fresh,
    /// A snapshot to decode, with the storage its chunks (if it has any)
    /// are loaded from.
    Snapshot {
        bytes: Vec<u8>,
        storage: Option<Arc<dyn StorageAgent>>,
    },
    /// A partition of a keyed operator whose partition count changed: the
    /// old partitions' snapshots holding the key groups it owns.
    Rescaled {
        sources: Vec<(String, Vec<u8>)>,
        key_groups: KeyGroups,
        owned: std::ops::Range<u32>,
        storage: Option<Arc<dyn StorageAgent>>,
    },
}

/// The configuration fields (`#[checkpoint(config)]`) of one partition,
/// captured once per run from the value handed to the DAG.
#[derive(Default)]
struct RunConfig {
    /// `None` until captured; `Some(None)` for a type without configuration.
    captured: Option<Option<Erased>>,
}

impl RunConfig {
    fn capture<T: Checkpoint>(&mut self, fresh: &T) {
        self.captured = Some(fresh.capture_config());
    }
}

/// Builds the operator value of a partition.
///
/// A decoded snapshot gets this run's configuration: the first build takes
/// it from the value handed to the DAG (a resumed job's first build is a
/// restore, so that value is used for its configuration only, then
/// dropped), and every later restore of the run applies the same.
fn instance<T: Checkpoint>(
    restore: Restore,
    name: &str,
    config: &mut RunConfig,
    fresh: impl FnOnce() -> Option<T>,
) -> Result<T, BuildError> {
    if let Restore::Fresh = restore {
        let value = fresh().ok_or_else(|| format!("operator {name:?} was already built"))?;
        config.capture(&value);
        return Ok(value);
    }
    if T::HAS_CONFIG && config.captured.is_none() {
        let value = fresh().ok_or_else(|| {
            format!("restoring {name:?}: the operator value handed to the DAG, which holds its configuration, is gone")
        })?;
        config.capture(&value);
    }
    let (bytes, storage) = match restore {
        Restore::Fresh => unreachable!("returned above"),
        Restore::Snapshot { bytes, storage } => (bytes, storage),
        Restore::Rescaled {
            sources,
            key_groups,
            owned,
            storage,
        } => {
            let Some(storage) = storage else {
                return Err(format!("restoring {name:?} from its old partitions: no storage").into());
            };
            let sources: Vec<(&str, &[u8])> = sources.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
            let mut value = if T::STATELESS {
                T::decode_state(&mut &[][..]).map_err(|e| format!("rebuilding stateless {name:?}: {e}"))?
            } else {
                Snapshot::decode_rescaled::<T>(&sources, name, key_groups, owned, |op, id| storage.load_chunk(op, id))
                    .map(|(_, value)| value)
                    .map_err(BuildError::Restore)?
            };
            if let Some(Some(carrier)) = &config.captured {
                value.restore_config(&**carrier);
            }
            return Ok(value);
        }
    };
    let mut value = if bytes.is_empty() && T::STATELESS {
        T::decode_state(&mut &[][..]).map_err(|e| format!("rebuilding stateless {name:?}: {e}"))?
    } else {
        let decoded = match &storage {
            // Keyed maps in chunks are loaded from the storage, groups on
            // several threads.
            Some(storage) => Snapshot::decode_with_chunks::<T>(&bytes, name, None, |op, id| storage.load_chunk(op, id)),
            None => Snapshot::decode::<T>(&bytes),
        };
        decoded.map(|(_, value)| value).map_err(BuildError::Restore)?
    };
    if let Some(Some(carrier)) = &config.captured {
        value.restore_config(&**carrier);
    }
    Ok(value)
}

/// Why a partition could not be built.
#[derive(Debug)]
pub(crate) enum BuildError {
    /// Its snapshot does not decode as its state type (a layout that does
    /// not match, say).
    Restore(checkpoint_core::SnapshotError),
    /// Anything else, said in words.
    Other(String),
}

impl From<String> for BuildError {
    fn from(detail: String) -> Self {
        BuildError::Other(detail)
    }
}

/// A built partition: a thread body, or (for the downstream of a
/// thread-local edge) a subscriber to chain onto its upstream.
pub(crate) enum Built {
    Thread(ThreadBody),
    /// `Box<dyn Subscriber<In>>`.
    Inline(Box<dyn Any + Send>),
}

pub(crate) trait NodeFactory: Send {
    fn build(
        &mut self,
        partition: usize,
        parts: NodeParts,
        inline: bool,
        restore: Restore,
    ) -> Result<Built, BuildError>;

    /// Partition `partition` as an instance another engine drives, with
    /// its outgoing edges' portable subscribers.
    fn portable(
        &mut self,
        partition: usize,
        ctx: OperatorContext,
        subscribers: Vec<Erased>,
        outbox: Outbox,
        restore: Restore,
        chunks: Vec<checkpoint_core::ChunkRef>,
    ) -> Result<Box<dyn Instance>, BuildError>;
}

/// Tuples per batch an instance hands another engine.
const PORTABLE_BATCH: usize = 1024;

pub(super) fn downcast_all<T: 'static>(boxes: Vec<Box<dyn Any + Send>>) -> Vec<T> {
    boxes
        .into_iter()
        .map(|b| match b.downcast::<T>() {
            Ok(t) => *t,
            // Edges are typed when connected; a mismatch is a bug here.
            Err(_) => unreachable!("edge wiring of the wrong type"),
        })
        .collect()
}

/// The values of one node's partitions: `make(p)` builds partition `p`, or
/// returns `None` once it has nothing left to give (an unpartitioned
/// node's value is handed over once, and a second request is an error);
/// a restored partition takes its configuration fields from the value
/// captured in this run.
struct Values<T, F> {
    make: F,
    /// Per partition.
    config: Vec<RunConfig>,
    _value: PhantomData<fn() -> T>,
}

impl<T: Checkpoint, F: FnMut(usize) -> Option<T>> Values<T, F> {
    fn new(make: F) -> Self {
        Values {
            make,
            config: Vec::new(),
            _value: PhantomData,
        }
    }

    /// Partition `partition`'s value, fresh or restored.
    fn get(&mut self, partition: usize, name: &str, restore: Restore) -> Result<T, BuildError> {
        if self.config.len() <= partition {
            self.config.resize_with(partition + 1, RunConfig::default);
        }
        let make = &mut self.make;
        instance(restore, name, &mut self.config[partition], || make(partition))
    }
}

/// An operator's factory (see [`Values`] for `make`).
pub(super) fn operator_factory<O: Operator>(
    make: impl FnMut(usize) -> Option<O> + Send + 'static,
) -> Box<dyn NodeFactory> {
    Box::new(OperatorFactory(Values::new(make)))
}

struct OperatorFactory<O, F>(Values<O, F>);

impl<O: Operator, F: FnMut(usize) -> Option<O> + Send> NodeFactory for OperatorFactory<O, F> {
    fn build(
        &mut self,
        partition: usize,
        parts: NodeParts,
        inline: bool,
        restore: Restore,
    ) -> Result<Built, BuildError> {
        let op = self.0.get(partition, &parts.env.ctx.name, restore)?;
        let subscribers = downcast_all::<Box<dyn Subscriber<O::Output>>>(parts.subscribers);
        let replay = parts.replay.map(|spill| ReplayBuffer::new(&parts.env.ctx.name, spill));
        let emitter = Emitter::new(parts.batch_size, subscribers, replay, parts.env.cursors.clone());
        let mut core = Core::new(AsOperator(op), emitter, parts.env);
        if inline {
            let subscriber: Box<dyn Subscriber<O::Input>> = Box::new(InlineSubscriber { core, skipping: false });
            return Ok(Built::Inline(Box::new(subscriber)));
        }
        let inputs = downcast_all::<Receiver<Message<O::Input>>>(parts.inputs);
        Ok(Built::Thread(Box::new(move || {
            let result = run_operator(&mut core, inputs);
            core.teardown();
            result
        })))
    }

    fn portable(
        &mut self,
        partition: usize,
        ctx: OperatorContext,
        subscribers: Vec<Erased>,
        outbox: Outbox,
        restore: Restore,
        chunks: Vec<checkpoint_core::ChunkRef>,
    ) -> Result<Box<dyn Instance>, BuildError> {
        let op = self.0.get(partition, &ctx.name, restore)?;
        let subscribers = downcast_all::<Box<dyn Subscriber<O::Output>>>(subscribers);
        Ok(Box::new(Portable::new(
            &ctx,
            AsOperator(op),
            subscribers,
            outbox,
            PORTABLE_BATCH,
            chunks,
        )))
    }
}

/// An input's factory (see [`Values`] for `make`).
pub(super) fn input_factory<I: InputOperator>(
    make: impl FnMut(usize) -> Option<I> + Send + 'static,
) -> Box<dyn NodeFactory> {
    Box::new(InputFactory(Values::new(make)))
}

struct InputFactory<I, F>(Values<I, F>);

impl<I: InputOperator, F: FnMut(usize) -> Option<I> + Send> NodeFactory for InputFactory<I, F> {
    fn build(
        &mut self,
        partition: usize,
        parts: NodeParts,
        _inline: bool,
        restore: Restore,
    ) -> Result<Built, BuildError> {
        let op = self.0.get(partition, &parts.env.ctx.name, restore)?;
        let subscribers = downcast_all::<Box<dyn Subscriber<I::Output>>>(parts.subscribers);
        let replay = parts.replay.map(|spill| ReplayBuffer::new(&parts.env.ctx.name, spill));
        let emitter = Emitter::new(parts.batch_size, subscribers, replay, parts.env.cursors.clone());
        let mut core = Core::new(AsInput(op), emitter, parts.env);
        let generator = parts.generator;
        let stop = parts.stop;
        Ok(Built::Thread(Box::new(move || {
            let result = run_input(&mut core, &generator, &stop);
            core.teardown();
            result
        })))
    }

    fn portable(
        &mut self,
        partition: usize,
        ctx: OperatorContext,
        subscribers: Vec<Erased>,
        outbox: Outbox,
        restore: Restore,
        chunks: Vec<checkpoint_core::ChunkRef>,
    ) -> Result<Box<dyn Instance>, BuildError> {
        let op = self.0.get(partition, &ctx.name, restore)?;
        let subscribers = downcast_all::<Box<dyn Subscriber<I::Output>>>(subscribers);
        Ok(Box::new(Portable::new(
            &ctx,
            AsInput(op),
            subscribers,
            outbox,
            PORTABLE_BATCH,
            chunks,
        )))
    }
}
