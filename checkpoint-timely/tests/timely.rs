//! A keyed job on timely workers in one process: the threaded runtime's
//! result for 1, 2 and 3 workers; checkpoints at the same windows, under
//! the same names, that decode as the operators' states; the committed
//! window told to every operator; a user's error back with its type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, FsStorageAgent, KeyedMap, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, RunError, Runtime, WindowMode,
};
use checkpoint_timely::{TimelyError, TimelyJob};

const TUPLES: u64 = 3_000;
const KEYS: u64 = 53;
const WINDOW: u64 = 100;
const BASE: u32 = 7;

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        // Ten at a time: every window of 100 ends exactly at a call.
        let end = (self.next + 10).min(TUPLES);
        for n in self.next..end {
            out.emit(n);
        }
        self.next = end;
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

#[derive(Debug)]
struct Unlucky(u64);

impl std::fmt::Display for Unlucky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unlucky number {}", self.0)
    }
}

impl std::error::Error for Unlucky {}

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

/// What the sink saw, shared with the test.
#[derive(Default)]
struct Seen {
    newest: BTreeMap<u64, u64>,
    windows: Vec<WindowId>,
    committed: Vec<WindowId>,
}

#[derive(Checkpoint)]
struct Newest {
    tuples: u64,
    #[checkpoint(config)]
    seen: Arc<Mutex<Seen>>,
    #[checkpoint(config)]
    fail_at: Option<u64>,
}

impl Operator for Newest {
    type Input = (u64, u64);
    type Output = ();
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.seen.lock().expect("lock").windows.push(window);
        Ok(())
    }
    fn process(&mut self, (key, count): (u64, u64), _out: Output<'_, ()>) -> OperatorResult {
        self.tuples += 1;
        if self.fail_at == Some(self.tuples) {
            return Err(Box::new(Unlucky(self.tuples)));
        }
        let mut seen = self.seen.lock().expect("lock");
        let newest = seen.newest.entry(key).or_insert(0);
        *newest = (*newest).max(count);
        Ok(())
    }
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.seen.lock().expect("lock").committed.push(window);
        Ok(())
    }
}

fn dag(seen: &Arc<Mutex<Seen>>, fail_at: Option<u64>) -> Dag {
    dag_checkpointing(seen, fail_at, (5, 5))
}

/// The job, the input and the keyed count checkpointing every `every.0`
/// windows, the sink every `every.1`.
fn dag_checkpointing(seen: &Arc<Mutex<Seen>>, fail_at: Option<u64>, every: (u32, u32)) -> Dag {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers { next: 0 });
    let count = dag.operator_partitioned("count", 2, |_| Count::default());
    let newest = dag.operator(
        "newest",
        Newest {
            tuples: 0,
            seen: Arc::clone(seen),
            fail_at,
        },
    );
    dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
        .connect(&count, &newest);
    dag.default_checkpoint_window_count(every.0);
    dag.checkpoint_window_count(&newest, every.1);
    dag
}

fn expected() -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for n in 0..TUPLES {
        *counts.entry(n % KEYS).or_insert(0) += 1;
    }
    counts
}

#[test]
fn timely_workers_compute_what_the_threaded_runtime_does() {
    let threaded = Arc::new(Mutex::new(Seen::default()));
    Runtime::new(Config::default().window_mode(WindowMode::Tuples(WINDOW)))
        .run(dag(&threaded, None))
        .expect("the threaded run");
    assert_eq!(threaded.lock().expect("lock").newest, expected());

    for workers in [1, 2, 3] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        let report = TimelyJob::new(workers)
            .window_tuples(WINDOW)
            .window_base(BASE)
            .run(move || dag(&shared, None))
            .expect("the timely run");
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.newest, expected(), "{workers} workers");
        assert_eq!(report.windows, TUPLES / WINDOW, "{workers} workers");
        // Every window once, in order, empty ones included.
        let windows: Vec<WindowId> = (1..=(TUPLES / WINDOW) as u32).map(|s| WindowId::new(BASE, s)).collect();
        assert_eq!(seen.windows[..windows.len()], windows[..], "{workers} workers");
    }
}

#[test]
fn checkpoints_are_the_operators_states_and_the_committed_window_reaches_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    let report = TimelyJob::new(3)
        .window_tuples(WINDOW)
        .window_base(BASE)
        .storage(Arc::clone(&storage))
        .windows_ahead(2)
        .run(move || dag(&shared, None))
        .expect("the timely run");

    // Windows 1 to 30 (0 is the one before the first, as in the threaded
    // runtime), a checkpoint every 5: windows 4, 9, ..., 29, and the final
    // one at 30. Once 30 is committed, a worker keeps what a restart could
    // still resume from: 30, and 29 if, when it recorded 30, another worker
    // had not yet.
    let checkpoints: Vec<WindowId> = (0..6)
        .map(|k| WindowId::new(BASE, 5 * k + 4))
        .chain([WindowId::new(BASE, 30)])
        .collect();
    assert_eq!(report.committed, checkpoints.last().copied());
    for name in ["numbers", "count#0", "count#1", "count#2", "newest"] {
        let kept = storage.windows(name).expect("windows");
        assert_eq!(kept.last(), checkpoints.last(), "{name}: {kept:?}");
        assert!(kept.iter().all(|w| checkpoints[5..].contains(w)), "{name}: {kept:?}");
    }
    for worker in 0..3 {
        let record = format!("timely-worker#{worker}");
        let kept = storage.windows(&record).expect("windows");
        assert_eq!(kept.last(), checkpoints.last(), "{record}: {kept:?}");
        assert!(kept.iter().all(|w| checkpoints[5..].contains(w)), "{record}: {kept:?}");
    }
    // The partitions' counts together are the counts at that window.
    let at = WindowId::new(BASE, 30);
    let mut merged = BTreeMap::new();
    for p in 0..3 {
        let name = format!("count#{p}");
        let bytes = storage.load(&name, at).expect("load");
        // Keyed groups are saved in chunks, as the threaded runtime saves
        // them.
        let (_, count) =
            Snapshot::decode_with_chunks::<Count>(&bytes, &name, None, |op, id| storage.load_chunk(op, id))
                .expect("decode");
        for (key, n) in count.counts.iter() {
            assert!(merged.insert(*key, *n).is_none(), "key {key} in two partitions");
        }
    }
    let mut expected_at = BTreeMap::new();
    for n in 0..30 * WINDOW {
        *expected_at.entry(n % KEYS).or_insert(0) += 1;
    }
    assert_eq!(merged, expected_at);
    let (_, numbers) = Snapshot::decode::<Numbers>(&storage.load("numbers", at).expect("load")).expect("decode");
    assert_eq!(numbers.next, 30 * WINDOW);

    // The sink heard of committed windows in order, ending with the last.
    let committed = seen.lock().expect("lock").committed.clone();
    assert!(committed.windows(2).all(|w| w[0] < w[1]), "{committed:?}");
    assert_eq!(committed.last(), checkpoints.last());
    assert!(committed.iter().all(|w| checkpoints.contains(w)), "{committed:?}");
}

#[test]
fn an_operators_error_ends_the_run_with_its_type() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    let error = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .run(move || dag(&shared, Some(1_234)))
        .expect_err("the sink fails");
    let TimelyError::Run(RunError::OperatorFailed { operator, source, .. }) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(operator, "newest");
    let unlucky = source
        .as_ref()
        .and_then(|s| s.downcast_ref::<Unlucky>())
        .expect("the user's error type");
    assert_eq!(unlucky.0, 1_234);
}

/// A panic in an operator on one worker ends the run with an error on
/// every worker, not a hang.
#[test]
fn a_panicking_operator_fails_the_run_without_a_hang() {
    #[derive(Default, Checkpoint)]
    #[checkpoint(stateless)]
    struct Boom;
    impl Operator for Boom {
        type Input = u64;
        type Output = u64;
        fn process(&mut self, n: u64, out: Output<'_, u64>) -> OperatorResult {
            assert!(n != 777, "boom at {n}");
            out.emit(n);
            Ok(())
        }
    }
    let error = TimelyJob::new(3)
        .window_tuples(WINDOW)
        .run(|| {
            let mut dag = Dag::new();
            let numbers = dag.input("numbers", Numbers { next: 0 });
            let boom = dag.operator_partitioned("boom", 3, |_| Boom);
            let count = dag.operator_partitioned("count", 3, |_| Count::default());
            dag.connect_by_key(&numbers, &boom, |n: &u64| *n)
                .connect_by_key(&boom, &count, |n: &u64| *n);
            dag
        })
        .expect_err("an operator panics");
    let TimelyError::Run(RunError::OperatorFailed { operator, cause, .. }) = &error else {
        panic!("{error:?}")
    };
    assert!(operator.starts_with("boom#"), "{operator}");
    assert!(cause.contains("boom at 777"), "{cause}");
}

/// A run that failed resumes, on the same storage, after the committed
/// window: every operator from its checkpoint there, the input replaying
/// from its position; the result is the failure-free one.
#[test]
fn a_failed_run_resumes_after_the_committed_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let job = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .window_base(BASE)
        .storage(Arc::clone(&storage))
        .windows_ahead(2);

    // The sink fails at its 1,234th tuple, in window 13: windows 4 and 9
    // were checkpointed, and at most two windows ran ahead of 9.
    let first = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&first);
    job.run(move || dag(&shared, Some(1_234))).expect_err("the sink fails");
    let committed = first.lock().expect("lock").committed.clone();
    assert_eq!(committed.last(), Some(&WindowId::new(BASE, 9)), "{committed:?}");

    let second = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&second);
    let report = job.run(move || dag(&shared, None)).expect("the resumed run");
    assert_eq!(report.committed, Some(WindowId::new(BASE, 30)));
    let second = second.lock().expect("lock");
    assert_eq!(second.newest, expected());
    // It began after window 9.
    assert_eq!(second.windows.first(), Some(&WindowId::new(BASE, 10)));
    let (_, numbers) =
        Snapshot::decode::<Numbers>(&storage.load("numbers", WindowId::new(BASE, 30)).expect("load")).expect("decode");
    assert_eq!(numbers.next, TUPLES);
}

/// The exactly-once file sink publishes each window on `committed`: on
/// timely workers the published files are byte for byte the threaded
/// runtime's.
#[test]
fn an_exactly_once_sink_publishes_what_the_threaded_runtime_does() {
    use checkpoint_runtime::io::{ExactlyOnceFileSink, published_windows, read_output};

    #[derive(Default, Checkpoint)]
    struct Totals {
        #[checkpoint(keyed)]
        counts: KeyedMap<u64, u64>,
    }
    impl Operator for Totals {
        type Input = u64;
        type Output = String;
        fn process(&mut self, n: u64, out: Output<'_, String>) -> OperatorResult {
            let key = n % KEYS;
            let count = self.counts.entry(key).or_insert(0);
            *count += 1;
            // One line per key reaching a multiple of 10: the same lines
            // whatever the partition count.
            if (*count).is_multiple_of(10) {
                out.emit(format!("{key} {count}"));
            }
            Ok(())
        }
    }
    fn job(dir: &std::path::Path) -> Dag {
        let mut dag = Dag::new();
        let numbers = dag.input("numbers", Numbers { next: 0 });
        let totals = dag.operator_partitioned("totals", 2, |_| Totals::default());
        let sort = dag.operator("sort", checkpoint_runtime::io::SortWindow::<String>::new());
        let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(dir));
        dag.connect_by_key(&numbers, &totals, |n: &u64| *n % KEYS)
            .connect(&totals, &sort)
            .connect(&sort, &sink);
        dag.default_checkpoint_window_count(5);
        dag
    }

    let threaded_out = tempfile::tempdir().expect("tempdir");
    let threaded_store = tempfile::tempdir().expect("tempdir");
    Runtime::new(
        Config::default()
            .storage(FsStorageAgent::new(threaded_store.path()).expect("storage"))
            .window_mode(WindowMode::Tuples(WINDOW))
            .window_base(BASE),
    )
    .run(job(threaded_out.path()))
    .expect("the threaded run");
    let expected = read_output(threaded_out.path()).expect("output");
    assert!(!expected.is_empty());

    for workers in [1, 3] {
        let out = tempfile::tempdir().expect("tempdir");
        let store = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(store.path()).expect("storage"));
        let path = out.path().to_owned();
        TimelyJob::new(workers)
            .window_tuples(WINDOW)
            .window_base(BASE)
            .storage(storage)
            .run(move || job(&path))
            .expect("the timely run");
        assert_eq!(
            published_windows(out.path()).expect("windows"),
            published_windows(threaded_out.path()).expect("windows"),
            "{workers} workers"
        );
        assert_eq!(read_output(out.path()).expect("output"), expected, "{workers} workers");
    }
}

/// Runs `f` on a thread of its own; a run that does not end in 60 s is a
/// hang, and fails the test instead of hanging it.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("watchdog: the run did not end in 60 s")
}

/// A checkpoint at every window: window 0 (before the first) is never
/// committed, and a failed run resumes.
#[test]
fn a_checkpoint_every_window_commits_only_saved_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let every_window = |seen: &Arc<Mutex<Seen>>, fail_at| {
        let mut dag = dag(seen, fail_at);
        dag.default_checkpoint_window_count(1);
        dag
    };
    let job = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .window_base(BASE)
        .storage(Arc::clone(&storage));
    let first = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&first);
    job.run(move || every_window(&shared, Some(1_234)))
        .expect_err("the sink fails");
    let committed = first.lock().expect("lock").committed.clone();
    assert!(!committed.is_empty());
    assert!(committed.iter().all(|w| w.sequence() >= 1), "{committed:?}");
    let second = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&second);
    job.run(move || every_window(&shared, None)).expect("the resumed run");
    assert_eq!(second.lock().expect("lock").newest, expected());
}

/// A job that ran to its end, run again on its storage, opens no window:
/// also when its last window is one where it commits anyway (every window,
/// with a checkpoint every window), whose record must still say the job
/// ended, or `end_of_stream` would run twice.
#[test]
fn a_complete_job_run_again_opens_no_window() {
    for every in [5, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
        let job = TimelyJob::new(2)
            .window_tuples(WINDOW)
            .window_base(BASE)
            .storage(Arc::clone(&storage));
        let first = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&first);
        let report = job
            .run(move || dag_checkpointing(&shared, None, (every, every)))
            .expect("the run");
        assert_eq!(report.committed, Some(WindowId::new(BASE, 30)), "every {every}");
        let again = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&again);
        let second = job
            .run(move || dag_checkpointing(&shared, None, (every, every)))
            .expect("the run again");
        assert_eq!(second.windows, 0, "every {every}");
        assert_eq!(second.committed, report.committed);
        let again = again.lock().expect("lock");
        assert!(again.windows.is_empty(), "every {every}: windows {:?}", again.windows);
        // The restored sink only hears that the last window is committed.
        assert_eq!(again.committed, vec![WindowId::new(BASE, 30)], "every {every}");
    }
}

/// Failures outside an operator's window work end the run, never hang it:
/// a sink whose `setup` fails (on worker 0 only) and a `committed` that
/// panics.
#[test]
fn failures_in_setup_and_committed_end_the_run() {
    #[derive(Checkpoint)]
    struct Picky {
        #[checkpoint(config)]
        panic_on_commit: bool,
    }
    impl Operator for Picky {
        type Input = (u64, u64);
        type Output = ();
        fn setup(&mut self, _ctx: &checkpoint_runtime::OperatorContext) -> OperatorResult {
            if self.panic_on_commit {
                Ok(())
            } else {
                Err(Box::new(Unlucky(0)))
            }
        }
        fn process(&mut self, _: (u64, u64), _out: Output<'_, ()>) -> OperatorResult {
            Ok(())
        }
        fn committed(&mut self, window: WindowId) -> OperatorResult {
            assert!(!self.panic_on_commit, "no commit please ({window})");
            Ok(())
        }
    }
    for panic_on_commit in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
        let result = within_a_minute(move || {
            TimelyJob::new(2)
                .window_tuples(WINDOW)
                .storage(storage)
                .run(move || {
                    let mut dag = Dag::new();
                    let numbers = dag.input("numbers", Numbers { next: 0 });
                    let count = dag.operator_partitioned("count", 2, |_| Count::default());
                    let picky = dag.operator("picky", Picky { panic_on_commit });
                    dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
                        .connect(&count, &picky);
                    dag.default_checkpoint_window_count(5);
                    dag
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let error = result.expect_err("the run fails");
        assert!(error.contains("picky"), "{error}");
        let expected = if panic_on_commit {
            "no commit please"
        } else {
            "unlucky number 0"
        };
        assert!(error.contains(expected), "{error}");
    }
}

/// An input that is idle at times keeps its windows open, as in the
/// threaded runtime: the same windows.
#[test]
fn an_idle_input_keeps_its_window_open() {
    #[derive(Checkpoint)]
    struct Hesitant {
        next: u64,
        idle: bool,
    }
    impl InputOperator for Hesitant {
        type Output = u64;
        fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
            self.idle = !self.idle;
            if self.idle {
                return Ok(Emit::Idle);
            }
            let end = (self.next + 10).min(TUPLES);
            for n in self.next..end {
                out.emit(n);
            }
            self.next = end;
            Ok(if self.next == TUPLES {
                Emit::Done
            } else {
                Emit::Continue
            })
        }
    }
    let build = |seen: &Arc<Mutex<Seen>>| {
        let mut dag = Dag::new();
        let input = dag.input("hesitant", Hesitant { next: 0, idle: false });
        let count = dag.operator_partitioned("count", 2, |_| Count::default());
        let newest = dag.operator(
            "newest",
            Newest {
                tuples: 0,
                seen: Arc::clone(seen),
                fail_at: None,
            },
        );
        dag.connect_by_key(&input, &count, |n: &u64| *n % KEYS)
            .connect(&count, &newest);
        dag
    };
    let threaded = Arc::new(Mutex::new(Seen::default()));
    Runtime::new(Config::default().window_mode(WindowMode::Tuples(WINDOW)))
        .run(build(&threaded))
        .expect("the threaded run");
    let timely = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&timely);
    let report = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .run(move || build(&shared))
        .expect("timely");
    assert_eq!(report.windows, TUPLES / WINDOW);
    assert_eq!(
        timely.lock().expect("lock").newest,
        threaded.lock().expect("lock").newest
    );
}

/// A second job on storage a running job holds is refused, and the first
/// one finishes unharmed.
#[test]
fn a_second_job_on_the_same_storage_is_refused() {
    #[derive(Checkpoint)]
    struct Slow {
        next: u64,
    }
    impl InputOperator for Slow {
        type Output = u64;
        fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
            std::thread::sleep(std::time::Duration::from_millis(1));
            out.emit(self.next);
            self.next += 1;
            Ok(if self.next == 600 { Emit::Done } else { Emit::Continue })
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let build = |seen: &Arc<Mutex<Seen>>| {
        let seen = Arc::clone(seen);
        move || {
            let mut dag = Dag::new();
            let slow = dag.input("slow", Slow { next: 0 });
            let count = dag.operator_partitioned("count", 2, |_| Count::default());
            let newest = dag.operator(
                "newest",
                Newest {
                    tuples: 0,
                    seen: Arc::clone(&seen),
                    fail_at: None,
                },
            );
            dag.connect_by_key(&slow, &count, |n: &u64| *n % KEYS)
                .connect(&count, &newest);
            dag.default_checkpoint_window_count(5);
            dag
        }
    };
    let job = TimelyJob::new(2).window_tuples(10).storage(Arc::clone(&storage));
    let first = {
        let (job, dag) = (job.clone(), build(&seen));
        std::thread::spawn(move || job.run(dag))
    };
    // Once the first job has opened a window, it holds the storage.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.lock().expect("lock").windows.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first job never began a window"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let other = Arc::new(Mutex::new(Seen::default()));
    let refused = job.run(build(&other)).expect_err("the storage is in use");
    assert!(other.lock().expect("lock").windows.is_empty(), "the second job ran");
    assert!(
        refused.to_string().to_lowercase().contains("lock") || refused.to_string().contains("in use"),
        "{refused}"
    );
    let report = first.join().expect("first job thread").expect("the first job");
    assert_eq!(report.windows, 60);
}

/// The names `storage` holds a checkpoint or a chunk of, records apart
/// (the file system agent lists a directory left empty).
fn stored_operators(storage: &dyn StorageAgent) -> Vec<String> {
    let mut names: Vec<String> = storage
        .operators()
        .expect("operators")
        .into_iter()
        .filter(|n| !n.starts_with("timely-worker#"))
        .filter(|n| !storage.windows(n).expect("windows").is_empty() || !storage.chunks(n).expect("chunks").is_empty())
        .collect();
    names.sort();
    names
}

/// A failed run on `before` workers resumed on `after`: each new partition
/// of the keyed count takes its key groups from the old partitions' chunks;
/// the result is the threaded runtime's, and once the new run has
/// committed, nothing of the old partitions (or of its workers' records)
/// is left.
fn rescaled(before: usize, after: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let job = |workers| {
        TimelyJob::new(workers)
            .window_tuples(WINDOW)
            .window_base(BASE)
            .storage(Arc::clone(&storage))
            .windows_ahead(2)
    };
    let first = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&first);
    within_a_minute({
        let job = job(before);
        move || job.run(move || dag(&shared, Some(1_234))).expect_err("the sink fails")
    });
    assert_eq!(
        first.lock().expect("lock").committed.last(),
        Some(&WindowId::new(BASE, 9))
    );
    let old_names: Vec<String> = (0..before).map(|p| format!("count#{p}")).collect();
    for name in &old_names {
        assert!(
            storage.load(name, WindowId::new(BASE, 9)).is_ok(),
            "{name}'s checkpoint at 9"
        );
    }

    let second = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&second);
    let report = within_a_minute({
        let job = job(after);
        move || job.run(move || dag(&shared, None)).expect("the rescaled run")
    });
    assert_eq!(report.workers, after);
    assert_eq!(report.committed, Some(WindowId::new(BASE, 30)));
    let second = second.lock().expect("lock");
    assert_eq!(second.newest, expected(), "{before} workers resumed on {after}");
    assert_eq!(second.windows.first(), Some(&WindowId::new(BASE, 10)));

    // The new partitions hold every key between them, each its own groups.
    let last = WindowId::new(BASE, 30);
    let mut keys = BTreeMap::new();
    for p in 0..after {
        let name = format!("count#{p}");
        let bytes = storage.load(&name, last).expect("the new partition's checkpoint");
        let (_, count) =
            Snapshot::decode_with_chunks::<Count>(&bytes, &name, None, |op, id| storage.load_chunk(op, id))
                .expect("decode");
        for (key, n) in count.counts.iter() {
            assert!(keys.insert(*key, *n).is_none(), "key {key} in two partitions");
        }
    }
    assert_eq!(keys, expected());
    let mut names: Vec<String> = (0..after).map(|p| format!("count#{p}")).collect();
    names.extend(["newest".to_owned(), "numbers".to_owned()]);
    names.sort();
    assert_eq!(stored_operators(&*storage), names, "only the new partitions are left");
    for name in &names {
        assert_eq!(
            storage.windows(name).expect("windows"),
            vec![last],
            "{name}: the old layout's checkpoints went"
        );
    }
    let records: Vec<String> = storage
        .operators()
        .expect("operators")
        .into_iter()
        .filter(|n| n.starts_with("timely-worker#") && !storage.windows(n).expect("windows").is_empty())
        .collect();
    assert_eq!(records.len(), after, "{records:?}");
}

#[test]
fn a_failed_run_resumes_on_more_workers() {
    rescaled(2, 3);
}

#[test]
fn a_failed_run_resumes_on_fewer_workers() {
    rescaled(3, 1);
}

/// A keyed partition with state outside keyed maps cannot be split: a
/// restart on another worker count is refused before it changes anything,
/// and the same count still resumes.
#[test]
fn a_state_that_cannot_be_split_refuses_another_worker_count() {
    #[derive(Default, Checkpoint)]
    struct Total {
        #[checkpoint(keyed)]
        counts: KeyedMap<u64, u64>,
        total: u64,
    }
    impl Operator for Total {
        type Input = u64;
        type Output = (u64, u64);
        fn process(&mut self, n: u64, out: Output<'_, (u64, u64)>) -> OperatorResult {
            self.total += 1;
            let count = self.counts.entry(n % KEYS).or_insert(0);
            *count += 1;
            out.emit((n % KEYS, *count));
            Ok(())
        }
    }
    let build = |seen: &Arc<Mutex<Seen>>, fail_at: Option<u64>| {
        let seen = Arc::clone(seen);
        move || {
            let mut dag = Dag::new();
            let numbers = dag.input("numbers", Numbers { next: 0 });
            let count = dag.operator_partitioned("count", 2, |_| Total::default());
            let newest = dag.operator(
                "newest",
                Newest {
                    tuples: 0,
                    seen: Arc::clone(&seen),
                    fail_at,
                },
            );
            dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
                .connect(&count, &newest);
            dag.default_checkpoint_window_count(5);
            dag
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let job = |workers| {
        TimelyJob::new(workers)
            .window_tuples(WINDOW)
            .window_base(BASE)
            .storage(Arc::clone(&storage))
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    job(2).run(build(&seen, Some(1_234))).expect_err("the sink fails");
    let refused = job(3)
        .run(build(&Arc::new(Mutex::new(Seen::default())), None))
        .expect_err("not rescalable");
    let text = format!("{refused} {:?}", std::error::Error::source(&refused));
    assert!(text.contains("keeps state outside"), "{text}");
    let seen = Arc::new(Mutex::new(Seen::default()));
    job(2).run(build(&seen, None)).expect("the same count resumes");
    assert_eq!(seen.lock().expect("lock").newest, expected());
}

/// Operators with their own checkpoint windows: each saves at its own, and
/// the committed window advances where all of them saved (the input and
/// the count every 2 windows, the sink every 4: windows 3, 7, 11...); a
/// failed run resumes there.
#[test]
fn operators_checkpoint_at_their_own_windows_and_commit_where_all_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let job = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .window_base(BASE)
        .storage(Arc::clone(&storage))
        .windows_ahead(2);
    let first = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&first);
    job.run(move || dag_checkpointing(&shared, Some(1_234), (2, 4)))
        .expect_err("the sink fails in window 13");
    let committed = first.lock().expect("lock").committed.clone();
    // 11 at most (the failure is in 13, a commit at 15 would be after it),
    // less if the commit was still on its way.
    let told = committed.last().copied().expect("a commit before the failure");
    assert!(told <= WindowId::new(BASE, 11), "{committed:?}");
    assert!(committed.iter().all(|w| (w.sequence() + 1) % 4 == 0), "{committed:?}");
    // The count closed window 13 (the sink failed in it after): saved
    // there, at its own window, where the sink has none.
    let count = storage.windows("count#0").expect("windows");
    assert!(count.contains(&WindowId::new(BASE, 13)), "{count:?}");
    assert!(count.iter().all(|w| (w.sequence() + 1) % 2 == 0), "{count:?}");
    let newest = storage.windows("newest").expect("windows");
    assert!(newest.iter().all(|w| (w.sequence() + 1) % 4 == 0), "{newest:?}");
    assert!(newest.contains(&WindowId::new(BASE, 11)), "{newest:?}");

    let second = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&second);
    let report = job
        .run(move || dag_checkpointing(&shared, None, (2, 4)))
        .expect("the resumed run");
    assert_eq!(report.committed, Some(WindowId::new(BASE, 30)));
    let second = second.lock().expect("lock");
    assert_eq!(second.newest, expected());
    // It resumed after a window where every operator saved, no earlier
    // than the one told.
    let resumed = second.windows.first().expect("a window").sequence() - 1;
    assert_eq!((resumed + 1) % 4, 0, "resumed after {resumed}");
    assert!(
        WindowId::new(BASE, resumed) >= told && resumed <= 11,
        "resumed after {resumed}"
    );
}

/// Checkpoint windows that rarely meet (every 101 and every 103 windows:
/// all of them every 10,403) are refused with what to choose instead.
#[test]
fn checkpoint_windows_that_rarely_meet_are_refused() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let error = TimelyJob::new(1)
        .run(move || dag_checkpointing(&seen, None, (101, 103)))
        .expect_err("refused");
    assert!(error.to_string().contains("divide each other"), "{error}");
    // One large count alone (checkpoints all but off) is not refused.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    TimelyJob::new(1)
        .window_tuples(WINDOW)
        .run(move || dag_checkpointing(&shared, None, (1_000_000, 1_000_000)))
        .expect("one count of a million windows");
    assert_eq!(seen.lock().expect("lock").newest, expected());
}

/// Partition `p` of a partitioned input: the numbers from `p` below `end`,
/// step 3.
#[derive(Checkpoint)]
struct Slice {
    next: u64,
    #[checkpoint(config)]
    end: u64,
}

impl InputOperator for Slice {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        for _ in 0..10 {
            if self.next >= self.end {
                return Ok(Emit::Done);
            }
            out.emit(self.next);
            self.next += 3;
        }
        Ok(if self.next >= self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// Where partition `p` of the partitioned input ends: partition 2 much
/// earlier than the others, so the stream outlives one of its partitions.
fn slice_end(p: usize) -> u64 {
    if p == 2 { 900 } else { TUPLES }
}

/// The job on a partitioned input of 3 partitions.
fn partitioned_dag(seen: &Arc<Mutex<Seen>>, fail_at: Option<u64>) -> Dag {
    let mut dag = Dag::new();
    let numbers = dag.input_partitioned("numbers", 3, |p| Slice {
        next: p as u64,
        end: slice_end(p),
    });
    let count = dag.operator_partitioned("count", 2, |_| Count::default());
    let newest = dag.operator(
        "newest",
        Newest {
            tuples: 0,
            seen: Arc::clone(seen),
            fail_at,
        },
    );
    dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
        .connect(&count, &newest);
    dag.default_checkpoint_window_count(5);
    dag
}

fn partitioned_expected() -> BTreeMap<u64, u64> {
    let mut counts = BTreeMap::new();
    for p in 0..3 {
        for n in (p as u64..slice_end(p)).step_by(3) {
            *counts.entry(n % KEYS).or_insert(0) += 1;
        }
    }
    counts
}

/// A partitioned input: its partitions on several workers (partition `p`
/// on worker `p % workers`), each cutting its own windows and ending on
/// its own; the result is the threaded runtime's.
#[test]
fn a_partitioned_input_runs_on_every_worker_and_computes_what_the_threaded_runtime_does() {
    let threaded = Arc::new(Mutex::new(Seen::default()));
    Runtime::new(
        Config::default()
            .window_mode(WindowMode::Tuples(WINDOW))
            .window_base(BASE),
    )
    .run(partitioned_dag(&threaded, None))
    .expect("the threaded run");
    let expected = partitioned_expected();
    assert_eq!(threaded.lock().expect("lock").newest, expected);
    for workers in [1, 2, 3] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        let report = within_a_minute(move || {
            TimelyJob::new(workers)
                .window_tuples(WINDOW)
                .window_base(BASE)
                .run(move || partitioned_dag(&shared, None))
        })
        .expect("the timely run");
        // Partitions 0 and 1 read 1,000 numbers each: 10 windows of 100.
        assert_eq!(report.windows, 10, "{workers} workers");
        assert_eq!(seen.lock().expect("lock").newest, expected, "{workers} workers");
    }
}

/// A failure after one input partition ended: the restart restores that
/// partition from its final checkpoint (older than the committed window)
/// and it reads nothing again, on the same worker count or another.
#[test]
fn an_input_partition_that_ended_before_the_committed_window_stays_ended() {
    for (before, after) in [(2, 2), (3, 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
        let job = |workers| {
            TimelyJob::new(workers)
                .window_tuples(WINDOW)
                .window_base(BASE)
                .storage(Arc::clone(&storage))
                .windows_ahead(2)
        };
        // Partition 2 ends in window 3; the sink fails at its 1,900th
        // tuple, in window 8, after window 4 was committed.
        let first = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&first);
        within_a_minute({
            let job = job(before);
            move || {
                job.run(move || partitioned_dag(&shared, Some(1_900)))
                    .expect_err("the sink fails")
            }
        });
        assert_eq!(
            first.lock().expect("lock").committed.last(),
            Some(&WindowId::new(BASE, 4))
        );
        assert_eq!(
            storage.windows("numbers#2").expect("windows"),
            vec![WindowId::new(BASE, 3)],
            "partition 2's final checkpoint"
        );
        let second = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&second);
        within_a_minute({
            let job = job(after);
            move || {
                job.run(move || partitioned_dag(&shared, None))
                    .expect("the resumed run")
            }
        });
        let second = second.lock().expect("lock");
        assert_eq!(second.windows.first(), Some(&WindowId::new(BASE, 5)));
        assert_eq!(
            second.newest,
            partitioned_expected(),
            "{before} workers resumed on {after}"
        );
    }
}

/// An idempotent input that records each window's range
/// (`io::LineInput`, in `<name>#window-data`) survives a failure after a
/// commit: its records are its own (no worker removes them as another
/// layout's files), and it purges them only once every worker has
/// recorded the commit.
#[test]
fn a_line_input_resumes_after_a_failure() {
    use checkpoint_runtime::io::LineInput;

    #[derive(Checkpoint)]
    struct Parse;
    impl Operator for Parse {
        type Input = String;
        type Output = u64;
        fn process(&mut self, line: String, out: Output<'_, u64>) -> OperatorResult {
            out.emit(line.parse()?);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("numbers.txt");
    let text: String = (0..TUPLES).map(|n| format!("{n}\n")).collect();
    std::fs::write(&file, text).expect("write");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path().join("ck")).expect("storage"));
    let build = |seen: &Arc<Mutex<Seen>>, fail_at: Option<u64>| {
        let (seen, file) = (Arc::clone(seen), file.clone());
        move || {
            let mut dag = Dag::new();
            let lines = dag.input("lines", LineInput::new(&file).lines_per_call(10));
            let parse = dag.operator("parse", Parse);
            let count = dag.operator_partitioned("count", 2, |_| Count::default());
            let newest = dag.operator(
                "newest",
                Newest {
                    tuples: 0,
                    seen: Arc::clone(&seen),
                    fail_at,
                },
            );
            dag.connect(&lines, &parse)
                .connect_by_key(&parse, &count, |n: &u64| *n % KEYS)
                .connect(&count, &newest);
            dag.default_checkpoint_window_count(2);
            dag
        }
    };
    let job = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .window_base(BASE)
        .storage(Arc::clone(&storage))
        .windows_ahead(2);
    let first = Arc::new(Mutex::new(Seen::default()));
    job.run(build(&first, Some(1_234))).expect_err("the sink fails");
    let told = first.lock().expect("lock").committed.last().copied();
    let told = told.expect("a commit before the failure in window 13");
    let second = Arc::new(Mutex::new(Seen::default()));
    job.run(build(&second, None)).expect("the resumed run");
    let second = second.lock().expect("lock");
    // Resumed (not from the start), after what was told: the input
    // replayed recorded windows from there.
    let first_window = *second.windows.first().expect("a window");
    assert!(first_window > told && first_window.sequence() > 1, "{first_window:?}");
    assert_eq!(second.newest, expected());
}

/// A sink that holds each window's tuple count until the window is
/// committed, then publishes it (into a shared list); its `committed` can
/// fail once, at one window.
#[derive(Checkpoint)]
struct Publisher {
    pending: Vec<(u32, u64)>,
    #[checkpoint(config)]
    published: Arc<Mutex<BTreeMap<u32, u64>>>,
    #[checkpoint(config)]
    fail_at: Option<u32>,
}

impl Operator for Publisher {
    type Input = (u64, u64);
    type Output = ();
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.pending.push((window.sequence(), 0));
        Ok(())
    }
    fn process(&mut self, _: (u64, u64), _out: Output<'_, ()>) -> OperatorResult {
        if let Some((_, n)) = self.pending.last_mut() {
            *n += 1;
        }
        Ok(())
    }
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        if self.fail_at == Some(window.sequence()) {
            return Err(Box::new(Unlucky(u64::from(window.sequence()))));
        }
        let mut published = self.published.lock().expect("lock");
        for (w, n) in self.pending.iter().filter(|(w, _)| *w <= window.sequence()) {
            published.insert(*w, *n);
        }
        self.pending.retain(|(w, _)| *w > window.sequence());
        Ok(())
    }
}

/// The last window's `committed` fails (a sink's publish, say): the job's
/// end is recorded all the same, and run again the job opens no window but
/// tells the restored sink its last window is committed, so what it held is
/// published; nothing is lost.
#[test]
fn a_restored_sink_hears_the_window_it_resumes_after_is_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path()).expect("storage"));
    let published = Arc::new(Mutex::new(BTreeMap::new()));
    let build = |fail_at: Option<u32>| {
        let published = Arc::clone(&published);
        move || {
            let mut dag = Dag::new();
            let numbers = dag.input("numbers", Numbers { next: 0 });
            let count = dag.operator_partitioned("count", 2, |_| Count::default());
            let sink = dag.operator(
                "sink",
                Publisher {
                    pending: Vec::new(),
                    published: Arc::clone(&published),
                    fail_at,
                },
            );
            dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
                .connect(&count, &sink);
            dag.default_checkpoint_window_count(5);
            dag
        }
    };
    let job = TimelyJob::new(2)
        .window_tuples(WINDOW)
        .window_base(BASE)
        .storage(Arc::clone(&storage));
    job.run(build(Some(30))).expect_err("the last commit fails");
    let before = published.lock().expect("lock").len();
    assert!(before < 30, "{before} windows published before the failure");
    let again = job.run(build(None)).expect("the run again");
    assert_eq!(again.windows, 0, "the job had ended");
    let published = published.lock().expect("lock");
    let expected: BTreeMap<u32, u64> = (1..=30).map(|w| (w, WINDOW)).collect();
    assert_eq!(*published, expected);
}

/// What the timely mode cannot run is refused before anything runs, with
/// what to do instead: an operator partitioned without a keyed input
/// (partitions are key groups here), an at-most-once operator (every
/// restart is whole-job), an operator named as the workers' records.
#[test]
fn dags_the_timely_mode_cannot_run_are_refused() {
    type Build = fn() -> Dag;
    let cases: [(Build, &str); 3] = [
        (
            || {
                let mut dag = Dag::new();
                let numbers = dag.input("numbers", Numbers { next: 0 });
                let count = dag.operator_partitioned("count", 2, |_| Count::default());
                dag.connect_broadcast(&numbers, &count);
                dag
            },
            "no keyed input",
        ),
        (
            || {
                let mut dag = Dag::new();
                let numbers = dag.input("numbers", Numbers { next: 0 });
                let count = dag.operator_partitioned("count", 2, |_| Count::default());
                dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS);
                dag.processing_mode(&count, checkpoint_runtime::ProcessingMode::AtMostOnce);
                dag
            },
            "\"count\" is at-most-once",
        ),
        (
            || {
                let mut dag = Dag::new();
                let numbers = dag.input("numbers", Numbers { next: 0 });
                let count = dag.operator("timely-worker", Count::default());
                dag.connect(&numbers, &count);
                dag
            },
            "\"timely-worker\"",
        ),
    ];
    for (build, says) in cases {
        let error = TimelyJob::new(2).run(build).expect_err("refused");
        assert!(error.to_string().contains(says), "{says}: {error}");
    }
}
