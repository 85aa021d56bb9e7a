//! Checks that a built DAG can run: names, connections, window settings,
//! partitioning, processing modes and cycles. Every problem is collected so
//! that a user fixes them all in one go rather than one per run.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::error::DagError;
use crate::operator::ProcessingMode;

use super::{Dag, EdgeKind, MAX_PHYSICAL_NAME_LEN, NodeKind, physical_name};

impl Dag {
    /// Checks that the DAG can run, returning every problem found.
    pub fn validate(&self) -> Result<(), Vec<DagError>> {
        let mut errors = self.errors.clone();
        let mut seen = HashSet::new();
        // Case-folded name -> the first name that folded to it.
        let mut folded: HashMap<String, &str> = HashMap::new();
        for node in &self.nodes {
            if let Err(e) = checkpoint_core::validate_operator_name(&node.name) {
                let reason = match e {
                    checkpoint_core::StorageError::InvalidOperatorName { reason, .. } => reason.to_owned(),
                    other => other.to_string(),
                };
                errors.push(DagError::InvalidName {
                    name: node.name.clone(),
                    reason,
                });
            } else if node.name.contains('#') {
                errors.push(DagError::InvalidName {
                    name: node.name.clone(),
                    reason: "`#` is reserved for partition numbers (`count#0`)".to_owned(),
                });
            } else if let Some(reason) = name_too_long(&node.name, node.partitions) {
                errors.push(DagError::InvalidName {
                    name: node.name.clone(),
                    reason,
                });
            }
            if !seen.insert(node.name.as_str()) {
                errors.push(DagError::DuplicateName(node.name.clone()));
            } else {
                // Physical names are `name` or `name#N` and `#` is in no
                // logical name, so physical names collide under case folding
                // exactly when logical names do.
                match folded.entry(fold_case(&node.name)) {
                    Entry::Occupied(first) => {
                        errors.push(DagError::NamesDifferOnlyInCase {
                            first: (*first.get()).to_owned(),
                            second: node.name.clone(),
                        });
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(&node.name);
                    }
                }
            }
            if node.partitions == 0 {
                errors.push(DagError::Zero {
                    operator: node.name.clone(),
                    what: "the partition count",
                });
            }
        }
        if !self.nodes.iter().any(|n| n.kind == NodeKind::Input) {
            errors.push(DagError::NoInput);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let has_upstream = self.edges.iter().any(|e| e.to == i);
            let has_downstream = self.edges.iter().any(|e| e.from == i);
            let connected = match node.kind {
                NodeKind::Input => has_downstream,
                NodeKind::Operator => has_upstream,
            };
            if !connected {
                errors.push(DagError::Unconnected(node.name.clone()));
            }
            let application = node.application_window_count;
            let checkpoint = self.effective_checkpoint_count(i);
            if application == 0 {
                errors.push(DagError::Zero {
                    operator: node.name.clone(),
                    what: "the application window count",
                });
            } else if checkpoint == 0 {
                errors.push(DagError::Zero {
                    operator: node.name.clone(),
                    what: "the checkpoint window count",
                });
            } else if !checkpoint.is_multiple_of(application) {
                errors.push(DagError::CheckpointNotAligned {
                    operator: node.name.clone(),
                    checkpoint,
                    application,
                });
            }
        }
        for edge in &self.edges {
            let (from, to) = (&self.nodes[edge.from], &self.nodes[edge.to]);
            match edge.kind {
                EdgeKind::Plain | EdgeKind::Converted if to.partitions > 1 => {
                    errors.push(DagError::PartitionedNeedsKey {
                        upstream: from.name.clone(),
                        downstream: to.name.clone(),
                        partitions: to.partitions,
                    });
                }
                EdgeKind::ThreadLocal => {
                    let reason = if from.partitions != 1 || to.partitions != 1 {
                        Some("both operators must have a single partition")
                    } else if self.edges.iter().filter(|e| e.to == edge.to).count() != 1 {
                        Some("the downstream operator must have no other upstream")
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        errors.push(DagError::ThreadLocal {
                            upstream: from.name.clone(),
                            downstream: to.name.clone(),
                            reason,
                        });
                    }
                }
                _ => {}
            }
        }
        for edge in &self.edges {
            let (from, to) = (&self.nodes[edge.from], &self.nodes[edge.to]);
            if from.mode != ProcessingMode::AtLeastOnce && to.mode != ProcessingMode::AtMostOnce {
                errors.push(DagError::ProcessingMode {
                    upstream: from.name.clone(),
                    upstream_mode: from.mode.name(),
                    downstream: to.name.clone(),
                    downstream_mode: to.mode.name(),
                });
            }
        }
        if let Some(cycle) = self.find_cycle() {
            errors.push(DagError::Cycle(cycle));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The names along a cycle, first name repeated at the end, if any.
    fn find_cycle(&self) -> Option<Vec<String>> {
        // Iterative DFS with colours: 0 new, 1 on the stack, 2 done.
        let n = self.nodes.len();
        let mut colour = vec![0u8; n];
        let mut parent = vec![usize::MAX; n];
        for start in 0..n {
            if colour[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            colour[start] = 1;
            while let Some((node, next)) = stack.pop() {
                let downstream: Vec<usize> = self.edges.iter().filter(|e| e.from == node).map(|e| e.to).collect();
                if next < downstream.len() {
                    stack.push((node, next + 1));
                    let d = downstream[next];
                    if colour[d] == 1 {
                        let mut path = vec![self.nodes[d].name.clone()];
                        let mut at = node;
                        while at != d && at != usize::MAX {
                            path.push(self.nodes[at].name.clone());
                            at = parent[at];
                        }
                        path.push(self.nodes[d].name.clone());
                        path.reverse();
                        return Some(path);
                    }
                    if colour[d] == 0 {
                        colour[d] = 1;
                        parent[d] = node;
                        stack.push((d, 0));
                    }
                } else {
                    colour[node] = 2;
                }
            }
        }
        None
    }
}
/// Why `name` with `partitions` partitions makes a physical name longer
/// than [`MAX_PHYSICAL_NAME_LEN`], if it does.
fn name_too_long(name: &str, partitions: usize) -> Option<String> {
    let longest = physical_name(name, partitions, partitions.saturating_sub(1));
    if longest.len() <= MAX_PHYSICAL_NAME_LEN {
        return None;
    }
    let which = if partitions > 1 {
        format!("its physical name `…{}` is", &longest[name.len()..])
    } else {
        "it is".to_owned()
    };
    Some(format!(
        "{which} {} bytes long; operator names may have at most {MAX_PHYSICAL_NAME_LEN} bytes including the \
         partition suffix `#N`, so that every file name derived from them (`<name>#window-data`) fits in 255 bytes",
        longest.len()
    ))
}

/// A name as a case-insensitive file system compares it. Upper-casing
/// first folds more pairs together (`ß` and `ss`, `ſ` and `s`) than
/// lower-casing alone: rejecting a few names a particular file system would
/// keep apart is better than two operators sharing a directory.
fn fold_case(name: &str) -> String {
    name.to_uppercase().to_lowercase()
}
