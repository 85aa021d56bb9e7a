//! `KeyedMap` state in partitioned operators: routing and state agree on
//! key groups, snapshots hold each partition's groups only, recoveries
//! restore them, and the key-group count is fixed for the life of a job.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, MemoryStorageAgent, Snapshot, StorageAgent};
use checkpoint_runtime::{
    Config, Dag, Fault, FaultPoint, Operator, OperatorResult, Output, RunError, RunReport, Runtime, WindowMode,
};
use common::{Counting, Tagged, with_watchdog};

const BASE: u32 = 0x6553_f100;
const TUPLES: u64 = 3_000;
const KEYS: u64 = 211;
const PARTITIONS: usize = 3;

/// Counts tuples per key (`value % KEYS`) in a `KeyedMap`.
#[derive(Default, Checkpoint)]
struct KeyedCounter {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
    tuples: u64,
}

impl Operator for KeyedCounter {
    type Input = Tagged;
    type Output = ();

    fn process(&mut self, t: Tagged, _out: Output<'_, ()>) -> OperatorResult {
        *self.counts.entry(t.value % KEYS).or_insert(0) += 1;
        self.tuples += 1;
        Ok(())
    }
}

fn groups(n: u32) -> KeyGroups {
    KeyGroups::new(n).expect("valid")
}

fn dag() -> Dag {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 7));
    let count = dag.operator_partitioned("count", PARTITIONS, |_| KeyedCounter::default());
    dag.connect_by_key(&source, &count, |t: &Tagged| t.value % KEYS)
        .default_checkpoint_window_count(3);
    dag
}

fn config(storage: &Arc<dyn StorageAgent>, key_groups: KeyGroups) -> Config {
    Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(100))
        .window_base(BASE)
        .batch_size(5)
        .key_groups(key_groups)
}

fn run(config: Config) -> Result<RunReport, RunError> {
    with_watchdog(move || Runtime::new(config).run(dag()))
}

/// Every partition's last snapshot: its map holds exactly the keys of the
/// groups it owns, with the counts a plain count gives, and the partitions
/// together hold every key once.
fn check_final_state(storage: &Arc<dyn StorageAgent>, key_groups: KeyGroups) {
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for v in 0..TUPLES {
        *expected.entry(v % KEYS).or_insert(0) += 1;
    }
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let name = format!("count#{p}");
        let last = *storage.windows(&name).expect("windows").last().expect("a checkpoint");
        let bytes = storage.load(&name, last).expect("load");
        let (header, state) =
            Snapshot::decode_with_chunks::<KeyedCounter>(&bytes, &name, None, |op, id| storage.load_chunk(op, id))
                .expect("decode");
        // Incremental: the keyed groups are chunks, and every chunk the
        // operator keeps is one a kept snapshot refers to (retention).
        assert!(!header.chunks.is_empty(), "{name}");
        let mut referenced = std::collections::BTreeSet::new();
        for window in storage.windows(&name).expect("windows") {
            let header = Snapshot::read_header(&storage.load(&name, window).expect("load")).expect("header");
            referenced.extend(header.chunks.iter().map(|c| c.id));
        }
        let stored: std::collections::BTreeSet<_> = storage.chunks(&name).expect("chunks").into_iter().collect();
        assert_eq!(
            stored, referenced,
            "{name}: chunks kept without a snapshot referring to them"
        );
        assert_eq!(state.counts.key_groups(), Some(key_groups), "{name}");
        let owned = key_groups.range_of_partition(p, PARTITIONS);
        for (key, count) in state.counts.iter() {
            let group = key_groups.group_of(key);
            assert!(
                owned.contains(&group),
                "{name} holds key {key} of group {group}, outside {owned:?}"
            );
            assert_eq!(seen.insert(*key, *count), None, "key {key} in two partitions");
        }
        assert_eq!(state.tuples, state.counts.values().sum::<u64>(), "{name}");
    }
    assert_eq!(seen, expected);
}

#[test]
fn each_partition_holds_exactly_the_key_groups_it_owns() {
    for key_groups in [groups(16), groups(128), groups(3)] {
        let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
        run(config(&storage, key_groups)).expect("run");
        check_final_state(&storage, key_groups);
    }
}

#[test]
fn a_failed_partition_restores_its_key_groups() {
    for point in [FaultPoint::BeginWindow, FaultPoint::Tuple(3)] {
        for window in [1, 5, 17] {
            let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
            let config = config(&storage, groups(16)).inject(Fault::panic("count#1", window).at(point));
            let report = run(config).expect("run");
            assert_eq!(
                report.recoveries.len(),
                1,
                "{point:?} at {window}: {:?}",
                report.recoveries
            );
            check_final_state(&storage, groups(16));
        }
    }
}

#[test]
fn the_key_group_count_is_fixed_for_the_life_of_a_job() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    run(config(&storage, groups(16))
        .inject(Fault::panic("count#0", 12).times(u32::MAX))
        .restart_limit(0))
    .expect_err("the fault stops the job half way");
    let err = run(config(&storage, groups(32))).expect_err("another key-group count");
    let message = err.to_string();
    assert!(matches!(err, RunError::Manifest { .. }), "{message}");
    assert!(
        message.contains("key-group count") && message.contains("16") && message.contains("32"),
        "{message}"
    );
    // With the count it started with, the job resumes and finishes.
    run(config(&storage, groups(16))).expect("resume");
    check_final_state(&storage, groups(16));
}

#[test]
fn more_partitions_than_key_groups_is_an_error() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let err = run(config(&storage, groups(2))).expect_err("3 partitions, 2 groups");
    let message = err.to_string();
    assert!(matches!(err, RunError::Config { .. }), "{message}");
    assert!(
        message.contains("\"count\" has 3 partitions") && message.contains("2 key groups"),
        "{message}"
    );
    assert!(storage.operators().expect("operators").is_empty(), "nothing written");
}
