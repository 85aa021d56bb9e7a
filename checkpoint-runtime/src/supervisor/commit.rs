//! The committed window: advancing it, telling operators, retention of
//! old checkpoints and of the chunks no kept checkpoint refers to, and the
//! manifest's record of it.

use std::collections::HashSet;

use checkpoint_core::{Snapshot, StorageAgent, StorageError, WindowId};

use crate::coordinator::{RecoveryPlan, plan, releases};
use crate::protocol::Control;

use super::{GiveUp, Supervisor};

impl Supervisor {
    /// Lets each replay store drop what every downstream reading it is
    /// past, ahead of the commit: a stateless sink's recovery checkpoint is
    /// the last window it completed, so its upstream's store keeps a window
    /// or two instead of everything since the last commit.
    fn release_stores(&mut self, planned: &RecoveryPlan) {
        let releases = releases(&self.reads, planned);
        for (node, release) in releases.into_iter().enumerate() {
            let Some(release) = release else {
                continue;
            };
            if self.released[node].is_some_and(|old| release <= old) || self.committed.is_some_and(|c| release <= c) {
                continue;
            }
            self.released[node] = Some(release);
            if let Some(control) = &self.control[self.root[node]] {
                let _ = control.send((node, Control::Release(release)));
            }
        }
    }

    pub(super) fn advance_commit(&mut self) -> Result<(), GiveUp> {
        if self.storage.is_none() {
            return Ok(());
        }
        let planned = plan(&self.topology, &self.checkpoints);
        if self.spill_dir.is_some() {
            self.release_stores(&planned);
        }
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
                let name = &self.physical[node].name;
                for window in &old {
                    // An old partition's snapshot at a pending rescale's
                    // window is what every new partition restores from.
                    let source = self
                        .manifest
                        .rescaling
                        .values()
                        .any(|r| r.window == *window && r.physical.contains(name));
                    if !source {
                        storage.delete(name, *window)?;
                    }
                }
                ops.durable.drain(..old.len());
                if !old.is_empty() {
                    let removed = collect_chunks(&*storage, &self.physical[node].name)?;
                    if removed > 0 {
                        tracing::debug!(operator = %self.physical[node].name, removed, "chunks no checkpoint refers to removed");
                    }
                }
            }
            self.retain_from = planned.recovery;
            self.finish_rescales(&*storage, new)?;
            self.manifest.committed = Some(new);
            storage.save_manifest(&self.manifest.to_bytes())?;
        }
        Ok(())
    }
}

impl Supervisor {
    /// Removes every operator's chunks that no stored snapshot names (see
    /// [`collect_chunks`]); at the start and at the end of a job, when no
    /// save is in flight. A failure here only leaves garbage: logged, not
    /// returned.
    pub(super) fn collect_all_chunks(&self) {
        let Some(storage) = &self.storage else {
            return;
        };
        let mut names: Vec<&str> = self.physical.iter().map(|p| p.name.as_str()).collect();
        for record in self.manifest.rescaling.values() {
            names.extend(record.physical.iter().map(String::as_str));
        }
        names.sort_unstable();
        names.dedup();
        for name in names {
            match collect_chunks(&**storage, name) {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(operator = %name, removed, "chunks no checkpoint refers to removed"),
                Err(e) => tracing::warn!(operator = %name, error = %e, "could not remove unreferenced chunks"),
            }
        }
    }

    /// A rescale is over once a window past it is committed: every new
    /// partition then has a checkpoint of its own to recover from. Its
    /// record leaves the manifest (saved by the caller), and the old
    /// partitions' snapshots at the rescale window go, with every
    /// checkpoint and chunk of an old partition whose name the job no
    /// longer has.
    fn finish_rescales(&mut self, storage: &dyn StorageAgent, committed: WindowId) -> Result<(), StorageError> {
        let done: Vec<String> = self
            .manifest
            .rescaling
            .iter()
            .filter(|(_, r)| r.window < committed)
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            let Some(record) = self.manifest.rescaling.remove(&name) else {
                continue;
            };
            for source in &record.physical {
                if self.physical.iter().any(|p| p.name == *source) {
                    storage.delete(source, record.window)?;
                    collect_chunks(storage, source)?;
                } else {
                    for window in storage.windows(source)? {
                        storage.delete(source, window)?;
                    }
                    for chunk in storage.chunks(source)? {
                        storage.delete_chunk(source, chunk)?;
                    }
                }
            }
            tracing::info!(operator = %name, window = %record.window, "rescale committed; old partitions removed");
        }
        Ok(())
    }
}

/// Deletes the chunks of `operator` that none of its stored snapshots
/// refers to (Flink's shared-state registry, computed from what storage
/// holds): those of deleted snapshots, and those of saves that failed or
/// were cut short by a crash. A chunk written after the newest snapshot is
/// kept: it may belong to a save in flight, whose snapshot comes after its
/// chunks. If any snapshot's header cannot be read, nothing is deleted.
/// Returns how many were deleted.
///
/// Crash-safe in any order of events: a snapshot is deleted before the
/// chunks only it referred to, so a crash in between leaves unreferenced
/// chunks (deleted by the next pass), never a snapshot without its chunks.
pub(crate) fn collect_chunks(storage: &dyn StorageAgent, operator: &str) -> Result<usize, StorageError> {
    if !storage.supports_chunks() {
        return Ok(0);
    }
    let chunks = storage.chunks(operator)?;
    if chunks.is_empty() {
        return Ok(0);
    }
    let windows = storage.windows(operator)?;
    let Some(&newest) = windows.last() else {
        return Ok(0);
    };
    let mut referenced = HashSet::new();
    for window in windows {
        let bytes = match storage.load(operator, window) {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match Snapshot::read_header(&bytes) {
            Ok(header) => referenced.extend(header.chunks.iter().map(|c| c.id)),
            Err(_) => return Ok(0),
        }
    }
    let mut removed = 0;
    for id in chunks {
        if id.window <= newest && !referenced.contains(&id) {
            storage.delete_chunk(operator, id)?;
            removed += 1;
        }
    }
    Ok(removed)
}
