//! The DAG builder: operators, inputs, and the typed edges between them.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use checkpoint_core::{Checkpoint, Snapshot};
use crossbeam_channel::{Receiver, Sender};

use crate::core::{AsInput, AsOperator, Core, InlineSubscriber, NodeEnv};
use crate::error::DagError;
use crate::failure::Failure;
use crate::operator::{InputOperator, Operator, ProcessingMode, Tuple};
use crate::partition::StableHash;
use crate::replay::{ReplayBuffer, SpillPolicy};
use crate::stream::{
    Channel, ChannelSubscriber, ConvertSubscriber, Emitter, KeyedSubscriber, Link, Message, Subscriber,
};
use crate::window::WindowGenerator;
use crate::worker::{StopFlag, run_input, run_operator};

/// The input type of an input operator's handle: nothing can be connected
/// into an input. It is not a [`Tuple`], so `dag.connect(&x, &some_input)`
/// does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoInput {}

/// A handle to an operator in a [`Dag`], typed by what it receives (`In`)
/// and emits (`Out`), so edges are checked at compile time.
pub struct Node<In, Out> {
    dag: u64,
    index: usize,
    _types: PhantomData<fn(In) -> Out>,
}

impl<In, Out> Clone for Node<In, Out> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<In, Out> Copy for Node<In, Out> {}

impl<In, Out> std::fmt::Debug for Node<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("index", &self.index).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Input,
    Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    Plain,
    Converted,
    Keyed,
    ThreadLocal,
}

impl EdgeKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EdgeKind::Plain => "plain",
            EdgeKind::Converted => "converted",
            EdgeKind::Keyed => "keyed",
            EdgeKind::ThreadLocal => "thread-local",
        }
    }
}

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
    /// A snapshot to decode.
    Snapshot(Vec<u8>),
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
) -> Result<T, String> {
    let bytes = match restore {
        Restore::Fresh => {
            let value = fresh().ok_or_else(|| format!("operator {name:?} was already built"))?;
            config.capture(&value);
            return Ok(value);
        }
        Restore::Snapshot(bytes) => bytes,
    };
    if T::HAS_CONFIG && config.captured.is_none() {
        let value = fresh().ok_or_else(|| {
            format!("restoring {name:?}: the operator value handed to the DAG, which holds its configuration, is gone")
        })?;
        config.capture(&value);
    }
    let mut value = if bytes.is_empty() && T::STATELESS {
        T::decode_state(&mut &[][..]).map_err(|e| format!("rebuilding stateless {name:?}: {e}"))?
    } else {
        Snapshot::decode::<T>(&bytes)
            .map(|(_, value)| value)
            .map_err(|e| format!("restoring {name:?}: {e}"))?
    };
    if let Some(Some(carrier)) = &config.captured {
        value.restore_config(&**carrier);
    }
    Ok(value)
}

/// A built partition: a thread body, or (for the downstream of a
/// thread-local edge) a subscriber to chain onto its upstream.
pub(crate) enum Built {
    Thread(ThreadBody),
    /// `Box<dyn Subscriber<In>>`.
    Inline(Box<dyn Any + Send>),
}

pub(crate) trait NodeFactory: Send {
    fn build(&mut self, partition: usize, parts: NodeParts, inline: bool, restore: Restore) -> Result<Built, String>;
}

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

struct OperatorFactory<O, F> {
    make: F,
    /// Per partition.
    config: Vec<RunConfig>,
    _op: PhantomData<fn() -> O>,
}

impl<O: Operator, F: FnMut(usize) -> Option<O> + Send> NodeFactory for OperatorFactory<O, F> {
    fn build(&mut self, partition: usize, parts: NodeParts, inline: bool, restore: Restore) -> Result<Built, String> {
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
}

struct InputFactory<I> {
    op: Option<I>,
    config: RunConfig,
}

impl<I: InputOperator> NodeFactory for InputFactory<I> {
    fn build(&mut self, _partition: usize, parts: NodeParts, _inline: bool, restore: Restore) -> Result<Built, String> {
        let slot = &mut self.op;
        let op = instance(restore, &parts.env.ctx.name, &mut self.config, || slot.take())?;
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
    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link) -> Erased;

    /// For a thread-local edge: the upstream's subscriber for the chained
    /// downstream (`Box<dyn Subscriber<In>>` in, `Box<dyn Subscriber<T>>` out).
    fn chain(&self, downstream: Erased) -> Erased;
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

struct PlainEdge<T>(PhantomData<fn() -> T>);

impl<T: Tuple> EdgeWiring for PlainEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link) -> Erased {
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
}

struct ConvertEdge<T, In> {
    convert: Arc<dyn Fn(T) -> In + Send + Sync>,
}

impl<T: Tuple, In: Tuple> EdgeWiring for ConvertEdge<T, In> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<In>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link) -> Erased {
        let mut channels = channels_of::<In>(channels);
        let Some(channel) = channels.pop() else {
            unreachable!("a converting edge has one downstream partition");
        };
        let subscriber: Box<dyn Subscriber<T>> = Box::new(ConvertSubscriber {
            convert: Arc::clone(&self.convert),
            inner: Box::new(ChannelSubscriber {
                channel,
                link: link.clone(),
            }),
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
}

struct KeyedEdge<T> {
    key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
}

impl<T: Tuple> EdgeWiring for KeyedEdge<T> {
    fn channel(&self, capacity: usize) -> (Erased, Erased) {
        channel_of::<T>(capacity)
    }

    fn subscriber(&self, channels: Vec<(usize, Erased)>, link: &Link) -> Erased {
        let subscriber: Box<dyn Subscriber<T>> = Box::new(KeyedSubscriber {
            key: Arc::clone(&self.key),
            partitions: channels_of::<T>(channels),
            link: link.clone(),
        });
        Box::new(subscriber)
    }

    fn chain(&self, downstream: Erased) -> Erased {
        // Validation allows thread-local edges only as plain edges.
        downstream
    }
}

pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) partitions: usize,
    pub(crate) stateless: bool,
    pub(crate) application_window_count: u32,
    pub(crate) checkpoint_window_count: Option<u32>,
    pub(crate) mode: ProcessingMode,
    pub(crate) factory: Box<dyn NodeFactory>,
}

pub(crate) struct EdgeSpec {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) kind: EdgeKind,
    pub(crate) wiring: Box<dyn EdgeWiring>,
}

static NEXT_DAG: AtomicU64 = AtomicU64::new(1);

/// A streaming job's operators and the streams between them.
///
/// Operators are added with [`input`](Dag::input), [`operator`](Dag::operator)
/// and [`operator_partitioned`](Dag::operator_partitioned), which return typed
/// handles; `connect*` links them, checking at compile time that the
/// upstream's output is the downstream's input. Everything else (names,
/// cycles, window settings) is checked when the job starts, with every
/// problem reported at once.
///
/// Operator names name checkpoint directories, so they are unique even
/// ignoring case (`Count` and `count` would share a directory on macOS),
/// contain no `#` (partition `N` of `count` is `count#N`), no path
/// separator, `..` or control character, do not start with `.`, and have
/// at most [`MAX_PHYSICAL_NAME_LEN`] bytes with the partition suffix.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Dag, Emit, InputOperator, Operator, OperatorResult, Output};
/// # use checkpoint_core::{Checkpoint, Snapshot};
/// # #[derive(Checkpoint)]
/// # struct Numbers(u64);
/// # impl InputOperator for Numbers {
/// #     type Output = u64;
/// #     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> { Ok(Emit::Done) }
/// # }
/// # #[derive(Checkpoint)]
/// # #[derive(Default)] struct Sum(u64);
/// # impl Operator for Sum {
/// #     type Input = u64; type Output = ();
/// #     fn process(&mut self, n: u64, _: Output<'_, ()>) -> OperatorResult { self.0 += n; Ok(()) }
/// # }
///
/// let mut dag = Dag::new();
/// let numbers = dag.input("numbers", Numbers(0));
/// let sum = dag.operator("sum", Sum::default());
/// dag.connect(&numbers, &sum);
/// dag.application_window_count(&sum, 10).checkpoint_window_count(&sum, 20);
/// assert!(dag.validate().is_ok());
/// ```
pub struct Dag {
    id: u64,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) edges: Vec<EdgeSpec>,
    pub(crate) checkpoint_window_count: u32,
    errors: Vec<DagError>,
}

impl std::fmt::Debug for Dag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dag")
            .field("operators", &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>())
            .field("edges", &self.edges.len())
            .finish()
    }
}

impl Default for Dag {
    fn default() -> Self {
        Self::new()
    }
}

/// The default checkpoint window count (Apex's `CHECKPOINT_WINDOW_COUNT`).
pub const DEFAULT_CHECKPOINT_WINDOW_COUNT: u32 = 60;

impl Dag {
    /// An empty DAG with a checkpoint every 60 streaming windows.
    pub fn new() -> Self {
        Dag {
            id: NEXT_DAG.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
            edges: Vec::new(),
            checkpoint_window_count: DEFAULT_CHECKPOINT_WINDOW_COUNT,
            errors: Vec::new(),
        }
    }

    fn add(
        &mut self,
        name: &str,
        kind: NodeKind,
        partitions: usize,
        stateless: bool,
        factory: Box<dyn NodeFactory>,
    ) -> usize {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            kind,
            partitions,
            stateless,
            application_window_count: 1,
            checkpoint_window_count: None,
            mode: ProcessingMode::AtLeastOnce,
            factory,
        });
        self.nodes.len() - 1
    }

    fn handle<In, Out>(&self, index: usize) -> Node<In, Out> {
        Node {
            dag: self.id,
            index,
            _types: PhantomData,
        }
    }

    /// Adds an input operator.
    ///
    /// `op` is the operator of a new job. When the job resumes from storage,
    /// or the operator is restored after a failure, its state comes from the
    /// checkpoint and its configuration fields (`#[checkpoint(config)]`)
    /// from `op`.
    pub fn input<I: InputOperator>(&mut self, name: &str, op: I) -> Node<NoInput, I::Output> {
        let factory = Box::new(InputFactory {
            op: Some(op),
            config: RunConfig::default(),
        });
        let index = self.add(name, NodeKind::Input, 1, <I as Checkpoint>::STATELESS, factory);
        self.handle(index)
    }

    /// Adds an operator. As for [`input`](Dag::input), every restore takes
    /// the configuration fields (`#[checkpoint(config)]`) from `op`.
    pub fn operator<O: Operator>(&mut self, name: &str, op: O) -> Node<O::Input, O::Output> {
        let mut slot = Some(op);
        let factory = Box::new(OperatorFactory {
            make: move |_| slot.take(),
            config: Vec::new(),
            _op: PhantomData,
        });
        let index = self.add(name, NodeKind::Operator, 1, <O as Checkpoint>::STATELESS, factory);
        self.handle(index)
    }

    /// Adds an operator with `partitions` partitions, each its own operator
    /// with its own state and checkpoints, named `name#0`, `name#1`, ...
    /// `make(p)` builds partition `p`: once per partition and run, also for
    /// a partition restored from storage, whose configuration fields
    /// (`#[checkpoint(config)]`) come from it. Connect to it with
    /// [`connect_by_key`](Dag::connect_by_key).
    pub fn operator_partitioned<O: Operator>(
        &mut self,
        name: &str,
        partitions: usize,
        make: impl FnMut(usize) -> O + Send + 'static,
    ) -> Node<O::Input, O::Output> {
        let mut make = make;
        let factory = Box::new(OperatorFactory {
            make: move |p| Some(make(p)),
            config: Vec::new(),
            _op: PhantomData,
        });
        let index = self.add(
            name,
            NodeKind::Operator,
            partitions,
            <O as Checkpoint>::STATELESS,
            factory,
        );
        self.handle(index)
    }

    fn edge<A, B, C, D>(&mut self, from: &Node<A, B>, to: &Node<C, D>, kind: EdgeKind, wiring: Box<dyn EdgeWiring>) {
        if from.dag != self.id || to.dag != self.id {
            self.errors.push(DagError::ForeignNode);
            return;
        }
        self.edges.push(EdgeSpec {
            from: from.index,
            to: to.index,
            kind,
            wiring,
        });
    }

    /// Connects `from`'s output to `to`'s input, through a bounded queue
    /// between their threads. Fan-out (several `connect`s from one
    /// operator) gives every downstream every tuple; fan-in aligns windows.
    pub fn connect<A, T: Tuple, B>(&mut self, from: &Node<A, T>, to: &Node<T, B>) -> &mut Self {
        self.edge(from, to, EdgeKind::Plain, Box::new(PlainEdge::<T>(PhantomData)));
        self
    }

    /// Connects `from` to an operator whose input is another type, wrapping
    /// each tuple with `wrap`: how an operator receives several upstreams of
    /// different types, as variants of one enum.
    ///
    /// ```
    /// # use checkpoint_runtime::{Dag, Node};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Clone, Serialize, Deserialize)]
    /// enum Input { Ride(u64), Weather(String) }
    /// # fn wire(dag: &mut Dag, rides: &Node<checkpoint_runtime::NoInput, u64>,
    /// #         weather: &Node<checkpoint_runtime::NoInput, String>, join: &Node<Input, ()>) {
    /// dag.connect_with(rides, join, Input::Ride);
    /// dag.connect_with(weather, join, Input::Weather);
    /// # }
    /// ```
    pub fn connect_with<A, T: Tuple, In: Tuple, B>(
        &mut self,
        from: &Node<A, T>,
        to: &Node<In, B>,
        wrap: impl Fn(T) -> In + Send + Sync + 'static,
    ) -> &mut Self {
        let wiring = Box::new(ConvertEdge::<T, In> {
            convert: Arc::new(wrap),
        });
        self.edge(from, to, EdgeKind::Converted, wiring);
        self
    }

    /// Connects `from` to a partitioned operator: each tuple goes to
    /// partition `key(tuple).stable_hash() % partitions` (see
    /// [`StableHash`]).
    pub fn connect_by_key<A, T: Tuple, B, K: StableHash>(
        &mut self,
        from: &Node<A, T>,
        to: &Node<T, B>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> &mut Self {
        let wiring = Box::new(KeyedEdge::<T> {
            key: Arc::new(move |t: &T| key(t).stable_hash()),
        });
        self.edge(from, to, EdgeKind::Keyed, wiring);
        self
    }

    /// Connects `to` on `from`'s thread (Apex's THREAD_LOCAL): no queue, no
    /// thread switch; `from`'s emitter calls `to` directly. Both must have one
    /// partition and `to` no other upstream. The chain fails and recovers as a
    /// unit.
    pub fn connect_thread_local<A, T: Tuple, B>(&mut self, from: &Node<A, T>, to: &Node<T, B>) -> &mut Self {
        self.edge(from, to, EdgeKind::ThreadLocal, Box::new(PlainEdge::<T>(PhantomData)));
        self
    }

    /// Sets the DAG's default checkpoint window count (60 unless set).
    pub fn default_checkpoint_window_count(&mut self, count: u32) -> &mut Self {
        self.checkpoint_window_count = count;
        self
    }

    /// Sets how many streaming windows one application window of `node`
    /// spans (1 unless set).
    pub fn application_window_count<In, Out>(&mut self, node: &Node<In, Out>, count: u32) -> &mut Self {
        match self.nodes.get_mut(node.index).filter(|_| node.dag == self.id) {
            Some(spec) => spec.application_window_count = count,
            None => self.errors.push(DagError::ForeignNode),
        }
        self
    }

    /// Sets `node`'s checkpoint window count, overriding the DAG default.
    pub fn checkpoint_window_count<In, Out>(&mut self, node: &Node<In, Out>, count: u32) -> &mut Self {
        match self.nodes.get_mut(node.index).filter(|_| node.dag == self.id) {
            Some(spec) => spec.checkpoint_window_count = Some(count),
            None => self.errors.push(DagError::ForeignNode),
        }
        self
    }

    /// Sets how `node` recovers from a failure (AT_LEAST_ONCE unless set).
    /// Operators downstream of an AT_MOST_ONCE or EXACTLY_ONCE operator must
    /// be AT_MOST_ONCE.
    pub fn processing_mode<In, Out>(&mut self, node: &Node<In, Out>, mode: ProcessingMode) -> &mut Self {
        match self.nodes.get_mut(node.index).filter(|_| node.dag == self.id) {
            Some(spec) => spec.mode = mode,
            None => self.errors.push(DagError::ForeignNode),
        }
        self
    }

    /// Every physical operator's name (`count#0`, `count#1` for a
    /// partitioned `count`), in the order operators were added.
    pub(crate) fn physical_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| (0..n.partitions).map(|p| physical_name(&n.name, n.partitions, p)))
            .collect()
    }

    /// The checkpoint window count in force: EXACTLY_ONCE checkpoints after
    /// every application window.
    pub(crate) fn effective_checkpoint_count(&self, index: usize) -> u32 {
        let node = &self.nodes[index];
        if node.mode == ProcessingMode::ExactlyOnce {
            return node.application_window_count;
        }
        node.checkpoint_window_count.unwrap_or(self.checkpoint_window_count)
    }

    /// Checks that the DAG can run, returning every problem found.
    pub fn validate(&self) -> Result<(), Vec<DagError>> {
        let mut errors = self.errors.clone();
        let mut seen = std::collections::HashSet::new();
        // Case-folded name -> the first name that folded to it.
        let mut folded: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
        for node in &self.nodes {
            if let Err(e) = checkpoint_core::validate_operator_name(&node.name) {
                let reason = match e {
                    checkpoint_core::StorageError::InvalidOperatorName { reason, .. } => reason.to_owned(),
                    other => other.to_string(),
                };
                errors.push(DagError::InvalidName {
                    name: node.name.clone(),
                    reason,
                });
            } else if node.name.contains('#') {
                errors.push(DagError::InvalidName {
                    name: node.name.clone(),
                    reason: "`#` is reserved for partition numbers (`count#0`)".to_owned(),
                });
            } else if let Some(reason) = name_too_long(&node.name, node.partitions) {
                errors.push(DagError::InvalidName {
                    name: node.name.clone(),
                    reason,
                });
            }
            if !seen.insert(node.name.as_str()) {
                errors.push(DagError::DuplicateName(node.name.clone()));
            } else {
                // Physical names are `name` or `name#N` and `#` is in no
                // logical name, so physical names collide under case folding
                // exactly when logical names do.
                match folded.entry(fold_case(&node.name)) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        errors.push(DagError::NamesDifferOnlyInCase {
                            first: (*first.get()).to_owned(),
                            second: node.name.clone(),
                        });
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(&node.name);
                    }
                }
            }
            if node.partitions == 0 {
                errors.push(DagError::Zero {
                    operator: node.name.clone(),
                    what: "the partition count",
                });
            }
        }
        if !self.nodes.iter().any(|n| n.kind == NodeKind::Input) {
            errors.push(DagError::NoInput);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let has_upstream = self.edges.iter().any(|e| e.to == i);
            let has_downstream = self.edges.iter().any(|e| e.from == i);
            let connected = match node.kind {
                NodeKind::Input => has_downstream,
                NodeKind::Operator => has_upstream,
            };
            if !connected {
                errors.push(DagError::Unconnected(node.name.clone()));
            }
            let application = node.application_window_count;
            let checkpoint = self.effective_checkpoint_count(i);
            if application == 0 {
                errors.push(DagError::Zero {
                    operator: node.name.clone(),
                    what: "the application window count",
                });
            } else if checkpoint == 0 {
                errors.push(DagError::Zero {
                    operator: node.name.clone(),
                    what: "the checkpoint window count",
                });
            } else if !checkpoint.is_multiple_of(application) {
                errors.push(DagError::CheckpointNotAligned {
                    operator: node.name.clone(),
                    checkpoint,
                    application,
                });
            }
        }
        for edge in &self.edges {
            let (from, to) = (&self.nodes[edge.from], &self.nodes[edge.to]);
            match edge.kind {
                EdgeKind::Plain | EdgeKind::Converted if to.partitions > 1 => {
                    errors.push(DagError::PartitionedNeedsKey {
                        upstream: from.name.clone(),
                        downstream: to.name.clone(),
                        partitions: to.partitions,
                    });
                }
                EdgeKind::ThreadLocal => {
                    let reason = if from.partitions != 1 || to.partitions != 1 {
                        Some("both operators must have a single partition")
                    } else if self.edges.iter().filter(|e| e.to == edge.to).count() != 1 {
                        Some("the downstream operator must have no other upstream")
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        errors.push(DagError::ThreadLocal {
                            upstream: from.name.clone(),
                            downstream: to.name.clone(),
                            reason,
                        });
                    }
                }
                _ => {}
            }
        }
        for edge in &self.edges {
            let (from, to) = (&self.nodes[edge.from], &self.nodes[edge.to]);
            if from.mode != ProcessingMode::AtLeastOnce && to.mode != ProcessingMode::AtMostOnce {
                errors.push(DagError::ProcessingMode {
                    upstream: from.name.clone(),
                    upstream_mode: from.mode.name(),
                    downstream: to.name.clone(),
                    downstream_mode: to.mode.name(),
                });
            }
        }
        if let Some(cycle) = self.find_cycle() {
            errors.push(DagError::Cycle(cycle));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The names along a cycle, first name repeated at the end, if any.
    fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS with colours: 0 new, 1 on the stack, 2 done.
        let n = self.nodes.len();
        let mut colour = vec![0u8; n];
        let mut parent = vec![usize::MAX; n];
        for start in 0..n {
            if colour[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            colour[start] = 1;
            while let Some((node, next)) = stack.pop() {
                let downstream: Vec<usize> = self.edges.iter().filter(|e| e.from == node).map(|e| e.to).collect();
                if next < downstream.len() {
                    stack.push((node, next + 1));
                    let d = downstream[next];
                    if colour[d] == 1 {
                        let mut path = vec![self.nodes[d].name.clone()];
                        let mut at = node;
                        while at != d && at != usize::MAX {
                            path.push(self.nodes[at].name.clone());
                            at = parent[at];
                        }
                        path.push(self.nodes[d].name.clone());
                        path.reverse();
                        return Some(path);
                    }
                    if colour[d] == 0 {
                        colour[d] = 1;
                        parent[d] = node;
                        stack.push((d, 0));
                    }
                } else {
                    colour[node] = 2;
                }
            }
        }
        None
    }
}

/// The longest physical operator name the DAG accepts, in bytes: a file
/// name has at most 255 bytes, and the longest file name derived from a
/// physical name is its window-data directory (`<name>#window-data`, see
/// [`WindowDataManager`](crate::io::WindowDataManager)). The other derived
/// names are shorter: the checkpoint directory is the name itself, the
/// files in it (`<16 hex>`, `.<16 hex>.tmp`) do not contain it, and replay
/// spill files carry at most a 100-byte prefix of it.
///
/// A logical name must leave room for its partition suffix: an operator
/// with 10 partitions may have a name of at most 240 bytes (`name#9`).
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::{Dag, DagError, MAX_PHYSICAL_NAME_LEN};
/// # use checkpoint_runtime::{Emit, InputOperator, OperatorResult, Output};
/// # #[derive(checkpoint_core::Checkpoint)]
/// # struct Numbers;
/// # impl InputOperator for Numbers {
/// #     type Output = u64;
/// #     fn emit_tuples(&mut self, _: Output<'_, u64>) -> OperatorResult<Emit> { Ok(Emit::Done) }
/// # }
///
/// assert_eq!(MAX_PHYSICAL_NAME_LEN, 243);
/// let mut dag = Dag::new();
/// dag.input(&"n".repeat(MAX_PHYSICAL_NAME_LEN + 1), Numbers);
/// let errors = dag.validate().unwrap_err();
/// assert!(errors[0].to_string().contains("243 bytes"));
/// ```
pub const MAX_PHYSICAL_NAME_LEN: usize =
    checkpoint_core::MAX_OPERATOR_NAME_LEN - crate::io::WindowDataManager::NAME_SUFFIX.len();

/// The physical name of partition `partition` of an operator named `name`
/// with `partitions` partitions: `name` alone, or `name#partition`.
pub(crate) fn physical_name(name: &str, partitions: usize, partition: usize) -> String {
    if partitions == 1 {
        name.to_owned()
    } else {
        format!("{name}#{partition}")
    }
}

/// Why `name` with `partitions` partitions makes a physical name longer
/// than [`MAX_PHYSICAL_NAME_LEN`], if it does.
fn name_too_long(name: &str, partitions: usize) -> Option<String> {
    let longest = physical_name(name, partitions, partitions.saturating_sub(1));
    if longest.len() <= MAX_PHYSICAL_NAME_LEN {
        return None;
    }
    let which = if partitions > 1 {
        format!("its physical name `…{}` is", &longest[name.len()..])
    } else {
        "it is".to_owned()
    };
    Some(format!(
        "{which} {} bytes long; operator names may have at most {MAX_PHYSICAL_NAME_LEN} bytes including the \
         partition suffix `#N`, so that every file name derived from them (`<name>#window-data`) fits in 255 bytes",
        longest.len()
    ))
}

/// A name as a case-insensitive file system compares it. Upper-casing
/// first folds more pairs together (`ß` and `ss`, `ſ` and `s`) than
/// lower-casing alone: rejecting a few names a particular file system would
/// keep apart is better than two operators sharing a directory.
fn fold_case(name: &str) -> String {
    name.to_uppercase().to_lowercase()
}
