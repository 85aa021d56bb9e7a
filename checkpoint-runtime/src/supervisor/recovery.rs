//! Recovery of a running job: what a failure restores, the checkpoints
//! it restores from, and the restart of the affected operators.

use std::collections::{BTreeSet, HashMap};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use checkpoint_core::{StorageAgent, WindowId};

use crate::config::RecoveryScope;
use crate::coordinator::plan;
use crate::error::RunError;
use crate::failure::Failure;
use crate::metrics::Recovery;
use crate::operator::ProcessingMode;
use crate::protocol::Event;
use crate::recovery_plan::restore_window;
use crate::stream::Resume;

use super::{GiveUp, Supervisor};

impl Supervisor {
    /// Chooses the checkpoint each of `nodes` is restored from (during a
    /// running job) and loads it. A chosen checkpoint that cannot be loaded
    /// is an error: an older one would need replay data the upstreams may
    /// already have dropped, so falling back is not safe here.
    pub(super) fn plan_restore(&mut self, nodes: &BTreeSet<usize>) -> Result<HashMap<usize, WindowId>, RunError> {
        let planned = plan(&self.topology, &self.checkpoints);
        let mut chosen = HashMap::new();
        // Topological order, so a stateless sink can follow its upstreams.
        let order = self.order.clone();
        for &node in order.iter().filter(|n| nodes.contains(n)) {
            let name = &self.physical[node].name;
            let ops = &self.checkpoints[node];
            let window = restore_window(
                (self.stateless[node], self.modes[node] == ProcessingMode::AtMostOnce),
                &ops.durable,
                planned.recovery[node],
                self.upstream[node].iter().filter_map(|u| chosen.get(u).copied()),
                self.activation[node],
            );
            let Some(window) = window else {
                return Err(RunError::NoCheckpoint { operator: name.clone() });
            };
            chosen.insert(node, window);
        }
        let mut stale_end = false;
        for (&node, &window) in &chosen {
            let name = self.physical[node].name.clone();
            self.restore[node] = Some(self.load_restore(node, window)?);
            self.activation[node] = window;
            self.ended[node] = self.manifest.ended.get(&name) == Some(&window);
            if !self.ended[node] && self.manifest.ended.remove(&name).is_some() {
                stale_end = true;
            }
        }
        // An input restored before the end it recorded reads on and may
        // take an ordinary checkpoint at that window: the mark must be gone
        // from storage before it runs.
        if let (true, Some(storage)) = (stale_end, &self.storage) {
            storage.save_manifest(&self.manifest.to_bytes())?;
        }
        Ok(chosen)
    }

    /// What a failure restores: in the partial scope the failed operator,
    /// everything downstream of it, and the whole thread-local chain of any
    /// of them; in the global scope every operator.
    pub(super) fn affected_by(&self, failed: usize) -> BTreeSet<usize> {
        if self.config.recovery_scope == RecoveryScope::Global {
            return (0..self.physical.len()).collect();
        }
        let mut affected = BTreeSet::from([failed]);
        let mut changed = true;
        while changed {
            changed = false;
            for node in 0..self.physical.len() {
                if affected.contains(&node) {
                    continue;
                }
                let downstream_of_affected = self.upstream[node].iter().any(|u| affected.contains(u));
                let same_thread = affected.iter().any(|a| self.root[*a] == self.root[node]);
                if downstream_of_affected || same_thread {
                    affected.insert(node);
                    changed = true;
                }
            }
        }
        affected
    }

    /// A failure in a job's first moments can come before every operator's
    /// initial checkpoint is durable. Each operator saves its own before it
    /// processes anything, so the missing ones are on their way: wait for
    /// them (at most the save timeout) rather than find no checkpoint to
    /// restore a downstream from. Failures reported meanwhile wait their
    /// turn.
    pub(super) fn await_initial_checkpoints(&mut self) {
        if self.storage.is_none() {
            return;
        }
        let deadline = Instant::now() + self.config.save_timeout;
        loop {
            let missing = (0..self.physical.len()).any(|node| {
                let ops = &self.checkpoints[node];
                ops.durable.is_empty()
                    && ops.stateless_through.is_none()
                    && self.threads.get(&self.root[node]).is_some_and(|t| !t.is_finished())
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if !missing || left.is_zero() {
                return;
            }
            match self.events_rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(event @ Event::Failed { .. }) => self.pending.push_back(event),
                Ok(event) => {
                    self.apply(event);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    pub(super) fn recover(&mut self, node: usize, failure: Failure) -> Result<(), GiveUp> {
        if let Failure::Fatal(error) = failure {
            return Err(*error);
        }
        let Failure::Operator {
            operator,
            window,
            cause,
            source,
        } = failure
        else {
            return Ok(());
        };
        let failed = self.physical.iter().position(|p| p.name == operator).unwrap_or(node);
        // The operator's own error goes with the run error that gives up.
        let source = std::cell::RefCell::new(source);
        let give_up = |cause: String| RunError::OperatorFailed {
            operator: operator.clone(),
            window,
            cause,
            source: source.borrow_mut().take(),
        };
        if self.storage.is_none() {
            return Err(give_up(cause));
        }
        self.restarts[failed] += 1;
        if self.restarts[failed] > self.config.restart_limit {
            return Err(give_up(format!(
                "{cause} (gave up after {} restarts)",
                self.config.restart_limit
            )));
        }
        self.await_initial_checkpoints();
        let affected = self.affected_by(failed);
        // Stop every affected thread: killed ones wake from any blocking
        // send or receive and exit.
        let roots: BTreeSet<usize> = affected.iter().map(|a| self.root[*a]).collect();
        for &root in &roots {
            self.kill[root].take();
            self.control[root].take();
        }
        let stopping: Vec<(usize, JoinHandle<()>)> = roots
            .iter()
            .filter_map(|r| self.threads.remove(r).map(|h| (*r, h)))
            .collect();
        self.join_within(stopping)
            .map_err(|e| give_up(format!("{cause}; then could not restart: {e}")))?;
        self.drain_events();
        let chosen = self
            .plan_restore(&affected)
            .map_err(|e| give_up(format!("{cause}; then could not recover: {e}")))?;
        let storage = self.storage.clone();
        let mut restored = Vec::new();
        let mut resume = HashMap::new();
        for &a in &affected {
            let r = chosen[&a];
            let name = self.physical[a].name.clone();
            let ops = &mut self.checkpoints[a];
            let newer: Vec<WindowId> = ops.durable.iter().copied().filter(|w| *w > r).collect();
            if let Some(storage) = &storage {
                for window in &newer {
                    storage.delete(&name, *window)?;
                }
            }
            ops.durable.retain(|w| *w <= r);
            ops.finished_at = None;
            self.epoch[a] = self.epoch[a].wrapping_add(1);
            // A new incarnation, a new store: it hears of releases anew.
            self.released[a] = None;
            if let Some(through) = &mut ops.stateless_through {
                *through = (*through).min(r);
            }
            self.finished[a] = false;
            let resume_mode = if self.modes[a] == ProcessingMode::AtMostOnce {
                Resume::NextWindow
            } else {
                Resume::After(r)
            };
            resume.insert(a, resume_mode);
            restored.push((name, r));
        }
        tracing::warn!(
            operator = %operator,
            window = %window.map_or_else(|| "none".to_owned(), |w| w.to_string()),
            cause = %cause,
            restored = ?self.recoveries.len(),
            "operator failed; restoring it and its downstream operators"
        );
        self.recoveries.push(Recovery {
            operator: operator.clone(),
            window,
            cause: cause.clone(),
            restored,
        });
        self.build(&affected, &resume)
            .map_err(|e| give_up(format!("{cause}; then could not restart: {e}")))
    }
}
