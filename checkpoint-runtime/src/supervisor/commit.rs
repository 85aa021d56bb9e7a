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
            // While a rescale is pending, a restart pins the rescaled
            // operator (and so its upstreams) to the rescale window, which
            // the plan of this run does not know: nothing is deleted until
            // it is committed past (one checkpoint interval, usually).
            let pending = self.manifest.rescaling.values().any(|r| !r.finished);
            // A rescale committed past: first recorded as finished (with
            // the commit), then its old partitions' files go, then the
            // record; a crash in between finishes the deletes at the next
            // start, which never restores from a finished record.
            let finished = self.mark_rescales_finished(new);
            self.manifest.committed = Some(new);
            let mut history = self.prior_history.clone();
            history.extend(self.metrics.manifest_history());
            let keep = history.len().saturating_sub(crate::manifest::MANIFEST_HISTORY);
            history.drain(..keep);
            self.manifest.history = history;
            // The manifest first: the write is conditional on this job's
            // previous one, so a job another one took the storage from
            // stops here, before it deletes anything.
            // A lease that cannot be vouched for for now (a storage outage)
            // only postpones the record and the deletes to a later commit.
            if let Err(e) = storage.save_manifest(&self.manifest.to_bytes()) {
                return if e.is_transient() {
                    // Recorded by a later commit, or at the end of the job.
                    tracing::warn!(window = %new, error = %e, "commit not recorded yet; nothing deleted");
                    self.manifest_behind = true;
                    Ok(())
                } else {
                    Err(e.into())
                };
            }
            self.manifest_behind = false;
            'retention: for node in (0..self.physical.len()).filter(|_| !pending) {
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
                let mut deleted = 0;
                for window in &old {
                    match storage.delete(name, *window) {
                        Ok(()) => deleted += 1,
                        // An outage, or a lease not vouched for: the next
                        // commit deletes what this one could not.
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %e, "retention postponed");
                            ops.durable.drain(..deleted);
                            break 'retention;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                ops.durable.drain(..deleted);
                if deleted > 0 {
                    collect_chunks_logged(&*storage, &self.physical[node].name);
                }
            }
            self.retain_from = planned.recovery;
            if finished {
                self.remove_finished_rescales(&*storage)?;
                storage.save_manifest(&self.manifest.to_bytes())?;
            }
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
            collect_chunks_logged(&**storage, name);
        }
    }

    /// Marks every rescale committed past as finished; whether any was.
    fn mark_rescales_finished(&mut self, committed: WindowId) -> bool {
        let mut any = false;
        for record in self.manifest.rescaling.values_mut() {
            if !record.finished && record.window < committed {
                record.finished = true;
                any = true;
            }
        }
        any
    }

    /// Removes the old partitions' files of every finished rescale (their
    /// snapshots at the rescale window, and every checkpoint and chunk of
    /// an old partition whose name the job no longer has), then the
    /// records. The caller saves the manifest.
    pub(super) fn remove_finished_rescales(&mut self, storage: &dyn StorageAgent) -> Result<(), StorageError> {
        let current: Vec<String> = self.physical.iter().map(|p| p.name.clone()).collect();
        remove_rescale_leftovers(storage, &self.manifest, &current)?;
        self.manifest.rescaling.retain(|_, r| !r.finished);
        Ok(())
    }
}

/// Deletes what the finished rescales of `manifest` left: each old
/// partition's snapshot at the rescale window, and everything of an old
/// partition not named in `current`.
pub(super) fn remove_rescale_leftovers(
    storage: &dyn StorageAgent,
    manifest: &crate::manifest::JobManifest,
    current: &[String],
) -> Result<(), StorageError> {
    for (name, record) in manifest.rescaling.iter().filter(|(_, r)| r.finished) {
        for source in &record.physical {
            if current.contains(source) {
                storage.delete(source, record.window)?;
                collect_chunks_logged(storage, source);
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

/// [`collect_chunks`], whose failure only leaves garbage: logged.
pub(super) fn collect_chunks_logged(storage: &dyn StorageAgent, operator: &str) {
    match collect_chunks(storage, operator) {
        Ok(0) => {}
        Ok(removed) => tracing::debug!(operator = %operator, removed, "chunks no checkpoint refers to removed"),
        Err(e) => tracing::warn!(operator = %operator, error = %e, "could not remove unreferenced chunks"),
    }
}

/// Deletes the chunks of `operator` that none of its stored snapshots
/// refers to (Flink's shared-state registry, computed from what storage
/// holds): those of deleted snapshots, and those of saves that failed or
/// were cut short by a crash. A chunk written after the newest snapshot is
/// kept: it may belong to a save in flight, whose snapshot comes after its
/// chunks. If any snapshot cannot be read, nothing is deleted.
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
            // A snapshot that cannot be read may name any chunk.
            Err(_) => return Ok(0),
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
