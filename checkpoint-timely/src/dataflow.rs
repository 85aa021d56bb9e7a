//! One worker: its partitions as instances (restored where the job
//! resumes), and the dataflow that moves their batches (one timely
//! operator per DAG operator, windows closed as the input frontier passes
//! them); `inputs` drives it, `commit` tells operators what is committed.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use checkpoint_core::{StorageAgent, WindowId};
use checkpoint_runtime::portable::{EdgeInfo, Instance, PortableDag, Routed};
use checkpoint_runtime::{Dag, RunError};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::filter::Filter;
use timely::dataflow::operators::{Concatenate, Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Stream};
use timely::worker::Worker;

use crate::TimelyJob;
use crate::commit::{Committer, RecordedInput, commit_cadence};
use crate::frontier;
use crate::inputs::drive_inputs;
use crate::operator::window_operator;
use crate::placement::Placement;
use crate::rescale;

/// A batch on its way: (worker, edge, partition of the edge's downstream,
/// postcard bytes).
pub(crate) type Rec = (u64, u32, u32, Vec<u8>);
/// The edge of a record that marks its window as the stream's last: every
/// input sends one to every worker in its last window, and every operator
/// passes it on to every worker when it closes that window.
pub(crate) const MARKER: u32 = u32::MAX;

pub(crate) fn markers(workers: usize) -> impl Iterator<Item = Rec> {
    (0..workers as u64).map(|worker| (worker, MARKER, 0, Vec::new()))
}
pub(crate) type Recs<'s> = Stream<'s, u64, Vec<Rec>>;
pub(crate) type Hosted = Rc<RefCell<Vec<(usize, Box<dyn Instance>)>>>;
/// An input operator's node and the handle its batches enter by.
pub(crate) type InputPort = (usize, InputHandle<u64, CapacityContainerBuilder<Vec<Rec>>>);

/// What one worker did.
pub(crate) struct WorkerReport {
    /// From the worker's start (after timely connected the processes) to
    /// its end.
    pub(crate) seconds: f64,
    pub(crate) windows: u64,
    pub(crate) committed: Option<WindowId>,
}

/// What every timely operator of a worker shares.
pub(crate) struct Shared {
    /// This worker, of `workers`.
    pub(crate) index: usize,
    pub(crate) workers: usize,
    /// The first window of this run (after the one it resumed from).
    pub(crate) first: u64,
    /// The physical names of the instances on this worker.
    pub(crate) names: Vec<String>,
    /// The DAG's operators (logical names) and the physical names of all
    /// their partitions on this run's worker count: what worker 0 keeps of
    /// other counts' partitions once this run has committed.
    pub(crate) operators: BTreeSet<String>,
    pub(crate) layout: BTreeSet<String>,
    /// Worker 0 removed them (once is enough: no run of another count
    /// writes while this one runs).
    pub(crate) cleared: std::cell::Cell<bool>,
    /// The input partitions here that ended before the window this run
    /// resumes after (restored from their final checkpoints).
    pub(crate) ended_before: BTreeSet<String>,
    /// The stream's last window, once this worker has closed it.
    pub(crate) last_window: std::cell::Cell<Option<u64>>,
    pub(crate) edges: Vec<EdgeInfo>,
    pub(crate) placement: Placement,
    pub(crate) base: u32,
    /// Streaming windows between each operator's checkpoints, by node.
    pub(crate) checkpoint_every: Vec<u64>,
    /// Streaming windows between the windows at which every stateful
    /// operator checkpoints (the least common multiple of their counts):
    /// where the committed window advances. `None` without stateful
    /// operators.
    pub(crate) commit_every: Option<u64>,
    pub(crate) storage: Option<Arc<dyn StorageAgent>>,
    /// The first failure on this worker: from then on instances are not
    /// called, and the dataflow drains so every worker ends.
    pub(crate) failure: RefCell<Option<RunError>>,
    /// Set when any worker of this process failed: no window is committed
    /// any more (a failed worker's operators close windows without saving
    /// them, to let the dataflow drain).
    pub(crate) job_failed: Arc<std::sync::atomic::AtomicBool>,
    /// One process of several: a failure ends the process.
    pub(crate) abort_on_failure: bool,
}

impl Shared {
    pub(crate) fn window(&self, time: u64) -> WindowId {
        WindowId::new(self.base, time as u32)
    }

    pub(crate) fn is_checkpoint(&self, node: usize, time: u64) -> bool {
        self.storage.is_some()
            && self
                .checkpoint_every
                .get(node)
                .is_some_and(|every| (time + 1).is_multiple_of(*every))
    }

    pub(crate) fn failed(&self) -> bool {
        self.failure.borrow().is_some() || self.job_failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn fail(&self, error: RunError) {
        if self.abort_on_failure {
            // Draining would release this process's capabilities, and the
            // other processes, which cannot see the failure, would count
            // windows nobody saved as durable.
            eprintln!("checkpoint-timely: worker {} failed: {error}", self.index);
            std::process::exit(1);
        }
        self.job_failed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.failure.borrow_mut().get_or_insert(error);
    }

    /// `routed` as records, one per target partition.
    pub(crate) fn records(&self, routed: Vec<Routed>) -> Vec<Rec> {
        let mut records = Vec::with_capacity(routed.len());
        for Routed { edge, route, batch } in routed {
            let to = self.edges[edge].to;
            let targets = self.placement.targets(to, route);
            // The last target takes the batch itself: one copy per extra
            // target only (a broadcast), none for the usual one.
            let mut batch = Some(batch);
            for (i, partition) in targets.iter().enumerate() {
                let worker = self.placement.worker_of(to, *partition) as u64;
                let bytes = if i + 1 == targets.len() {
                    batch.take().unwrap_or_default()
                } else {
                    batch.clone().unwrap_or_default()
                };
                records.push((worker, edge as u32, *partition as u32, bytes));
            }
        }
        records
    }

    /// Ends window `time` of `instance`, a partition of `node`: its
    /// checkpoint when one is due, and always in the stream's last window
    /// (the final checkpoint).
    pub(crate) fn checkpoint(
        &self,
        node: usize,
        instance: &mut dyn Instance,
        time: u64,
        last: bool,
    ) -> Result<(), RunError> {
        let (Some(storage), true) = (&self.storage, self.is_checkpoint(node, time) || last) else {
            return Ok(());
        };
        let window = self.window(time);
        let snapshot = instance.snapshot(window)?;
        storage
            .save(instance.name(), window, &snapshot)
            .map_err(|e| RunError::OperatorFailed {
                operator: instance.name().to_owned(),
                window: Some(window),
                cause: format!("saving its checkpoint: {e}"),
                source: Some(Box::new(e)),
            })?;
        instance.checkpointed(window)
    }
}

/// The nodes in an order where every edge goes forward.
fn topological(nodes: usize, edges: &[EdgeInfo]) -> Vec<usize> {
    let mut incoming = vec![0usize; nodes];
    for edge in edges {
        incoming[edge.to] += 1;
    }
    let mut ready: Vec<usize> = (0..nodes).filter(|n| incoming[*n] == 0).collect();
    let mut order = Vec::with_capacity(nodes);
    while let Some(node) = ready.pop() {
        order.push(node);
        for edge in edges.iter().filter(|e| e.from == node) {
            incoming[edge.to] -= 1;
            if incoming[edge.to] == 0 {
                ready.push(edge.to);
            }
        }
    }
    order
}

pub(crate) fn run_worker(
    worker: &mut Worker,
    job: &TimelyJob,
    dag: &(dyn Fn() -> Dag + Send + Sync),
    job_failed: Arc<std::sync::atomic::AtomicBool>,
) -> Result<WorkerReport, RunError> {
    let started = std::time::Instant::now();
    let index = worker.index();
    let peers = worker.peers();
    let mut portable = PortableDag::with_key_groups(dag(), job.key_groups)?;
    if let Some(storage) = &job.storage {
        portable = portable.with_storage(Arc::clone(storage));
    }
    let placement = Placement::new(&portable, peers);
    let nodes = portable.nodes().to_vec();
    let edges = portable.edges().to_vec();
    let checkpoint_every: Vec<u64> = nodes
        .iter()
        .map(|n| u64::from(n.checkpoint_window_count.max(1)))
        .collect();
    let commit_every = commit_cadence(&nodes)?;
    if nodes.iter().any(|n| n.name == frontier::RECORD_OPERATOR) {
        return Err(RunError::Config {
            detail: format!(
                "an operator is named {:?}, which the timely mode keeps for its workers' records: rename it",
                frontier::RECORD_OPERATOR
            ),
        });
    }
    if let Some(info) = nodes
        .iter()
        .find(|n| n.processing_mode == checkpoint_runtime::ProcessingMode::AtMostOnce)
    {
        return Err(RunError::Config {
            detail: format!(
                "operator {:?} is at-most-once, which the timely mode does not do: it restarts the whole job from \
                 the committed window, so an operator cannot rejoin and skip what it missed (run it on the \
                 threaded runtime, or in another processing mode)",
                info.name
            ),
        });
    }
    for (node, info) in nodes.iter().enumerate() {
        let keyed_input = edges
            .iter()
            .any(|e| e.to == node && e.routing == checkpoint_runtime::portable::Routing::Keyed);
        if info.partitions > 1 && !keyed_input && !info.input {
            return Err(RunError::Config {
                detail: format!(
                    "operator {:?} has {} partitions but no keyed input: the timely mode partitions an operator \
                     by key group only (connect it with connect_by_key, or give it one partition)",
                    info.name, info.partitions
                ),
            });
        }
    }
    // From here on a failure may be this worker's alone (storage): it is
    // recorded and the dataflow built anyway, so that it drains and every
    // worker ends, rather than the others waiting for this one forever.
    let mut early: Option<RunError> = None;
    let resume = match &job.storage {
        Some(storage) => frontier::resume_after(storage.as_ref()).unwrap_or_else(|e| {
            early.get_or_insert(e);
            None
        }),
        None => None,
    };
    if let Some(resume) = resume
        && resume.window.base_seconds() != job.window_base
    {
        early.get_or_insert(RunError::Config {
            detail: format!(
                "the job resumes after window {}, whose base is {}; this run's window base is {}",
                resume.window,
                resume.window.base_seconds(),
                job.window_base
            ),
        });
    }
    // The job ran to its end: as the threaded runtime restored from a
    // final checkpoint, it opens no further window (below).
    let complete = resume.is_some_and(|r| r.ended) && early.is_none();
    // The placement the checkpoints to restore were taken with: another
    // one if the last run had another worker count.
    let then = resume.map_or_else(|| placement.clone(), |r| Placement::new(&portable, r.workers));
    let resume = resume.map(|r| r.window);
    // Sequence 0 is the window before a job's first, as in the threaded
    // runtime: the same windows, the same checkpoint windows, the same
    // output file names.
    let first = resume.map_or(1, |w| u64::from(w.sequence()) + 1);
    portable = portable.with_activation_window(WindowId::new(job.window_base, first as u32));
    let mut hosted: Vec<Hosted> = Vec::with_capacity(nodes.len());
    let mut names = Vec::new();
    let mut ended_before = BTreeSet::new();
    for (node, info) in nodes.iter().enumerate() {
        let mut here = Vec::new();
        for partition in placement.hosted(node, index) {
            if early.is_some() {
                break;
            }
            let name = portable.physical_name(node, partition, placement.counts());
            let built = (|| {
                let restore = match (resume, &job.storage) {
                    (Some(window), Some(storage)) if !info.stateless => {
                        let (restore, ended) =
                            rescale::restore_from(&portable, storage, (node, partition), &placement, &then, window)?;
                        if ended {
                            ended_before.insert(name.clone());
                        }
                        Some(restore)
                    }
                    _ => None,
                };
                portable.instantiate(node, partition, placement.counts(), restore)
            })();
            match built {
                Ok(instance) => {
                    here.push((partition, instance));
                    names.push(name);
                }
                Err(e) => {
                    early.get_or_insert(e);
                }
            }
        }
        hosted.push(Rc::new(RefCell::new(here)));
    }
    if let (Some(resume), None) = (resume, &early) {
        // Every restored instance hears that the window it resumes after is
        // committed, as in the threaded runtime: an exactly-once sink
        // publishes what it held there (the last run may have ended before
        // telling it).
        let window = resume;
        'tell: for node in &hosted {
            for (_, instance) in node.borrow_mut().iter_mut() {
                let name = instance.name().to_owned();
                if let Err(e) = guarded(&name, Some(window), || instance.committed(window)) {
                    early = Some(e);
                    break 'tell;
                }
            }
        }
        if complete && early.is_none() {
            for node in &hosted {
                for (_, instance) in node.borrow_mut().iter_mut() {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| instance.teardown()));
                }
            }
            return Ok(WorkerReport {
                seconds: started.elapsed().as_secs_f64(),
                windows: 0,
                committed: Some(window),
            });
        }
    }
    let shared = Rc::new(Shared {
        index,
        workers: peers,
        first,
        names,
        operators: nodes.iter().map(|n| n.name.clone()).collect(),
        layout: rescale::names(&portable, &placement),
        cleared: std::cell::Cell::new(false),
        ended_before,
        last_window: std::cell::Cell::new(None),
        job_failed,
        abort_on_failure: job.cluster.is_some(),
        edges: edges.clone(),
        placement,
        base: job.window_base,
        checkpoint_every,
        commit_every,
        storage: job.storage.clone(),
        failure: RefCell::new(None),
    });
    if let Some(error) = early {
        shared.fail(error);
    }

    let durable = ProbeHandle::<u64>::new();
    let closed = ProbeHandle::<u64>::new();
    let records = ProbeHandle::<u64>::new();
    let mut recorded = RecordedInput::new();
    let mut inputs: Vec<InputPort> = Vec::new();
    // Every input partition sends every worker a marker in its last window;
    // every operator gets them all, so each knows the stream's last window
    // (the latest of them) when it closes it.
    let input_partitions: usize = (0..nodes.len())
        .filter(|n| nodes[*n].input)
        .map(|n| shared.placement.partitions(n))
        .sum();
    worker.dataflow::<u64, _, _>(|scope| {
        let mut streams: Vec<Option<Recs<'_>>> = vec![None; nodes.len()];
        let mut durability = Vec::new();
        let mut ends = Vec::new();
        for node in (0..nodes.len()).filter(|n| nodes[*n].input) {
            let mut handle = InputHandle::new();
            let stream = scope.input_from(&mut handle);
            ends.push(stream.clone().filter(|r: &Rec| r.1 == MARKER));
            streams[node] = Some(stream);
            inputs.push((node, handle));
        }
        let ends = scope.concatenate(ends);
        for node in topological(nodes.len(), &edges) {
            if nodes[node].input {
                continue;
            }
            let mut incoming: Vec<Recs<'_>> = edges
                .iter()
                .enumerate()
                .filter(|(_, edge)| edge.to == node)
                .filter_map(|(i, edge)| {
                    let i = i as u32;
                    let upstream = streams[edge.from].clone()?;
                    Some(upstream.filter(move |r: &Rec| r.1 == i))
                })
                .collect();
            incoming.push(ends.clone());
            let input = scope.concatenate(incoming);
            let (out, dur) = window_operator(
                input,
                (node, &nodes[node].name, input_partitions),
                Rc::clone(&hosted[node]),
                Rc::clone(&shared),
            );
            streams[node] = Some(out);
            durability.push(dur);
        }
        scope.concatenate(durability).probe_with(&durable);
        scope.concatenate(streams.into_iter().flatten()).probe_with(&closed);
        scope.input_from(&mut recorded).probe_with(&records);
    });
    let committer = Committer::new(&shared, recorded, records);

    let committed = drive_inputs(worker, job, &shared, &hosted, inputs, (&durable, &closed), committer);
    for node in &hosted {
        for (_, instance) in node.borrow_mut().iter_mut() {
            // A panic in a teardown ends nothing else: the run is over.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| instance.teardown()));
        }
    }
    if let Some(error) = shared.failure.borrow_mut().take() {
        return Err(error);
    }
    Ok(WorkerReport {
        seconds: started.elapsed().as_secs_f64(),
        windows: committed.0 - shared.first,
        committed: committed.1,
    })
}

/// Runs `f`, a panic in it a failure of `operator`: a panicking timely
/// worker would leave the others of its process waiting forever.
pub(crate) fn guarded<T>(
    operator: &str,
    window: Option<WindowId>,
    f: impl FnOnce() -> Result<T, RunError>,
) -> Result<T, RunError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let cause = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(RunError::OperatorFailed {
            operator: operator.to_owned(),
            window,
            cause: format!("panicked: {cause}"),
            source: None,
        })
    })
}
