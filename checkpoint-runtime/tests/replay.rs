//! Replay buffers on disk: each job spills into a directory of its own,
//! removed when the job ends; one a killed job left behind is swept by the
//! next job on the same base; two jobs in one process with the same
//! operator names never read each other's spilled windows.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use checkpoint_core::{MemoryStorageAgent, Snapshot, StorageAgent, lock_directory};
use checkpoint_runtime::{Config, Dag, Fault, Runtime, WindowMode};
use common::{Counting, Summer, with_watchdog};

const BASE: u32 = 0x6553_f100;
const TUPLES: u64 = 200;

/// `source -> summer`, spilling every window (cap 0) under `spill`, with
/// `faults`; returns the summer's final (count, sum).
fn spilling_job(spill: &Path, faults: &[Fault]) -> (u64, u64) {
    let storage = MemoryStorageAgent::new();
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 3));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer).default_checkpoint_window_count(4);
    let mut config = Config::default()
        .storage(storage.clone())
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .batch_size(4)
        .replay_memory_cap(0)
        .spill_dir(spill);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("the job");
    assert_eq!(report.recoveries.len(), faults.len(), "{:?}", report.recoveries);
    let window = *storage
        .windows("summer")
        .expect("windows")
        .last()
        .expect("a checkpoint");
    let (_, summer) = Snapshot::decode::<Summer>(&storage.load("summer", window).expect("load")).expect("decode");
    (summer.count, summer.sum)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_jobs_spill_directory_goes_with_it_and_a_killed_jobs_is_swept() {
    let spill = tempfile::tempdir().expect("tempdir");
    // What a killed job left: its directory, its lock free.
    let stale = spill.path().join("job-4000000-0-0");
    fs::create_dir(&stale).expect("mkdir");
    fs::write(stale.join(".lock"), b"").expect("lock file");
    fs::write(stale.join("4000000-0-source-6553f10000000001.spill"), b"old").expect("spill file");
    // A job still running elsewhere: its directory is locked.
    let running = spill.path().join("job-4000001-0-0");
    fs::create_dir(&running).expect("mkdir");
    fs::write(running.join("4000001-0-source-6553f10000000001.spill"), b"in use").expect("spill file");
    let held = lock_directory(&running, "spill directory").expect("lock");

    // A recovery replays spilled windows, so they were really written.
    let result = spilling_job(spill.path(), &[Fault::panic("summer", 9)]);
    assert_eq!(result, (TUPLES, TUPLES * (TUPLES - 1) / 2));
    assert_eq!(names(spill.path()), ["job-4000001-0-0"], "swept and cleaned up");
    assert_eq!(
        fs::read(running.join("4000001-0-source-6553f10000000001.spill")).expect("left alone"),
        b"in use"
    );
    drop(held);
}

#[test]
fn two_jobs_in_one_process_with_the_same_names_never_share_spilled_windows() {
    let spill = tempfile::tempdir().expect("tempdir");
    let expected = (TUPLES, TUPLES * (TUPLES - 1) / 2);
    for round in 0..5 {
        let jobs: Vec<_> = [7u32, 11]
            .into_iter()
            .map(|fail_at| {
                let spill = spill.path().to_path_buf();
                std::thread::spawn(move || spilling_job(&spill, &[Fault::panic("summer", fail_at)]))
            })
            .collect();
        for job in jobs {
            assert_eq!(job.join().expect("job thread"), expected, "round {round}");
        }
        assert!(
            names(spill.path()).is_empty(),
            "round {round}: {:?}",
            names(spill.path())
        );
    }
}

#[test]
fn the_global_scope_keeps_no_replay_data_and_no_spill_directory() {
    let spill = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 3));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer).default_checkpoint_window_count(4);
    let config = Config::default()
        .shared_storage(storage.clone())
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .replay_memory_cap(0)
        .spill_dir(spill.path())
        .recovery_scope(checkpoint_runtime::RecoveryScope::Global)
        .inject(Fault::panic("summer", 9));
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("the job");
    assert_eq!(report.recoveries.len(), 1);
    assert_eq!(report.recoveries[0].restored.len(), 2, "every operator goes back");
    assert!(
        report.operators.iter().all(|o| o.replay_bytes == 0),
        "{:?}",
        report.operators
    );
    assert!(names(spill.path()).is_empty(), "{:?}", names(spill.path()));
    let window = *storage
        .windows("summer")
        .expect("windows")
        .last()
        .expect("a checkpoint");
    let (_, summer) = Snapshot::decode::<Summer>(&storage.load("summer", window).expect("load")).expect("decode");
    assert_eq!((summer.count, summer.sum), (TUPLES, TUPLES * (TUPLES - 1) / 2));
}
