//! Running a DAG: the entry point and the stop handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::dag::{Dag, EdgeKind};
use crate::error::RunError;
use crate::fault::Faults;
use crate::metrics::{Progress, RunReport};
use crate::supervisor::Supervisor;
use crate::window::WindowMode;

/// Asks a running job to stop gracefully: inputs end their window, a final
/// checkpoint is taken and commits are delivered.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::Runtime;
///
/// let runtime = Runtime::new(Default::default());
/// let stop = runtime.stop_handle();
/// // e.g. from a Ctrl-C handler, or another thread:
/// stop.stop();
/// assert!(stop.is_stopped());
/// ```
#[derive(Debug, Clone)]
pub struct StopHandle(pub(crate) Arc<AtomicBool>);

impl StopHandle {
    /// Requests the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs DAGs.
///
/// # Examples
///
/// See the crate documentation for a complete job.
#[derive(Debug)]
pub struct Runtime {
    config: Config,
    stop: Arc<AtomicBool>,
    progress: Progress,
}

impl Runtime {
    /// A runtime with `config`.
    pub fn new(config: Config) -> Self {
        Runtime {
            config,
            stop: Arc::new(AtomicBool::new(false)),
            progress: Progress::default(),
        }
    }

    /// A live view of the job's progress (for a progress line).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// A handle that stops the job gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.stop))
    }

    /// Runs `dag` until every input is done (or a stop is requested), then
    /// returns what happened.
    ///
    /// If the storage already holds this job (a job manifest), the job
    /// resumes: the manifest is checked against `dag` (a changed topology or
    /// partition count is an error), every operator is restored from its
    /// recovery checkpoint computed from what is on disk (a corrupt
    /// checkpoint counts as missing), and inputs continue from there with the
    /// job's original window base.
    ///
    /// An operator that fails is recovered as its processing mode says;
    /// past the restart limit the job stops with
    /// [`RunError::OperatorFailed`].
    pub fn run(&self, dag: Dag) -> Result<RunReport, RunError> {
        if let Err(mut errors) = dag.validate() {
            return Err(if errors.len() == 1 {
                RunError::Dag(errors.remove(0))
            } else {
                RunError::DagErrors(errors)
            });
        }
        if let WindowMode::Time(period) = self.config.window_mode
            && period < std::time::Duration::from_millis(1)
        {
            return Err(RunError::Config {
                detail: format!(
                    "a streaming window of {} µs is too short: use at least 1 ms",
                    period.as_micros()
                ),
            });
        }
        let key_groups = self.config.key_groups.count() as usize;
        if let Some(node) = dag
            .edges
            .iter()
            .filter(|e| e.kind == EdgeKind::Keyed)
            .map(|e| &dag.nodes[e.to])
            .find(|n| n.partitions > key_groups)
        {
            return Err(RunError::Config {
                detail: format!(
                    "operator {:?} has {} partitions, more than the job's {key_groups} key groups: a partition \
                     owns whole key groups, so raise `Config::key_groups` (it is fixed for the life of a job) or \
                     use fewer partitions",
                    node.name, node.partitions
                ),
            });
        }
        check_faults(&self.config.faults, &dag)?;
        // Operators built (and restored) on this thread take the job's
        // key-group count, as those on their own threads do.
        let _key_groups = self.config.key_groups.enter();
        Supervisor::new(&self.config, dag, Arc::clone(&self.stop), &self.progress)?.run()
    }
}

/// A fault injected into an operator the DAG does not have would never
/// fire: a test relying on it would pass without testing anything.
fn check_faults(faults: &Faults, dag: &Dag) -> Result<(), RunError> {
    let physical = dag.physical_names();
    let unknown: Vec<String> = faults
        .operators()
        .into_iter()
        .filter(|name| !physical.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let quoted = |names: &[String]| names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    Err(RunError::Config {
        detail: format!(
            "faults are injected into {}, which the DAG does not have; its operators are {} (a partition is \
             named `name#N`)",
            quoted(&unknown),
            quoted(&physical)
        ),
    })
}
