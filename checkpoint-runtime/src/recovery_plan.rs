//! The recovery plan from storage: where a restart resumes each operator,
//! computed in one place for the runtime, the `checkpoint` tool and the
//! examples.

use std::collections::{BTreeSet, HashMap};

use checkpoint_core::{ChunkId, Snapshot, StorageAgent, StorageError, WindowId};

use crate::coordinator::{OperatorCheckpoints, Topology, plan};
use crate::error::RunError;
use crate::manifest::JobManifest;
use crate::operator::ProcessingMode;

/// Where a restart resumes every physical operator of the job in storage,
/// and what it found wrong on the way. Made by [`plan_from_storage`].
///
/// # Examples
///
/// ```
/// use checkpoint_core::{FsStorageAgent, StorageAgent};
/// use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput};
/// use checkpoint_runtime::{Config, Dag, JobManifest, Runtime, WindowMode, plan_from_storage};
///
/// let dir = tempfile::tempdir()?;
/// let text = dir.path().join("input.txt");
/// std::fs::write(&text, "a\nb\nc\n")?;
/// let storage = FsStorageAgent::new(dir.path().join("checkpoints"))?;
/// let mut dag = Dag::new();
/// let lines = dag.input("lines", LineInput::new(&text));
/// let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(dir.path().join("out")));
/// dag.connect(&lines, &sink);
/// let config = Config::default().storage(storage.clone()).window_mode(WindowMode::Tuples(2));
/// Runtime::new(config).run(dag)?;
///
/// let manifest = JobManifest::from_bytes(&storage.load_manifest()?.expect("written by the job"))?;
/// let plan = plan_from_storage(&storage, &manifest)?;
/// assert!(plan.problem().is_none(), "a finished job can always be resumed");
/// assert!(plan.operator("lines").expect("in the manifest").ended, "a restart opens no further window");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredPlan {
    /// Every physical operator of the manifest, in the manifest's order.
    pub operators: Vec<StoredOperator>,
    /// The committed window the restore points imply (`None` before the
    /// first commit).
    pub committed: Option<WindowId>,
    /// Snapshots that fail their checksum or format check: a restart sets
    /// them aside (never deletes them) and resumes from older ones.
    pub corrupt: Vec<BadCheckpoint>,
    /// Snapshots that could not be read (permissions, I/O errors): a
    /// restart stops with an error and touches nothing, since a readable
    /// copy of the same bytes may be what the job needs.
    pub unreadable: Vec<BadCheckpoint>,
}

/// One physical operator in a [`StoredPlan`].
///
/// # Examples
///
/// ```
/// use checkpoint_core::{MemoryStorageAgent, WindowId};
/// use checkpoint_runtime::{JobManifest, RestorePoint, plan_from_storage};
///
/// // A job killed before its input's initial checkpoint was durable.
/// let manifest = JobManifest::from_bytes(br#"{"format":1,"window_base":1,"streaming_window_ms":500,
///   "checkpoint_window_count":10,"committed":null,"edges":[],"operators":[
///   {"name":"in","kind":"input","partitions":1,"stateless":false,"mode":"at-least-once",
///    "application_window_count":1,"checkpoint_window_count":10,"physical":["in"]}]}"#)?;
/// let plan = plan_from_storage(&MemoryStorageAgent::new(), &manifest)?;
/// let input = plan.operator("in").expect("in the manifest");
/// assert!(input.input && input.good.is_empty());
/// assert_eq!(input.restore, Some(RestorePoint::Fresh(WindowId::new(1, 0))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredOperator {
    /// The physical name (`count`, or `count#2` for a partition).
    pub name: String,
    /// The logical operator's name.
    pub operator: String,
    /// Whether it is an input.
    pub input: bool,
    /// Whether its state type is stateless (never saved).
    pub stateless: bool,
    /// Whether its processing mode is AT_MOST_ONCE.
    pub at_most_once: bool,
    /// Its checkpoints that verify, ascending.
    pub good: Vec<WindowId>,
    /// Where a restart resumes it; `None` if it cannot be resumed.
    pub restore: Option<RestorePoint>,
    /// An input restored from the final checkpoint of a stream that ended
    /// (or, stateless, from its final window): it opens no further window.
    pub ended: bool,
    /// A partition of a keyed operator whose partition count changed and
    /// that has not committed since: it restores at its restore point from
    /// these old partitions' snapshots (`JobManifest::rescaling`), not from
    /// its own.
    pub rescaled_from: Option<Vec<String>>,
}

/// Where a restart resumes one operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestorePoint {
    /// From its snapshot at this window.
    Checkpoint(WindowId),
    /// As new, from the job's first window: it never saved a checkpoint in
    /// a job that never committed (a kill came before its initial
    /// checkpoint was durable), and its initial state is the value the job
    /// is built with.
    Fresh(WindowId),
    /// Stateless: rebuilt, resuming after this window.
    Stateless(WindowId),
}

impl RestorePoint {
    /// The window the operator resumes after.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::WindowId;
    /// use checkpoint_runtime::RestorePoint;
    ///
    /// assert_eq!(RestorePoint::Fresh(WindowId::new(7, 0)).window(), WindowId::new(7, 0));
    /// ```
    pub fn window(self) -> WindowId {
        match self {
            RestorePoint::Checkpoint(w) | RestorePoint::Fresh(w) | RestorePoint::Stateless(w) => w,
        }
    }
}

/// A snapshot a plan could not use, and why.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
/// use checkpoint_runtime::{JobManifest, RestorePoint, plan_from_storage};
///
/// let storage = MemoryStorageAgent::new();
/// let (w0, w9) = (WindowId::new(1, 0), WindowId::new(1, 9));
/// storage.save("in", w0, &Snapshot::encode(&0u64, SnapshotMeta::new("in", w0))?)?;
/// let mut bytes = Snapshot::encode(&9u64, SnapshotMeta::new("in", w9))?;
/// let last = bytes.len() - 1;
/// bytes[last] ^= 1; // the checksum no longer matches
/// storage.save("in", w9, &bytes)?;
/// let manifest = JobManifest::from_bytes(br#"{"format":1,"window_base":1,"streaming_window_ms":500,
///   "checkpoint_window_count":10,"committed":null,"edges":[],"operators":[
///   {"name":"in","kind":"input","partitions":1,"stateless":false,"mode":"at-least-once",
///    "application_window_count":1,"checkpoint_window_count":10,"physical":["in"]}]}"#)?;
/// let plan = plan_from_storage(&storage, &manifest)?;
/// assert_eq!(plan.corrupt.len(), 1);
/// assert_eq!((plan.corrupt[0].operator.as_str(), plan.corrupt[0].window), ("in", w9));
/// assert_eq!(plan.operator("in").and_then(|o| o.restore), Some(RestorePoint::Checkpoint(w0)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BadCheckpoint {
    /// The physical operator.
    pub operator: String,
    /// The window it is stored at.
    pub window: WindowId,
    /// What is wrong, for people.
    pub reason: String,
}

impl StoredPlan {
    /// The operator named `name` (physical name). See [`StoredOperator`]
    /// for an example.
    pub fn operator(&self, name: &str) -> Option<&StoredOperator> {
        self.operators.iter().find(|o| o.name == name)
    }

    /// Why a restart cannot resume from this storage, or `None` if it can.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{MemoryStorageAgent, WindowId};
    /// use checkpoint_runtime::{JobManifest, plan_from_storage};
    ///
    /// // A job that committed window 9, whose checkpoints are all gone.
    /// let manifest = JobManifest::from_bytes(br#"{"format":1,"window_base":1,"streaming_window_ms":500,
    ///   "checkpoint_window_count":10,"committed":"0x0000000100000009","edges":[],"operators":[
    ///   {"name":"in","kind":"input","partitions":1,"stateless":false,"mode":"at-least-once",
    ///    "application_window_count":1,"checkpoint_window_count":10,"physical":["in"]}]}"#)?;
    /// let plan = plan_from_storage(&MemoryStorageAgent::new(), &manifest)?;
    /// let problem = plan.problem().expect("nothing to resume from");
    /// assert!(problem.contains("\"in\" has no usable checkpoint"), "{problem}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn problem(&self) -> Option<String> {
        if let Some(bad) = self.unreadable.first() {
            return Some(format!(
                "the checkpoint of operator {:?} at window {} cannot be read: {}; nothing was changed \
                 (fix the file's permissions or the disk, or move the file away, and start again)",
                bad.operator, bad.window, bad.reason
            ));
        }
        let missing: Vec<String> = self
            .operators
            .iter()
            .filter(|o| o.restore.is_none())
            .map(|o| format!("{:?}", o.name))
            .collect();
        if !missing.is_empty() {
            return Some(format!(
                "operator{} {} {} no usable checkpoint to restore from{}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                if missing.len() == 1 { "has" } else { "have" },
                if self.corrupt.is_empty() {
                    String::new()
                } else {
                    format!(" ({} corrupt snapshot(s) found)", self.corrupt.len())
                }
            ));
        }
        None
    }
}

/// Computes, from the snapshots in `storage` and the job's `manifest`,
/// where a restart resumes every operator: the recovery checkpoints of
/// DESIGN.md over the snapshots that verify, an operator that never saved
/// one in a job that never committed resuming as new, and inputs whose
/// stream ended marked as such. Every snapshot is read and verified once;
/// nothing is changed in storage.
///
/// The runtime resumes a job with it; the `checkpoint` tool's `ls`,
/// `verify` and `purge` show and act on the same plan.
///
/// # Errors
///
/// [`RunError::Manifest`] if the manifest does not describe an acyclic DAG,
/// [`RunError::Storage`] if listing the storage fails. An unreadable
/// snapshot is not an error here: it is in [`StoredPlan::unreadable`].
///
/// # Examples
///
/// See [`StoredPlan`].
pub fn plan_from_storage(storage: &dyn StorageAgent, manifest: &JobManifest) -> Result<StoredPlan, RunError> {
    plan_aligned(storage, manifest, &BTreeSet::new())
}

/// [`plan_from_storage`], with the partitions of each logical operator in
/// `align` restored at one common window (the newest all of them can
/// take): they are about to be split or merged by key group, which needs
/// every group at the same window.
pub(crate) fn plan_aligned(
    storage: &dyn StorageAgent,
    manifest: &JobManifest,
    align: &BTreeSet<String>,
) -> Result<StoredPlan, RunError> {
    let bad_manifest = |detail: String| RunError::Manifest { detail };
    let base = manifest.window_base;
    let initial = WindowId::new(base, 0);
    let mut by_logical: HashMap<&str, usize> = HashMap::new();
    let mut first_physical = Vec::new();
    let mut operators: Vec<StoredOperator> = Vec::new();
    let mut corrupt = Vec::new();
    let mut unreadable = Vec::new();
    for (logical, op) in manifest.operators.iter().enumerate() {
        if by_logical.insert(op.name.as_str(), logical).is_some() {
            return Err(bad_manifest(format!(
                "the job manifest names operator {:?} twice",
                op.name
            )));
        }
        first_physical.push(operators.len());
        for name in &op.physical {
            let mut good = Vec::new();
            if !op.stateless {
                // Listed once: a snapshot naming a chunk that is not there
                // is as unusable as a corrupt one.
                let chunks: BTreeSet<ChunkId> = storage.chunks(name)?.into_iter().collect();
                for window in storage.windows(name)? {
                    let problem = match storage.load(name, window) {
                        Ok(bytes) => match Snapshot::verify(&bytes) {
                            Ok(header) => match header.chunks.iter().find(|c| !chunks.contains(&c.id)) {
                                None => {
                                    good.push(window);
                                    continue;
                                }
                                Some(missing) => Ok(format!(
                                    "it names chunk {} of keyed state, which is missing",
                                    missing.id
                                )),
                            },
                            Err(e) => Ok(e.to_string()),
                        },
                        // Deleted since it was listed: not there.
                        Err(StorageError::NotFound { .. }) => continue,
                        Err(e @ (StorageError::Corrupt { .. } | StorageError::Misplaced { .. })) => Ok(e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let (list, reason) = match problem {
                        Ok(reason) => (&mut corrupt, reason),
                        Err(reason) => (&mut unreadable, reason),
                    };
                    list.push(BadCheckpoint {
                        operator: name.clone(),
                        window,
                        reason,
                    });
                }
            }
            operators.push(StoredOperator {
                name: name.clone(),
                operator: op.name.clone(),
                input: op.kind == "input",
                stateless: op.stateless,
                at_most_once: op.mode == ProcessingMode::AtMostOnce.name(),
                good,
                restore: None,
                ended: false,
                rescaled_from: None,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for op in &operators {
        if !seen.insert(op.name.as_str()) {
            return Err(bad_manifest(format!(
                "the job manifest names physical operator {:?} twice",
                op.name
            )));
        }
    }
    let physical_of = |logical: usize| {
        let start = first_physical[logical];
        start..start + manifest.operators[logical].physical.len()
    };
    let n = operators.len();
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    for edge in &manifest.edges {
        let lookup = |name: &str| {
            by_logical.get(name).copied().ok_or_else(|| {
                bad_manifest(format!(
                    "the job manifest has an edge from or to unknown operator {name:?}"
                ))
            })
        };
        let (from, to) = (lookup(&edge.from)?, lookup(&edge.to)?);
        for u in physical_of(from) {
            for d in physical_of(to) {
                downstream[u].push(d);
                upstream[d].push(u);
            }
        }
    }
    let topology = Topology::new(downstream).with_at_most_once(operators.iter().map(|o| o.at_most_once).collect());
    let Some(order) = topology.topological_order() else {
        return Err(bad_manifest("the job manifest's edges form a cycle".to_owned()));
    };
    // Before the first commit nothing was ever deleted by retention, so
    // every operator can go back to the job's start: one that has no
    // checkpoint (a kill before its initial one was durable) resumes as new.
    let never_committed = manifest.committed.is_none();
    let mut fresh: Vec<bool> = operators
        .iter()
        .map(|o| {
            !o.stateless
                && never_committed
                && !o.good.contains(&initial)
                && !unreadable.iter().any(|b: &BadCheckpoint| b.operator == o.name)
        })
        .collect();
    let mut durable: Vec<Vec<WindowId>> = operators
        .iter()
        .zip(&fresh)
        .map(|(o, &fresh)| {
            let mut durable = o.good.clone();
            if fresh {
                durable.insert(0, initial);
            }
            durable
        })
        .collect();
    for (logical, op) in manifest.operators.iter().enumerate() {
        if op.stateless {
            continue;
        }
        if let Some(rescale) = manifest.rescaling.get(&op.name).filter(|r| !r.finished) {
            // Split or merged and not committed since: the old partitions'
            // snapshots at the rescale window are the state, whatever the
            // new partitions saved after it.
            for node in physical_of(logical) {
                durable[node] = vec![rescale.window];
                fresh[node] = false;
                operators[node].rescaled_from = Some(rescale.physical.clone());
            }
        } else if align.contains(&op.name) {
            let range = physical_of(logical);
            let common: Vec<WindowId> = durable[range.start]
                .iter()
                .copied()
                .filter(|w| range.clone().all(|node| durable[node].contains(w)))
                .collect();
            for node in range {
                durable[node] = common.clone();
            }
        }
    }
    let lists: Vec<OperatorCheckpoints> = operators
        .iter()
        .zip(durable)
        .map(|(o, durable)| {
            if o.stateless {
                // Checkpointed at every window, as far as a restart knows.
                OperatorCheckpoints::stateless(WindowId::from_u64(u64::MAX))
            } else {
                OperatorCheckpoints::durable(durable)
            }
        })
        .collect();
    let planned = plan(&topology, &lists);
    let mut chosen: Vec<Option<WindowId>> = vec![None; n];
    for &node in &order {
        let op = &operators[node];
        let durable = &lists[node].durable;
        let window = restore_window(
            (op.stateless, op.at_most_once),
            durable,
            planned.recovery[node],
            upstream[node].iter().filter_map(|u| chosen[*u]),
            initial,
        );
        let restore = window.map(|w| {
            if op.stateless {
                RestorePoint::Stateless(w)
            } else if fresh[node] && w == initial {
                RestorePoint::Fresh(w)
            } else {
                RestorePoint::Checkpoint(w)
            }
        });
        chosen[node] = restore.map(RestorePoint::window);
        let op = &mut operators[node];
        op.restore = restore;
        // A stateless input ended too: its restore point is then the final
        // window its downstreams' checkpoints cover.
        op.ended = op.input
            && matches!(
                restore,
                Some(RestorePoint::Checkpoint(w) | RestorePoint::Stateless(w)) if manifest.ended.get(&op.name) == Some(&w)
            );
    }
    Ok(StoredPlan {
        operators,
        committed: planned.committed.filter(|w| w.as_u64() != u64::MAX),
        corrupt,
        unreadable,
    })
}

/// The window one operator resumes after, by the rules a restart and an
/// in-run recovery share, from the coordinator's recovery checkpoint
/// `planned` and the operator's `durable` checkpoints:
/// - stateless: the window `planned` bounds it to, else the latest restore
///   point of its `upstream`s, else `fallback` (its activation);
/// - AT_MOST_ONCE: its newest checkpoint;
/// - any other: the checkpoint that stands for `planned` (a finished
///   operator's final one may be older).
pub(crate) fn restore_window(
    (stateless, at_most_once): (bool, bool),
    durable: &[WindowId],
    planned: Option<WindowId>,
    upstream: impl IntoIterator<Item = WindowId>,
    fallback: WindowId,
) -> Option<WindowId> {
    if stateless {
        // `u64::MAX` stands for "checkpointed at every window": no bound.
        return Some(
            planned
                .filter(|w| w.as_u64() != u64::MAX)
                .or_else(|| upstream.into_iter().max())
                .unwrap_or(fallback),
        );
    }
    if at_most_once {
        return durable.last().copied();
    }
    planned.and_then(|r| durable.iter().rev().find(|w| **w <= r).copied())
}
