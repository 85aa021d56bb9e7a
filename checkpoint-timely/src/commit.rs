//! The committed window, from the durability probe: told to every
//! instance on its worker, recorded as the worker's, and the checkpoints a
//! restart can no longer need deleted.

use checkpoint_core::{StorageAgent, WindowId};
use checkpoint_runtime::RunError;
use timely::dataflow::ProbeHandle;

use crate::dataflow::{Hosted, Shared, guarded};
use crate::{frontier, rescale};

/// Tells every instance here of the newest committed window: the largest
/// window below the durable frontier at which every stateful operator
/// checkpointed (every window, when the frontier is empty).
pub(crate) fn deliver_committed(
    shared: &Shared,
    hosted: &[Hosted],
    durable: &ProbeHandle<u64>,
    committed: &mut Option<WindowId>,
) {
    let (Some(every), Some(_)) = (shared.commit_every, &shared.storage) else {
        return;
    };
    let frontier = durable.with_frontier(|f| f.iter().min().copied());
    // An empty frontier: every window is closed and durable, the last one
    // with every operator's final checkpoint.
    if frontier.is_none()
        && let Some(last) = shared.last_window.get()
    {
        commit(shared, hosted, shared.window(last), true, committed);
        return;
    }
    let Some(below) = frontier else {
        return;
    };
    // The largest checkpoint window < below; never one before this run's
    // first (window 0 of a fresh run was not saved).
    let Some(last) = (below / every).checked_sub(1).map(|k| k * every + every - 1) else {
        return;
    };
    if last < shared.first {
        return;
    }
    commit(shared, hosted, shared.window(last), false, committed);
}

/// Tells every instance here that `window` is committed, if it is newer
/// than the last one told, and records it.
fn commit(shared: &Shared, hosted: &[Hosted], window: WindowId, ended: bool, committed: &mut Option<WindowId>) {
    if committed.is_some_and(|c| c >= window) || shared.failed() {
        return;
    }
    *committed = Some(window);
    for node in hosted {
        for (_, instance) in node.borrow_mut().iter_mut() {
            let name = instance.name().to_owned();
            if let Err(e) = guarded(&name, Some(window), || instance.committed(window)) {
                shared.fail(e);
            }
        }
    }
    if let Some(storage) = &shared.storage
        && let Err(e) = retain(storage.as_ref(), shared, window, ended)
    {
        shared.fail(e);
    }
}

/// Records `window` as this worker's committed one, then deletes its
/// instances' checkpoints (and its records, and the chunks no checkpoint
/// left refers to) older than the window a restart would resume after now:
/// the smallest newest record of all workers. Once that window is this
/// run's own, worker 0 also removes what only another worker count's
/// restart needed: other workers' records and other partitions' files.
fn retain(storage: &dyn StorageAgent, shared: &Shared, window: WindowId, ended: bool) -> Result<(), RunError> {
    frontier::record(storage, shared.index, shared.workers, window, ended)?;
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
        let mut deleted = false;
        for old in windows.into_iter().filter(|w| *w < keep_from) {
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
        frontier::retire_beyond(storage, shared.workers, keep_from)?;
        rescale::remove_other_layouts(storage, &shared.operators, &shared.layout)?;
        shared.cleared.set(true);
    }
    Ok(())
}
