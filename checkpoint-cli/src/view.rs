//! The job: physical operators and their recovery checkpoints.

use checkpoint_core::WindowId;
use checkpoint_runtime::{JobManifest, RestorePoint, StoredPlan, plan_from_storage};

use crate::Failure;
use crate::source::{Source, store_hint};

/// A physical operator of the manifest's DAG and what is on disk for it.
#[derive(Debug)]
pub(crate) struct PhysicalOperator {
    pub(crate) logical: usize,
    pub(crate) name: String,
    pub(crate) stateless: bool,
    /// Good checkpoints, ascending.
    pub(crate) good: Vec<WindowId>,
    /// The checkpoint a restart would restore it from.
    pub(crate) recovery: Option<WindowId>,
    /// A restart starts it as new (it never saved a checkpoint).
    pub(crate) fresh: bool,
    /// An input whose stream ended at its recovery checkpoint.
    pub(crate) ended: bool,
}

#[derive(Debug)]
pub(crate) struct JobView {
    pub(crate) operators: Vec<PhysicalOperator>,
    /// The committed window the recovery checkpoints imply.
    pub(crate) planned_committed: Option<WindowId>,
    /// The runtime's own plan, which the view shows.
    pub(crate) plan: StoredPlan,
}

/// The runtime's recovery plan for the job in `source` (the same function a
/// restart calls), arranged for display.
pub(crate) fn job_view(source: &Source, manifest: &JobManifest) -> Result<JobView, Failure> {
    let storage = source.agent()?;
    let plan = plan_from_storage(&*storage, manifest).map_err(|e| {
        if source.is_store() {
            format!("{e}{}", store_hint())
        } else {
            e.to_string()
        }
    })?;
    let mut operators = Vec::new();
    for op in &plan.operators {
        let logical = manifest
            .operators
            .iter()
            .position(|o| o.name == op.operator)
            .ok_or_else(|| format!("internal error: operator {:?} is not in the manifest", op.operator))?;
        operators.push(PhysicalOperator {
            logical,
            name: op.name.clone(),
            stateless: op.stateless,
            good: op.good.clone(),
            recovery: match op.restore {
                Some(RestorePoint::Checkpoint(w)) => Some(w),
                _ => None,
            },
            fresh: matches!(op.restore, Some(RestorePoint::Fresh(_))),
            ended: op.ended,
        });
    }
    Ok(JobView {
        operators,
        planned_committed: plan.committed,
        plan,
    })
}
