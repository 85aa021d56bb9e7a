//! The supervisor (Apex's STRAM): builds and starts the operators' threads,
//! tracks durable checkpoints, advances the committed window, purges old
//! checkpoints, recovers failed operators, and resumes a job from storage.

mod build;
mod commit;
mod recovery;
mod restart;

pub(crate) use commit::collect_chunks;

use restart::check_same_job;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{StorageAgent, StorageError, WindowId};
use crossbeam_channel::{Receiver, Sender};

use crate::config::{Config, RecoveryScope};
use crate::coordinator::{OperatorCheckpoints, Topology};
use crate::dag::{Dag, EdgeKind, NodeKind};
use crate::error::RunError;
use crate::failure::Failure;
use crate::fence::Fenced;
use crate::manifest::{JobManifest, MANIFEST_FORMAT, ManifestEdge, ManifestOperator};
use crate::metrics::{Metrics, Progress, Recovery, RunReport};
use crate::operator::ProcessingMode;
use crate::protocol::{Control, Event, KillSwitch};
use crate::replay::SpillDir;
use crate::stream::Resume;

struct Physical {
    logical: usize,
    partition: usize,
    name: String,
}

/// What a node is restored from.
pub(crate) enum Restored {
    /// Its own snapshot (empty for a stateless node).
    Snapshot(Vec<u8>),
    /// The snapshots of the old partitions holding the key groups it owns,
    /// `(name, bytes)`.
    Rescaled {
        sources: Vec<(String, Vec<u8>)>,
        owned: std::ops::Range<u32>,
    },
}

/// Where a partition of a rescaled operator restores from at `window`.
#[derive(Debug, Clone)]
pub(crate) struct Rescaled {
    window: WindowId,
    /// The old partitions' names, in partition order.
    sources: Vec<String>,
}

pub(crate) struct Supervisor {
    config: Config,
    dag: Dag,
    stop: Arc<AtomicBool>,
    /// Where a stop ends every input's stream (deterministic modes).
    stop_agreement: Arc<crate::window::StopAgreement>,
    storage: Option<Arc<dyn StorageAgent>>,
    /// This job's hold on its storage, for as long as it runs (the same
    /// agent as `storage`, which writes through it).
    fence: Option<Arc<Fenced>>,
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
    /// Per operator, the downstreams that read its replay store.
    reads: Vec<Vec<usize>>,
    /// Per operator, the newest window its store was told it may drop.
    released: Vec<Option<WindowId>>,
    /// Bytes every replay store of the job holds in memory together: what
    /// `Config::replay_memory_cap` bounds.
    replay_held: Arc<std::sync::atomic::AtomicUsize>,
    order: Vec<usize>,
    upstream: Vec<Vec<usize>>,
    modes: Vec<ProcessingMode>,
    stateless: Vec<bool>,
    activation: Vec<WindowId>,
    restore: Vec<Option<Restored>>,
    /// Partitions of a keyed operator whose partition count changed, not
    /// committed since: restored at the rescale window from the old
    /// partitions (`JobManifest::rescaling`).
    rescaled: Vec<Option<Rescaled>>,
    /// Inputs restored from the final checkpoint of a stream that ended.
    ended: Vec<bool>,
    /// Inputs whose stream ended for good, shared with every operator.
    ended_inputs: crate::task::EndedInputs,
    /// Per node, the inputs it reads from, directly or through others.
    sources: Vec<Vec<usize>>,
    epoch: Vec<u32>,
    kill: Vec<Option<KillSwitch>>,
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
    /// When the counters last went to the `metrics` facade.
    published: Instant,
    /// The checkpoint history of the runs before this one (the stored
    /// manifest's), which this run's continues.
    prior_history: Vec<crate::manifest::ManifestCheckpoint>,
    /// A commit's manifest write failed for a reason that may pass: the
    /// stored manifest is behind, until a later write succeeds.
    manifest_behind: bool,
}

/// Per node, the nodes `is_input` picks among those it reads from,
/// directly or through others, ascending.
fn sources_of(upstream: &[Vec<usize>], is_input: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
    (0..upstream.len())
        .map(|node| {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<usize> = upstream[node].clone();
            while let Some(up) = stack.pop() {
                if seen.insert(up) {
                    stack.extend(upstream[up].iter().copied());
                }
            }
            seen.into_iter().filter(|n| is_input(*n)).collect()
        })
        .collect()
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
        // Who reads each operator's replay store: downstreams through a
        // queue that replay (a chained one is restored with its upstream).
        let mut reads: Vec<Vec<usize>> = vec![Vec::new(); n];
        for edge in dag.edges.iter().filter(|e| e.kind != EdgeKind::ThreadLocal) {
            for u in 0..dag.nodes[edge.from].partitions {
                for d in 0..dag.nodes[edge.to].partitions {
                    let d = phys(edge.to, d);
                    if modes[d] != ProcessingMode::AtMostOnce {
                        reads[phys(edge.from, u)].push(d);
                    }
                }
            }
        }
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
            key_groups: Some(config.key_groups.count()),
            rescaling: BTreeMap::new(),
            generation: 1,
            history: Vec::new(),
        };

        let template = manifest_now(0);
        let manifest_now = |base: u32| JobManifest {
            window_base: base,
            ..template.clone()
        };
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        // Before anything is read: a second job on the same storage stops
        // here, having touched nothing. From here on the job uses its
        // storage through the fence.
        let (fence, existing) = match storage {
            Some(storage) => {
                let (fence, existing) = Fenced::lock(storage)?;
                (Some(fence), existing)
            }
            None => (None, None),
        };
        let storage = fence.clone().map(|f| f as Arc<dyn StorageAgent>);
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
        let sources = sources_of(&upstream, |node| {
            dag.nodes[physical[node].logical].kind == NodeKind::Input
        });
        let stop_agreement = Arc::new(crate::window::StopAgreement::default());
        let mut supervisor = Supervisor {
            config: config.clone(),
            stop_agreement,
            stop,
            storage: storage.clone(),
            fence,
            spill_dir,
            first_physical,
            root,
            chained_into,
            topology,
            reads,
            released: vec![None; n],
            replay_held: Arc::default(),
            order,
            upstream,
            modes,
            stateless,
            activation: Vec::new(),
            restore: (0..n).map(|_| None).collect(),
            rescaled: (0..n).map(|_| None).collect(),
            ended: vec![false; n],
            ended_inputs: Arc::default(),
            sources,
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
            published: Instant::now(),
            prior_history: Vec::new(),
            manifest_behind: false,
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
        match existing {
            Some(bytes) => {
                let stored = JobManifest::from_bytes(&bytes).map_err(|e| RunError::Manifest {
                    detail: format!("the job manifest in storage is unreadable: {e}"),
                })?;
                let now = manifest_now(stored.window_base);
                check_same_job(&stored, &now)?;
                supervisor.manifest = now;
                supervisor.manifest.committed = stored.committed;
                supervisor.manifest.generation = stored.generation + 1;
                supervisor.prior_history = stored.history.clone();
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
                            source,
                        },
                    )) = self.apply(event)
                    {
                        return Err(RunError::OperatorFailed {
                            operator,
                            window,
                            cause: format!("{cause} (after the job's last window)"),
                            source,
                        });
                    }
                }
                // Every save is over: chunks no snapshot names (of saves a
                // crash or a failure cut short) go now, not at a next run.
                // A commit whose record was postponed is recorded now, or
                // the job fails: a restart must not find an older one.
                if let (true, Some(storage)) = (self.manifest_behind, &self.storage) {
                    storage.save_manifest(&self.manifest.to_bytes())?;
                    self.manifest_behind = false;
                }
                self.collect_all_chunks();
                self.publish_metrics(true);
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
                        source: None,
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
            checkpoint_history: self.metrics.history(),
        }
    }

    /// Reports the job's counters to the `metrics` facade, at most every
    /// 200 ms (and once more at the end).
    fn publish_metrics(&mut self, force: bool) {
        if force || self.published.elapsed() >= Duration::from_millis(200) {
            let names: Vec<String> = self.physical.iter().map(|p| p.name.clone()).collect();
            self.metrics.publish(&names, &self.restarts);
            self.published = Instant::now();
        }
    }

    /// The event loop: checkpoints, commits, failures, until every operator
    /// has finished.
    fn supervise(&mut self) -> Result<(), GiveUp> {
        while !self.finished.iter().all(|f| *f) {
            self.check_fence()?;
            self.publish_metrics(false);
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
                                source: None,
                            });
                        }
                        continue;
                    }
                },
            };
            if let Some((node, failure)) = self.apply(event) {
                // A save refused because another job took the storage is
                // not a failure to recover from.
                self.check_fence()?;
                self.recover(node, failure)?;
            }
            self.advance_commit()?;
        }
        Ok(())
    }

    /// Stops the job once another job has taken its storage over. A lease
    /// that merely cannot be vouched for (renewals failing for a while) is
    /// not that: saves and deletes are refused meanwhile, and the job goes
    /// on if a renewal succeeds.
    fn check_fence(&self) -> Result<(), GiveUp> {
        match self.fence.as_ref().map(|f| f.check()) {
            Some(Err(e @ StorageError::Superseded { .. })) => Err(e.into()),
            _ => Ok(()),
        }
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
}
