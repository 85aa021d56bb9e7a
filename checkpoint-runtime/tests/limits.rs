//! Names and limits: operator names that would collide or overflow a file
//! name on some file system, window sequences near 2^32, faults for
//! operators that do not exist, counters across recoveries, and messages
//! free of internal `Debug` output.

mod common;

use std::sync::Arc;

use checkpoint_core::{FsStorageAgent, StorageAgent, WindowId};
use checkpoint_runtime::io::WindowDataManager;
use checkpoint_runtime::{Config, Dag, DagError, MAX_PHYSICAL_NAME_LEN, Runtime, WindowMode};
use common::{Collect, Counting, Summer, with_watchdog};

const BASE: u32 = 0x6553_f100;

fn errors_of(dag: &Dag) -> Vec<DagError> {
    dag.validate().err().unwrap_or_default()
}

#[test]
fn names_that_differ_only_by_case_are_rejected_naming_both() {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1, 1));
    let upper = dag.operator("Count", Summer::default());
    let lower = dag.operator("count", Summer::default());
    dag.connect(&source, &upper).connect(&source, &lower);
    let errors = errors_of(&dag);
    assert_eq!(
        errors,
        [DagError::NamesDifferOnlyInCase {
            first: "Count".to_owned(),
            second: "count".to_owned(),
        }]
    );
    let message = errors[0].to_string();
    assert!(
        message.contains("\"Count\"") && message.contains("\"count\""),
        "{message}"
    );
    assert!(message.contains("case-insensitive"), "{message}");
}

#[test]
fn a_partitioned_name_differing_only_by_case_is_rejected() {
    // `COUNT#1` and `count#1` would share a directory on macOS.
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1, 1));
    let parts = dag.operator_partitioned("count", 2, |_| Collect::default());
    let other = dag.operator_partitioned("COUNT", 2, |_| Collect::default());
    dag.connect_by_key(&source, &parts, |t| t.value)
        .connect_by_key(&source, &other, |t| t.value);
    assert!(
        errors_of(&dag).contains(&DagError::NamesDifferOnlyInCase {
            first: "count".to_owned(),
            second: "COUNT".to_owned(),
        }),
        "{:?}",
        errors_of(&dag)
    );
    // Case folding beyond ASCII: `ß` upper-cases to `SS`.
    let mut dag = Dag::new();
    let a = dag.input("straße", Counting::new(1, 1));
    let b = dag.operator("STRASSE", Collect::default());
    dag.connect(&a, &b);
    assert!(matches!(&errors_of(&dag)[..], [DagError::NamesDifferOnlyInCase { .. }]));
}

#[test]
fn names_up_to_the_limit_are_accepted_and_longer_ones_rejected_with_the_limit() {
    assert_eq!(MAX_PHYSICAL_NAME_LEN, 255 - "#window-data".len());
    let dag_with = |name: &str, partitions: usize| {
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(1, 1));
        let op = dag.operator_partitioned(name, partitions, |_| Collect::default());
        dag.connect_by_key(&source, &op, |t| t.value);
        errors_of(&dag)
    };
    assert_eq!(dag_with(&"a".repeat(MAX_PHYSICAL_NAME_LEN), 1), []);
    // `#9` takes two bytes, `#10` three.
    assert_eq!(dag_with(&"a".repeat(MAX_PHYSICAL_NAME_LEN - 2), 10), []);
    for (len, partitions) in [(MAX_PHYSICAL_NAME_LEN + 1, 1), (MAX_PHYSICAL_NAME_LEN - 2, 11)] {
        let errors = dag_with(&"a".repeat(len), partitions);
        let [DagError::InvalidName { reason, .. }] = &errors[..] else {
            panic!("{len} bytes, {partitions} partitions: {errors:?}");
        };
        assert!(reason.contains("at most 243 bytes"), "{reason}");
        assert!(reason.contains("244 bytes long"), "{reason}");
    }
}

#[test]
fn every_file_name_derived_from_the_longest_name_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let name = "n".repeat(MAX_PHYSICAL_NAME_LEN);
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data_storage = Arc::new(FsStorageAgent::new(data_dir.path()).expect("storage"));
    let data = WindowDataManager::new(data_storage, &name);
    data.save(WindowId::new(BASE, 1), &vec![1u64, 2])
        .expect("window data of a 243-byte name");
    assert_eq!(
        data.load::<Vec<u64>>(WindowId::new(BASE, 1)).expect("load"),
        Some(vec![1, 2])
    );
    let spill = tempfile::tempdir().expect("spill dir");
    // The input's replay buffer spills every window (cap 0); its spill
    // files are named after it too.
    let mut dag = Dag::new();
    let source = dag.input(&name, Counting::new(50, 5));
    let sink = dag.operator("sink", Summer::default());
    dag.connect(&source, &sink).default_checkpoint_window_count(1);
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(5))
        .window_base(BASE)
        .replay_memory_cap(0)
        .spill_dir(spill.path())
        .restart_limit(0);
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("a 243-byte name runs");
    assert_eq!(report.operator(&name).map(|o| o.tuples_out), Some(50));
    assert_eq!(report.operator("sink").map(|o| o.tuples_in), Some(50));
}
