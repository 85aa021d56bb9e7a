//! The committed window, from the durability probe: recorded as the
//! worker's, the checkpoints a restart can no longer need deleted, and,
//! once every worker has recorded it, told to every instance on its
//! worker.

use checkpoint_core::{StorageAgent, WindowId};
use checkpoint_runtime::RunError;
use checkpoint_runtime::portable::NodeInfo;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::dataflow::{Hosted, Shared, guarded};
use crate::{frontier, rescale};

/// The handle by which a worker says which window it has recorded: its
/// time is the window after it, and a probe on all workers' handles gives
/// the smallest.
pub(crate) type RecordedInput = InputHandle<u64, CapacityContainerBuilder<Vec<()>>>;

/// A worker's side of the committed window, in two steps. It records the
/// newest window every operator has made durable (the largest window below
/// the durability probe's frontier at which every stateful operator
/// checkpointed, or the last window once every window is durable); then it
/// tells its operators `committed(W)` for the newest window every worker
/// has recorded (a probe on the records), which is where a restart would
/// resume: an operator is never told of a window a restart could go back
/// before (an input that purges its replay records on `committed` must
/// still have those a restart replays).
pub(crate) struct Committer {
    /// This worker's newest record, and whether it said the job ended.
    recorded: Option<(WindowId, bool)>,
    /// The newest window told to the operators here.
    told: Option<WindowId>,
    /// Advanced past each window recorded; dropped at the run's end.
    input: Option<RecordedInput>,
    /// Every worker's records.
    probe: ProbeHandle<u64>,
}

impl Committer {
    /// From this run's first window on (the one before it was committed
    /// already).
    pub(crate) fn new(shared: &Shared, mut input: RecordedInput, probe: ProbeHandle<u64>) -> Self {
        input.advance_to(shared.first);
        let before = (shared.first > 1).then(|| shared.window(shared.first - 1));
        Committer {
            recorded: before.map(|w| (w, false)),
            told: before,
            input: Some(input),
            probe,
        }
    }

    /// The newest window told to the operators here.
    pub(crate) fn told(&self) -> Option<WindowId> {
        self.told
    }

    /// The worker's records are all made: every other worker may learn
    /// that this one has recorded everything it will.
    pub(crate) fn close(&mut self) {
        self.input = None;
    }

    /// Every worker has closed its records.
    pub(crate) fn done(&self) -> bool {
        self.probe.done()
    }

    /// Once every worker has recorded the stream's last window (the records
    /// are [`done`](Self::done)): the checkpoints before it go, which a
    /// worker that recorded it before the others had to keep.
    pub(crate) fn finish(&self, shared: &Shared) {
        let (Some(storage), Some(last)) = (shared.storage.as_deref(), shared.last_window.get()) else {
            return;
        };
        if shared.failed() || self.told != Some(shared.window(last)) {
            return;
        }
        if let Err(e) = forget(storage, shared) {
            shared.fail(e);
        }
    }

    /// Records what became durable and tells the operators here what every
    /// worker has recorded.
    pub(crate) fn advance(&mut self, shared: &Shared, hosted: &[Hosted], durable: &ProbeHandle<u64>) {
        if shared.failed() || shared.storage.is_none() || shared.commit_every.is_none() {
            return;
        }
        if let Some((window, ended)) = durable_window(shared, durable) {
            let newer = match self.recorded {
                None => true,
                Some((w, e)) => w < window || (w == window && ended && !e),
            };
            if newer {
                let storage = shared.storage.as_deref().expect("checked above");
                if let Err(e) = retain(storage, shared, window, ended) {
                    shared.fail(e);
                    return;
                }
                self.recorded = Some((window, ended));
                if let Some(input) = &mut self.input {
                    input.advance_to(u64::from(window.sequence()) + 1);
                }
            }
        }
        if let Some(window) = self.everywhere(shared) {
            self.tell(shared, hosted, window);
        }
    }

    /// The newest window every worker has recorded.
    fn everywhere(&self, shared: &Shared) -> Option<WindowId> {
        match self.probe.with_frontier(|f| f.iter().min().copied()) {
            // Every worker closed its records after its last one.
            None => shared.last_window.get().map(|last| shared.window(last)),
            Some(below) => {
                let last = below.checked_sub(1)?;
                (last >= shared.first).then(|| shared.window(last))
            }
        }
    }

    fn tell(&mut self, shared: &Shared, hosted: &[Hosted], window: WindowId) {
        if self.told.is_some_and(|t| t >= window) || shared.failed() {
            return;
        }
        self.told = Some(window);
        for node in hosted {
            for (_, instance) in node.borrow_mut().iter_mut() {
                let name = instance.name().to_owned();
                if let Err(e) = guarded(&name, Some(window), || instance.committed(window)) {
                    shared.fail(e);
                }
            }
        }
    }
}

/// The newest window every operator on every worker has made durable, with
/// whether it is the stream's last: the largest window below the durable
/// frontier at which every stateful operator checkpointed; every window,
/// the last one with every operator's final checkpoint, once the frontier
/// is empty.
fn durable_window(shared: &Shared, durable: &ProbeHandle<u64>) -> Option<(WindowId, bool)> {
    let every = shared.commit_every?;
    match durable.with_frontier(|f| f.iter().min().copied()) {
        None => shared.last_window.get().map(|last| (shared.window(last), true)),
        Some(below) => {
            let last = (below / every).checked_sub(1).map(|k| k * every + every - 1)?;
            // Never one before this run's first (window 0 of a fresh run
            // was not saved).
            (last >= shared.first).then(|| (shared.window(last), false))
        }
    }
}

/// Records `window` as this worker's committed one, then deletes its
/// instances' checkpoints (and its records, and the chunks no checkpoint
/// left refers to) older than the window a restart would resume after now:
/// the smallest newest record of all workers. Once that window is this
/// run's own, worker 0 also removes what only another worker count's
/// restart needed: other workers' records and other partitions' files.
fn retain(storage: &dyn StorageAgent, shared: &Shared, window: WindowId, ended: bool) -> Result<(), RunError> {
    let cadence = shared.commit_every.unwrap_or(1);
    frontier::record(storage, shared.index, (shared.workers, cadence), window, ended)?;
    forget(storage, shared)
}

/// Deletes what a restart can no longer need: this worker's records and
/// its instances' checkpoints older than the window a restart would resume
/// after now, and (worker 0) other layouts' files once this run's layout is
/// the one a restart takes.
fn forget(storage: &dyn StorageAgent, shared: &Shared) -> Result<(), RunError> {
    // What a restart would resume from now: every other worker's newest
    // record may lag this one's by any number of commits.
    let Some(resume) = frontier::resume_after(storage)? else {
        return Ok(());
    };
    let keep_from = resume.window;
    frontier::forget_before(storage, shared.index, keep_from)?;
    for name in &shared.names {
        let windows = storage.windows(name).map_err(|e| RunError::Manifest {
            detail: format!("listing the checkpoints of {name}: {e}"),
        })?;
        // A name's newest checkpoint stays: an input partition that ended
        // saved its final one before `keep_from`, and restores from it.
        let newest = windows.last().copied();
        let mut deleted = false;
        for old in windows.into_iter().filter(|w| *w < keep_from && Some(*w) != newest) {
            storage.delete(name, old).map_err(|e| RunError::Manifest {
                detail: format!("deleting {name}'s checkpoint at {old}: {e}"),
            })?;
            deleted = true;
        }
        // Saves are synchronous on this thread: none of these names has
        // one in flight.
        if deleted {
            rescale::collect(storage, name)?;
        }
    }
    let own = resume.workers == shared.workers && keep_from >= shared.window(shared.first);
    if shared.index == 0 && own && !shared.cleared.get() {
        frontier::retire_beyond(storage, shared.workers)?;
        rescale::remove_other_layouts(storage, &shared.operators, &shared.layout)?;
        shared.cleared.set(true);
    }
    Ok(())
}

/// The most windows between two commits the timely mode accepts.
const MAX_COMMIT_CADENCE: u64 = 10_000;

/// Windows between the windows at which every stateful operator
/// checkpoints: the least common multiple of their checkpoint window
/// counts (`None` without a stateful operator). A whole-job restart needs
/// every operator's checkpoint at one window, so the committed window
/// advances only there; counts that divide each other (1, 5, 60) commit as
/// often as the largest. An error past [`MAX_COMMIT_CADENCE`] windows (or
/// the largest count, if larger).
pub(crate) fn commit_cadence(nodes: &[NodeInfo]) -> Result<Option<u64>, RunError> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let stateful = || nodes.iter().filter(|n| !n.stateless);
    // One large count alone (checkpoints all but off) is the user's
    // choice; only counts that meet rarely are refused.
    let largest = stateful()
        .map(|n| u64::from(n.checkpoint_window_count.max(1)))
        .max()
        .unwrap_or(1);
    let mut lcm: Option<u64> = None;
    for node in stateful() {
        let count = u64::from(node.checkpoint_window_count.max(1));
        let next = lcm.map_or(count, |l| l / gcd(l, count) * count);
        if next > MAX_COMMIT_CADENCE.max(largest) {
            let counts: Vec<String> = nodes
                .iter()
                .filter(|n| !n.stateless)
                .map(|n| format!("{} every {}", n.name, n.checkpoint_window_count))
                .collect();
            return Err(RunError::Config {
                detail: format!(
                    "the timely mode commits a window only where every stateful operator checkpoints, and with \
                     these checkpoint window counts ({}) that is every {next} windows or more (at most \
                     {MAX_COMMIT_CADENCE}): choose counts that divide each other, such as 1, 5 and 60",
                    counts.join(", ")
                ),
            });
        }
        lcm = Some(next);
    }
    Ok(lcm)
}
