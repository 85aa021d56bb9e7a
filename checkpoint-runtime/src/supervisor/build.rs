//! Building and starting operators' threads, wiring their edges, and
//! reconnecting upstreams that replay to rebuilt ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::dag::EdgeKind;
use crate::dag::factory::{BuildError, Built, Erased, NodeParts, Restore, ThreadBody};
use crate::error::RunError;
use crate::failure::{Failure, panic_message};
use crate::operator::{OperatorContext, ProcessingMode};
use crate::protocol::KillSwitch;
use crate::protocol::{Control, Event};
use crate::replay::SpillPolicy;
use crate::stream::{Cursors, Link, Resume};
use crate::task::NodeEnv;
use crate::window::WindowGenerator;

use super::{Physical, Restored, Supervisor};

impl Supervisor {
    /// Builds and starts `nodes` (all of them, or the ones a recovery
    /// restores), wiring their edges; upstreams that keep running are asked
    /// to reconnect and replay.
    pub(super) fn build(&mut self, nodes: &BTreeSet<usize>, resume: &HashMap<usize, Resume>) -> Result<(), RunError> {
        let mut control_rx = HashMap::new();
        let mut kill_rx = HashMap::new();
        let mut kill_flags = HashMap::new();
        let mut cursors = HashMap::new();
        for &node in nodes {
            if self.root[node] == node {
                let (tx, rx) = crossbeam_channel::unbounded();
                self.control[node] = Some(tx);
                control_rx.insert(node, rx);
                let (switch, flag, rx) = KillSwitch::new();
                self.kill[node] = Some(switch);
                kill_rx.insert(node, rx);
                kill_flags.insert(node, flag);
                cursors.insert(node, Cursors::default());
            }
        }
        let kill_of = |node: usize, kill_rx: &HashMap<usize, Receiver<()>>| kill_rx.get(&self.root[node]).cloned();
        let cursors_of = |node: usize| cursors.get(&self.root[node]).cloned();

        let mut inputs: HashMap<usize, Vec<Erased>> = HashMap::new();
        // Per (edge, upstream node): (downstream partition, downstream node, sender).
        type Outgoing = Vec<(usize, usize, Erased)>;
        let mut pending: BTreeMap<(usize, usize), Outgoing> = BTreeMap::new();
        let mut reconnects: BTreeMap<usize, Vec<(usize, Erased, Resume)>> = BTreeMap::new();
        for (e, edge) in self.dag.edges.iter().enumerate() {
            if edge.kind == EdgeKind::ThreadLocal {
                continue;
            }
            let (from, to) = (&self.dag.nodes[edge.from], &self.dag.nodes[edge.to]);
            for u_part in 0..from.partitions {
                let u = self.first_physical[edge.from] + u_part;
                for d_part in 0..to.partitions {
                    let d = self.first_physical[edge.to] + d_part;
                    if !nodes.contains(&d) {
                        continue;
                    }
                    let (tx, rx) = edge.wiring.channel(self.config.channel_capacity);
                    inputs.entry(d).or_default().push(rx);
                    if nodes.contains(&u) {
                        pending.entry((e, u)).or_default().push((d_part, d, tx));
                    } else {
                        let resume = resume.get(&d).copied().unwrap_or(Resume::NextWindow);
                        reconnects.entry(u).or_default().push((d, tx, resume));
                    }
                }
            }
        }
        let mut subscribers: HashMap<usize, Vec<Erased>> = HashMap::new();
        for ((e, u), mut channels) in pending {
            channels.sort_by_key(|(d_part, _, _)| *d_part);
            let (Some(kill), Some(cursors)) = (kill_of(u, &kill_rx), cursors_of(u)) else {
                unreachable!("the upstream is being built");
            };
            let channels = channels.into_iter().map(|(_, d, tx)| (d, tx)).collect();
            let link = Link { kill, cursors };
            subscribers
                .entry(u)
                .or_default()
                .push(
                    self.dag.edges[e]
                        .wiring
                        .subscriber(channels, &link, self.config.key_groups),
                );
        }

        let mut bodies: Vec<(usize, ThreadBody)> = Vec::new();
        let order = self.order.clone();
        for &node in order.iter().rev().filter(|n| nodes.contains(n)) {
            let Physical {
                logical,
                partition,
                ref name,
            } = self.physical[node];
            let name = name.clone();
            let spec = &self.dag.nodes[logical];
            let root = self.root[node];
            let chained = root != node;
            let Some(control_tx) = self.control[root].clone() else {
                unreachable!("the thread's root is being built");
            };
            let Some(kill) = kill_of(node, &kill_rx) else {
                unreachable!("the thread's root is being built");
            };
            let (Some(killed), Some(cursors)) = (kill_flags.get(&root).cloned(), cursors_of(node)) else {
                unreachable!("the thread's root is being built");
            };
            let checkpoint_window_count = self.dag.effective_checkpoint_count(logical);
            let ctx = OperatorContext {
                name: name.clone(),
                operator: spec.name.clone(),
                partition,
                partitions: spec.partitions,
                activation_window: self.activation[node],
                streaming_window: self.config.window_mode.streaming_window(),
                application_window_count: spec.application_window_count,
                checkpoint_window_count,
                storage: self.storage.clone(),
            };
            let restore = self.restore[node].take();
            {
                // Restored from the final checkpoint of a stream that ended,
                // or from before its end (which it reaches again, or not, if
                // a stop comes first).
                let mut ended = self
                    .ended_inputs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if self.ended[node] {
                    ended.insert(node);
                } else {
                    ended.remove(&node);
                }
            }
            let env = NodeEnv {
                node,
                epoch: self.epoch[node],
                ctx,
                storage: self.storage.clone(),
                async_saves: self.config.async_checkpoints && spec.mode != ProcessingMode::ExactlyOnce && !chained,
                control: if chained { None } else { control_rx.remove(&node) },
                control_tx,
                events: self.events_tx.clone(),
                kill,
                killed,
                cursors,
                metrics: Arc::clone(&self.metrics),
                restored: restore.is_some(),
                ended: self.ended[node],
                mode: spec.mode,
                faults: Some(self.config.faults.clone()),
                save_timeout: self.config.save_timeout,
                save_retry: self.config.save_retry,
                tolerable_failed_checkpoints: self.config.tolerable_failed_checkpoints,
                // The restored snapshot's chunks, which its next checkpoint
                // refers to for the key groups that did not change.
                chunks: match &restore {
                    Some(Restored::Snapshot(bytes)) => checkpoint_core::Snapshot::read_header(bytes)
                        .map(|header| header.chunks)
                        .unwrap_or_default(),
                    // Only chunks of its own name are referred to again.
                    Some(Restored::Rescaled { sources, .. }) => sources
                        .iter()
                        .filter(|(source, _)| *source == name)
                        .filter_map(|(_, bytes)| checkpoint_core::Snapshot::read_header(bytes).ok())
                        .flat_map(|header| header.chunks)
                        .collect(),
                    None => Vec::new(),
                },
                ended_inputs: Arc::clone(&self.ended_inputs),
                sources: self.sources[node].clone(),
            };
            let spill = self.spill_dir.as_ref().map(|dir| SpillPolicy {
                memory_cap: self.config.replay_memory_cap,
                held: Arc::clone(&self.replay_held),
                dir: dir.path().to_path_buf(),
            });
            let parts = NodeParts {
                env,
                subscribers: subscribers.remove(&node).unwrap_or_default(),
                inputs: inputs.remove(&node).unwrap_or_default(),
                batch_size: self.config.batch_size,
                replay: spill,
                generator: WindowGenerator::new(self.config.window_mode.clone(), self.clock_start, self.first_sequence)
                    .with_stop_alignment(self.stop_alignment())
                    .with_stop_agreement(Arc::clone(&self.stop_agreement)),
                stop: Arc::clone(&self.stop),
            };
            let restore = match restore {
                Some(Restored::Snapshot(bytes)) => Restore::Snapshot {
                    bytes,
                    storage: self.storage.clone(),
                },
                Some(Restored::Rescaled { sources, owned }) => Restore::Rescaled {
                    sources,
                    key_groups: self.config.key_groups,
                    owned,
                    storage: self.storage.clone(),
                },
                None => Restore::Fresh,
            };
            let built = self.dag.nodes[logical]
                .factory
                .build(partition, parts, chained, restore)
                .map_err(|e| match e {
                    BuildError::Restore(source) => RunError::Restore {
                        operator: name.clone(),
                        window: self.activation[node],
                        source,
                    },
                    BuildError::Other(cause) => RunError::OperatorFailed {
                        operator: name.clone(),
                        window: Some(self.activation[node]),
                        cause,
                        source: None,
                    },
                })?;
            match built {
                Built::Thread(body) => bodies.push((node, body)),
                Built::Inline(subscriber) => {
                    let Some((edge, upstream)) = self.chained_into[node] else {
                        unreachable!("inline only when chained");
                    };
                    let chained = self.dag.edges[edge].wiring.chain(subscriber);
                    subscribers.entry(upstream).or_default().push(chained);
                }
            }
        }
        for (node, body) in bodies {
            let events = self.events_tx.clone();
            let name = self.physical[node].name.clone();
            let epoch = self.epoch[node];
            let key_groups = self.config.key_groups;
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let _span = tracing::info_span!("operator", name = %name, epoch).entered();
                    // A `KeyedMap::new()` in the operator's state takes the
                    // job's count when it first holds a key.
                    let _key_groups = key_groups.enter();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                    let failure = match result {
                        Ok(Ok(())) | Ok(Err(Failure::Aborted)) => None,
                        Ok(Err(failure)) => Some(failure),
                        Err(panic) => Some(Failure::operator(&name, None, panic_message(&*panic))),
                    };
                    if let Some(failure) = failure {
                        let _ = events.send(Event::Failed { node, epoch, failure });
                    }
                })
                .map_err(|source| RunError::Spawn {
                    name: self.physical[node].name.clone(),
                    source,
                })?;
            self.threads.insert(node, handle);
        }
        for (upstream, targets) in reconnects {
            if let Some(control) = &self.control[self.root[upstream]] {
                // An upstream that is gone has nothing to replay.
                let _ = control.send((upstream, Control::Reconnect(targets)));
            }
        }
        Ok(())
    }
}
