//! Running a DAG: threads, channels, the coordinator, the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{StorageAgent, WindowId};

use crate::coordinator::{Coordinator, Event, OperatorCheckpoints, Topology};
use crate::core::NodeEnv;
use crate::dag::{Built, Dag, EdgeKind, NodeKind, NodeParts, ThreadBody};
use crate::error::RunError;
use crate::failure::{Failure, panic_message};
use crate::manifest::{JobManifest, MANIFEST_FORMAT, ManifestEdge, ManifestOperator};
use crate::metrics::{Metrics, RunReport};
use crate::operator::OperatorContext;
use crate::window_gen::{WindowGenerator, WindowMode};

/// How a job runs: where checkpoints go, how windows are cut, batching.
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
///     .async_checkpoints(true);
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
}

impl Default for Config {
    /// No checkpointing, 500 ms windows, batches of 1,024 tuples, 16
    /// batches per queue, asynchronous saves once storage is set.
    fn default() -> Self {
        Config {
            storage: None,
            window_mode: WindowMode::default(),
            window_base: None,
            batch_size: 1024,
            channel_capacity: 16,
            async_checkpoints: true,
        }
    }
}

impl Config {
    /// Checkpoints to `storage`. Without storage, checkpointing is off: no
    /// snapshots, no commits, no replay buffers.
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

    /// Fixes the window base (the high 32 bits of every window id) instead of
    /// the current Unix time: for reproducible window ids in tests.
    pub fn window_base(mut self, base_seconds: u32) -> Self {
        self.window_base = Some(base_seconds);
        self
    }

    /// Tuples per batch sent between threads (1,024 unless set; at least 1).
    pub fn batch_size(mut self, tuples: usize) -> Self {
        self.batch_size = tuples.max(1);
        self
    }

    /// Batches a queue between two operators holds before the upstream
    /// blocks (16 unless set; at least 1).
    pub fn channel_capacity(mut self, batches: usize) -> Self {
        self.channel_capacity = batches.max(1);
        self
    }

    /// Whether snapshots are written on a background thread per operator
    /// (the operator thread pays only for encoding). On unless set off.
    pub fn async_checkpoints(mut self, on: bool) -> Self {
        self.async_checkpoints = on;
        self
    }
}

/// Asks a running job to stop gracefully: inputs end their window, a final
/// checkpoint is taken and commits are delivered.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::Runtime;
///
/// let runtime = Runtime::new(Default::default());
/// let stop = runtime.stop_handle();
/// // e.g. from a Ctrl-C handler, or another thread:
/// stop.stop();
/// assert!(stop.is_stopped());
/// ```
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Requests the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs DAGs.
///
/// # Examples
///
/// See the crate documentation for a complete job.
#[derive(Debug)]
pub struct Runtime {
    config: Config,
    stop: Arc<AtomicBool>,
}

struct Physical {
    logical: usize,
    partition: usize,
    name: String,
}

impl Runtime {
    /// A runtime with `config`.
    pub fn new(config: Config) -> Self {
        Runtime {
            config,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle that stops the job gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// Runs `dag` until every input is done (or a stop is requested), then
    /// returns what happened; or fails with the first operator failure.
    pub fn run(&self, mut dag: Dag) -> Result<RunReport, RunError> {
        let started = Instant::now();
        if let Err(mut errors) = dag.validate() {
            return Err(if errors.len() == 1 {
                RunError::Dag(errors.remove(0))
            } else {
                RunError::DagErrors(errors)
            });
        }
        let storage = self.config.storage.clone();
        if let Some(storage) = &storage {
            if let Some(bytes) = storage.load_manifest()? {
                let detail = match JobManifest::from_bytes(&bytes) {
                    Ok(m) => format!(
                        "operators {}; committed window {}",
                        m.operators
                            .iter()
                            .map(|o| o.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        m.committed.map_or("none".to_owned(), |w| w.to_string())
                    ),
                    Err(e) => format!("an unreadable job manifest: {e}"),
                };
                return Err(RunError::StorageInUse { detail });
            }
            if let Some(operator) = storage.operators()?.first() {
                return Err(RunError::StorageInUse {
                    detail: format!("checkpoints of operator {operator:?}"),
                });
            }
        }
        let base = match self.config.window_base {
            Some(base) => base,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                .unwrap_or(1),
        };
        // The initial checkpoint is at sequence 0; the first window is 1.
        let activation = WindowId::new(base, 0);

        // Physical operators: one per partition.
        let mut physical = Vec::new();
        let mut first_physical = Vec::new();
        for (logical, node) in dag.nodes.iter().enumerate() {
            first_physical.push(physical.len());
            for partition in 0..node.partitions {
                let name = if node.partitions == 1 {
                    node.name.clone()
                } else {
                    format!("{}#{partition}", node.name)
                };
                physical.push(Physical {
                    logical,
                    partition,
                    name,
                });
            }
        }
        let n = physical.len();
        let phys = |logical: usize, partition: usize| first_physical[logical] + partition;

        let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
        for edge in &dag.edges {
            let (from, to) = (&dag.nodes[edge.from], &dag.nodes[edge.to]);
            for u in 0..from.partitions {
                for d in 0..to.partitions {
                    downstream[phys(edge.from, u)].push(phys(edge.to, d));
                }
            }
        }
        let topology = Topology::new(downstream);
        let Some(order) = topology.topological_order() else {
            unreachable!("validated acyclic");
        };

        let manifest = JobManifest {
            format: MANIFEST_FORMAT,
            window_base: base,
            streaming_window_ms: self.config.window_mode.streaming_window().as_millis() as u64,
            checkpoint_window_count: dag.checkpoint_window_count,
            operators: dag
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| ManifestOperator {
                    name: node.name.clone(),
                    kind: match node.kind {
                        NodeKind::Input => "input",
                        NodeKind::Operator => "operator",
                    }
                    .to_owned(),
                    partitions: node.partitions,
                    stateless: node.stateless,
                    mode: "at-least-once".to_owned(),
                    application_window_count: node.application_window_count,
                    checkpoint_window_count: dag.effective_checkpoint_count(i),
                    physical: physical
                        .iter()
                        .filter(|p| p.logical == i)
                        .map(|p| p.name.clone())
                        .collect(),
                })
                .collect(),
            edges: dag
                .edges
                .iter()
                .map(|e| ManifestEdge {
                    from: dag.nodes[e.from].name.clone(),
                    to: dag.nodes[e.to].name.clone(),
                    kind: e.kind.name().to_owned(),
                })
                .collect(),
            committed: None,
        };
        if let Some(storage) = &storage {
            storage.save_manifest(&manifest.to_bytes())?;
        }

        // Channels.
        let metrics = Arc::new(Metrics::new(n));
        let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
        let (abort_tx, abort_rx) = crossbeam_channel::bounded::<()>(0);
        let controls: Vec<_> = (0..n).map(|_| crossbeam_channel::unbounded()).collect();
        let mut subscribers: Vec<Vec<Box<dyn std::any::Any + Send>>> = (0..n).map(|_| Vec::new()).collect();
        let mut inputs: Vec<Vec<Box<dyn std::any::Any + Send>>> = (0..n).map(|_| Vec::new()).collect();
        let mut chained_into: Vec<Option<(usize, usize)>> = vec![None; n]; // downstream physical -> (edge, upstream physical)
        for (e, edge) in dag.edges.iter().enumerate() {
            let (from, to) = (&dag.nodes[edge.from], &dag.nodes[edge.to]);
            if edge.kind == EdgeKind::ThreadLocal {
                chained_into[phys(edge.to, 0)] = Some((e, phys(edge.from, 0)));
                continue;
            }
            let (subs, receivers) =
                edge.wiring
                    .wire(from.partitions, to.partitions, self.config.channel_capacity, &abort_rx);
            for (u, sub) in subs.into_iter().enumerate() {
                subscribers[phys(edge.from, u)].push(sub);
            }
            for (d, rxs) in receivers.into_iter().enumerate() {
                inputs[phys(edge.to, d)].extend(rxs);
            }
        }

        // Build partitions, downstream first so a chained operator exists
        // before the upstream that drives it.
        let start = Instant::now();
        let mut threads: Vec<(usize, ThreadBody)> = Vec::new();
        let mut checkpoints = vec![OperatorCheckpoints::default(); n];
        for &p in order.iter().rev() {
            let Physical {
                logical,
                partition,
                ref name,
            } = physical[p];
            let spec = &mut dag.nodes[logical];
            if spec.stateless {
                checkpoints[p].stateless_through = Some(activation);
            }
            let checkpoint_window_count = spec.checkpoint_window_count.unwrap_or(dag.checkpoint_window_count);
            let ctx = OperatorContext {
                name: name.clone(),
                operator: spec.name.clone(),
                partition,
                partitions: spec.partitions,
                activation_window: activation,
                streaming_window: self.config.window_mode.streaming_window(),
                application_window_count: spec.application_window_count,
                checkpoint_window_count,
                storage: storage.clone(),
            };
            let env = NodeEnv {
                node: p,
                ctx,
                storage: storage.clone(),
                async_saves: self.config.async_checkpoints,
                control: controls[p].1.clone(),
                control_tx: controls[p].0.clone(),
                events: events_tx.clone(),
                abort: abort_rx.clone(),
                metrics: Arc::clone(&metrics),
            };
            let parts = NodeParts {
                env,
                subscribers: std::mem::take(&mut subscribers[p]),
                inputs: std::mem::take(&mut inputs[p]),
                batch_size: self.config.batch_size,
                replay: storage.is_some(),
                generator: WindowGenerator::new(self.config.window_mode.clone(), start, activation.sequence() + 1),
                stop: Arc::clone(&self.stop),
            };
            let inline = chained_into[p].is_some();
            match spec.factory.build(partition, parts, inline) {
                Built::Thread(body) => threads.push((p, body)),
                Built::Inline(subscriber) => {
                    let Some((edge, upstream)) = chained_into[p] else {
                        unreachable!("inline only when chained");
                    };
                    subscribers[upstream].push(dag.edges[edge].wiring.chain(subscriber));
                }
            }
        }
        drop(abort_rx);

        let names: Vec<String> = physical.iter().map(|p| p.name.clone()).collect();
        let coordinator = Coordinator {
            topology,
            names: names.clone(),
            checkpoints,
            controls: controls.iter().map(|(tx, _)| tx.clone()).collect(),
            events: events_rx,
            storage: storage.clone(),
            manifest: storage.as_ref().map(|_| manifest),
            abort: Some(abort_tx),
            metrics: Arc::clone(&metrics),
        };
        drop(controls);

        let coordinator_thread = std::thread::Builder::new()
            .name("coordinator".to_owned())
            .spawn(move || coordinator.run())
            .map_err(|source| RunError::Spawn {
                name: "coordinator".to_owned(),
                source,
            })?;
        let mut handles = Vec::new();
        let mut spawn_error = None;
        for (p, body) in threads {
            let events = events_tx.clone();
            let name = names[p].clone();
            let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                let failure = match result {
                    Ok(Ok(())) | Ok(Err(Failure::Aborted)) => None,
                    Ok(Err(failure)) => Some(failure),
                    Err(panic) => Some(Failure::operator(&name, None, panic_message(&*panic))),
                };
                if let Some(failure) = failure {
                    let _ = events.send(Event::Failed(failure));
                }
            });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(source) => {
                    let _ = events_tx.send(Event::Failed(Failure::operator(&names[p], None, "could not start")));
                    spawn_error = Some(RunError::Spawn {
                        name: names[p].clone(),
                        source,
                    });
                    break;
                }
            }
        }
        drop(events_tx);
        let outcome = coordinator_thread
            .join()
            .unwrap_or_else(|panic| crate::coordinator::CoordinatorOutcome {
                committed: None,
                failure: Some(Failure::operator("coordinator", None, panic_message(&*panic))),
                storage_error: None,
                abort: None,
            });
        for handle in handles {
            let _ = handle.join();
        }
        drop(outcome.abort);
        if let Some(e) = spawn_error {
            return Err(e);
        }
        if let Some(Failure::Operator {
            operator,
            window,
            cause,
        }) = outcome.failure
        {
            return Err(RunError::OperatorFailed {
                operator,
                window,
                cause,
            });
        }
        if let Some(e) = outcome.storage_error {
            return Err(RunError::Storage(e));
        }
        Ok(RunReport {
            committed: outcome.committed.or(metrics.committed()),
            operators: names
                .iter()
                .enumerate()
                .map(|(i, name)| metrics.operators[i].report(name))
                .collect(),
            elapsed: started.elapsed(),
        })
    }
}
