//! The DAG builder: operators, inputs, and the typed edges between them.
//!
//! Only the typed builder is public. Checking a finished DAG (`validate`)
//! and the type-erased parts the supervisor builds partitions from
//! (`wiring`) sit in their own files, so that this one reads as the API.

pub(crate) mod factory;
mod validate;
pub(crate) mod wiring;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use checkpoint_core::Checkpoint;

use crate::error::DagError;
use crate::operator::{InputOperator, Operator, ProcessingMode, Tuple};
use checkpoint_core::StableHash;

use factory::NodeFactory;
use wiring::EdgeWiring;

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
    Broadcast,
    ThreadLocal,
}

impl EdgeKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EdgeKind::Plain => "plain",
            EdgeKind::Converted => "converted",
            EdgeKind::Keyed => "keyed",
            EdgeKind::Broadcast => "broadcast",
            EdgeKind::ThreadLocal => "thread-local",
        }
    }
}

pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) partitions: usize,
    pub(crate) stateless: bool,
    /// Whether its state is keyed maps only (`Checkpoint::KEYED_ONLY`):
    /// then a restart may change its partition count.
    pub(crate) keyed_only: bool,
    /// Its state type's `Checkpoint::VERSION`.
    pub(crate) version: u32,
    pub(crate) application_window_count: u32,
    checkpoint_window_count: Option<u32>,
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
        (stateless, keyed_only, version): (bool, bool, u32),
        factory: Box<dyn NodeFactory>,
    ) -> usize {
        self.nodes.push(NodeSpec {
            name: name.to_owned(),
            kind,
            partitions,
            stateless,
            keyed_only,
            version,
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
        let mut slot = Some(op);
        let factory = factory::input_factory(move |_| slot.take());
        let index = self.add(name, NodeKind::Input, 1, traits_of::<I>(), factory);
        self.handle(index)
    }

    /// Adds an input with `partitions` partitions, each its own input with
    /// its own state, position and checkpoints, named `name#0`, `name#1`,
    /// ...: a source that is split already (the partitions of a log, the
    /// files of a directory), read in parallel. `make(p)` builds partition
    /// `p`: once per partition and run, also for a partition restored from
    /// storage, whose configuration fields (`#[checkpoint(config)]`) come
    /// from it. Each partition cuts its own windows (in the tuple-count
    /// mode, that many of its own tuples); an operator downstream aligns
    /// them as it aligns several inputs, and the stream ends when every
    /// partition has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::Checkpoint;
    /// use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};
    ///
    /// /// Partition `p` of `of` reads the numbers `n` below 1,000 with `n % of == p`.
    /// #[derive(Checkpoint)]
    /// struct Slice { next: u64, #[checkpoint(config)] of: u64 }
    /// impl InputOperator for Slice {
    ///     type Output = u64;
    ///     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
    ///         if self.next >= 1_000 { return Ok(Emit::Done) }
    ///         out.emit(self.next);
    ///         self.next += self.of;
    ///         Ok(Emit::Continue)
    ///     }
    /// }
    /// #[derive(Default, Checkpoint)]
    /// struct Sum { total: u64 }
    /// impl Operator for Sum {
    ///     type Input = u64;
    ///     type Output = ();
    ///     fn process(&mut self, n: u64, _: Output<'_, ()>) -> OperatorResult { self.total += n; Ok(()) }
    /// }
    ///
    /// let mut dag = Dag::new();
    /// let numbers = dag.input_partitioned("numbers", 3, |p| Slice { next: p as u64, of: 3 });
    /// let sum = dag.operator("sum", Sum::default());
    /// dag.connect(&numbers, &sum);
    /// let report = Runtime::new(Config::default().window_mode(WindowMode::Tuples(100))).run(dag)?;
    /// assert_eq!(report.operator("sum").map(|o| o.tuples_in), Some(1_000));
    /// # Ok::<(), checkpoint_runtime::RunError>(())
    /// ```
    pub fn input_partitioned<I: InputOperator>(
        &mut self,
        name: &str,
        partitions: usize,
        make: impl FnMut(usize) -> I + Send + 'static,
    ) -> Node<NoInput, I::Output> {
        let mut make = make;
        let factory = factory::input_factory(move |p| Some(make(p)));
        let index = self.add(name, NodeKind::Input, partitions, traits_of::<I>(), factory);
        self.handle(index)
    }

    /// Adds an operator. As for [`input`](Dag::input), every restore takes
    /// the configuration fields (`#[checkpoint(config)]`) from `op`.
    pub fn operator<O: Operator>(&mut self, name: &str, op: O) -> Node<O::Input, O::Output> {
        let mut slot = Some(op);
        let factory = factory::operator_factory(move |_| slot.take());
        let index = self.add(name, NodeKind::Operator, 1, traits_of::<O>(), factory);
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
        let factory = factory::operator_factory(move |p| Some(make(p)));
        let index = self.add(name, NodeKind::Operator, partitions, traits_of::<O>(), factory);
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
        self.edge(from, to, EdgeKind::Plain, wiring::plain_edge::<T>());
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
        self.edge(from, to, EdgeKind::Converted, wiring::convert_edge(wrap));
        self
    }

    /// Connects `from` to a partitioned operator: each tuple goes to the
    /// partition that owns its key's group, `key(tuple).stable_hash() %
    /// key_groups` (see [`StableHash`] and
    /// [`Config::key_groups`](crate::Config::key_groups)); each partition
    /// owns a contiguous range of groups, so a
    /// [`KeyedMap`](checkpoint_core::KeyedMap) in its state holds exactly
    /// the keys it receives.
    pub fn connect_by_key<A, T: Tuple, B, K: StableHash>(
        &mut self,
        from: &Node<A, T>,
        to: &Node<T, B>,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> &mut Self {
        let hash = move |t: &T| key(t).stable_hash();
        self.edge(from, to, EdgeKind::Keyed, wiring::keyed_edge(hash));
        self
    }

    /// Connects `from` to every partition of `to`: each partition receives
    /// every tuple (rules, a dimension table, a flush signal), in the same
    /// windows as everything else it reads. The batches are shared between
    /// the partitions, not copied. `to` may have any partition count, and
    /// `from` too.
    ///
    /// ```
    /// # use checkpoint_runtime::{Dag, Node};
    /// # fn wire(dag: &mut Dag, rules: &Node<checkpoint_runtime::NoInput, String>, check: &Node<String, ()>) {
    /// dag.connect_broadcast(rules, check);
    /// # }
    /// ```
    pub fn connect_broadcast<A, T: Tuple, B>(&mut self, from: &Node<A, T>, to: &Node<T, B>) -> &mut Self {
        self.edge(from, to, EdgeKind::Broadcast, wiring::broadcast_edge::<T>());
        self
    }

    /// Connects `from` to every partition of an operator whose input is
    /// another type, wrapping each tuple with `wrap`: a broadcast edge
    /// ([`connect_broadcast`](Dag::connect_broadcast)) into one of several
    /// inputs ([`connect_with`](Dag::connect_with)).
    ///
    /// ```
    /// # use checkpoint_runtime::{Dag, Node};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Clone, Serialize, Deserialize)]
    /// enum Input { Event(u64), Rule(String) }
    /// # fn wire(dag: &mut Dag, events: &Node<checkpoint_runtime::NoInput, u64>,
    /// #         rules: &Node<checkpoint_runtime::NoInput, String>, check: &Node<Input, ()>) {
    /// dag.connect_with(events, check, Input::Event);
    /// dag.connect_broadcast_with(rules, check, Input::Rule);
    /// # }
    /// ```
    pub fn connect_broadcast_with<A, T: Tuple, In: Tuple, B>(
        &mut self,
        from: &Node<A, T>,
        to: &Node<In, B>,
        wrap: impl Fn(T) -> In + Send + Sync + 'static,
    ) -> &mut Self {
        self.edge(from, to, EdgeKind::Broadcast, wiring::broadcast_convert_edge(wrap));
        self
    }

    /// Connects `to` on `from`'s thread (Apex's THREAD_LOCAL): no queue, no
    /// thread switch; `from`'s emitter calls `to` directly. Both must have one
    /// partition and `to` no other upstream. The chain fails and recovers as a
    /// unit.
    pub fn connect_thread_local<A, T: Tuple, B>(&mut self, from: &Node<A, T>, to: &Node<T, B>) -> &mut Self {
        self.edge(from, to, EdgeKind::ThreadLocal, wiring::plain_edge::<T>());
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
fn physical_name(name: &str, partitions: usize, partition: usize) -> String {
    if partitions == 1 {
        name.to_owned()
    } else {
        format!("{name}#{partition}")
    }
}

/// What the DAG keeps of an operator's state type: stateless, keyed only,
/// its version.
fn traits_of<T: Checkpoint>() -> (bool, bool, u32) {
    (T::STATELESS, T::KEYED_ONLY, T::VERSION)
}
