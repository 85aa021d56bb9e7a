//! A keyed job checkpointing to an S3 endpoint over HTTP on loopback:
//! incremental chunks, a failure recovered from what the endpoint holds,
//! and a restart that resumes from it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, Snapshot, StorageAgent};
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, InputOperator, Operator, OperatorResult, Output, RunError, Runtime, WindowMode,
};

const TUPLES: u64 = 2_000;
const KEYS: u64 = 97;

/// Skewed: most tuples on a few keys, so some groups stay unchanged.
fn key_of(n: u64) -> u64 {
    if n.is_multiple_of(5) { n % KEYS } else { n % 3 }
}

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let stop = (self.next + 5).min(TUPLES);
        for n in self.next..stop {
            out.emit(n);
        }
        self.next = stop;
        Ok(if self.next == TUPLES {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

#[derive(Default, Checkpoint)]
struct Count {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
}

impl Operator for Count {
    type Input = u64;
    type Output = ();
    fn process(&mut self, n: u64, _out: Output<'_, ()>) -> OperatorResult {
        *self.counts.entry(key_of(n)).or_insert(0) += 1;
        Ok(())
    }
}

fn run(
    storage: &Arc<dyn StorageAgent>,
    faults: &[Fault],
    limit: u32,
) -> Result<checkpoint_runtime::RunReport, RunError> {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers { next: 0 });
    let count = dag.operator_partitioned("count", 2, |_| Count::default());
    dag.connect_by_key(&numbers, &count, |n: &u64| key_of(*n))
        .default_checkpoint_window_count(2);
    let mut config = Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(50))
        .window_base(0x6553_f100)
        .key_groups(KeyGroups::new(16).expect("valid"))
        .restart_limit(limit);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    Runtime::new(config).run(dag)
}

#[test]
fn a_keyed_job_checkpoints_to_s3_recovers_and_resumes() {
    let storage: Arc<dyn StorageAgent> = Arc::new(common::agent("jobs/keyed"));
    // Stopped half way (a fault that recurs, no restarts), then resumed,
    // with one in-run failure recovered from the endpoint on the way.
    let fault = Fault::error("numbers", 20).times(u32::MAX);
    run(&storage, &[fault], 0).expect_err("stopped half way");
    let report = run(&storage, &[Fault::panic("count#1", 27)], 5).expect("resumed and finished");
    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
    assert!(!report.resumed_from.is_empty(), "resumed from the endpoint");

    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for n in 0..TUPLES {
        *expected.entry(key_of(n)).or_insert(0) += 1;
    }
    let mut seen = BTreeMap::new();
    let mut reused = 0;
    for name in ["count#0", "count#1"] {
        let last = *storage.windows(name).expect("windows").last().expect("a checkpoint");
        let bytes = storage.load(name, last).expect("load");
        let (header, state) =
            Snapshot::decode_with_chunks::<Count>(&bytes, name, None, |op, id| storage.load_chunk(op, id))
                .expect("decode");
        reused += header.chunks.iter().filter(|c| c.id.window < last).count();
        seen.extend(state.counts.iter().map(|(k, v)| (*k, *v)));
        // Retention kept only chunks a stored snapshot names.
        let mut named = std::collections::BTreeSet::new();
        for window in storage.windows(name).expect("windows") {
            let header = Snapshot::read_header(&storage.load(name, window).expect("load")).expect("header");
            named.extend(header.chunks.iter().map(|c| c.id));
        }
        let stored: std::collections::BTreeSet<_> = storage.chunks(name).expect("chunks").into_iter().collect();
        assert_eq!(stored, named, "{name}");
    }
    assert_eq!(seen, expected);
    assert!(reused > 0, "unchanged groups refer to earlier chunks");
}
