//! The checkpoint coordinator (Apex's STRAM): which checkpoint each operator
//! would recover from, and which window is committed.

use checkpoint_core::WindowId;

/// The shape of the physical DAG the recovery computation needs.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::coordinator::Topology;
///
/// // source(0) -> counter(1) -> sink(2)
/// let topology = Topology::new(vec![vec![1], vec![2], vec![]]);
/// assert_eq!(topology.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    downstream: Vec<Vec<usize>>,
    at_most_once: Vec<bool>,
}

impl Topology {
    /// A topology from each operator's downstream operators (by index).
    /// The graph must be acyclic.
    pub fn new(downstream: Vec<Vec<usize>>) -> Self {
        let n = downstream.len();
        Topology {
            downstream,
            at_most_once: vec![false; n],
        }
    }

    /// Marks operators whose processing mode is AT_MOST_ONCE: they are left
    /// out of their upstreams' minimum (they never need a replay).
    pub fn with_at_most_once(mut self, at_most_once: Vec<bool>) -> Self {
        self.at_most_once = at_most_once;
        self
    }

    /// The number of operators.
    pub fn len(&self) -> usize {
        self.downstream.len()
    }

    /// Whether there are no operators.
    pub fn is_empty(&self) -> bool {
        self.downstream.is_empty()
    }

    /// Operators in an order where every operator comes after all its
    /// upstreams, or `None` if the graph has a cycle.
    pub fn topological_order(&self) -> Option<Vec<usize>> {
        let n = self.len();
        let mut indegree = vec![0usize; n];
        for ds in &self.downstream {
            for &d in ds {
                indegree[d] += 1;
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop() {
            order.push(i);
            for &d in &self.downstream[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push(d);
                }
            }
        }
        (order.len() == n).then_some(order)
    }
}

/// What the coordinator knows about one operator's checkpoints.
///
/// # Examples
///
/// ```
/// use checkpoint_core::WindowId;
/// use checkpoint_runtime::coordinator::OperatorCheckpoints;
///
/// let w = |s| WindowId::new(1, s);
/// let counter = OperatorCheckpoints::durable(vec![w(0), w(59), w(119)]);
/// assert_eq!(counter.newest_at_or_before(Some(w(100))), Some(w(59)));
/// let filter = OperatorCheckpoints::stateless(w(130));
/// assert_eq!(filter.newest_at_or_before(Some(w(100))), Some(w(100)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorCheckpoints {
    /// Durable checkpoints, ascending.
    pub durable: Vec<WindowId>,
    /// For a stateless operator: the newest window it completed. It has a
    /// checkpoint at every window up to this one.
    pub stateless_through: Option<WindowId>,
    /// The operator's final window, once its stream ended: its state no
    /// longer changes, so its final checkpoint stands for every later window.
    pub finished_at: Option<WindowId>,
}

impl OperatorCheckpoints {
    /// An operator with durable checkpoints at `windows` (ascending).
    pub fn durable(windows: Vec<WindowId>) -> Self {
        OperatorCheckpoints {
            durable: windows,
            ..Self::default()
        }
    }

    /// A stateless operator that has completed every window up to `through`.
    pub fn stateless(through: WindowId) -> Self {
        OperatorCheckpoints {
            stateless_through: Some(through),
            ..Self::default()
        }
    }

    /// The newest window this operator could be restored to that is `<=
    /// bound` (`None` bound: no limit).
    pub fn newest_at_or_before(&self, bound: Option<WindowId>) -> Option<WindowId> {
        let Some(bound) = bound else {
            return self.durable.last().copied().max(self.stateless_through);
        };
        if let Some(finished) = self.finished_at
            && finished <= bound
        {
            return Some(bound);
        }
        let durable = self.durable.iter().rev().find(|w| **w <= bound).copied();
        let stateless = self.stateless_through.map(|through| through.min(bound));
        durable.max(stateless)
    }
}

/// The recovery checkpoint of every operator and the committed window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Per operator, the checkpoint it would be restored from after a
    /// failure now; `None` if it has none (before its initial checkpoint).
    pub recovery: Vec<Option<WindowId>>,
    /// The smallest recovery checkpoint: no window up to it will ever be
    /// replayed. `None` while any operator has no recovery checkpoint.
    pub committed: Option<WindowId>,
}

/// Computes recovery checkpoints and the committed window, exactly as
/// DESIGN.md defines them:
/// - a sink's recovery checkpoint is its newest checkpoint;
/// - any other operator's is its newest checkpoint `<=` the smallest
///   recovery checkpoint of its downstream operators, leaving AT_MOST_ONCE
///   downstreams out of that minimum (with only such downstreams it counts
///   as a sink);
/// - the committed window is the smallest recovery checkpoint.
///
/// A stateless operator has a checkpoint at every window it completed; a
/// finished operator's final checkpoint stands for every later window, and a
/// finished operator is left out of the committed minimum (once every
/// operator finished, the committed window is the largest recovery
/// checkpoint).
///
/// # Panics
///
/// Panics if `operators.len() != topology.len()` or the topology has a
/// cycle; the runtime validates both when the DAG is built.
///
/// # Examples
///
/// ```
/// use checkpoint_core::WindowId;
/// use checkpoint_runtime::coordinator::{OperatorCheckpoints, Topology, plan};
///
/// let w = |s| WindowId::new(1, s);
/// // source -> counter -> sink; the sink is a checkpoint ahead of the counter.
/// let topology = Topology::new(vec![vec![1], vec![2], vec![]]);
/// let plan = plan(&topology, &[
///     OperatorCheckpoints::durable(vec![w(0), w(59), w(119)]),
///     OperatorCheckpoints::durable(vec![w(0), w(59)]),
///     OperatorCheckpoints::durable(vec![w(0), w(59), w(119)]),
/// ]);
/// assert_eq!(plan.recovery, [Some(w(59)), Some(w(59)), Some(w(119))]);
/// assert_eq!(plan.committed, Some(w(59)));
/// ```
pub fn plan(topology: &Topology, operators: &[OperatorCheckpoints]) -> RecoveryPlan {
    assert_eq!(topology.len(), operators.len(), "one checkpoint list per operator");
    let order = topology.topological_order().expect("an acyclic topology");
    let mut recovery: Vec<Option<WindowId>> = vec![None; operators.len()];
    // Downstreams first. `None` in a downstream's slot means "no
    // checkpoint", which bounds the upstream to nothing.
    let mut missing = vec![false; operators.len()];
    for &i in order.iter().rev() {
        let mut bound: Option<WindowId> = None;
        let mut bounded_by_missing = false;
        for &d in &topology.downstream[i] {
            if topology.at_most_once[d] {
                continue;
            }
            match recovery[d] {
                Some(r) => bound = Some(bound.map_or(r, |b| b.min(r))),
                None => bounded_by_missing = true,
            }
        }
        if bounded_by_missing {
            missing[i] = true;
            continue;
        }
        recovery[i] = operators[i].newest_at_or_before(bound);
        missing[i] = recovery[i].is_none();
    }
    // A finished operator's state no longer changes and nothing is replayed
    // to it: it does not hold the commit back (a short side branch would
    // otherwise cap it forever). Once everything finished, everything up to
    // the last window is committed.
    let running: Vec<usize> = (0..operators.len())
        .filter(|&i| operators[i].finished_at.is_none())
        .collect();
    let committed = if missing.iter().any(|m| *m) {
        None
    } else if running.is_empty() {
        recovery.iter().flatten().max().copied()
    } else {
        running.iter().filter_map(|&i| recovery[i]).min()
    };
    RecoveryPlan { recovery, committed }
}

/// Per operator, the newest window its output stream's store may drop: the
/// smallest recovery checkpoint among the downstreams that read the store
/// (`reads[i]`: those fed through a queue, not chained on its thread, and
/// not AT_MOST_ONCE, which never replay). `None` while one of them has no
/// recovery checkpoint, or for an operator no downstream reads from.
///
/// Recovery checkpoints only grow (a recovery restores an operator at
/// exactly its recovery checkpoint), so a window released once is never
/// needed again: a downstream restored later resumes after its recovery
/// checkpoint, which is at least the release.
pub(crate) fn releases(reads: &[Vec<usize>], plan: &RecoveryPlan) -> Vec<Option<WindowId>> {
    reads
        .iter()
        .map(|downstream| {
            let mut release: Option<WindowId> = None;
            for &d in downstream {
                let r = plan.recovery[d]?;
                release = Some(release.map_or(r, |b| b.min(r)));
            }
            release
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(seq: u32) -> WindowId {
        WindowId::new(7, seq)
    }

    #[test]
    fn a_sink_recovers_from_its_newest_and_upstreams_are_bounded_by_it() {
        let topology = Topology::new(vec![vec![1], vec![2], vec![]]);
        let plan = plan(
            &topology,
            &[
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20), w(30)]),
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]),
                OperatorCheckpoints::durable(vec![w(0), w(10)]),
            ],
        );
        assert_eq!(plan.recovery, [Some(w(10)), Some(w(10)), Some(w(10))]);
        assert_eq!(plan.committed, Some(w(10)));
    }

    #[test]
    fn the_smallest_downstream_bounds_a_fan_out() {
        // 0 -> {1, 2}
        let topology = Topology::new(vec![vec![1, 2], vec![], vec![]]);
        let plan = plan(
            &topology,
            &[
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]),
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]),
                OperatorCheckpoints::durable(vec![w(0), w(15)]),
            ],
        );
        assert_eq!(plan.recovery, [Some(w(10)), Some(w(20)), Some(w(15))]);
        assert_eq!(plan.committed, Some(w(10)));
    }

    #[test]
    fn at_most_once_downstreams_do_not_hold_back_their_upstream() {
        let topology = Topology::new(vec![vec![1, 2], vec![], vec![]]).with_at_most_once(vec![false, false, true]);
        let plan = plan(
            &topology,
            &[
                OperatorCheckpoints::durable(vec![w(0), w(20)]),
                OperatorCheckpoints::durable(vec![w(0), w(20)]),
                OperatorCheckpoints::durable(vec![w(0)]),
            ],
        );
        assert_eq!(plan.recovery[0], Some(w(20)));
        // Committed is still the smallest recovery checkpoint of all.
        assert_eq!(plan.committed, Some(w(0)));
    }

    #[test]
    fn stateless_operators_have_a_checkpoint_at_every_completed_window() {
        let topology = Topology::new(vec![vec![1], vec![2], vec![]]);
        let plan = plan(
            &topology,
            &[
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]),
                OperatorCheckpoints::stateless(w(25)),
                OperatorCheckpoints::durable(vec![w(0), w(20)]),
            ],
        );
        assert_eq!(plan.recovery, [Some(w(20)), Some(w(20)), Some(w(20))]);
        // A stateless sink recovers from the newest window it completed.
        let plan2 = super::plan(
            &Topology::new(vec![vec![1], vec![]]),
            &[
                OperatorCheckpoints::durable(vec![w(0), w(10)]),
                OperatorCheckpoints::stateless(w(13)),
            ],
        );
        assert_eq!(plan2.recovery, [Some(w(10)), Some(w(13))]);
        assert_eq!(plan2.committed, Some(w(10)));
    }

    #[test]
    fn an_operator_without_checkpoints_blocks_the_commit() {
        let topology = Topology::new(vec![vec![1], vec![]]);
        let plan = plan(
            &topology,
            &[OperatorCheckpoints::durable(vec![w(0)]), OperatorCheckpoints::default()],
        );
        assert_eq!(plan.recovery, [None, None]);
        assert_eq!(plan.committed, None);
    }

    #[test]
    fn a_finished_input_does_not_hold_back_the_rest() {
        // Two inputs into a sink: input 0 finished at window 5, input 1 runs on.
        let topology = Topology::new(vec![vec![2], vec![2], vec![]]);
        let mut done = OperatorCheckpoints::durable(vec![w(0), w(5)]);
        done.finished_at = Some(w(5));
        let plan = plan(
            &topology,
            &[
                done,
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]),
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]),
            ],
        );
        assert_eq!(plan.recovery, [Some(w(20)), Some(w(20)), Some(w(20))]);
        assert_eq!(plan.committed, Some(w(20)));
    }

    #[test]
    fn a_finished_sink_does_not_cap_the_commit() {
        // short(0) -> {join(2), side(3)}, long(1) -> join(2). `short` and its
        // side sink finished at window 2; `long` and `join` run on.
        let topology = Topology::new(vec![vec![2, 3], vec![2], vec![], vec![]]);
        let mut short = OperatorCheckpoints::durable(vec![w(0), w(2)]);
        short.finished_at = Some(w(2));
        let mut side = OperatorCheckpoints::durable(vec![w(0), w(2)]);
        side.finished_at = Some(w(2));
        let running = OperatorCheckpoints::durable(vec![w(0), w(10), w(20)]);
        let plan = plan(&topology, &[short, running.clone(), running, side]);
        assert_eq!(plan.recovery, [Some(w(2)), Some(w(20)), Some(w(20)), Some(w(2))]);
        assert_eq!(plan.committed, Some(w(20)));
    }

    #[test]
    fn once_everything_finished_the_last_window_is_committed() {
        let topology = Topology::new(vec![vec![1, 2], vec![], vec![]]);
        let mut all = [
            OperatorCheckpoints::durable(vec![w(0), w(30)]),
            OperatorCheckpoints::durable(vec![w(0), w(30)]),
            OperatorCheckpoints::durable(vec![w(0), w(30)]),
        ];
        for o in all.iter_mut() {
            o.finished_at = Some(w(30));
        }
        assert_eq!(plan(&topology, &all).committed, Some(w(30)));
    }

    #[test]
    fn a_diamond_takes_the_minimum_over_both_paths() {
        // 0 -> {1, 2} -> 3
        let topology = Topology::new(vec![vec![1, 2], vec![3], vec![3], vec![]]);
        let plan = plan(
            &topology,
            &[
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20), w(30)]),
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20), w(30)]),
                OperatorCheckpoints::durable(vec![w(0), w(10)]),
                OperatorCheckpoints::durable(vec![w(0), w(10), w(20), w(30)]),
            ],
        );
        assert_eq!(plan.recovery, [Some(w(10)), Some(w(30)), Some(w(10)), Some(w(30))]);
        assert_eq!(plan.committed, Some(w(10)));
    }

    #[test]
    fn topological_order_detects_cycles() {
        assert!(Topology::new(vec![vec![1], vec![0]]).topological_order().is_none());
        let order = Topology::new(vec![vec![2], vec![2], vec![]])
            .topological_order()
            .expect("acyclic");
        assert_eq!(order.last(), Some(&2));
    }

    #[test]
    fn a_store_may_drop_what_every_reader_is_past() {
        // source -> counter -> sink, the sink stateless and ahead; a fourth
        // operator, a second reader of the counter, without a checkpoint.
        let plan = RecoveryPlan {
            recovery: vec![Some(w(59)), Some(w(59)), Some(w(130)), None],
            committed: Some(w(59)),
        };
        let releases = releases(&[vec![1], vec![2], vec![], vec![]], &plan);
        assert_eq!(releases, [Some(w(59)), Some(w(130)), None, None]);
        let releases = super::releases(&[vec![1], vec![2, 3]], &plan);
        assert_eq!(
            releases,
            [Some(w(59)), None],
            "a reader without a checkpoint holds it all"
        );
    }
}
