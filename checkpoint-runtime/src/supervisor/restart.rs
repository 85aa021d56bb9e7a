//! Whole-job restart: resuming every operator where the recovery plan
//! from storage says, and refusing a job whose settings changed.

use std::collections::{BTreeMap, BTreeSet};

use checkpoint_core::{Snapshot, StorageAgent, WindowId};

use crate::dag::NodeKind;
use crate::error::RunError;
use crate::manifest::JobManifest;
use crate::manifest::ManifestRescale;
use crate::recovery_plan::{RestorePoint, plan_aligned};

use super::{Physical, Rescaled, Restored, Supervisor};

impl Supervisor {
    /// Resumes every operator where [`plan_from_storage`] says: corrupt
    /// snapshots are set aside, an unreadable one stops the restart before
    /// anything is changed, and checkpoints past the restore points (taken
    /// again as the job runs) are removed.
    pub(super) fn resume_from_storage(&mut self, stored: &JobManifest) -> Result<(), RunError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        // A rescale committed past whose old files a crash kept from being
        // removed: removed now, and never restored from.
        let mut stored = stored.clone();
        // The next generation is claimed before the first change (not
        // before: a restart that fails while it reads changes nothing). A
        // job that got there first makes the write fail, and this one
        // stops having changed nothing.
        let claim = |stored: &JobManifest| {
            let claimed = JobManifest {
                generation: stored.generation + 1,
                ..stored.clone()
            };
            storage.save_manifest(&claimed.to_bytes())
        };
        let mut claimed = false;
        if stored.rescaling.values().any(|r| r.finished) {
            claim(&stored)?;
            claimed = true;
            let current: Vec<String> = stored
                .operators
                .iter()
                .flat_map(|o| o.physical.iter().cloned())
                .collect();
            super::commit::remove_rescale_leftovers(&*storage, &stored, &current)?;
            stored.rescaling.retain(|_, r| !r.finished);
        }
        let stored = &stored;
        let rescaling = self.rescaling(stored, &*storage)?;
        // Operators split or merged now: their old partitions restore at
        // one window, so every key group is taken at the same one.
        let align: BTreeSet<String> = rescaling
            .iter()
            .filter(|(name, _)| !stored.rescaling.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        let plan = plan_aligned(&*storage, stored, &align)?;
        if let Some(problem) = plan.problem() {
            return Err(RunError::Manifest { detail: problem });
        }
        let n = self.physical.len();
        self.activation = vec![WindowId::new(stored.window_base, 0); n];
        // Where each rescaled operator's partitions restore: a rescale still
        // pending keeps its record; a new one takes its old partitions'
        // common restore point.
        let mut records: BTreeMap<String, (RestorePoint, ManifestRescale)> = BTreeMap::new();
        for (name, old_partitions) in &rescaling {
            let old = stored.operators.iter().find(|o| o.name == *name);
            let old_physical: Vec<String> = old.map(|o| o.physical.clone()).unwrap_or_default();
            let points: Vec<RestorePoint> = old_physical
                .iter()
                .filter_map(|p| plan.operator(p).and_then(|o| o.restore))
                .collect();
            // A job that never committed may have old partitions that start
            // as new and others restored at the initial window: all start
            // as new then (the initial state is the value the DAG is built
            // with), rather than look for a checkpoint one never saved.
            let fresh = points.iter().find(|p| matches!(p, RestorePoint::Fresh(_))).copied();
            let Some(point) = fresh.or_else(|| points.iter().min_by_key(|p| p.window()).copied()) else {
                return Err(RunError::Manifest {
                    detail: format!("internal error: no restore point for the partitions of {name:?}"),
                });
            };
            let record = match stored.rescaling.get(name) {
                Some(record) => record.clone(),
                None => ManifestRescale {
                    window: point.window(),
                    partitions: *old_partitions,
                    physical: old_physical,
                    finished: false,
                },
            };
            records.insert(name.clone(), (point, record));
        }
        // Every restore snapshot is read before anything is changed: a read
        // that fails now stops the restart with the storage untouched.
        let mut chosen = Vec::with_capacity(n);
        for node in 0..n {
            let name = self.physical[node].name.clone();
            let logical = &self.dag.nodes[self.physical[node].logical];
            if let Some((point, record)) = records.get(&logical.name) {
                let restore = match point {
                    RestorePoint::Stateless(w) => RestorePoint::Stateless(*w),
                    // The old partitions never saved a checkpoint (a job that
                    // never committed): nothing to split, start as new.
                    RestorePoint::Fresh(w) => RestorePoint::Fresh(*w),
                    RestorePoint::Checkpoint(_) => RestorePoint::Checkpoint(record.window),
                };
                if let RestorePoint::Checkpoint(w) = restore {
                    self.rescaled[node] = Some(Rescaled {
                        window: w,
                        sources: record.physical.clone(),
                    });
                }
                let bytes = match restore {
                    RestorePoint::Fresh(_) => None,
                    _ => Some(self.load_restore(node, restore.window())?),
                };
                chosen.push((name, None, restore, bytes));
                continue;
            }
            let Some((op, Some(restore))) = plan.operator(&name).map(|op| (op, op.restore)) else {
                return Err(RunError::Manifest {
                    detail: format!("internal error: no restore point for operator {name:?}"),
                });
            };
            let bytes = match restore {
                RestorePoint::Checkpoint(w) => Some(Restored::Snapshot(self.load_verified(&name, w)?)),
                RestorePoint::Stateless(_) => Some(Restored::Snapshot(Vec::new())),
                RestorePoint::Fresh(_) => None,
            };
            chosen.push((name, Some(op), restore, bytes));
        }
        if !claimed {
            claim(stored)?;
        }
        for bad in &plan.corrupt {
            storage.set_aside(&bad.operator, bad.window)?;
            tracing::warn!(operator = %bad.operator, window = %bad.window, reason = %bad.reason, "corrupt checkpoint set aside");
            self.notes.push(format!(
                "set aside the corrupt checkpoint of {} at {} ({}); `checkpoint purge` removes it",
                bad.operator, bad.window, bad.reason
            ));
        }
        let mut first_sequence = 1;
        let mut ended = BTreeMap::new();
        for (node, (name, op, restore, bytes)) in chosen.into_iter().enumerate() {
            let r = restore.window();
            let sources = self.rescaled[node]
                .as_ref()
                .map(|r| r.sources.clone())
                .unwrap_or_default();
            // Taken again as the job runs; a stale copy would mislead a
            // later restart. A new partition's name may be an old one's,
            // whose snapshot at the rescale window is a source: kept.
            let stored_windows = match op {
                Some(op) => op.good.clone(),
                None => storage.windows(&name)?,
            };
            for &window in &stored_windows {
                let keep = match op {
                    Some(_) => window <= r,
                    None => window == r && sources.contains(&name),
                };
                if !keep {
                    storage.delete(&name, window)?;
                }
            }
            self.checkpoints[node].durable = match (op, restore) {
                (Some(op), _) => op.good.iter().copied().filter(|w| *w <= r).collect(),
                (None, RestorePoint::Checkpoint(w)) => vec![w],
                (None, _) => Vec::new(),
            };
            match restore {
                RestorePoint::Stateless(_) => self.checkpoints[node].stateless_through = Some(r),
                RestorePoint::Fresh(_) => self.notes.push(format!(
                    "{name} had no checkpoint yet (the job stopped before its first one was durable): it starts as \
                     new"
                )),
                RestorePoint::Checkpoint(_) => {}
            }
            self.restore[node] = bytes;
            self.activation[node] = r;
            let op_ended = op.is_some_and(|op| op.ended);
            self.ended[node] = op_ended;
            if op_ended {
                ended.insert(name.clone(), r);
            }
            if self.dag.nodes[self.physical[node].logical].kind == NodeKind::Input {
                first_sequence = first_sequence.max(r.sequence().saturating_add(1));
            }
            tracing::info!(operator = %name, window = %r, "resuming from checkpoint");
            self.resumed_from.push((name, r));
        }
        self.first_sequence = first_sequence;
        self.committed = plan.committed.or(stored.committed);
        // An end recorded for a checkpoint that is not the restore point is
        // void: the input reads on from an older one.
        self.manifest.ended = ended;
        self.manifest.rescaling = records
            .into_iter()
            .filter(|(_, (point, _))| matches!(point, RestorePoint::Checkpoint(_)))
            .map(|(name, (_, record))| (name, record))
            .collect();
        for (name, record) in &self.manifest.rescaling {
            self.notes.push(format!(
                "{name} restarts with another partition count: its {} old partition(s) are split by key group at {}",
                record.partitions, record.window
            ));
        }
        storage.save_manifest(&self.manifest.to_bytes())?;
        // Chunks of saves a crash cut short, and of snapshots just deleted.
        self.collect_all_chunks();
        Ok(())
    }

    /// The keyed operators whose partitions restore from old partitions'
    /// snapshots (their partition count changes now, or changed and was
    /// not committed since), with the old partition count; an error if one
    /// cannot: its state is not keyed only, or the storage keeps no chunks.
    fn rescaling(&self, stored: &JobManifest, storage: &dyn StorageAgent) -> Result<BTreeMap<String, usize>, RunError> {
        let mut out = BTreeMap::new();
        for (was, node) in stored.operators.iter().zip(&self.dag.nodes) {
            let pending = stored.rescaling.get(&node.name).map(|r| r.partitions);
            if was.partitions == node.partitions && pending.is_none() {
                continue;
            }
            if !node.stateless && !node.keyed_only {
                return Err(RunError::Manifest {
                    detail: format!(
                        "operator {:?} had {} partition(s) and has {} now, but its state has fields besides \
                         `#[checkpoint(keyed)]` maps, which cannot be split by key group: make them keyed maps or \
                         transient, or run it with {} partition(s)",
                        node.name, was.partitions, node.partitions, was.partitions
                    ),
                });
            }
            if !node.stateless && !storage.supports_chunks() {
                return Err(RunError::Manifest {
                    detail: format!(
                        "operator {:?} changes its partition count, which needs a storage agent that keeps chunks \
                         (keyed state saved by key group); this one does not",
                        node.name
                    ),
                });
            }
            out.insert(node.name.clone(), pending.unwrap_or(was.partitions));
        }
        Ok(out)
    }

    /// What `node` restores from at `window`: its own snapshot, checksum
    /// verified, or, for a partition of a rescaled operator at the rescale
    /// window, the old partitions' snapshots that hold the key groups it
    /// owns.
    pub(super) fn load_restore(&self, node: usize, window: WindowId) -> Result<Restored, RunError> {
        if self.stateless[node] {
            return Ok(Restored::Snapshot(Vec::new()));
        }
        let Physical {
            logical,
            partition,
            ref name,
        } = self.physical[node];
        let Some(rescaled) = self.rescaled[node].as_ref().filter(|r| r.window == window) else {
            return Ok(Restored::Snapshot(self.load_verified(name, window)?));
        };
        let key_groups = self.config.key_groups;
        let partitions = self.dag.nodes[logical].partitions;
        let owned = key_groups.range_of_partition(partition, partitions);
        let old = rescaled.sources.len();
        let mut sources = Vec::new();
        let version = self.dag.nodes[logical].version;
        for (q, source) in rescaled.sources.iter().enumerate() {
            let held = key_groups.range_of_partition(q, old);
            if held.start < owned.end && owned.start < held.end {
                let bytes = self.load_verified(source, window)?;
                // Checked here, before the restart changes anything: an
                // older version's state may keep its keys in a plain map.
                let saved = Snapshot::read_header(&bytes)
                    .map(|h| h.state_version)
                    .unwrap_or(version);
                if saved != version {
                    return Err(RunError::Manifest {
                        detail: format!(
                            "{name:?} would be split from {source:?}'s checkpoint at {window}, saved by state version \
                             {saved}; it is version {version} now: run it once with the old partition count, so a \
                             checkpoint of version {version} is committed, then change the count"
                        ),
                    });
                }
                sources.push((source.clone(), bytes));
            }
        }
        Ok(Restored::Rescaled { sources, owned })
    }

    /// `operator`'s snapshot at `window`, checksum verified.
    pub(super) fn load_verified(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, RunError> {
        let Some(storage) = &self.storage else {
            return Err(RunError::NoCheckpoint {
                operator: operator.to_owned(),
            });
        };
        let unusable = |detail: String| RunError::UnusableCheckpoint {
            operator: operator.to_owned(),
            window,
            detail,
        };
        let bytes = storage.load(operator, window).map_err(|e| unusable(e.to_string()))?;
        Snapshot::verify(&bytes).map_err(|e| unusable(e.to_string()))?;
        Ok(bytes)
    }
}

/// A restarted job must be the job its storage holds.
pub(super) fn check_same_job(stored: &JobManifest, now: &JobManifest) -> Result<(), RunError> {
    let shape = |m: &JobManifest| {
        m.operators
            .iter()
            .map(|o| {
                format!(
                    "{} ({}, {} partition{})",
                    o.name,
                    o.kind,
                    o.partitions,
                    if o.partitions == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
    };
    let edges = |m: &JobManifest| {
        let mut edges: Vec<String> = m
            .edges
            .iter()
            .map(|e| format!("{} -> {} ({})", e.from, e.to, e.kind))
            .collect();
        edges.sort();
        edges
    };
    // A keyed operator may change its partition count (its state moves
    // by key group); compared below. Anything else about the operators
    // may not.
    let without_partitions = |m: &JobManifest| {
        m.operators
            .iter()
            .map(|o| format!("{} ({})", o.name, o.kind))
            .collect::<Vec<_>>()
    };
    if without_partitions(stored) != without_partitions(now) {
        return Err(RunError::Manifest {
            detail: format!(
                "the storage holds a job with operators [{}], but this DAG has [{}]; use another checkpoint \
                 directory for a changed job",
                shape(stored).join(", "),
                shape(now).join(", ")
            ),
        });
    }
    if edges(stored) != edges(now) {
        return Err(RunError::Manifest {
            detail: format!(
                "the storage holds a job with edges [{}], but this DAG has [{}]",
                edges(stored).join(", "),
                edges(now).join(", ")
            ),
        });
    }
    for (was, is) in stored.operators.iter().zip(&now.operators) {
        if was.partitions == is.partitions {
            continue;
        }
        let into: Vec<&str> = now
            .edges
            .iter()
            .filter(|e| e.to == is.name)
            .map(|e| e.kind.as_str())
            .collect();
        if is.kind != "operator" || into.is_empty() || into.iter().any(|k| *k != "keyed") {
            return Err(RunError::Manifest {
                detail: format!(
                    "operator {:?} had {} partition(s) and has {} now: only an operator whose every input is a \
                     `connect_by_key` edge can change its partition count (its state moves by key group); run it \
                     with {}, or use another checkpoint directory",
                    is.name, was.partitions, is.partitions, was.partitions
                ),
            });
        }
    }
    // Every setting that decides which windows exist, where checkpoints
    // fall or what a recovery replays: a resumed job under another would
    // silently change the semantics of the output it continues.
    let changed = |setting: String, was: String, now: String| RunError::Manifest {
        detail: format!(
            "{setting} was {was} when the job started and is {now} now; a job keeps its settings for life (run \
             it with {was}, or use another checkpoint directory)"
        ),
    };
    if let Some(was) = &stored.window_mode
        && Some(was) != now.window_mode.as_ref()
    {
        return Err(changed(
            "the window mode".to_owned(),
            was.clone(),
            now.window_mode.clone().unwrap_or_default(),
        ));
    }
    match (stored.key_groups, now.key_groups) {
        (Some(was), Some(is)) if was != is => {
            return Err(changed(
                "the job's key-group count (`Config::key_groups`)".to_owned(),
                was.to_string(),
                is.to_string(),
            ));
        }
        // Started before key groups: its partitions hold the keys whose hash
        // modulo the partition count is theirs, which the key-group routing
        // would not send them.
        (None, Some(_)) => {
            let keyed: Vec<&str> = now
                .edges
                .iter()
                .filter(|e| e.kind == "keyed")
                .filter_map(|e| now.operators.iter().find(|o| o.name == e.to))
                .filter(|o| o.partitions > 1 && !o.stateless)
                .map(|o| o.name.as_str())
                .collect();
            if let Some(first) = keyed.first() {
                return Err(RunError::Manifest {
                    detail: format!(
                        "the job was started by a version that sent a key to partition `stable_hash % partitions`; \
                         this version routes by key group, so the stored state of partitioned operator {first:?} \
                         would not match the keys it receives: finish the job with the version that started it, \
                         or use another checkpoint directory"
                    ),
                });
            }
        }
        _ => {}
    }
    if stored.checkpoint_window_count != now.checkpoint_window_count {
        return Err(changed(
            "the DAG's default checkpoint window count".to_owned(),
            stored.checkpoint_window_count.to_string(),
            now.checkpoint_window_count.to_string(),
        ));
    }
    for (was, is) in stored.operators.iter().zip(&now.operators) {
        let of = |what: &str| format!("the {what} of operator {:?}", is.name);
        if was.mode != is.mode {
            return Err(changed(of("processing mode"), was.mode.clone(), is.mode.clone()));
        }
        if was.application_window_count != is.application_window_count {
            return Err(changed(
                of("application window count"),
                was.application_window_count.to_string(),
                is.application_window_count.to_string(),
            ));
        }
        if was.checkpoint_window_count != is.checkpoint_window_count {
            return Err(changed(
                of("checkpoint window count"),
                was.checkpoint_window_count.to_string(),
                is.checkpoint_window_count.to_string(),
            ));
        }
        if was.stateless != is.stateless {
            return Err(changed(
                of("statelessness"),
                if was.stateless { "stateless" } else { "stateful" }.to_owned(),
                if is.stateless { "stateless" } else { "stateful" }.to_owned(),
            ));
        }
    }
    Ok(())
}
