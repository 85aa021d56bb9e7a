//! Whole-job restart: a job that stopped on a failure (or finished) is run
//! again against the same storage and resumes from the recovery checkpoints
//! computed from what is on disk, keeping its window base; a corrupt
//! checkpoint counts as missing and an older one is used.

mod common;

use std::sync::Arc;

use checkpoint_core::{FsStorageAgent, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::{Config, Dag, Fault, RunError, RunReport, Runtime, WindowMode};
use common::{Collect, Counting, Summer, with_watchdog};

const BASE: u32 = 0x6553_f100;
const TUPLES: u64 = 300;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

fn dag() -> Dag {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 1));
    let summer = dag.operator("summer", Summer::default());
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &summer).connect(&summer, &sink);
    dag.default_checkpoint_window_count(3);
    dag
}

fn run(storage: &Arc<dyn StorageAgent>, base: u32, faults: &[Fault]) -> Result<RunReport, RunError> {
    let mut config = Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(10))
        .window_base(base)
        .batch_size(4)
        .restart_limit(0);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    with_watchdog(move || Runtime::new(config).run(dag()))
}

fn final_summer(storage: &Arc<dyn StorageAgent>) -> (WindowId, u64, u64) {
    let window = *storage
        .windows("summer")
        .expect("windows")
        .last()
        .expect("a checkpoint");
    let (_, state) = Snapshot::decode::<Summer>(&storage.load("summer", window).expect("load")).expect("decode");
    (window, state.count, state.sum)
}

fn fs(dir: &std::path::Path) -> Arc<dyn StorageAgent> {
    Arc::new(FsStorageAgent::new(dir).expect("storage"))
}

#[test]
fn a_failed_job_resumes_from_disk_and_ends_as_if_nothing_happened() {
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = fs(reference_dir.path());
    run(&reference, BASE, &[]).expect("failure-free run");
    let expected = final_summer(&reference);
    assert_eq!(expected, (w(30), TUPLES, TUPLES * (TUPLES - 1) / 2));

    let dir = tempfile::tempdir().expect("tempdir");
    let storage = fs(dir.path());
    match run(&storage, BASE, &[Fault::error("summer", 17)]) {
        Err(RunError::OperatorFailed { operator, window, .. }) => {
            assert_eq!((operator.as_str(), window), ("summer", Some(w(17))));
        }
        other => panic!("expected the first run to fail, got {other:?}"),
    }
    // The restart gets another base from its config; the job keeps its own.
    let report = run(&fs(dir.path()), BASE + 1000, &[]).expect("resumed run");
    assert_eq!(report.resumed_from.len(), 3, "{report:?}");
    for (name, window) in &report.resumed_from {
        assert_eq!(window.base_seconds(), BASE, "{name}");
        assert!(window.sequence() < 17, "{name} resumed from {window}");
    }
    assert_eq!(final_summer(&storage), expected);
    assert_eq!(report.committed, Some(w(30)));
}

#[test]
fn a_corrupt_newest_checkpoint_is_skipped_for_an_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = fs(dir.path());
    assert!(run(&storage, BASE, &[Fault::error("sink", 20)]).is_err());
    let newest = *storage
        .windows("summer")
        .expect("windows")
        .last()
        .expect("a checkpoint");
    let path = dir.path().join("summer").join(format!("{:016x}", newest.as_u64()));
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 6;
    bytes[last] ^= 0x20;
    std::fs::write(&path, bytes).expect("write");

    let report = run(&fs(dir.path()), BASE, &[]).expect("resumed run");
    let resumed = report
        .resumed_from
        .iter()
        .find(|(name, _)| name == "summer")
        .map(|(_, w)| *w)
        .expect("summer resumed");
    assert!(resumed < newest, "resumed from {resumed}, the corrupt one is {newest}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("summer") && n.contains("checksum")),
        "{:?}",
        report.notes
    );
    assert_eq!(final_summer(&storage), (w(30), TUPLES, TUPLES * (TUPLES - 1) / 2));
}

#[test]
fn a_finished_job_run_again_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = fs(dir.path());
    run(&storage, BASE, &[]).expect("first run");
    let before = final_summer(&storage);
    let report = run(&fs(dir.path()), BASE, &[]).expect("second run");
    assert!(!report.resumed_from.is_empty());
    let after = final_summer(&storage);
    assert_eq!((after.1, after.2), (before.1, before.2), "no tuple processed twice");
}
