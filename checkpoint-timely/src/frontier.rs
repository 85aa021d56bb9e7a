//! Each worker's committed window, recorded durably: a restart resumes from
//! the smallest one any worker of the last run recorded, so a crash between
//! two workers' records is safe (Bytewax's rule).

use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, StorageAgent, StorageError, WindowId};
use checkpoint_runtime::RunError;

/// The record's name for worker `index`: a name no DAG operator can have
/// clash with its checkpoints (an operator name cannot hold `#` and a
/// partition suffix is a number).
fn record_name(index: usize) -> String {
    format!("timely-worker#{index}")
}

/// What a worker records at its committed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Checkpoint)]
struct WorkerRecord {
    /// Workers in the run that wrote it.
    workers: u64,
    /// The window was the stream's last: the job is complete.
    ended: bool,
}

fn storage_error(action: &str, e: StorageError) -> RunError {
    RunError::Manifest {
        detail: format!("{action}: {e}"),
    }
}

/// Records that `window` is committed, for worker `index` of `workers`.
pub(crate) fn record(
    storage: &dyn StorageAgent,
    index: usize,
    workers: usize,
    window: WindowId,
    ended: bool,
) -> Result<(), RunError> {
    let name = record_name(index);
    let bytes = Snapshot::encode(
        &WorkerRecord {
            workers: workers as u64,
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

/// The window a restart on `workers` workers resumes after: the smallest
/// newest record over every worker of the last run, `None` if the last run
/// committed nothing on some worker (or there was none).
///
/// An error if the last run had another worker count (rescaling is not done
/// by this mode yet) or a record does not decode.
pub(crate) fn resume_after(storage: &dyn StorageAgent, workers: usize) -> Result<Option<Resume>, RunError> {
    let newest = |index: usize| -> Result<Option<(WindowId, WorkerRecord)>, RunError> {
        let name = record_name(index);
        let windows = storage
            .windows(&name)
            .map_err(|e| storage_error("listing the committed records", e))?;
        let Some(&window) = windows.last() else {
            return Ok(None);
        };
        let bytes = storage
            .load(&name, window)
            .map_err(|e| storage_error("reading a committed record", e))?;
        let (_, record) = Snapshot::decode::<WorkerRecord>(&bytes).map_err(|source| RunError::Restore {
            operator: name.clone(),
            window,
            source,
        })?;
        Ok(Some((window, record)))
    };
    let Some((_, first)) = newest(0)? else {
        return Ok(None);
    };
    let last_run = usize::try_from(first.workers).unwrap_or(usize::MAX);
    if last_run != workers {
        return Err(RunError::Config {
            detail: format!(
                "the job's checkpoints are of a run on {last_run} timely workers, this one has {workers}: \
                 the timely mode cannot change the worker count of a job yet"
            ),
        });
    }
    let mut resume: Option<Resume> = None;
    for index in 0..last_run {
        // A worker that recorded nothing committed nothing: no window is
        // known to be durable on every worker.
        let Some((window, record)) = newest(index)? else {
            return Ok(None);
        };
        resume = Some(match resume {
            Some(r) if r.window < window => r,
            Some(r) if r.window == window => Resume {
                window,
                ended: r.ended && record.ended,
            },
            _ => Resume {
                window,
                ended: record.ended,
            },
        });
    }
    Ok(resume)
}

/// Where a restart resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// After this window.
    pub(crate) window: WindowId,
    /// It was the stream's last on every worker: the job is complete.
    pub(crate) ended: bool,
}
