//! A restart on another worker count: each keyed partition is restored
//! from the old partitions that held its key groups, every other operator
//! from its own checkpoint, and what only the old layout needed is removed
//! once the new one has committed a window.

use std::collections::BTreeSet;
use std::sync::Arc;

use checkpoint_core::{StorageAgent, StorageError, WindowId};
use checkpoint_runtime::RunError;
use checkpoint_runtime::io::WindowDataManager;
use checkpoint_runtime::portable::{PortableDag, RestoreFrom, collect_chunks};

use crate::placement::Placement;

fn storage_error(action: String, e: StorageError) -> RunError {
    RunError::Manifest {
        detail: format!("{action}: {e}"),
    }
}

/// What partition `partition` of `node`, placed by `now`, restores from at
/// `window`, whose checkpoints were taken with the placement `then`, and
/// whether it is an input partition that had ended before `window`.
pub(crate) fn restore_from(
    dag: &PortableDag,
    storage: &Arc<dyn StorageAgent>,
    (node, partition): (usize, usize),
    now: &Placement,
    then: &Placement,
    window: WindowId,
) -> Result<(RestoreFrom, bool), RunError> {
    let load = |name: &str, at: WindowId| {
        storage
            .load(name, at)
            .map_err(|e| storage_error(format!("restoring {name} from window {at}"), e))
    };
    let (old, new) = (then.partitions(node), now.partitions(node));
    if old == new {
        let name = dag.physical_name(node, partition, now.counts());
        let mut at = window;
        let mut ended = false;
        if dag.nodes().get(node).is_some_and(|n| n.input) {
            // Every stateful operator checkpoints at a committed window
            // while it runs, so an input partition without a checkpoint
            // there had ended before it: its newest checkpoint is its
            // final one (retention keeps it).
            let saved = storage
                .windows(&name)
                .map_err(|e| storage_error(format!("listing the checkpoints of {name}"), e))?;
            if !saved.contains(&window)
                && let Some(last) = saved.into_iter().filter(|w| *w < window).max()
            {
                at = last;
                ended = true;
            }
        }
        let restore = RestoreFrom::Snapshot {
            snapshot: load(&name, at)?,
            storage: Some(Arc::clone(storage)),
        };
        return Ok((restore, ended));
    }
    let name = dag.physical_name(node, partition, now.counts());
    if !storage.supports_chunks() {
        return Err(RunError::Config {
            detail: format!(
                "{name} would be split from {old} partitions' checkpoints into {new}, which needs a storage \
                 agent that keeps chunks (keyed state saved by key group); this one does not: run on {} workers",
                then.workers()
            ),
        });
    }
    let groups = dag.key_groups();
    let owned = groups.range_of_partition(partition, new);
    let mut sources = Vec::new();
    for q in 0..old {
        let held = groups.range_of_partition(q, old);
        if held.start < owned.end && owned.start < held.end {
            let source = dag.physical_name(node, q, then.counts());
            let bytes = load(&source, window)?;
            sources.push((source, bytes));
        }
    }
    let restore = RestoreFrom::Rescaled {
        sources,
        owned,
        storage: Arc::clone(storage),
    };
    Ok((restore, false))
}

/// Every physical name of the DAG's partitions under `placement`.
pub(crate) fn names(dag: &PortableDag, placement: &Placement) -> BTreeSet<String> {
    (0..dag.nodes().len())
        .flat_map(|node| (0..placement.partitions(node)).map(move |p| (node, p)))
        .map(|(node, p)| dag.physical_name(node, p, placement.counts()))
        .collect()
}

/// Removes every checkpoint and chunk of a partition of `operators` (the
/// DAG's logical names) whose name is not in `current`, and its window
/// data: partitions of another worker count, which no restart needs once a
/// run of the current count has committed a window. Returns the names it
/// cleared.
pub(crate) fn remove_other_layouts(
    storage: &dyn StorageAgent,
    operators: &BTreeSet<String>,
    current: &BTreeSet<String>,
) -> Result<Vec<String>, RunError> {
    let stored = storage
        .operators()
        .map_err(|e| storage_error("listing the stored operators".to_owned(), e))?;
    let mut cleared = Vec::new();
    for name in stored {
        // A partition's checkpoints (`count#2`) or its window data
        // (`count#2#window-data`, an operator's own records); any other
        // name (the workers' records, another job's files) is not ours.
        let base = name.strip_suffix(WindowDataManager::NAME_SUFFIX).unwrap_or(&name);
        let partition_of_ours = match base.split_once('#') {
            Some((logical, partition)) => {
                operators.contains(logical) && !partition.is_empty() && partition.bytes().all(|b| b.is_ascii_digit())
            }
            None => operators.contains(base),
        };
        if current.contains(base) || !partition_of_ours {
            continue;
        }
        let listing = |e| storage_error(format!("listing the checkpoints of {name}"), e);
        for window in storage.windows(&name).map_err(listing)? {
            storage
                .delete(&name, window)
                .map_err(|e| storage_error(format!("deleting {name}'s checkpoint at {window}"), e))?;
        }
        // No snapshot is left to refer to any chunk.
        for chunk in storage.chunks(&name).map_err(listing)? {
            storage
                .delete_chunk(&name, chunk)
                .map_err(|e| storage_error(format!("deleting a chunk of {name}"), e))?;
        }
        cleared.push(name);
    }
    Ok(cleared)
}

/// [`collect_chunks`] as a run error.
pub(crate) fn collect(storage: &dyn StorageAgent, name: &str) -> Result<(), RunError> {
    collect_chunks(storage, name)
        .map(|_| ())
        .map_err(|e| storage_error(format!("deleting chunks of {name} no checkpoint refers to"), e))
}
