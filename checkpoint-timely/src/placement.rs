//! Which worker runs which partition of which operator.

use checkpoint_runtime::portable::{NodeInfo, PortableDag, Route, Routing};

/// Where every partition runs: an operator with a keyed input has one
/// partition per worker, partition `p` on worker `p`; an input has the
/// partitions the DAG gave it, partition `p` on worker `p % workers`; every
/// other operator has one partition, on worker 0.
///
/// # Examples
///
/// ```
/// use checkpoint_timely::Placement;
///
/// let placement = Placement::from_counts(vec![1, 3], 3);
/// assert_eq!(placement.partitions(1), 3);
/// assert_eq!(placement.workers(), 3);
/// assert_eq!(placement.worker_of(1, 2), 2);
/// assert_eq!(placement.hosted(0, 1), Vec::<usize>::new());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    partitions: Vec<usize>,
    workers: usize,
}

impl Placement {
    /// The placement of `dag` on `workers` workers.
    pub fn new(dag: &PortableDag, workers: usize) -> Self {
        let keyed: Vec<bool> = (0..dag.nodes().len())
            .map(|node| {
                dag.edges()
                    .iter()
                    .any(|edge| edge.to == node && edge.routing == Routing::Keyed)
            })
            .collect();
        let partitions = dag
            .nodes()
            .iter()
            .zip(keyed)
            .map(|(info, keyed): (&NodeInfo, bool)| {
                if keyed {
                    workers
                } else if info.input {
                    info.partitions.max(1)
                } else {
                    1
                }
            })
            .collect();
        Self::from_counts(partitions, workers)
    }

    /// A placement with these partition counts per operator.
    pub fn from_counts(partitions: Vec<usize>, workers: usize) -> Self {
        Placement { partitions, workers }
    }

    /// Partitions of operator `node`.
    pub fn partitions(&self, node: usize) -> usize {
        self.partitions.get(node).copied().unwrap_or(1)
    }

    /// The workers it places partitions on.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Every operator's partition count, by node.
    pub fn counts(&self) -> &[usize] {
        &self.partitions
    }

    /// The worker running partition `partition` of `node`.
    pub fn worker_of(&self, node: usize, partition: usize) -> usize {
        if self.partitions(node) > 1 {
            partition % self.workers.max(1)
        } else {
            0
        }
    }

    /// The partitions of `node` that `worker` runs.
    pub fn hosted(&self, node: usize, worker: usize) -> Vec<usize> {
        (0..self.partitions(node))
            .filter(|p| self.worker_of(node, *p) == worker)
            .collect()
    }

    /// The partitions of `node` a batch routed `route` goes to.
    pub fn targets(&self, node: usize, route: Route) -> Vec<usize> {
        match route {
            Route::Partition(p) => vec![p.min(self.partitions(node).saturating_sub(1))],
            Route::All => (0..self.partitions(node)).collect(),
        }
    }
}
