//! Each worker's committed window, recorded durably with the worker count
//! of its run: a restart resumes from the smallest one every worker of a
//! run recorded, so a crash between two workers' records is safe (Bytewax's
//! rule), and restores the checkpoints of that run's worker count, which
//! may differ from its own (a rescale).

use std::collections::BTreeMap;

use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, StorageAgent, StorageError, WindowId};
use checkpoint_runtime::RunError;

/// The record's name for worker `index`: a partition name of the operator
/// name [`RECORD_OPERATOR`], which a DAG run in the timely mode may not use.
fn record_name(index: usize) -> String {
    format!("{RECORD_PREFIX}{index}")
}

/// The operator name the records are partitions of.
pub(crate) const RECORD_OPERATOR: &str = "timely-worker";
const RECORD_PREFIX: &str = "timely-worker#";

/// What a worker records at its committed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Checkpoint)]
struct WorkerRecord {
    /// Workers in the run that wrote it.
    workers: u64,
    /// Windows between that run's commits: with another cadence, another
    /// set of operators had checkpoints at a window.
    cadence: u64,
    /// The window was the stream's last: the job is complete.
    ended: bool,
}

fn storage_error(action: &str, e: StorageError) -> RunError {
    RunError::Manifest {
        detail: format!("{action}: {e}"),
    }
}

/// Records that `window` is committed, for worker `index` of a run of
/// `workers` workers committing every `cadence` windows.
pub(crate) fn record(
    storage: &dyn StorageAgent,
    index: usize,
    (workers, cadence): (usize, u64),
    window: WindowId,
    ended: bool,
) -> Result<(), RunError> {
    let name = record_name(index);
    let bytes = Snapshot::encode(
        &WorkerRecord {
            workers: workers as u64,
            cadence,
            ended,
        },
        SnapshotMeta::new(&name, window),
    )
    .map_err(|e| RunError::Manifest {
        detail: format!("recording the committed window: {e}"),
    })?;
    storage
        .save(&name, window, &bytes)
        .map_err(|e| storage_error("recording the committed window", e))
}

/// Deletes worker `index`'s records older than `floor`.
pub(crate) fn forget_before(storage: &dyn StorageAgent, index: usize, floor: WindowId) -> Result<(), RunError> {
    let name = record_name(index);
    for old in storage
        .windows(&name)
        .map_err(|e| storage_error("listing the committed records", e))?
    {
        if old < floor {
            storage
                .delete(&name, old)
                .map_err(|e| storage_error("deleting an old committed record", e))?;
        }
    }
    Ok(())
}

/// The window a restart resumes after, and the worker count of the run
/// whose checkpoints it restores: for each layout the records were written
/// by (a worker count `n` and a commit cadence), the smallest newest record
/// over workers `0..n` (a worker that recorded nothing under that layout
/// rules it out); of those, the latest. `None` if no layout has a record
/// from every worker (a first run, or a crash before the first commit).
///
/// Sound across restarts with other worker counts: a record of a run of
/// `n` workers at `w` is written only once every checkpoint of that run at
/// `w` is durable (the committed window comes from a global probe), a run
/// resumes after the latest such window and writes only later ones, and
/// retention keeps every record and checkpoint at or after the resume
/// window. Records of older runs under another count (workers that the
/// current count has no more of) never complete a count on their own.
pub(crate) fn resume_after(storage: &dyn StorageAgent) -> Result<Option<Resume>, RunError> {
    // index -> (worker count, cadence) -> (newest window recorded under
    // it, ended).
    let mut newest: BTreeMap<usize, BTreeMap<Layout, (WindowId, bool)>> = BTreeMap::new();
    for name in storage
        .operators()
        .map_err(|e| storage_error("listing the committed records", e))?
    {
        let Some(index) = name.strip_prefix(RECORD_PREFIX).and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        let windows = storage
            .windows(&name)
            .map_err(|e| storage_error("listing the committed records", e))?;
        let by_count = newest.entry(index).or_default();
        for window in windows.into_iter().rev() {
            let bytes = match storage.load(&name, window) {
                Ok(bytes) => bytes,
                // Deleted by its worker's retention since it was listed: an
                // older record than one already read.
                Err(StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(storage_error("reading a committed record", e)),
            };
            let (_, record) = Snapshot::decode::<WorkerRecord>(&bytes).map_err(|source| RunError::Restore {
                operator: name.clone(),
                window,
                source,
            })?;
            by_count
                .entry((record.workers, record.cadence))
                .or_insert((window, record.ended));
        }
    }
    let layouts: std::collections::BTreeSet<Layout> = newest.values().flat_map(|c| c.keys().copied()).collect();
    let mut resume: Option<Resume> = None;
    for count in layouts {
        let Ok(workers) = usize::try_from(count.0) else {
            continue;
        };
        let mut complete: Option<(WindowId, bool)> = None;
        for index in 0..workers {
            let Some(&(window, ended)) = newest.get(&index).and_then(|c| c.get(&count)) else {
                complete = None;
                break;
            };
            complete = Some(match complete {
                None => (window, ended),
                Some((w, e)) if w == window => (w, e && ended),
                // The job ended only if every worker recorded its last
                // window.
                Some((w, _)) if w < window => (w, false),
                Some(_) => (window, false),
            });
        }
        if let Some((window, ended)) = complete
            && resume.is_none_or(|r| r.window < window)
        {
            resume = Some(Resume { window, ended, workers });
        }
    }
    Ok(resume)
}

/// Deletes every record of workers `workers..` (of runs with more
/// workers), once a run of `workers` workers has a record from every one of
/// them at `floor`, the window a restart resumes after: no run with more
/// workers can complete a later window any more (a run resumes after the
/// latest complete window and writes only later ones, and this one is the
/// last run).
pub(crate) fn retire_beyond(storage: &dyn StorageAgent, workers: usize) -> Result<(), RunError> {
    for name in storage
        .operators()
        .map_err(|e| storage_error("listing the committed records", e))?
    {
        if let Some(index) = name.strip_prefix(RECORD_PREFIX).and_then(|i| i.parse::<usize>().ok())
            && index >= workers
        {
            for window in storage
                .windows(&name)
                .map_err(|e| storage_error("listing the committed records", e))?
            {
                storage
                    .delete(&name, window)
                    .map_err(|e| storage_error("deleting a record of a run with more workers", e))?;
            }
        }
    }
    Ok(())
}

/// The layout of a run's checkpoints: its worker count and its commit
/// cadence.
type Layout = (u64, u64);

/// Where a restart resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// After this window.
    pub(crate) window: WindowId,
    /// It was the stream's last on every worker: the job is complete.
    pub(crate) ended: bool,
    /// The worker count of the run whose checkpoints at `window` a restart
    /// restores.
    pub(crate) workers: usize,
}

#[cfg(test)]
mod tests {
    use checkpoint_core::MemoryStorageAgent;

    use super::*;

    fn w(sequence: u32) -> WindowId {
        WindowId::new(1, sequence)
    }

    fn resume(storage: &MemoryStorageAgent) -> Option<(u32, usize, bool)> {
        resume_after(storage)
            .expect("records read")
            .map(|r| (r.window.sequence(), r.workers, r.ended))
    }

    #[test]
    fn no_record_or_a_worker_without_one_resumes_nowhere() {
        let storage = MemoryStorageAgent::new();
        assert_eq!(resume(&storage), None);
        // Worker 1 of the two crashed before its first record.
        record(&storage, 0, (2, 5), w(59), false).expect("record");
        assert_eq!(resume(&storage), None);
        record(&storage, 1, (2, 5), w(59), false).expect("record");
        assert_eq!(resume(&storage), Some((59, 2, false)));
        record(&storage, 1, (2, 5), w(119), false).expect("record");
        assert_eq!(resume(&storage), Some((59, 2, false)), "the smallest newest record");
    }

    #[test]
    fn a_run_on_another_count_counts_once_every_one_of_its_workers_recorded() {
        let storage = MemoryStorageAgent::new();
        for index in 0..2 {
            record(&storage, index, (2, 5), w(59), false).expect("record");
        }
        // Restarted on 3 workers: two of them record 119, then a crash.
        record(&storage, 0, (3, 5), w(119), false).expect("record");
        record(&storage, 2, (3, 5), w(119), false).expect("record");
        assert_eq!(resume(&storage), Some((59, 2, false)), "2 workers' checkpoints at 59");
        record(&storage, 1, (3, 5), w(119), false).expect("record");
        assert_eq!(resume(&storage), Some((119, 3, false)));
    }

    #[test]
    fn a_record_overwritten_by_another_count_no_longer_completes_its_own() {
        let storage = MemoryStorageAgent::new();
        for index in 0..3 {
            record(&storage, index, (3, 5), w(59), false).expect("record");
        }
        // Two of three recorded 119, then a crash: 3 workers at 59.
        record(&storage, 0, (3, 5), w(119), false).expect("record");
        record(&storage, 1, (3, 5), w(119), false).expect("record");
        assert_eq!(resume(&storage), Some((59, 3, false)));
        // Restarted on 2 workers, whose worker 0 records 119 over the old
        // worker 0's record there; worker 1 has not yet.
        record(&storage, 0, (2, 5), w(119), false).expect("record");
        assert_eq!(resume(&storage), Some((59, 3, false)));
        record(&storage, 1, (2, 5), w(119), false).expect("record");
        assert_eq!(resume(&storage), Some((119, 2, false)));
        // Worker 2's old records go once the 2 workers have committed past
        // them; its records never complete 3 workers again anyway.
        forget_before(&storage, 0, w(119)).expect("forget");
        forget_before(&storage, 1, w(119)).expect("forget");
        retire_beyond(&storage, 2).expect("retire");
        assert!(storage.windows("timely-worker#2").expect("windows").is_empty());
        assert_eq!(resume(&storage), Some((119, 2, false)));
    }

    #[test]
    fn a_run_with_another_commit_cadence_counts_on_its_own() {
        let storage = MemoryStorageAgent::new();
        // Every 5 windows: worker 0 recorded 9, worker 1 only 4.
        record(&storage, 0, (2, 5), w(4), false).expect("record");
        record(&storage, 1, (2, 5), w(4), false).expect("record");
        record(&storage, 0, (2, 5), w(9), false).expect("record");
        // Restarted committing every 4 windows: worker 1 records 11. The
        // checkpoints at 9 are not all of one run: 9 is not complete.
        record(&storage, 1, (2, 4), w(11), false).expect("record");
        assert_eq!(resume(&storage), Some((4, 2, false)));
        record(&storage, 0, (2, 4), w(11), false).expect("record");
        assert_eq!(resume(&storage), Some((11, 2, false)));
    }

    #[test]
    fn the_job_ended_only_if_every_worker_recorded_its_last_window() {
        let storage = MemoryStorageAgent::new();
        record(&storage, 0, (2, 5), w(30), true).expect("record");
        record(&storage, 1, (2, 5), w(29), false).expect("record");
        assert_eq!(resume(&storage), Some((29, 2, false)));
        record(&storage, 1, (2, 5), w(30), true).expect("record");
        assert_eq!(resume(&storage), Some((30, 2, true)));
    }

    #[test]
    fn a_record_that_does_not_decode_is_an_error() {
        let storage = MemoryStorageAgent::new();
        record(&storage, 0, (1, 5), w(9), false).expect("record");
        #[derive(Checkpoint)]
        struct Other {
            text: String,
        }
        let other = Snapshot::encode(
            &Other {
                text: "not a record".to_owned(),
            },
            SnapshotMeta::new("timely-worker#0", w(14)),
        )
        .expect("encode");
        storage.save("timely-worker#0", w(14), &other).expect("save");
        assert!(resume_after(&storage).is_err());
    }
}
