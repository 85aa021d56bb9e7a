//! Names and limits: operator names that would collide or overflow a file
//! name on some file system, window sequences near 2^32, faults for
//! operators that do not exist, counters across recoveries, and messages
//! free of internal `Debug` output.

mod common;

use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, FsStorageAgent, MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
use checkpoint_runtime::io::WindowDataManager;
use checkpoint_runtime::{
    Config, Dag, DagError, Emit, Fault, FaultPoint, InputOperator, MAX_PHYSICAL_NAME_LEN, OperatorResult, Output,
    Progress, RunError, Runtime, StopHandle, WindowMode, WindowStepper,
};
use common::{Collect, Counting, Summer, Tagged, with_watchdog};

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

/// Replaces every checkpoint of `name` with one of `state` at `window`: how
/// these tests put a job where it would otherwise take years to get.
fn place<T: Checkpoint>(storage: &dyn StorageAgent, name: &str, window: WindowId, state: &T) {
    for old in storage.windows(name).expect("windows") {
        storage.delete(name, old).expect("delete");
    }
    let bytes = Snapshot::encode(state, SnapshotMeta::new(name, window)).expect("encode");
    storage.save(name, window, &bytes).expect("save");
}

/// `source -> sink`, one tuple per window.
fn chain(source: Counting) -> Dag {
    let mut dag = Dag::new();
    let source = dag.input("source", source);
    let sink = dag.operator("sink", Summer::default());
    dag.connect(&source, &sink).default_checkpoint_window_count(1);
    dag
}

fn tuple_config(storage: &Arc<dyn StorageAgent>) -> Config {
    Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(1))
        .window_base(BASE)
}

/// Storage holding the finished job `chain` (its manifest), then its two
/// operators placed at `window` with 10 tuples still to emit.
fn chain_placed_at(window: WindowId) -> Arc<dyn StorageAgent> {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let config = tuple_config(&storage);
    with_watchdog(move || Runtime::new(config).run(chain(Counting::new(0, 1)))).expect("the first run");
    place(&*storage, "source", window, &Counting::new(10, 1));
    place(&*storage, "sink", window, &Summer::default());
    storage
}

#[test]
fn an_input_at_the_last_window_sequence_stops_the_job_with_a_clear_error() {
    let storage = chain_placed_at(WindowId::new(BASE, u32::MAX - 2));
    let config = tuple_config(&storage);
    let result = with_watchdog(move || Runtime::new(config).run(chain(Counting::new(10, 1))));
    let last = WindowId::new(BASE, u32::MAX);
    match result {
        Err(RunError::WindowSequenceExhausted { operator, last: at }) => {
            assert_eq!((operator.as_str(), at), ("source", last));
        }
        other => panic!("expected WindowSequenceExhausted, got {other:?}"),
    }
    // The input stopped before ending the last window, so no checkpoint
    // sits where a restart could not go on from.
    let newest = storage.windows("source").expect("windows").last().copied();
    assert!(newest.is_some_and(|w| w < last), "{newest:?}");
}

#[test]
fn a_restart_from_the_last_window_id_is_an_error_not_a_panic() {
    let last = WindowId::new(BASE, u32::MAX);
    let storage = chain_placed_at(last);
    let config = tuple_config(&storage);
    let result = with_watchdog(move || Runtime::new(config).run(chain(Counting::new(10, 1))));
    match result {
        Err(e @ RunError::WindowSequenceExhausted { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("\"source\" cannot begin a window after 0x6553f100ffffffff"),
                "{message}"
            );
            assert!(message.contains("new storage"), "{message}");
        }
        other => panic!("expected WindowSequenceExhausted, got {other:?}"),
    }
}

/// Returns `Idle` on its first call in every incarnation, then emits
/// `next..end`, one per call.
#[derive(Checkpoint)]
struct IdleFirst {
    next: u64,
    end: u64,
    #[checkpoint(transient)]
    idled: bool,
    #[checkpoint(transient)]
    window: Option<WindowId>,
}

impl IdleFirst {
    fn new(end: u64) -> Self {
        IdleFirst {
            next: 0,
            end,
            idled: false,
            window: None,
        }
    }
}

impl InputOperator for IdleFirst {
    type Output = Tagged;
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        Ok(())
    }
    fn emit_tuples(&mut self, out: Output<'_, Tagged>) -> OperatorResult<Emit> {
        if !std::mem::replace(&mut self.idled, true) {
            return Ok(Emit::Idle);
        }
        if self.next == self.end {
            return Ok(Emit::Done);
        }
        let window = self.window.ok_or("outside a window")?;
        out.emit(Tagged {
            window,
            value: self.next,
        });
        self.next += 1;
        Ok(Emit::Continue)
    }
}

fn two_chains(fast: IdleFirst, slow: IdleFirst) -> Dag {
    let mut dag = Dag::new();
    let fast = dag.input("fast", fast);
    let slow = dag.input("slow", slow);
    let sink_a = dag.operator("sink_a", Summer::default());
    let sink_b = dag.operator("sink_b", Summer::default());
    dag.connect(&fast, &sink_a)
        .connect(&slow, &sink_b)
        .default_checkpoint_window_count(1);
    dag
}

#[test]
fn an_idle_input_restored_behind_the_others_catches_up() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let config = || {
        Config::default()
            .shared_storage(Arc::clone(&storage))
            .window_mode(WindowMode::Stepped(WindowStepper::new()))
            .window_base(BASE)
            .restart_limit(2)
    };
    let first = config();
    with_watchdog(move || Runtime::new(first).run(two_chains(IdleFirst::new(0), IdleFirst::new(0))))
        .expect("the first run");
    // `slow` restarts at window 6, the run's first window is 11.
    place(&*storage, "fast", WindowId::new(BASE, 10), &IdleFirst::new(3));
    place(&*storage, "sink_a", WindowId::new(BASE, 10), &Summer::default());
    place(&*storage, "slow", WindowId::new(BASE, 5), &IdleFirst::new(4));
    place(&*storage, "sink_b", WindowId::new(BASE, 5), &Summer::default());
    let second = config();
    let report = with_watchdog(move || Runtime::new(second).run(two_chains(IdleFirst::new(0), IdleFirst::new(0))))
        .expect("an idle input behind the others runs");
    assert!(report.recoveries.is_empty(), "{:?}", report.recoveries);
    let last = |name: &str| {
        let window = *storage.windows(name).expect("windows").last().expect("a checkpoint");
        let (_, state) = Snapshot::decode::<Summer>(&storage.load(name, window).expect("load")).expect("decode");
        (window, state.count, state.sum, state.misaligned)
    };
    // `slow` cut windows 6..=10 at once and emitted everything in 11.
    assert_eq!(last("sink_b"), (WindowId::new(BASE, 11), 4, 6, 0));
    assert_eq!(last("sink_a"), (WindowId::new(BASE, 11), 3, 3, 0));
}

#[test]
fn huge_application_windows_do_not_overflow_the_stop_alignment() {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(3, 1));
    // Their least common multiple is past 2^64.
    for (name, count) in [("a", u32::MAX), ("b", u32::MAX - 1), ("c", u32::MAX - 4)] {
        let op = dag.operator(name, Summer::default());
        dag.connect(&source, &op)
            .application_window_count(&op, count)
            .checkpoint_window_count(&op, count);
    }
    let config = Config::default().window_mode(WindowMode::Tuples(1));
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("runs");
    for name in ["a", "b", "c"] {
        assert_eq!(report.operator(name).map(|o| (o.tuples_in, o.windows)), Some((3, 3)));
    }
}

#[test]
fn a_fault_for_an_operator_the_dag_does_not_have_is_an_error() {
    let run = |fault: Fault| {
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(20, 1));
        let count = dag.operator_partitioned("count", 2, |_| Summer::default());
        dag.connect_by_key(&source, &count, |t| t.value);
        let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
        let config = tuple_config(&storage).inject(fault);
        with_watchdog(move || Runtime::new(config).run(dag))
    };
    for typo in ["count", "cuont#1", "count#2"] {
        match run(Fault::panic(typo, 3)) {
            Err(RunError::Config { detail }) => {
                assert!(detail.contains(&format!("{typo:?}")), "{detail}");
                assert!(detail.contains("\"count#0\", \"count#1\""), "{detail}");
            }
            other => panic!("{typo}: expected a configuration error, got {other:?}"),
        }
    }
    let report = run(Fault::panic("count#1", 3)).expect("a fault for a partition that exists");
    assert_eq!(report.recoveries.len(), 1);
    assert_eq!(report.recoveries[0].operator, "count#1");
}

#[test]
fn tuple_counts_cover_the_whole_run_after_a_recovery() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(60, 10));
    let middle = dag.operator("middle", Summer::default());
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &middle)
        .connect(&middle, &sink)
        .default_checkpoint_window_count(1);
    // Windows of 10 tuples; `middle` completes windows 1 and 2 (20 tuples)
    // and fails as window 3 begins.
    let config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .async_checkpoints(false)
        .inject(Fault::panic("middle", 3));
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("recovers");
    let [recovery] = &report.recoveries[..] else {
        panic!("{:?}", report.recoveries);
    };
    let restored = recovery
        .restored
        .iter()
        .find(|(name, _)| name == "middle")
        .map(|(_, w)| u64::from(w.sequence()))
        .expect("middle restored");
    // The second incarnation redoes every window after its checkpoint.
    let expected = 20 + 10 * (6 - restored);
    let middle = report.operator("middle").expect("middle");
    assert_eq!((middle.tuples_in, middle.tuples_out), (expected, expected));
    assert_eq!(middle.restarts, 1);
    assert_eq!(report.operator("source").map(|o| o.tuples_out), Some(60));
}

static PROBE: Mutex<Option<Progress>> = Mutex::new(None);
static PROBED: Mutex<Vec<Option<WindowId>>> = Mutex::new(Vec::new());

/// Emits `next..end`, one per call; on its first call in an incarnation,
/// records the committed window the job's progress view shows; stops the
/// job after `stop_at` tuples if given a stop handle.
#[derive(Checkpoint)]
struct Probe {
    next: u64,
    end: u64,
    stop_at: u64,
    #[checkpoint(transient)]
    stop: Option<StopHandle>,
    #[checkpoint(transient)]
    probed: bool,
    #[checkpoint(transient)]
    window: Option<WindowId>,
}

impl InputOperator for Probe {
    type Output = Tagged;
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        Ok(())
    }
    fn emit_tuples(&mut self, out: Output<'_, Tagged>) -> OperatorResult<Emit> {
        if !std::mem::replace(&mut self.probed, true)
            && let Some(progress) = PROBE.lock().map_err(|_| "lock")?.as_ref()
        {
            let committed = progress.snapshot().and_then(|s| s.committed);
            PROBED.lock().map_err(|_| "lock")?.push(committed);
        }
        if self.next == self.end {
            return Ok(Emit::Done);
        }
        let window = self.window.ok_or("outside a window")?;
        out.emit(Tagged {
            window,
            value: self.next,
        });
        self.next += 1;
        if let Some(stop) = self.stop.as_ref().filter(|_| self.next == self.stop_at) {
            stop.stop();
        }
        Ok(Emit::Continue)
    }
}

#[test]
fn after_a_resume_progress_shows_the_stored_committed_window_from_the_start() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let dag = |stop: Option<StopHandle>| {
        let mut dag = Dag::new();
        let probe = Probe {
            next: 0,
            end: 8,
            stop_at: 5,
            stop,
            probed: false,
            window: None,
        };
        let source = dag.input("source", probe);
        let sink = dag.operator("sink", Summer::default());
        dag.connect(&source, &sink).default_checkpoint_window_count(1);
        dag
    };
    let runtime = Runtime::new(tuple_config(&storage));
    let first = dag(Some(runtime.stop_handle()));
    let stopped = with_watchdog(move || runtime.run(first)).expect("the stopped run");
    let committed = stopped.committed;
    assert!(committed.is_some_and(|w| w.sequence() >= 1), "{committed:?}");

    let runtime = Runtime::new(tuple_config(&storage));
    *PROBE.lock().expect("lock") = Some(runtime.progress());
    let second = dag(None);
    let resumed = with_watchdog(move || runtime.run(second)).expect("the resumed run");
    assert!(!resumed.resumed_from.is_empty());
    // Read on the input's first call, before the resumed run committed
    // anything of its own.
    assert_eq!(*PROBED.lock().expect("lock"), [committed]);
}

#[test]
fn messages_show_no_internal_debug_output() {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(20, 1));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer);
    let config = Config::default()
        .window_mode(WindowMode::Tuples(5))
        .window_base(BASE)
        .inject(Fault::error("summer", 2).at(FaultPoint::Tuple(3)));
    let error = with_watchdog(move || Runtime::new(config).run(dag)).expect_err("no storage, no recovery");
    assert_eq!(
        error.to_string(),
        "operator \"summer\" failed at window 0x6553f10000000002: injected fault at window 0x6553f10000000002, \
         after tuple 3"
    );

    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1, 1));
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &sink);
    let config = Config::default().window_mode(WindowMode::Time(std::time::Duration::from_micros(500)));
    let error = Runtime::new(config).run(dag).expect_err("too short");
    assert_eq!(
        error.to_string(),
        "invalid configuration: a streaming window of 500 µs is too short: use at least 1 ms"
    );
}
