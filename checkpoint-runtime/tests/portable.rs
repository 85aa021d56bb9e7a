//! The portable DAG driven by a minimal engine written here (one thread,
//! windows of a fixed tuple count): the same counts as the threaded
//! runtime, for any partition count of the keyed operator, and a restore
//! from an instance's snapshot continues where it stopped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, KeyedMap, WindowId};
use checkpoint_runtime::portable::{Instance, PortableDag, RestoreFrom, Route};
use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};

const TUPLES: u64 = 1_000;
const KEYS: u64 = 37;
const WINDOW: u64 = 100;

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
    in_window: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn begin_window(&mut self, _window: WindowId) -> OperatorResult {
        self.in_window = 0;
        Ok(())
    }
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        while self.next < TUPLES && self.in_window < WINDOW {
            out.emit(self.next);
            self.next += 1;
            self.in_window += 1;
        }
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
    type Output = (u64, u64);
    fn process(&mut self, n: u64, out: Output<'_, (u64, u64)>) -> OperatorResult {
        let key = n % KEYS;
        let count = self.counts.entry(key).or_insert(0);
        *count += 1;
        out.emit((key, *count));
        Ok(())
    }
}

/// Keeps the newest count of each key, in a map shared with the test (a
/// config field: a restored value gets this run's map).
#[derive(Checkpoint)]
struct Newest {
    #[checkpoint(config)]
    seen: Arc<Mutex<BTreeMap<u64, u64>>>,
}

impl Operator for Newest {
    type Input = (u64, u64);
    type Output = ();
    fn process(&mut self, (key, count): (u64, u64), _out: Output<'_, ()>) -> OperatorResult {
        let mut seen = self.seen.lock().expect("lock");
        let newest = seen.entry(key).or_insert(0);
        *newest = (*newest).max(count);
        Ok(())
    }
}

fn dag(seen: &Arc<Mutex<BTreeMap<u64, u64>>>) -> Dag {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers { next: 0, in_window: 0 });
    let count = dag.operator_partitioned("count", 2, |_| Count::default());
    let newest = dag.operator("newest", Newest { seen: Arc::clone(seen) });
    dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
        .connect(&count, &newest);
    dag
}

/// Runs windows `from..` (all, or `windows` of them) on `instances`: every
/// batch routed to its downstream's partition, windows in order.
fn drive(portable: &mut PortableDag, instances: &mut [Vec<Box<dyn Instance>>], from: u32, windows: Option<u32>) {
    let mut seq = from;
    loop {
        let window = WindowId::new(1, seq);
        let mut done = false;
        for (node, parts) in instances.iter_mut().enumerate() {
            for instance in parts.iter_mut() {
                instance.begin_window(window).expect("begin");
            }
            if portable.nodes()[node].input {
                // `Numbers` emits one window's tuples per call.
                done = parts[0].emit().expect("emit") == Emit::Done;
            }
        }
        // Batches flow along edges in node order (the DAG is a chain here).
        for node in 0..instances.len() {
            for part in 0..instances[node].len() {
                instances[node][part].end_window(done).expect("end");
                for routed in instances[node][part].take_output() {
                    let to = portable.edges()[routed.edge].to;
                    let targets: Vec<usize> = match routed.route {
                        Route::Partition(p) => vec![p],
                        Route::All => (0..instances[to].len()).collect(),
                    };
                    for p in targets {
                        instances[to][p].process(&routed.batch).expect("process");
                    }
                }
            }
        }
        seq += 1;
        if done || windows.is_some_and(|w| seq >= from + w) {
            break;
        }
    }
}

fn expected() -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for n in 0..TUPLES {
        *counts.entry(n % KEYS).or_insert(0) += 1;
    }
    counts
}

fn build(portable: &mut PortableDag, partitions: &[usize]) -> Vec<Vec<Box<dyn Instance>>> {
    (0..portable.nodes().len())
        .map(|node| {
            (0..partitions[node])
                .map(|p| portable.instantiate(node, p, partitions, None).expect("instantiate"))
                .collect()
        })
        .collect()
}

#[test]
fn a_minimal_engine_counts_as_the_threaded_runtime_does() {
    let threaded = Arc::new(Mutex::new(BTreeMap::new()));
    Runtime::new(Config::default().window_mode(WindowMode::Tuples(WINDOW)))
        .run(dag(&threaded))
        .expect("the threaded run");
    assert_eq!(*threaded.lock().expect("lock"), expected());

    for count_partitions in [1, 2, 3] {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let mut portable = PortableDag::new(dag(&seen)).expect("portable");
        let partitions = [1, count_partitions, 1];
        let mut instances = build(&mut portable, &partitions);
        drive(&mut portable, &mut instances, 0, None);
        assert_eq!(*seen.lock().expect("lock"), expected(), "{count_partitions} partitions");
        let names: Vec<&str> = instances[1].iter().map(|i| i.name()).collect();
        assert_eq!(names.len(), count_partitions);
    }
}

#[test]
fn an_instance_restored_from_its_snapshot_continues_where_it_stopped() {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let mut portable = PortableDag::new(dag(&seen)).expect("portable");
    let partitions = [1, 2, 1];
    let mut instances = build(&mut portable, &partitions);
    drive(&mut portable, &mut instances, 0, Some(4));
    let at = WindowId::new(1, 3);
    let snapshots: Vec<Vec<Vec<u8>>> = instances
        .iter_mut()
        .map(|parts| parts.iter_mut().map(|i| i.snapshot(at).expect("snapshot")).collect())
        .collect();
    drop(instances);

    // A new DAG value, restored from the snapshots: the run ends as if
    // uninterrupted.
    let mut portable = PortableDag::new(dag(&seen)).expect("portable");
    let mut instances: Vec<Vec<Box<dyn Instance>>> = snapshots
        .into_iter()
        .enumerate()
        .map(|(node, parts)| {
            parts
                .into_iter()
                .enumerate()
                .map(|(p, snapshot)| {
                    let restore = RestoreFrom::Snapshot {
                        snapshot,
                        storage: None,
                    };
                    portable
                        .instantiate(node, p, &partitions, Some(restore))
                        .expect("restore")
                })
                .collect()
        })
        .collect();
    drive(&mut portable, &mut instances, 4, None);
    assert_eq!(*seen.lock().expect("lock"), expected());
}

/// A keyed operator restored with another partition count takes, from the
/// old partitions' chunked checkpoints, exactly the key groups it owns.
#[test]
fn a_rescaled_instance_takes_the_key_groups_it_owns() {
    use checkpoint_core::{KeyGroups, MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent};

    let storage = Arc::new(MemoryStorageAgent::new());
    let groups = KeyGroups::default();
    let at = WindowId::new(1, 9);
    // Two old partitions, each with the keys of its half of the groups.
    let mut sources = Vec::new();
    for p in 0..2 {
        let owned = groups.range_of_partition(p, 2);
        let mut state = Count {
            counts: KeyedMap::with_key_groups(groups),
        };
        state.counts.extend(
            (0..KEYS)
                .filter(|k| owned.contains(&groups.group_of(k)))
                .map(|k| (k, k + 1)),
        );
        let name = format!("count#{p}");
        let frozen = Snapshot::freeze(&state, SnapshotMeta::new(&name, at), Vec::new(), &[]).expect("freeze");
        let done = frozen
            .finish(|chunks| storage.save_chunks(&name, chunks))
            .expect("finish");
        sources.push((name, done.bytes));
    }
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let mut portable = PortableDag::new(dag(&seen)).expect("portable");
    let partitions = [1, 3, 1];
    let mut merged = BTreeMap::new();
    for p in 0..3 {
        let owned = groups.range_of_partition(p, 3);
        let restore = RestoreFrom::Rescaled {
            sources: sources.clone(),
            owned: owned.clone(),
            storage: Arc::clone(&storage) as Arc<dyn StorageAgent>,
        };
        let mut instance = portable
            .instantiate(1, p, &partitions, Some(restore))
            .expect("rescaled");
        let (_, state) = Snapshot::decode::<Count>(&instance.snapshot(at).expect("snapshot")).expect("decode");
        for (key, count) in state.counts.iter() {
            assert!(
                owned.contains(&groups.group_of(key)),
                "key {key} outside partition {p}'s groups"
            );
            assert!(merged.insert(*key, *count).is_none(), "key {key} twice");
        }
    }
    let all: BTreeMap<u64, u64> = (0..KEYS).map(|k| (k, k + 1)).collect();
    assert_eq!(merged, all);
}
