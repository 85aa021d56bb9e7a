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

// `config` and the rest are shared by every test below.

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

/// Counts per key in a `KeyedMap` and emits `(key, new count)` per tuple.
#[derive(Default, Checkpoint)]
struct EmittingCounter {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
}

impl Operator for EmittingCounter {
    type Input = Tagged;
    type Output = (u64, u64);

    fn process(&mut self, t: Tagged, out: Output<'_, (u64, u64)>) -> OperatorResult {
        let key = t.value % KEYS;
        let count = self.counts.entry(key).or_insert(0);
        *count += 1;
        out.emit((key, *count));
        Ok(())
    }
}

/// A window's lines in sorted order, whatever partitions they came from:
/// the output of a run is then the same for any partition count.
#[derive(Default, Checkpoint)]
struct SortWindow {
    #[checkpoint(transient)]
    lines: Vec<String>,
}

impl Operator for SortWindow {
    type Input = (u64, u64);
    type Output = String;

    fn process(&mut self, (key, count): (u64, u64), _out: Output<'_, String>) -> OperatorResult {
        self.lines.push(format!("{key:03} {count}"));
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        self.lines.sort();
        for line in self.lines.drain(..) {
            out.emit(line);
        }
        Ok(())
    }
}

/// source -> count (`partitions`, keyed) -> sort -> exactly-once sink.
fn publishing_dag(partitions: usize, out: &std::path::Path) -> Dag {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 7));
    let count = dag.operator_partitioned("count", partitions, |_| EmittingCounter::default());
    let sort = dag.operator("sort", SortWindow::default());
    let sink = dag.operator("sink", checkpoint_runtime::io::ExactlyOnceFileSink::<String>::new(out));
    dag.connect_by_key(&source, &count, |t: &Tagged| t.value % KEYS)
        .connect(&count, &sort)
        .connect(&sort, &sink)
        .default_checkpoint_window_count(3);
    dag
}

fn fs_storage(dir: &std::path::Path) -> Arc<dyn StorageAgent> {
    Arc::new(checkpoint_core::FsStorageAgent::new(dir).expect("storage"))
}

fn publish(
    storage: &Arc<dyn StorageAgent>,
    partitions: usize,
    out: &std::path::Path,
    faults: &[Fault],
    limit: u32,
) -> Result<RunReport, RunError> {
    let mut config = config(storage, groups(16)).restart_limit(limit);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    let dag = publishing_dag(partitions, out);
    with_watchdog(move || Runtime::new(config).run(dag))
}

/// Stops the job with an error at `window` (a fault that recurs, no
/// restarts allowed): what a crash leaves in storage.
fn stop_at(operator: &str, window: u32) -> Fault {
    Fault::error(operator, window).at(FaultPoint::Tuple(2)).times(u32::MAX)
}

fn reference_output() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    publish(&fs_storage(&dir.path().join("ckpt")), 2, &out, &[], 0).expect("reference run");
    checkpoint_runtime::io::read_output(&out).expect("output")
}

#[test]
fn a_job_resumed_with_other_partition_counts_publishes_what_an_unchanged_run_does() {
    let expected = reference_output();
    assert!(!expected.is_empty());
    let dir = tempfile::tempdir().expect("tempdir");
    let (ckpt, out) = (dir.path().join("ckpt"), dir.path().join("out"));
    let storage = fs_storage(&ckpt);
    publish(&storage, 2, &out, &[stop_at("sort", 9)], 0).expect_err("stopped at window 9");
    // 2 -> 3: split; it runs on and stops again.
    let report = publish(&storage, 3, &out, &[stop_at("sort", 19)], 0).expect_err("stopped at window 19");
    drop(report);
    // 3 -> 1: merged; it runs to the end.
    let report = publish(&storage, 1, &out, &[], 0).expect("finished");
    assert!(
        report.notes.iter().any(|n| n.contains("another partition count")),
        "{:?}",
        report.notes
    );
    assert_eq!(checkpoint_runtime::io::read_output(&out).expect("output"), expected);
    // The old partitions are gone once the merge was committed; only the
    // one partition of now has checkpoints.
    let operators = storage.operators().expect("operators");
    assert!(operators.contains(&"count".to_owned()), "{operators:?}");
    for old in ["count#0", "count#1", "count#2"] {
        assert!(
            storage.windows(old).expect("windows").is_empty(),
            "{old} still has checkpoints"
        );
        assert!(
            storage.chunks(old).expect("chunks").is_empty(),
            "{old} still has chunks"
        );
    }
    let manifest =
        checkpoint_runtime::JobManifest::from_bytes(&storage.load_manifest().expect("load").expect("manifest"))
            .expect("manifest");
    assert!(manifest.rescaling.is_empty(), "{:?}", manifest.rescaling);
}

#[test]
fn a_failure_right_after_a_rescale_restores_from_the_old_partitions() {
    let expected = reference_output();
    // In the run: a new partition fails in the first window after the
    // split, before it has a checkpoint of its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let (ckpt, out) = (dir.path().join("ckpt"), dir.path().join("out"));
    let storage = fs_storage(&ckpt);
    publish(&storage, 2, &out, &[stop_at("sort", 9)], 0).expect_err("stopped");
    let report = publish(
        &storage,
        3,
        &out,
        &[Fault::panic("count#2", 9).at(FaultPoint::Tuple(1))],
        5,
    )
    .expect("finished");
    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
    assert_eq!(checkpoint_runtime::io::read_output(&out).expect("output"), expected);

    // A crash right after the split, before anything is committed past it:
    // the next start (with yet another count) splits the old partitions
    // again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (ckpt, out) = (dir.path().join("ckpt"), dir.path().join("out"));
    let storage = fs_storage(&ckpt);
    publish(&storage, 2, &out, &[stop_at("sort", 9)], 0).expect_err("stopped");
    publish(&storage, 3, &out, &[stop_at("count#1", 9)], 0).expect_err("crashed right after the split");
    let manifest =
        checkpoint_runtime::JobManifest::from_bytes(&storage.load_manifest().expect("load").expect("manifest"))
            .expect("manifest");
    let record = manifest.rescaling.get("count").expect("the split is pending");
    assert_eq!(
        (record.partitions, record.physical.as_slice()),
        (2, &["count#0".to_owned(), "count#1".to_owned()][..])
    );
    publish(&storage, 4, &out, &[], 0).expect("finished");
    assert_eq!(checkpoint_runtime::io::read_output(&out).expect("output"), expected);
}

#[test]
fn only_keyed_operators_with_keyed_state_change_their_partition_count() {
    /// Keyed, but with a plain field besides its map.
    #[derive(Default, Checkpoint)]
    struct Mixed {
        #[checkpoint(keyed)]
        counts: KeyedMap<u64, u64>,
        tuples: u64,
    }
    impl Operator for Mixed {
        type Input = Tagged;
        type Output = ();
        fn process(&mut self, t: Tagged, _out: Output<'_, ()>) -> OperatorResult {
            *self.counts.entry(t.value % KEYS).or_insert(0) += 1;
            self.tuples += 1;
            Ok(())
        }
    }
    let dag = |partitions: usize| {
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(TUPLES, 7));
        let count = dag.operator_partitioned("count", partitions, |_| Mixed::default());
        dag.connect_by_key(&source, &count, |t: &Tagged| t.value % KEYS)
            .default_checkpoint_window_count(3);
        dag
    };
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let run = |partitions: usize, faults: &[Fault]| {
        let mut config = config(&storage, groups(16)).restart_limit(0);
        for fault in faults {
            config = config.inject(fault.clone());
        }
        let dag = dag(partitions);
        with_watchdog(move || Runtime::new(config).run(dag))
    };
    run(2, &[stop_at("count#0", 9)]).expect_err("stopped");
    let err = run(3, &[]).expect_err("a plain field cannot be split");
    assert!(err.to_string().contains("fields besides"), "{err}");
    // Nothing changed: it resumes with its own count.
    run(2, &[]).expect("finished");
}

#[test]
fn a_failure_while_removing_the_old_partitions_is_finished_by_the_next_start() {
    let expected = reference_output();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ckpt, out) = (dir.path().join("ckpt"), dir.path().join("out"));
    let storage = fs_storage(&ckpt);
    publish(&storage, 2, &out, &[stop_at("sort", 9)], 0).expect_err("stopped");
    // 2 -> 3; once the split is committed past, the first delete of an
    // old partition's snapshot at the split window fails, as a crash there
    // would stop it.
    let failed = std::sync::atomic::AtomicBool::new(false);
    let flaky: Arc<dyn StorageAgent> = Arc::new(
        common::Intercept::new(checkpoint_core::FsStorageAgent::new(&ckpt).expect("storage")).before(
            move |inner, op| {
                let common::Op::Delete(operator, window) = op else {
                    return None;
                };
                // The old partitions' removal: the stored record says finished.
                let manifest = checkpoint_runtime::JobManifest::from_bytes(&inner.load_manifest().ok()??).ok()?;
                let record = manifest.rescaling.get("count")?;
                let removal =
                    record.finished && record.window == window && record.physical.iter().any(|p| p == operator);
                (removal && !failed.swap(true, std::sync::atomic::Ordering::SeqCst)).then(|| common::eio("deleting"))
            },
        ),
    );
    publish(&flaky, 3, &out, &[], 0).expect_err("the delete failed");
    let manifest =
        checkpoint_runtime::JobManifest::from_bytes(&storage.load_manifest().expect("load").expect("manifest"))
            .expect("manifest");
    let record = manifest.rescaling.get("count").expect("the split's record");
    assert!(record.finished, "recorded as finished before its files go: {record:?}");
    assert!(
        storage.windows("count#0").expect("windows").contains(&record.window),
        "the old snapshot is still there"
    );
    // The next start removes what is left and never restores from it.
    publish(&storage, 3, &out, &[], 0).expect("finished");
    assert_eq!(checkpoint_runtime::io::read_output(&out).expect("output"), expected);
    let manifest =
        checkpoint_runtime::JobManifest::from_bytes(&storage.load_manifest().expect("load").expect("manifest"))
            .expect("manifest");
    assert!(manifest.rescaling.is_empty(), "{:?}", manifest.rescaling);
    assert!(!storage.windows("count#0").expect("windows").contains(&record.window));
}
