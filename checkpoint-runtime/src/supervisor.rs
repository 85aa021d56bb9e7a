//! The supervisor (Apex's STRAM): builds and starts the operators' threads,
//! tracks durable checkpoints, advances the committed window, purges old
//! checkpoints, recovers failed operators, and resumes a job from storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{Snapshot, StorageAgent, StorageLock, WindowId};
use crossbeam_channel::{Receiver, Sender};

use crate::coordinator::{Control, Event, OperatorCheckpoints, Topology, plan};
use crate::core::NodeEnv;
use crate::dag::{Built, Dag, EdgeKind, Erased, NodeKind, NodeParts, Restore, ThreadBody};
use crate::error::RunError;
use crate::failure::{Failure, panic_message};
use crate::manifest::{JobManifest, MANIFEST_FORMAT, ManifestEdge, ManifestOperator};
use crate::metrics::{Metrics, Progress, Recovery, RunReport};
use crate::operator::{OperatorContext, ProcessingMode};
use crate::recovery_plan::{RestorePoint, plan_from_storage};
use crate::replay::{SpillDir, SpillPolicy};
use crate::runtime::{Config, RecoveryScope};
use crate::stream::Resume;
use crate::window_gen::WindowGenerator;

struct Physical {
    logical: usize,
    partition: usize,
    name: String,
}

pub(crate) struct Supervisor {
    config: Config,
    dag: Dag,
    stop: Arc<AtomicBool>,
    storage: Option<Arc<dyn StorageAgent>>,
    /// This job's hold on its storage, for as long as it runs.
    _lock: Option<StorageLock>,
    /// Where replay buffers spill; `None` when no replay data is kept
    /// (checkpointing off, or the global recovery scope).
    spill_dir: Option<SpillDir>,
    physical: Vec<Physical>,
    first_physical: Vec<usize>,
    /// The node whose thread runs each node (itself unless chained).
    root: Vec<usize>,
    /// For a chained node: (edge, upstream node).
    chained_into: Vec<Option<(usize, usize)>>,
    topology: Topology,
    order: Vec<usize>,
    upstream: Vec<Vec<usize>>,
    modes: Vec<ProcessingMode>,
    stateless: Vec<bool>,
    activation: Vec<WindowId>,
    restore: Vec<Option<Vec<u8>>>,
    /// Inputs restored from the final checkpoint of a stream that ended.
    ended: Vec<bool>,
    epoch: Vec<u32>,
    kill: Vec<Option<Sender<()>>>,
    control: Vec<Option<Sender<(usize, Control)>>>,
    threads: BTreeMap<usize, JoinHandle<()>>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    metrics: Arc<Metrics>,
    clock_start: Instant,
    first_sequence: u32,
    checkpoints: Vec<OperatorCheckpoints>,
    committed: Option<WindowId>,
    retain_from: Vec<Option<WindowId>>,
    finished: Vec<bool>,
    restarts: Vec<u32>,
    manifest: JobManifest,
    resumed_from: Vec<(String, WindowId)>,
    recoveries: Vec<Recovery>,
    notes: Vec<String>,
    started: Instant,
    /// Failures reported while a recovery was under way, handled next.
    pending: std::collections::VecDeque<Event>,
}

/// Why the supervisor stops the job.
type GiveUp = RunError;

impl Supervisor {
    pub(crate) fn new(config: &Config, dag: Dag, stop: Arc<AtomicBool>, progress: &Progress) -> Result<Self, RunError> {
        let started = Instant::now();
        let storage = config.storage.clone();
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
        let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut chained_into = vec![None; n];
        for (e, edge) in dag.edges.iter().enumerate() {
            let (from, to) = (&dag.nodes[edge.from], &dag.nodes[edge.to]);
            for u in 0..from.partitions {
                for d in 0..to.partitions {
                    downstream[phys(edge.from, u)].push(phys(edge.to, d));
                    upstream[phys(edge.to, d)].push(phys(edge.from, u));
                }
            }
            if edge.kind == EdgeKind::ThreadLocal {
                chained_into[phys(edge.to, 0)] = Some((e, phys(edge.from, 0)));
            }
        }
        let modes: Vec<ProcessingMode> = physical.iter().map(|p| dag.nodes[p.logical].mode).collect();
        let stateless: Vec<bool> = physical.iter().map(|p| dag.nodes[p.logical].stateless).collect();
        let at_most_once = modes.iter().map(|m| *m == ProcessingMode::AtMostOnce).collect();
        let topology = Topology::new(downstream).with_at_most_once(at_most_once);
        let Some(order) = topology.topological_order() else {
            unreachable!("validated acyclic");
        };
        let mut root: Vec<usize> = (0..n).collect();
        for &node in &order {
            if let Some((_, up)) = chained_into[node] {
                root[node] = root[up];
            }
        }

        let manifest_now = |base: u32| JobManifest {
            format: MANIFEST_FORMAT,
            window_base: base,
            streaming_window_ms: config.window_mode.streaming_window().as_millis() as u64,
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
                    mode: node.mode.name().to_owned(),
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
            window_mode: Some(config.window_mode.describe()),
            ended: BTreeMap::new(),
        };

        let template = manifest_now(0);
        let manifest_now = |base: u32| JobManifest {
            window_base: base,
            ..template.clone()
        };
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        // Before anything is read: a second job on the same storage stops
        // here, having touched nothing.
        let lock = storage.as_ref().map(|s| s.lock()).transpose()?;
        // In the global scope a failure restores everything and the inputs
        // read again: nothing is kept for replay.
        let spill_dir = match (&storage, config.recovery_scope) {
            (Some(_), RecoveryScope::Partial) => {
                let base = config
                    .spill_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("checkpoint-replay"));
                Some(SpillDir::create(&base).map_err(|e| RunError::Config {
                    detail: format!("cannot make a spill directory under {}: {e}", base.display()),
                })?)
            }
            _ => None,
        };
        let mut supervisor = Supervisor {
            config: config.clone(),
            stop,
            storage: storage.clone(),
            _lock: lock,
            spill_dir,
            first_physical,
            root,
            chained_into,
            topology,
            order,
            upstream,
            modes,
            stateless,
            activation: Vec::new(),
            restore: (0..n).map(|_| None).collect(),
            ended: vec![false; n],
            epoch: vec![0; n],
            kill: (0..n).map(|_| None).collect(),
            control: (0..n).map(|_| None).collect(),
            threads: BTreeMap::new(),
            events_tx,
            events_rx,
            metrics: Arc::new(Metrics::new(n)),
            clock_start: Instant::now(),
            first_sequence: 1,
            checkpoints: vec![OperatorCheckpoints::default(); n],
            committed: None,
            retain_from: vec![None; n],
            finished: vec![false; n],
            restarts: vec![0; n],
            manifest: manifest_now(0),
            resumed_from: Vec::new(),
            recoveries: Vec::new(),
            notes: Vec::new(),
            started,
            pending: std::collections::VecDeque::new(),
            physical,
            dag,
        };

        progress.attach(
            Arc::clone(&supervisor.metrics),
            supervisor.physical.iter().map(|p| p.name.clone()).collect(),
            supervisor
                .physical
                .iter()
                .map(|p| supervisor.dag.nodes[p.logical].kind == NodeKind::Input)
                .collect(),
        );
        let existing = match &storage {
            Some(storage) => storage.load_manifest()?,
            None => None,
        };
        match existing {
            Some(bytes) => {
                let stored = JobManifest::from_bytes(&bytes).map_err(|e| RunError::Manifest {
                    detail: format!("the job manifest in storage is unreadable: {e}"),
                })?;
                let now = manifest_now(stored.window_base);
                check_same_job(&stored, &now)?;
                supervisor.manifest = now;
                supervisor.manifest.committed = stored.committed;
                supervisor.resume_from_storage(&stored)?;
            }
            None => {
                if let Some(storage) = &storage
                    && let Some(operator) = storage.operators()?.first()
                {
                    return Err(RunError::StorageInUse {
                        detail: format!("checkpoints of operator {operator:?} but no job manifest"),
                    });
                }
                let base = match config.window_base {
                    Some(base) => base,
                    None => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                        .unwrap_or(1),
                };
                supervisor.manifest = manifest_now(base);
                // The initial checkpoint is at sequence 0; the first window is 1.
                supervisor.activation = vec![WindowId::new(base, 0); n];
                for (node, stateless) in supervisor.stateless.iter().enumerate() {
                    if *stateless {
                        supervisor.checkpoints[node].stateless_through = Some(supervisor.activation[node]);
                    }
                }
                if let Some(storage) = &storage {
                    storage.save_manifest(&supervisor.manifest.to_bytes())?;
                }
            }
        }
        Ok(supervisor)
    }

    /// Resumes every operator where [`plan_from_storage`] says: corrupt
    /// snapshots are set aside, an unreadable one stops the restart before
    /// anything is changed, and checkpoints past the restore points (taken
    /// again as the job runs) are removed.
    fn resume_from_storage(&mut self, stored: &JobManifest) -> Result<(), RunError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        let plan = plan_from_storage(&*storage, stored)?;
        if let Some(problem) = plan.problem() {
            return Err(RunError::Manifest { detail: problem });
        }
        let n = self.physical.len();
        self.activation = vec![WindowId::new(stored.window_base, 0); n];
        // Every restore snapshot is read before anything is changed: a read
        // that fails now stops the restart with the storage untouched.
        let mut chosen = Vec::with_capacity(n);
        for node in 0..n {
            let name = self.physical[node].name.clone();
            let Some((op, Some(restore))) = plan.operator(&name).map(|op| (op, op.restore)) else {
                return Err(RunError::Manifest {
                    detail: format!("internal error: no restore point for operator {name:?}"),
                });
            };
            let bytes = match restore {
                RestorePoint::Checkpoint(w) => Some(self.load_verified(&name, w)?),
                RestorePoint::Stateless(_) => Some(Vec::new()),
                RestorePoint::Fresh(_) => None,
            };
            chosen.push((name, op, restore, bytes));
        }
        for bad in &plan.corrupt {
            storage.set_aside(&bad.operator, bad.window)?;
            tracing::warn!(operator = %bad.operator, window = %bad.window, reason = %bad.reason, "corrupt checkpoint set aside");
            self.notes.push(format!(
                "set aside the corrupt checkpoint of {} at {} ({}); `checkpoint purge` removes it",
                bad.operator, bad.window, bad.reason
            ));
        }
        let mut first_sequence = 1;
        let mut ended = BTreeMap::new();
        for (node, (name, op, restore, bytes)) in chosen.into_iter().enumerate() {
            let r = restore.window();
            // Taken again as the job runs; a stale copy would mislead a
            // later restart.
            for &window in op.good.iter().filter(|w| **w > r) {
                storage.delete(&name, window)?;
            }
            self.checkpoints[node].durable = op.good.iter().copied().filter(|w| *w <= r).collect();
            match restore {
                RestorePoint::Stateless(_) => self.checkpoints[node].stateless_through = Some(r),
                RestorePoint::Fresh(_) => self.notes.push(format!(
                    "{name} had no checkpoint yet (the job stopped before its first one was durable): it starts as \
                     new"
                )),
                RestorePoint::Checkpoint(_) => {}
            }
            self.restore[node] = bytes;
            self.activation[node] = r;
            self.ended[node] = op.ended;
            if op.ended {
                ended.insert(name.clone(), r);
            }
            if self.dag.nodes[self.physical[node].logical].kind == NodeKind::Input {
                first_sequence = first_sequence.max(r.sequence().saturating_add(1));
            }
            tracing::info!(operator = %name, window = %r, "resuming from checkpoint");
            self.resumed_from.push((name, r));
        }
        self.first_sequence = first_sequence;
        self.committed = plan.committed.or(stored.committed);
        // An end recorded for a checkpoint that is not the restore point is
        // void: the input reads on from an older one.
        self.manifest.ended = ended;
        storage.save_manifest(&self.manifest.to_bytes())?;
        Ok(())
    }

    /// `operator`'s snapshot at `window`, checksum verified.
    fn load_verified(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, RunError> {
        let Some(storage) = &self.storage else {
            return Err(RunError::NoCheckpoint {
                operator: operator.to_owned(),
            });
        };
        let unusable = |detail: String| RunError::UnusableCheckpoint {
            operator: operator.to_owned(),
            window,
            detail,
        };
        let bytes = storage.load(operator, window).map_err(|e| unusable(e.to_string()))?;
        Snapshot::verify(&bytes).map_err(|e| unusable(e.to_string()))?;
        Ok(bytes)
    }

    /// Chooses the checkpoint each of `nodes` is restored from (during a
    /// running job) and loads it. A chosen checkpoint that cannot be loaded
    /// is an error: an older one would need replay data the upstreams may
    /// already have dropped, so falling back is not safe here.
    fn plan_restore(&mut self, nodes: &BTreeSet<usize>) -> Result<HashMap<usize, WindowId>, RunError> {
        let planned = plan(&self.topology, &self.checkpoints);
        let mut chosen = HashMap::new();
        // Topological order, so a stateless sink can follow its upstreams.
        let order = self.order.clone();
        for &node in order.iter().filter(|n| nodes.contains(n)) {
            let name = &self.physical[node].name;
            let ops = &self.checkpoints[node];
            let window = if self.stateless[node] {
                let through = planned.recovery[node];
                match through {
                    Some(w) if w.as_u64() != u64::MAX => Some(w),
                    _ => self.upstream[node]
                        .iter()
                        .filter_map(|u| chosen.get(u).copied())
                        .max()
                        .or(through),
                }
                .filter(|w: &WindowId| w.as_u64() != u64::MAX)
                .or(Some(self.activation[node]))
            } else if self.modes[node] == ProcessingMode::AtMostOnce {
                ops.durable.last().copied()
            } else {
                // The snapshot that stands for the recovery point (a
                // finished operator's final one may be older).
                planned.recovery[node].and_then(|r| ops.durable.iter().rev().find(|w| **w <= r).copied())
            };
            let Some(window) = window else {
                return Err(RunError::NoCheckpoint { operator: name.clone() });
            };
            chosen.insert(node, window);
        }
        let mut stale_end = false;
        for (&node, &window) in &chosen {
            let name = self.physical[node].name.clone();
            self.restore[node] = if self.stateless[node] {
                Some(Vec::new())
            } else {
                Some(self.load_verified(&name, window)?)
            };
            self.activation[node] = window;
            self.ended[node] = self.manifest.ended.get(&name) == Some(&window);
            if !self.ended[node] && self.manifest.ended.remove(&name).is_some() {
                stale_end = true;
            }
        }
        // An input restored before the end it recorded reads on and may
        // take an ordinary checkpoint at that window: the mark must be gone
        // from storage before it runs.
        if let (true, Some(storage)) = (stale_end, &self.storage) {
            storage.save_manifest(&self.manifest.to_bytes())?;
        }
        Ok(chosen)
    }

    pub(crate) fn run(mut self) -> Result<RunReport, RunError> {
        self.clock_start = Instant::now();
        if let Some(committed) = self.committed {
            // Resumed: the progress view shows the stored committed window.
            self.metrics.set_committed(committed);
        }
        let all: BTreeSet<usize> = (0..self.physical.len()).collect();
        let resume: HashMap<usize, Resume> = HashMap::new();
        if let Err(e) = self.build(&all, &resume) {
            self.abort_all();
            return Err(e);
        }
        // A resumed job delivers its committed window at once: an
        // exactly-once sink publishes what it holds pending up to it even
        // if no window is ever processed again (a job that had ended).
        if let (false, Some(committed)) = (self.resumed_from.is_empty(), self.committed) {
            self.metrics.set_committed(committed);
            for node in 0..self.physical.len() {
                if let Some(control) = &self.control[self.root[node]] {
                    let _ = control.send((node, Control::Committed(committed)));
                }
            }
        }
        match self.supervise() {
            Ok(()) => {
                for root in self.roots() {
                    if let Some(control) = &self.control[root] {
                        let _ = control.send((root, Control::Shutdown));
                    }
                }
                self.join_all()?;
                // A hook can still fail on the final commit (an exactly-once
                // sink publishing, say): that fails the job.
                while let Ok(event) = self.events_rx.try_recv() {
                    if let Some((
                        _,
                        Failure::Operator {
                            operator,
                            window,
                            cause,
                        },
                    )) = self.apply(event)
                    {
                        return Err(RunError::OperatorFailed {
                            operator,
                            window,
                            cause: format!("{cause} (after the job's last window)"),
                        });
                    }
                }
                Ok(self.report())
            }
            Err(e) => {
                self.abort_all();
                Err(e)
            }
        }
    }

    /// The least common multiple of every operator's application window
    /// count (capped: a stop never waits for more than 10,000 windows).
    fn stop_alignment(&self) -> u32 {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        const CAP: u64 = 10_000;
        // Stopped at the cap: the product of a few large counts overflows.
        let lcm = self.dag.nodes.iter().fold(1u64, |l, n| {
            let c = u64::from(n.application_window_count.max(1));
            if l > CAP { l } else { (l / gcd(l, c)).saturating_mul(c) }
        });
        u32::try_from(lcm.min(CAP)).unwrap_or(1)
    }

    fn roots(&self) -> Vec<usize> {
        (0..self.physical.len()).filter(|&n| self.root[n] == n).collect()
    }

    fn abort_all(&mut self) {
        for kill in &mut self.kill {
            kill.take();
        }
        // Already failing: a thread that does not stop is left behind, the
        // job's own error is the one to report.
        let _ = self.join_all();
    }

    fn join_all(&mut self) -> Result<(), RunError> {
        let threads = std::mem::take(&mut self.threads).into_iter().collect();
        self.join_within(threads)
    }

    /// Joins `threads`, each told to stop, within the stop timeout; one
    /// still running then is an error naming it (a thread cannot be killed,
    /// so it is left to finish on its own).
    fn join_within(&self, threads: Vec<(usize, JoinHandle<()>)>) -> Result<(), RunError> {
        let deadline = Instant::now() + self.config.stop_timeout;
        for (node, handle) in threads {
            while !handle.is_finished() {
                if Instant::now() >= deadline {
                    return Err(RunError::OperatorFailed {
                        operator: self.physical[node].name.clone(),
                        window: None,
                        cause: format!(
                            "its thread did not stop within {:?} (the stop timeout) after it was told to: a hook \
                             that never returns?",
                            self.config.stop_timeout
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = handle.join();
        }
        Ok(())
    }

    fn report(&self) -> RunReport {
        let mut operators: Vec<_> = self
            .physical
            .iter()
            .enumerate()
            .map(|(i, p)| self.metrics.operators[i].report(&p.name))
            .collect();
        for (i, report) in operators.iter_mut().enumerate() {
            report.restarts = self.restarts[i];
        }
        RunReport {
            committed: self.committed,
            operators,
            elapsed: self.started.elapsed(),
            resumed_from: self.resumed_from.clone(),
            recoveries: self.recoveries.clone(),
            notes: self.notes.clone(),
        }
    }

    /// Builds and starts `nodes` (all of them, or the ones a recovery
    /// restores), wiring their edges; upstreams that keep running are asked
    /// to reconnect and replay.
    fn build(&mut self, nodes: &BTreeSet<usize>, resume: &HashMap<usize, Resume>) -> Result<(), RunError> {
        let mut control_rx = HashMap::new();
        let mut kill_rx = HashMap::new();
        for &node in nodes {
            if self.root[node] == node {
                let (tx, rx) = crossbeam_channel::unbounded();
                self.control[node] = Some(tx);
                control_rx.insert(node, rx);
                let (tx, rx) = crossbeam_channel::bounded::<()>(0);
                self.kill[node] = Some(tx);
                kill_rx.insert(node, rx);
            }
        }
        let kill_of = |node: usize, kill_rx: &HashMap<usize, Receiver<()>>| kill_rx.get(&self.root[node]).cloned();

        let mut inputs: HashMap<usize, Vec<Erased>> = HashMap::new();
        // Per (edge, upstream node): (downstream partition, downstream node, sender).
        type Outgoing = Vec<(usize, usize, Erased)>;
        let mut pending: BTreeMap<(usize, usize), Outgoing> = BTreeMap::new();
        let mut reconnects: BTreeMap<usize, Vec<(usize, Erased, Resume)>> = BTreeMap::new();
        for (e, edge) in self.dag.edges.iter().enumerate() {
            if edge.kind == EdgeKind::ThreadLocal {
                continue;
            }
            let (from, to) = (&self.dag.nodes[edge.from], &self.dag.nodes[edge.to]);
            for u_part in 0..from.partitions {
                let u = self.first_physical[edge.from] + u_part;
                for d_part in 0..to.partitions {
                    let d = self.first_physical[edge.to] + d_part;
                    if !nodes.contains(&d) {
                        continue;
                    }
                    let (tx, rx) = edge.wiring.channel(self.config.channel_capacity);
                    inputs.entry(d).or_default().push(rx);
                    if nodes.contains(&u) {
                        pending.entry((e, u)).or_default().push((d_part, d, tx));
                    } else {
                        let resume = resume.get(&d).copied().unwrap_or(Resume::NextWindow);
                        reconnects.entry(u).or_default().push((d, tx, resume));
                    }
                }
            }
        }
        let mut subscribers: HashMap<usize, Vec<Erased>> = HashMap::new();
        for ((e, u), mut channels) in pending {
            channels.sort_by_key(|(d_part, _, _)| *d_part);
            let Some(kill) = kill_of(u, &kill_rx) else {
                unreachable!("the upstream is being built");
            };
            let channels = channels.into_iter().map(|(_, d, tx)| (d, tx)).collect();
            subscribers
                .entry(u)
                .or_default()
                .push(self.dag.edges[e].wiring.subscriber(channels, &kill));
        }

        let mut bodies: Vec<(usize, ThreadBody)> = Vec::new();
        let order = self.order.clone();
        for &node in order.iter().rev().filter(|n| nodes.contains(n)) {
            let Physical {
                logical,
                partition,
                ref name,
            } = self.physical[node];
            let name = name.clone();
            let spec = &self.dag.nodes[logical];
            let root = self.root[node];
            let chained = root != node;
            let Some(control_tx) = self.control[root].clone() else {
                unreachable!("the thread's root is being built");
            };
            let Some(kill) = kill_of(node, &kill_rx) else {
                unreachable!("the thread's root is being built");
            };
            let checkpoint_window_count = self.dag.effective_checkpoint_count(logical);
            let ctx = OperatorContext {
                name: name.clone(),
                operator: spec.name.clone(),
                partition,
                partitions: spec.partitions,
                activation_window: self.activation[node],
                streaming_window: self.config.window_mode.streaming_window(),
                application_window_count: spec.application_window_count,
                checkpoint_window_count,
                storage: self.storage.clone(),
            };
            let restore = self.restore[node].take();
            let env = NodeEnv {
                node,
                epoch: self.epoch[node],
                ctx,
                storage: self.storage.clone(),
                async_saves: self.config.async_checkpoints && spec.mode != ProcessingMode::ExactlyOnce && !chained,
                control: if chained { None } else { control_rx.remove(&node) },
                control_tx,
                events: self.events_tx.clone(),
                kill,
                metrics: Arc::clone(&self.metrics),
                restored: restore.is_some(),
                ended: self.ended[node],
                mode: spec.mode,
                faults: Some(self.config.faults.clone()),
                save_timeout: self.config.save_timeout,
            };
            let spill = self.spill_dir.as_ref().map(|dir| SpillPolicy {
                memory_cap: self.config.replay_memory_cap,
                dir: dir.path().to_path_buf(),
            });
            let parts = NodeParts {
                env,
                subscribers: subscribers.remove(&node).unwrap_or_default(),
                inputs: inputs.remove(&node).unwrap_or_default(),
                batch_size: self.config.batch_size,
                replay: spill,
                generator: WindowGenerator::new(self.config.window_mode.clone(), self.clock_start, self.first_sequence)
                    .with_stop_alignment(self.stop_alignment()),
                stop: Arc::clone(&self.stop),
            };
            let restore = match restore {
                Some(bytes) => Restore::Snapshot(bytes),
                None => Restore::Fresh,
            };
            let built = self.dag.nodes[logical]
                .factory
                .build(partition, parts, chained, restore)
                .map_err(|cause| RunError::OperatorFailed {
                    operator: name.clone(),
                    window: Some(self.activation[node]),
                    cause,
                })?;
            match built {
                Built::Thread(body) => bodies.push((node, body)),
                Built::Inline(subscriber) => {
                    let Some((edge, upstream)) = self.chained_into[node] else {
                        unreachable!("inline only when chained");
                    };
                    let chained = self.dag.edges[edge].wiring.chain(subscriber);
                    subscribers.entry(upstream).or_default().push(chained);
                }
            }
        }
        for (node, body) in bodies {
            let events = self.events_tx.clone();
            let name = self.physical[node].name.clone();
            let epoch = self.epoch[node];
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let _span = tracing::info_span!("operator", name = %name, epoch).entered();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                    let failure = match result {
                        Ok(Ok(())) | Ok(Err(Failure::Aborted)) => None,
                        Ok(Err(failure)) => Some(failure),
                        Err(panic) => Some(Failure::operator(&name, None, panic_message(&*panic))),
                    };
                    if let Some(failure) = failure {
                        let _ = events.send(Event::Failed { node, epoch, failure });
                    }
                })
                .map_err(|source| RunError::Spawn {
                    name: self.physical[node].name.clone(),
                    source,
                })?;
            self.threads.insert(node, handle);
        }
        for (upstream, targets) in reconnects {
            if let Some(control) = &self.control[self.root[upstream]] {
                // An upstream that is gone has nothing to replay.
                let _ = control.send((upstream, Control::Reconnect(targets)));
            }
        }
        Ok(())
    }

    /// The event loop: checkpoints, commits, failures, until every operator
    /// has finished.
    fn supervise(&mut self) -> Result<(), GiveUp> {
        while !self.finished.iter().all(|f| *f) {
            let event = match self.pending.pop_front() {
                Some(event) => event,
                None => match self.events_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(event) => event,
                    Err(_) => {
                        // Liveness check: every thread gone without finishing
                        // would otherwise wait forever.
                        if !self.threads.is_empty()
                            && self.threads.values().all(|h| h.is_finished())
                            && self.events_rx.is_empty()
                        {
                            return Err(RunError::OperatorFailed {
                                operator: "runtime".to_owned(),
                                window: None,
                                cause: "internal error: every operator thread exited before the job finished"
                                    .to_owned(),
                            });
                        }
                        continue;
                    }
                },
            };
            if let Some((node, failure)) = self.apply(event) {
                self.recover(node, failure)?;
            }
            self.advance_commit()?;
        }
        Ok(())
    }

    /// Records a checkpoint or a finish; returns a failure to recover from.
    /// Reports from an incarnation a recovery replaced are ignored.
    fn apply(&mut self, event: Event) -> Option<(usize, Failure)> {
        match event {
            Event::Checkpointed { node, epoch, window } if epoch == self.epoch[node] => {
                let ops = &mut self.checkpoints[node];
                if let Some(through) = &mut ops.stateless_through {
                    *through = (*through).max(window);
                } else if ops.durable.last().is_none_or(|last| *last < window) {
                    ops.durable.push(window);
                }
                None
            }
            Event::Finished { node, epoch, window } if epoch == self.epoch[node] => {
                // Sent once the final checkpoint is durable, possibly before
                // an asynchronous saver's own report of it.
                let ops = &mut self.checkpoints[node];
                if let Some(through) = &mut ops.stateless_through {
                    *through = (*through).max(window);
                } else if self.storage.is_some() && ops.durable.last().is_none_or(|last| *last < window) {
                    ops.durable.push(window);
                }
                ops.finished_at = Some(window);
                self.finished[node] = true;
                None
            }
            Event::Failed { node, epoch, failure } if epoch == self.epoch[node] => Some((node, failure)),
            Event::Ending {
                node,
                epoch,
                window,
                done,
            } if epoch == self.epoch[node] => {
                let name = self.physical[node].name.clone();
                self.manifest.ended.insert(name, window);
                let saved = match &self.storage {
                    Some(storage) => storage
                        .save_manifest(&self.manifest.to_bytes())
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                // A killed input no longer listens; its restore redoes this.
                let _ = done.send(saved);
                None
            }
            _ => None,
        }
    }

    /// Applies what is already reported (checkpoints that became durable
    /// before a kill count), keeping failures for later.
    fn drain_events(&mut self) {
        while let Ok(event) = self.events_rx.try_recv() {
            if let Event::Failed { .. } = event {
                self.pending.push_back(event);
            } else {
                self.apply(event);
            }
        }
    }

    fn advance_commit(&mut self) -> Result<(), GiveUp> {
        if self.storage.is_none() {
            return Ok(());
        }
        let planned = plan(&self.topology, &self.checkpoints);
        let Some(new) = planned.committed else {
            return Ok(());
        };
        if self.committed.is_some_and(|old| new <= old) {
            return Ok(());
        }
        self.committed = Some(new);
        self.metrics.set_committed(new);
        tracing::debug!(window = %new, "committed");
        for node in 0..self.physical.len() {
            if let Some(control) = &self.control[self.root[node]] {
                let _ = control.send((node, Control::Committed(new)));
            }
        }
        // Retention: keep back to the recovery checkpoint computed at the
        // previous commit, so one older good checkpoint always remains.
        if let Some(storage) = self.storage.clone() {
            for node in 0..self.physical.len() {
                let Some(keep_from) = self.retain_from[node] else {
                    continue;
                };
                let ops = &mut self.checkpoints[node];
                // A finished operator's recovery point may lie past its final
                // checkpoint: keep the checkpoint that stands for it.
                let Some(keep_from) = ops.durable.iter().rev().find(|w| **w <= keep_from).copied() else {
                    continue;
                };
                let old: Vec<WindowId> = ops.durable.iter().copied().take_while(|w| *w < keep_from).collect();
                for window in &old {
                    storage.delete(&self.physical[node].name, *window)?;
                }
                ops.durable.drain(..old.len());
            }
            self.retain_from = planned.recovery;
            self.manifest.committed = Some(new);
            storage.save_manifest(&self.manifest.to_bytes())?;
        }
        Ok(())
    }

    /// What a failure restores: in the partial scope the failed operator,
    /// everything downstream of it, and the whole thread-local chain of any
    /// of them; in the global scope every operator.
    fn affected_by(&self, failed: usize) -> BTreeSet<usize> {
        if self.config.recovery_scope == RecoveryScope::Global {
            return (0..self.physical.len()).collect();
        }
        let mut affected = BTreeSet::from([failed]);
        let mut changed = true;
        while changed {
            changed = false;
            for node in 0..self.physical.len() {
                if affected.contains(&node) {
                    continue;
                }
                let downstream_of_affected = self.upstream[node].iter().any(|u| affected.contains(u));
                let same_thread = affected.iter().any(|a| self.root[*a] == self.root[node]);
                if downstream_of_affected || same_thread {
                    affected.insert(node);
                    changed = true;
                }
            }
        }
        affected
    }

    /// A failure in a job's first moments can come before every operator's
    /// initial checkpoint is durable. Each operator saves its own before it
    /// processes anything, so the missing ones are on their way: wait for
    /// them (at most the save timeout) rather than find no checkpoint to
    /// restore a downstream from. Failures reported meanwhile wait their
    /// turn.
    fn await_initial_checkpoints(&mut self) {
        if self.storage.is_none() {
            return;
        }
        let deadline = Instant::now() + self.config.save_timeout;
        loop {
            let missing = (0..self.physical.len()).any(|node| {
                let ops = &self.checkpoints[node];
                ops.durable.is_empty()
                    && ops.stateless_through.is_none()
                    && self.threads.get(&self.root[node]).is_some_and(|t| !t.is_finished())
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if !missing || left.is_zero() {
                return;
            }
            match self.events_rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(event @ Event::Failed { .. }) => self.pending.push_back(event),
                Ok(event) => {
                    self.apply(event);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn recover(&mut self, node: usize, failure: Failure) -> Result<(), GiveUp> {
        if let Failure::Fatal(error) = failure {
            return Err(*error);
        }
        let Failure::Operator {
            operator,
            window,
            cause,
        } = failure
        else {
            return Ok(());
        };
        let failed = self.physical.iter().position(|p| p.name == operator).unwrap_or(node);
        let give_up = |cause: String| RunError::OperatorFailed {
            operator: operator.clone(),
            window,
            cause,
        };
        if self.storage.is_none() {
            return Err(give_up(cause));
        }
        self.restarts[failed] += 1;
        if self.restarts[failed] > self.config.restart_limit {
            return Err(give_up(format!(
                "{cause} (gave up after {} restarts)",
                self.config.restart_limit
            )));
        }
        self.await_initial_checkpoints();
        let affected = self.affected_by(failed);
        // Stop every affected thread: killed ones wake from any blocking
        // send or receive and exit.
        let roots: BTreeSet<usize> = affected.iter().map(|a| self.root[*a]).collect();
        for &root in &roots {
            self.kill[root].take();
            self.control[root].take();
        }
        let stopping: Vec<(usize, JoinHandle<()>)> = roots
            .iter()
            .filter_map(|r| self.threads.remove(r).map(|h| (*r, h)))
            .collect();
        self.join_within(stopping)
            .map_err(|e| give_up(format!("{cause}; then could not restart: {e}")))?;
        self.drain_events();
        let chosen = self
            .plan_restore(&affected)
            .map_err(|e| give_up(format!("{cause}; then could not recover: {e}")))?;
        let storage = self.storage.clone();
        let mut restored = Vec::new();
        let mut resume = HashMap::new();
        for &a in &affected {
            let r = chosen[&a];
            let name = self.physical[a].name.clone();
            let ops = &mut self.checkpoints[a];
            let newer: Vec<WindowId> = ops.durable.iter().copied().filter(|w| *w > r).collect();
            if let Some(storage) = &storage {
                for window in &newer {
                    storage.delete(&name, *window)?;
                }
            }
            ops.durable.retain(|w| *w <= r);
            ops.finished_at = None;
            self.epoch[a] = self.epoch[a].wrapping_add(1);
            if let Some(through) = &mut ops.stateless_through {
                *through = (*through).min(r);
            }
            self.finished[a] = false;
            let resume_mode = if self.modes[a] == ProcessingMode::AtMostOnce {
                Resume::NextWindow
            } else {
                Resume::After(r)
            };
            resume.insert(a, resume_mode);
            restored.push((name, r));
        }
        tracing::warn!(
            operator = %operator,
            window = %window.map_or_else(|| "none".to_owned(), |w| w.to_string()),
            cause = %cause,
            restored = ?self.recoveries.len(),
            "operator failed; restoring it and its downstream operators"
        );
        self.recoveries.push(Recovery {
            operator: operator.clone(),
            window,
            cause: cause.clone(),
            restored,
        });
        self.build(&affected, &resume)
            .map_err(|e| give_up(format!("{cause}; then could not restart: {e}")))
    }
}

/// A restarted job must be the job its storage holds.
fn check_same_job(stored: &JobManifest, now: &JobManifest) -> Result<(), RunError> {
    let shape = |m: &JobManifest| {
        m.operators
            .iter()
            .map(|o| {
                format!(
                    "{} ({}, {} partition{})",
                    o.name,
                    o.kind,
                    o.partitions,
                    if o.partitions == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
    };
    let edges = |m: &JobManifest| {
        let mut edges: Vec<String> = m
            .edges
            .iter()
            .map(|e| format!("{} -> {} ({})", e.from, e.to, e.kind))
            .collect();
        edges.sort();
        edges
    };
    if shape(stored) != shape(now) {
        return Err(RunError::Manifest {
            detail: format!(
                "the storage holds a job with operators [{}], but this DAG has [{}]; use another checkpoint \
                 directory for a changed job",
                shape(stored).join(", "),
                shape(now).join(", ")
            ),
        });
    }
    if edges(stored) != edges(now) {
        return Err(RunError::Manifest {
            detail: format!(
                "the storage holds a job with edges [{}], but this DAG has [{}]",
                edges(stored).join(", "),
                edges(now).join(", ")
            ),
        });
    }
    // Every setting that decides which windows exist, where checkpoints
    // fall or what a recovery replays: a resumed job under another would
    // silently change the semantics of the output it continues.
    let changed = |setting: String, was: String, now: String| RunError::Manifest {
        detail: format!(
            "{setting} was {was} when the job started and is {now} now; a job keeps its settings for life (run \
             it with {was}, or use another checkpoint directory)"
        ),
    };
    if let Some(was) = &stored.window_mode
        && Some(was) != now.window_mode.as_ref()
    {
        return Err(changed(
            "the window mode".to_owned(),
            was.clone(),
            now.window_mode.clone().unwrap_or_default(),
        ));
    }
    if stored.checkpoint_window_count != now.checkpoint_window_count {
        return Err(changed(
            "the DAG's default checkpoint window count".to_owned(),
            stored.checkpoint_window_count.to_string(),
            now.checkpoint_window_count.to_string(),
        ));
    }
    for (was, is) in stored.operators.iter().zip(&now.operators) {
        let of = |what: &str| format!("the {what} of operator {:?}", is.name);
        if was.mode != is.mode {
            return Err(changed(of("processing mode"), was.mode.clone(), is.mode.clone()));
        }
        if was.application_window_count != is.application_window_count {
            return Err(changed(
                of("application window count"),
                was.application_window_count.to_string(),
                is.application_window_count.to_string(),
            ));
        }
        if was.checkpoint_window_count != is.checkpoint_window_count {
            return Err(changed(
                of("checkpoint window count"),
                was.checkpoint_window_count.to_string(),
                is.checkpoint_window_count.to_string(),
            ));
        }
        if was.stateless != is.stateless {
            return Err(changed(
                of("statelessness"),
                if was.stateless { "stateless" } else { "stateful" }.to_owned(),
                if is.stateless { "stateless" } else { "stateful" }.to_owned(),
            ));
        }
    }
    Ok(())
}
