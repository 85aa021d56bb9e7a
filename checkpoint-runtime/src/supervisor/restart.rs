//! Whole-job restart: resuming every operator where the recovery plan
//! from storage says, and refusing a job whose settings changed.

use std::collections::BTreeMap;

use checkpoint_core::{Snapshot, StorageAgent, WindowId};

use crate::dag::NodeKind;
use crate::error::RunError;
use crate::manifest::JobManifest;
use crate::recovery_plan::{RestorePoint, plan_from_storage};

use super::Supervisor;

impl Supervisor {
    /// Resumes every operator where [`plan_from_storage`] says: corrupt
    /// snapshots are set aside, an unreadable one stops the restart before
    /// anything is changed, and checkpoints past the restore points (taken
    /// again as the job runs) are removed.
    pub(super) fn resume_from_storage(&mut self, stored: &JobManifest) -> Result<(), RunError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        let plan = plan_from_storage(&*storage, stored)?;
        if let Some(problem) = plan.problem() {
            return Err(RunError::Manifest { detail: problem });
        }
        let n = self.physical.len();
        self.activation = vec![WindowId::new(stored.window_base, 0); n];
        // Every restore snapshot is read before anything is changed: a read
        // that fails now stops the restart with the storage untouched.
        let mut chosen = Vec::with_capacity(n);
        for node in 0..n {
            let name = self.physical[node].name.clone();
            let Some((op, Some(restore))) = plan.operator(&name).map(|op| (op, op.restore)) else {
                return Err(RunError::Manifest {
                    detail: format!("internal error: no restore point for operator {name:?}"),
                });
            };
            let bytes = match restore {
                RestorePoint::Checkpoint(w) => Some(self.load_verified(&name, w)?),
                RestorePoint::Stateless(_) => Some(Vec::new()),
                RestorePoint::Fresh(_) => None,
            };
            chosen.push((name, op, restore, bytes));
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
            // Taken again as the job runs; a stale copy would mislead a
            // later restart.
            for &window in op.good.iter().filter(|w| **w > r) {
                storage.delete(&name, window)?;
            }
            self.checkpoints[node].durable = op.good.iter().copied().filter(|w| *w <= r).collect();
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
            self.ended[node] = op.ended;
            if op.ended {
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
        storage.save_manifest(&self.manifest.to_bytes())?;
        Ok(())
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
    if shape(stored) != shape(now) {
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
