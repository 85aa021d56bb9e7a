//! Type-erased wiring: what `connect` and `input`/`operator` capture while
//! the types are known, so that the supervisor can build partitions, their
//! channels and subscribers (and rebuild them on recovery) from a DAG whose
//! nodes and edges all have one type.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, KeyGroups, Snapshot, StorageAgent};
use crossbeam_channel::{Receiver, Sender};

use crate::failure::Failure;
use crate::operator::{InputOperator, Operator, OperatorContext, Tuple};
use crate::portable::instance::{Portable, PortableSubscriber, Routing as PortableRouting};
use crate::portable::{Instance, Outbox};
use crate::replay::{ReplayBuffer, SpillPolicy};
use crate::stream::{
    BroadcastSubscriber, Channel, ChannelSubscriber, ConvertSubscriber, Emitter, KeyedSubscriber, Link, Message,
    Subscriber,
};
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

fn downcast_all<T: 'static>(boxes: Vec<Box<dyn Any + Send>>) -> Vec<T> {
    boxes
        .into_iter()
        .map(|b| match b.downcast::<T>() {
            Ok(t) => *t,
            // Edges are typed when connected; a mismatch is a bug here.
            Err(_) => unreachable!("edge wiring of the wrong type"),
        })
        .collect()
}

/// `make(p)` builds partition `p`, or returns `None` once it has nothing
/// left to give: an unpartitioned operator's value is handed over once, and
/// `instance` turns a second request into an error.
pub(super) fn operator_factory<O: Operator>(
    make: impl FnMut(usize) -> Option<O> + Send + 'static,
) -> Box<dyn NodeFactory> {
    Box::new(OperatorFactory {
        make,
        config: Vec::new(),
        _op: PhantomData,
    })
}

struct OperatorFactory<O, F> {
    make: F,
    /// Per partition.
    config: Vec<RunConfig>,
    _op: PhantomData<fn() -> O>,
}

impl<O: Operator, F: FnMut(usize) -> Option<O> + Send> NodeFactory for OperatorFactory<O, F> {
    fn build(
        &mut self,
        partition: usize,
        parts: NodeParts,
        inline: bool,
        restore: Restore,
    ) -> Result<Built, BuildError> {
        if self.config.len() <= partition {
            self.config.resize_with(partition + 1, RunConfig::default);
        }
        let make = &mut self.make;
        let op = instance(restore, &parts.env.ctx.name, &mut self.config[partition], || {
            make(partition)
        })?;
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
        if self.config.len() <= partition {
            self.config.resize_with(partition + 1, RunConfig::default);
        }
        let make = &mut self.make;
        let op = instance(restore, &ctx.name, &mut self.config[partition], || make(partition))?;
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

/// `make(p)` builds input partition `p`, or returns `None` once it has
/// nothing left to give (an unpartitioned input's value is handed over
/// once).
pub(super) fn input_factory<I: InputOperator>(
    make: impl FnMut(usize) -> Option<I> + Send + 'static,
) -> Box<dyn NodeFactory> {
    Box::new(InputFactory {
        make,
        config: Vec::new(),
        _op: PhantomData,
    })
}

struct InputFactory<I, F> {
    make: F,
    /// Per partition.
    config: Vec<RunConfig>,
    _op: PhantomData<fn() -> I>,
}

impl<I: InputOperator, F: FnMut(usize) -> Option<I> + Send> InputFactory<I, F> {
    fn value(&mut self, partition: usize, name: &str, restore: Restore) -> Result<I, BuildError> {
        if self.config.len() <= partition {
            self.config.resize_with(partition + 1, RunConfig::default);
        }
        let make = &mut self.make;
        instance(restore, name, &mut self.config[partition], || make(partition))
    }
}

impl<I: InputOperator, F: FnMut(usize) -> Option<I> + Send> NodeFactory for InputFactory<I, F> {
    fn build(
        &mut self,
        partition: usize,
        parts: NodeParts,
        _inline: bool,
        restore: Restore,
    ) -> Result<Built, BuildError> {
        let op = self.value(partition, &parts.env.ctx.name, restore)?;
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
        let op = self.value(partition, &ctx.name, restore)?;
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

/// How one edge's channels and subscribers are made, typed at `connect`
/// time.
pub(crate) trait EdgeWiring: Send {
    /// A channel to one downstream partition: an erased
    /// `Sender<Message<W>>` (W: what the upstream's subscriber sends) and
    /// the erased `Receiver<Message<In>>` of the downstream.
    fn channel(&self, capacity: usize) -> (Erased, Erased);

    /// The `Box<dyn Subscriber<T>>` of one upstream partition, from its
    /// channels to the downstream partitions (downstream node, sender), in
    /// partition order.
    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, key_groups: KeyGroups) -> Erased;

    /// For a thread-local edge: the upstream's subscriber for the chained
    /// downstream (`Box<dyn Subscriber<In>>` in, `Box<dyn Subscriber<T>>` out).
    fn chain(&self, downstream: Erased) -> Erased;

    /// Whether it sends every tuple to every downstream partition.
    fn broadcasts(&self) -> bool {
        false
    }

    /// The `Box<dyn Subscriber<T>>` of upstream partition `partition` for
    /// another engine: it encodes what it is given into `outbox`, as edge
    /// `edge`, routed over `downstream` partitions.
    fn portable(
        &self,
        edge: usize,
        partition: usize,
        downstream: usize,
        outbox: Outbox,
        key_groups: KeyGroups,
    ) -> Erased;
}

/// A plain edge's route: to the downstream's one partition, or, between
/// two operators of equal partitions (a chained edge), to the same one.
fn forward(partition: usize, downstream: usize) -> PortableRouting<()> {
    PortableRouting::To(if downstream > 1 { partition } else { 0 })
}

fn portable_subscriber<T: Tuple>(edge: usize, outbox: Outbox, routing: PortableRouting<T>) -> Box<dyn Subscriber<T>> {
    Box::new(PortableSubscriber { edge, outbox, routing })
}

fn retype<T>(routing: PortableRouting<()>) -> PortableRouting<T> {
    match routing {
        PortableRouting::To(partition) => PortableRouting::To(partition),
        _ => PortableRouting::All,
    }
}

fn channel_of<W: Tuple>(capacity: usize) -> (Erased, Erased) {
    let (tx, rx) = crossbeam_channel::bounded::<Message<W>>(capacity);
    (Box::new(tx), Box::new(rx))
}

fn channels_of<W: Tuple>(channels: Vec<(usize, Erased)>) -> Vec<Channel<W>> {
    channels
        .into_iter()
        .map(|(target, tx)| match tx.downcast::<Sender<Message<W>>>() {
            Ok(tx) => Channel::new(target, *tx),
            Err(_) => unreachable!("edge wiring of the wrong type"),
        })
        .collect()
}

pub(super) fn plain_edge<T: Tuple>() -> Box<dyn EdgeWiring> {
    Box::new(PlainEdge::<T>(PhantomData))
}

struct PlainEdge<T>(PhantomData<fn() -> T>);

impl<T: Tuple> EdgeWiring for PlainEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, _key_groups: KeyGroups) -> Erased {
        let mut channels = channels_of::<T>(channels);
        let Some(channel) = channels.pop() else {
            unreachable!("a plain edge has one downstream partition");
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ChannelSubscriber {
            channel,
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        downstream
    }

    fn portable(
        &self,
        edge: usize,
        partition: usize,
        downstream: usize,
        outbox: Outbox,
        _key_groups: KeyGroups,
    ) -> Erased {
        Box::new(portable_subscriber::<T>(
            edge,
            outbox,
            retype(forward(partition, downstream)),
        ))
    }
}

pub(super) fn convert_edge<T: Tuple, In: Tuple>(
    convert: impl Fn(T) -> In + Send + Sync + 'static,
) -> Box<dyn EdgeWiring> {
    Box::new(ConvertEdge::<T, In> {
        convert: Arc::new(convert),
        broadcast: false,
    })
}

struct ConvertEdge<T, In> {
    convert: Arc<dyn Fn(T) -> In + Send + Sync>,
    /// To every downstream partition (else to the one there is).
    broadcast: bool,
}

impl<T: Tuple, In: Tuple> EdgeWiring for ConvertEdge<T, In> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<In>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, _key_groups: KeyGroups) -> Erased {
        let mut channels = channels_of::<In>(channels);
        let inner: Box<dyn Subscriber<In>> = if self.broadcast {
            Box::new(BroadcastSubscriber {
                partitions: channels,
                link: link.clone(),
            })
        } else {
            let Some(channel) = channels.pop() else {
                unreachable!("a converting edge has one downstream partition");
            };
            Box::new(ChannelSubscriber {
                channel,
                link: link.clone(),
            })
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner,
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        let inner = downcast_all::<Box<dyn Subscriber<In>>>(vec![downstream]).remove(0);
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner,
        });
        Box::new(subscriber)
    }

    fn broadcasts(&self) -> bool {
        self.broadcast
    }

    fn portable(
        &self,
        edge: usize,
        partition: usize,
        downstream: usize,
        outbox: Outbox,
        _key_groups: KeyGroups,
    ) -> Erased {
        let routing = if self.broadcast {
            PortableRouting::All
        } else {
            retype(forward(partition, downstream))
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner: portable_subscriber::<In>(edge, outbox, routing),
        });
        Box::new(subscriber)
    }
}

pub(super) fn broadcast_edge<T: Tuple>() -> Box<dyn EdgeWiring> {
    Box::new(BroadcastEdge::<T>(PhantomData))
}

struct BroadcastEdge<T>(PhantomData<fn() -> T>);

impl<T: Tuple> EdgeWiring for BroadcastEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, _key_groups: KeyGroups) -> Erased {
        let subscriber: Box<dyn Subscriber<T>> = Box::new(BroadcastSubscriber {
            partitions: channels_of::<T>(channels),
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        // Validation allows thread-local edges only as plain edges.
        downstream
    }

    fn portable(
        &self,
        edge: usize,
        _partition: usize,
        _downstream: usize,
        outbox: Outbox,
        _key_groups: KeyGroups,
    ) -> Erased {
        Box::new(portable_subscriber::<T>(edge, outbox, PortableRouting::All))
    }
}

pub(super) fn broadcast_convert_edge<T: Tuple, In: Tuple>(
    convert: impl Fn(T) -> In + Send + Sync + 'static,
) -> Box<dyn EdgeWiring> {
    Box::new(ConvertEdge::<T, In> {
        convert: Arc::new(convert),
        broadcast: true,
    })
}

pub(super) fn keyed_edge<T: Tuple>(key: impl Fn(&T) -> u64 + Send + Sync + 'static) -> Box<dyn EdgeWiring> {
    Box::new(KeyedEdge::<T> { key: Arc::new(key) })
}

struct KeyedEdge<T> {
    key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
}

impl<T: Tuple> EdgeWiring for KeyedEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link, key_groups: KeyGroups) -> Erased {
        let subscriber: Box<dyn Subscriber<T>> = Box::new(KeyedSubscriber {
            key: Arc::clone(&self.key),
            key_groups,
            partitions: channels_of::<T>(channels),
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        // Validation allows thread-local edges only as plain edges.
        downstream
    }

    fn portable(
        &self,
        edge: usize,
        _partition: usize,
        downstream: usize,
        outbox: Outbox,
        key_groups: KeyGroups,
    ) -> Erased {
        let routing = PortableRouting::Keyed {
            key: Arc::clone(&self.key),
            key_groups,
            partitions: downstream.max(1),
        };
        Box::new(portable_subscriber::<T>(edge, outbox, routing))
    }
}
