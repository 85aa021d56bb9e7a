//! A [`Dag`] for another engine to drive (the `checkpoint-timely` adapter):
//! every physical operator an [`Instance`] that takes and gives encoded
//! batches, told by the engine when a window begins and ends, and saved and
//! restored with the same snapshots as in the threaded runtime.
//!
//! The engine moves the bytes: a batch an instance emits is a postcard
//! `Vec<T>` of the downstream's input type, addressed to an edge and a
//! [`Route`]; the engine hands it to the instance of the downstream that
//! the route names, whose [`process`](Instance::process) decodes it. Window
//! order is the engine's to keep: an instance is given window `W`'s
//! batches between `begin_window(W)` and `end_window()`, windows in
//! ascending order (the aligned-window rule), which is what timely's
//! frontiers give.
//!
//! # Examples
//!
//! ```
//! use checkpoint_core::{Checkpoint, WindowId};
//! use checkpoint_runtime::portable::{PortableDag, Route};
//! use checkpoint_runtime::{Dag, Emit, InputOperator, Operator, OperatorResult, Output};
//!
//! #[derive(Checkpoint)]
//! struct Numbers { next: u64 }
//! impl InputOperator for Numbers {
//!     type Output = u64;
//!     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
//!         out.emit(self.next);
//!         self.next += 1;
//!         Ok(if self.next == 3 { Emit::Done } else { Emit::Continue })
//!     }
//! }
//! #[derive(Default, Checkpoint)]
//! struct Sum { total: u64 }
//! impl Operator for Sum {
//!     type Input = u64;
//!     type Output = u64;
//!     fn process(&mut self, n: u64, _: Output<'_, u64>) -> OperatorResult { self.total += n; Ok(()) }
//!     fn end_window(&mut self, out: Output<'_, u64>) -> OperatorResult { out.emit(self.total); Ok(()) }
//! }
//!
//! let mut dag = Dag::new();
//! let numbers = dag.input("numbers", Numbers { next: 0 });
//! let sum = dag.operator("sum", Sum::default());
//! dag.connect(&numbers, &sum);
//! let mut portable = PortableDag::new(dag)?;
//! let partitions = vec![1, 1];
//! let mut input = portable.instantiate(0, 0, &partitions, None)?;
//! let mut summer = portable.instantiate(1, 0, &partitions, None)?;
//!
//! let window = WindowId::new(1, 0);
//! input.begin_window(window)?;
//! while input.emit()? == Emit::Continue {}
//! input.end_window(true)?;
//! summer.begin_window(window)?;
//! for routed in input.take_output() {
//!     assert_eq!((routed.edge, routed.route), (0, Route::Partition(0)));
//!     summer.process(&routed.batch)?;
//! }
//! summer.end_window(true)?;
//! let sums = summer.take_output();
//! assert!(sums.is_empty(), "`sum` has no downstream: what it emits goes nowhere");
//! let snapshot = summer.snapshot(window)?;
//! let (_, state) = checkpoint_core::Snapshot::decode::<Sum>(&snapshot)?;
//! assert_eq!(state.total, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod instance;

use std::sync::{Arc, Mutex, PoisonError};

use checkpoint_core::{KeyGroups, StorageAgent, StorageError, WindowId};

use crate::dag::factory::{BuildError, Restore};
use crate::dag::{Dag, EdgeKind, NodeKind};
use crate::error::RunError;
use crate::operator::Emit;

/// Where an encoded batch goes: which partition of the downstream operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// To this partition.
    Partition(usize),
    /// To every partition (a broadcast edge).
    All,
}

/// An encoded batch an instance emitted: a postcard `Vec<In>` of the
/// downstream's input type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The edge, by its index in [`PortableDag::edges`].
    pub edge: usize,
    /// Which partition of the edge's downstream takes it.
    pub route: Route,
    /// The tuples, encoded.
    pub batch: Vec<u8>,
}

/// What an engine needs to know of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The logical name.
    pub name: String,
    /// An input operator (it emits; nothing flows into it).
    pub input: bool,
    /// The partition count the DAG asked for.
    pub partitions: usize,
    /// It keeps no state.
    pub stateless: bool,
    /// Its state is keyed maps only: any partition count can restore it.
    pub keyed_only: bool,
    /// Streaming windows per application window.
    pub application_window_count: u32,
    /// Streaming windows between its checkpoints.
    pub checkpoint_window_count: u32,
    /// What a failure of it may cost
    /// ([`Dag::processing_mode`](crate::Dag::processing_mode)).
    pub processing_mode: crate::ProcessingMode,
}

/// How an edge distributes tuples over the downstream's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// From partition `p` of the upstream to the downstream's one partition.
    Forward,
    /// Each tuple to the partition owning its key's group.
    Keyed,
    /// Every tuple to every partition.
    Broadcast,
}

/// What an engine needs to know of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeInfo {
    /// The upstream, by its index in [`PortableDag::nodes`].
    pub from: usize,
    /// The downstream.
    pub to: usize,
    /// How tuples are distributed.
    pub routing: Routing,
}

/// One physical operator, driven by an engine.
///
/// Every method that runs the user's code returns the user's error as
/// [`RunError::OperatorFailed`], with the error as its `source`; a panic is
/// not caught (the engine decides).
pub trait Instance: Send {
    /// The physical name (`count`, or `count#2` for a partition).
    fn name(&self) -> &str;
    /// The operator's `setup`, with its context ([`PortableDag::instantiate`]
    /// calls it).
    fn setup(&mut self) -> Result<(), RunError>;
    /// Window `window` begins.
    fn begin_window(&mut self, window: WindowId) -> Result<(), RunError>;
    /// An encoded batch of the current window (operators only).
    fn process(&mut self, batch: &[u8]) -> Result<(), RunError>;
    /// One call of the input's `emit_tuples` (inputs only).
    fn emit(&mut self) -> Result<Emit, RunError>;
    /// Tuples emitted in the current window so far: where an engine ends
    /// a window of a fixed tuple count.
    fn emitted_in_window(&self) -> u64;
    /// The current window ends; `last`: the stream's last window, in which
    /// an operator's `end_of_stream` runs after its `end_window` (its
    /// output belongs to this window), as in the threaded runtime. An
    /// operator with application windows of several streaming windows is
    /// told `begin_window`/`end_window` at their boundaries only.
    fn end_window(&mut self, last: bool) -> Result<(), RunError>;
    /// Every input ended without a last window being marked: the
    /// operator's `end_of_stream`, once (nothing if `end_window(true)` ran).
    fn end_of_stream(&mut self) -> Result<(), RunError>;
    /// What was emitted since the last call, encoded and routed.
    fn take_output(&mut self) -> Vec<Routed>;
    /// The snapshot of its state after `window` (`before_checkpoint` is
    /// called first), for the engine to save under [`name`](Self::name) at
    /// `window`. With a storage that keeps chunks (the one given to
    /// [`PortableDag::with_storage`]), its keyed groups are in chunks,
    /// those changed since its last snapshot written by this call: a
    /// restart with another partition count can split them
    /// ([`RestoreFrom::Rescaled`]). Otherwise every keyed group is inline.
    fn snapshot(&mut self, window: WindowId) -> Result<Vec<u8>, RunError>;
    /// The snapshot at `window` is durable.
    fn checkpointed(&mut self, window: WindowId) -> Result<(), RunError>;
    /// `window` is committed.
    fn committed(&mut self, window: WindowId) -> Result<(), RunError>;
    /// The job is over for this instance.
    fn teardown(&mut self);
}

/// The checkpoint an instance is restored from.
#[derive(Clone)]
pub enum RestoreFrom {
    /// The partition's own checkpoint.
    Snapshot {
        /// The snapshot's bytes.
        snapshot: Vec<u8>,
        /// Where the chunks it refers to are (keyed state saved in chunks).
        storage: Option<Arc<dyn StorageAgent>>,
    },
    /// A partition of a keyed operator whose partition count changed: the
    /// old partitions' checkpoints at one window, `(physical name, bytes)`,
    /// from whose chunks it takes the key groups it owns.
    Rescaled {
        /// The old partitions' snapshots.
        sources: Vec<(String, Vec<u8>)>,
        /// The key groups this partition owns.
        owned: std::ops::Range<u32>,
        /// Where the chunks are.
        storage: Arc<dyn StorageAgent>,
    },
}

impl std::fmt::Debug for RestoreFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreFrom::Snapshot { snapshot, storage } => f
                .debug_struct("Snapshot")
                .field("snapshot_len", &snapshot.len())
                .field("storage", &storage.is_some())
                .finish(),
            RestoreFrom::Rescaled { sources, owned, .. } => f
                .debug_struct("Rescaled")
                .field("sources", &sources.iter().map(|(n, _)| n).collect::<Vec<_>>())
                .field("owned", owned)
                .finish(),
        }
    }
}

/// Where an instance's subscribers put what it emits.
pub(crate) type Outbox = Arc<Mutex<Vec<Routed>>>;

pub(crate) fn drain(outbox: &Outbox) -> Vec<Routed> {
    std::mem::take(&mut *outbox.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A validated [`Dag`] whose operators an engine instantiates.
pub struct PortableDag {
    dag: Dag,
    nodes: Vec<NodeInfo>,
    edges: Vec<EdgeInfo>,
    key_groups: KeyGroups,
    storage: Option<Arc<dyn StorageAgent>>,
    activation: WindowId,
}

impl std::fmt::Debug for PortableDag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableDag")
            .field("nodes", &self.nodes)
            .field("edges", &self.edges)
            .finish()
    }
}

impl PortableDag {
    /// Validates `dag` (as a run would) for an engine, with the default
    /// key-group count.
    pub fn new(dag: Dag) -> Result<Self, RunError> {
        Self::with_key_groups(dag, KeyGroups::default())
    }

    /// As [`new`](Self::new), with the job's key-group count.
    pub fn with_key_groups(dag: Dag, key_groups: KeyGroups) -> Result<Self, RunError> {
        dag.validate().map_err(RunError::DagErrors)?;
        let nodes = dag
            .nodes
            .iter()
            .enumerate()
            .map(|(index, spec)| NodeInfo {
                name: spec.name.clone(),
                input: spec.kind == NodeKind::Input,
                partitions: spec.partitions,
                stateless: spec.stateless,
                keyed_only: spec.keyed_only,
                application_window_count: spec.application_window_count,
                checkpoint_window_count: dag.effective_checkpoint_count(index),
                processing_mode: spec.mode,
            })
            .collect();
        let edges = dag
            .edges
            .iter()
            .map(|edge| EdgeInfo {
                from: edge.from,
                to: edge.to,
                routing: match edge.kind {
                    EdgeKind::Keyed => Routing::Keyed,
                    EdgeKind::Broadcast => Routing::Broadcast,
                    EdgeKind::Converted if edge.wiring.broadcasts() => Routing::Broadcast,
                    EdgeKind::Plain | EdgeKind::Converted | EdgeKind::ThreadLocal => Routing::Forward,
                },
            })
            .collect();
        Ok(PortableDag {
            dag,
            nodes,
            edges,
            key_groups,
            storage: None,
            activation: WindowId::from_u64(0),
        })
    }

    /// The storage the job checkpoints to, as operators see it in `setup`
    /// (`OperatorContext::storage`: an exactly-once sink publishes on
    /// commit with storage, at once without).
    pub fn with_storage(mut self, storage: Arc<dyn StorageAgent>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The first window of this run (`OperatorContext::activation_window`):
    /// after the one it resumes from, or its first.
    pub fn with_activation_window(mut self, window: WindowId) -> Self {
        self.activation = window;
        self
    }

    /// The operators, in the order the DAG added them.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The edges, in the order the DAG connected them.
    pub fn edges(&self) -> &[EdgeInfo] {
        &self.edges
    }

    /// The job's key groups.
    pub fn key_groups(&self) -> KeyGroups {
        self.key_groups
    }

    /// The physical name of partition `partition` of `node` (of
    /// `partitions[node]`): its checkpoints' name, `count#2` for a
    /// partition, the logical name for an operator with one partition the
    /// DAG did not partition.
    pub fn physical_name(&self, node: usize, partition: usize, partitions: &[usize]) -> String {
        let Some(info) = self.nodes.get(node) else {
            return String::new();
        };
        let count = partitions.get(node).copied().unwrap_or(1);
        if info.partitions > 1 || count > 1 {
            format!("{}#{partition}", info.name)
        } else {
            info.name.clone()
        }
    }

    /// Partition `partition` of operator `node`, of `partitions[node]`
    /// partitions (`partitions` has one count per node: an engine may run
    /// a keyed operator in another count than the DAG asked for; a keyed
    /// edge routes by the downstream's count). `restore`: the checkpoint to
    /// restore it from, `None` for the value handed to the DAG.
    ///
    /// An operator that is not partitioned gives its value once: a second
    /// instantiation of it is an error.
    pub fn instantiate(
        &mut self,
        node: usize,
        partition: usize,
        partitions: &[usize],
        restore: Option<RestoreFrom>,
    ) -> Result<Box<dyn Instance>, RunError> {
        let info = self.nodes.get(node).ok_or_else(|| RunError::Config {
            detail: format!("the DAG has no operator {node}"),
        })?;
        let name = self.physical_name(node, partition, partitions);
        let count = partitions.get(node).copied().unwrap_or(1);
        let outbox: Outbox = Arc::default();
        let subscribers = self
            .dag
            .edges
            .iter()
            .enumerate()
            .filter(|(_, edge)| edge.from == node)
            .map(|(index, edge)| {
                let downstream = partitions.get(edge.to).copied().unwrap_or(1);
                edge.wiring
                    .portable(index, partition, downstream, Arc::clone(&outbox), self.key_groups)
            })
            .collect();
        let mut window = WindowId::from_u64(0);
        // The restored snapshot's chunks, which its next snapshot refers to
        // for the key groups that did not change; after a rescale only
        // those under its own name (another name's are deleted with it).
        let chunks = match &restore {
            None => Vec::new(),
            Some(RestoreFrom::Snapshot { snapshot, .. }) => checkpoint_core::Snapshot::read_header(snapshot)
                .map(|header| header.chunks)
                .unwrap_or_default(),
            Some(RestoreFrom::Rescaled { sources, .. }) => sources
                .iter()
                .filter(|(source, _)| *source == name)
                .filter_map(|(_, bytes)| checkpoint_core::Snapshot::read_header(bytes).ok())
                .flat_map(|header| header.chunks)
                .collect(),
        };
        let restore = match restore {
            None => Restore::Fresh,
            Some(RestoreFrom::Snapshot { snapshot, storage }) => {
                if let Ok(header) = checkpoint_core::Snapshot::read_header(&snapshot) {
                    window = header.window;
                }
                Restore::Snapshot {
                    bytes: snapshot,
                    storage,
                }
            }
            Some(RestoreFrom::Rescaled {
                sources,
                owned,
                storage,
            }) => {
                if let Some(header) = sources
                    .first()
                    .and_then(|(_, bytes)| checkpoint_core::Snapshot::read_header(bytes).ok())
                {
                    window = header.window;
                }
                Restore::Rescaled {
                    sources,
                    key_groups: self.key_groups,
                    owned,
                    storage: Some(storage),
                }
            }
        };
        let spec = &mut self.dag.nodes[node];
        let ctx = crate::operator::OperatorContext {
            name: name.clone(),
            operator: spec.name.clone(),
            partition,
            partitions: count,
            activation_window: self.activation,
            streaming_window: std::time::Duration::ZERO,
            application_window_count: spec.application_window_count,
            checkpoint_window_count: info.checkpoint_window_count,
            storage: self.storage.clone(),
        };
        let mut instance = spec
            .factory
            .portable(partition, ctx, subscribers, outbox, restore, chunks)
            .map_err(|e| match e {
                BuildError::Restore(source) => RunError::Restore {
                    operator: name.clone(),
                    window,
                    source,
                },
                BuildError::Other(detail) => RunError::OperatorFailed {
                    operator: name.clone(),
                    window: None,
                    cause: detail,
                    source: None,
                },
            })?;
        instance.setup()?;
        Ok(instance)
    }
}

/// Deletes the chunks of `operator` that none of its stored snapshots
/// refers to: those of snapshots an engine deleted, and those of saves a
/// crash cut short. Returns how many it deleted. A chunk newer than the
/// newest snapshot is kept (its snapshot may be on its way), and if any
/// snapshot cannot be read nothing is deleted. Call it for an operator
/// whose saves are not in flight, after deleting its old snapshots.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
/// use checkpoint_runtime::portable::collect_chunks;
///
/// #[derive(Checkpoint, Default)]
/// struct Counter {
///     #[checkpoint(keyed)]
///     counts: KeyedMap<u64, u64>,
/// }
///
/// let storage = MemoryStorageAgent::new();
/// let mut counter = Counter { counts: KeyedMap::with_key_groups(KeyGroups::new(4)?) };
/// counter.counts.extend((0..40).map(|k| (k, k)));
/// let mut chunks = Vec::new();
/// for sequence in 1..=2 {
///     *counter.counts.get_mut(&1).unwrap() += 1;
///     let w = WindowId::new(1, sequence);
///     let frozen = Snapshot::freeze(&counter, SnapshotMeta::new("count", w), Vec::new(), &chunks)?;
///     let done = frozen.finish(|c| storage.save_chunks("count", c))?;
///     storage.save("count", w, &done.bytes)?;
///     chunks = done.chunks;
/// }
/// // The first snapshot goes; its chunk of the group that changed since is
/// // no longer referred to.
/// storage.delete("count", WindowId::new(1, 1))?;
/// assert_eq!(collect_chunks(&storage, "count")?, 1);
/// assert_eq!(storage.chunks("count")?.len(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn collect_chunks(storage: &dyn StorageAgent, operator: &str) -> Result<usize, StorageError> {
    crate::supervisor::collect_chunks(storage, operator)
}
