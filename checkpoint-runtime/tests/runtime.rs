//! The runtime end to end: real threads, real storage, deterministic windows.

mod common;

use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, FsStorageAgent, MemoryStorageAgent, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::{Config, Dag, DagError, JobManifest, RunError, Runtime, WindowMode};
use common::{Collect, Counting, Hook, Summer, Tagged, hooks_of, log, with_watchdog};

const BASE: u32 = 0x6553_f100;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

fn config(storage: &Arc<dyn StorageAgent>, tuples_per_window: u64) -> Config {
    Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(tuples_per_window))
        .window_base(BASE)
        .batch_size(7)
}

/// source (100 tuples, 10 per window) -> summer -> sink, checkpoint every 2
/// windows: the hooks come in their fixed order, every checkpoint window is
/// saved with exactly the state at that window, and everything is committed.
fn chain_run(async_checkpoints: bool) {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let log = log();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(100, 1).logged(&log));
    let summer = dag.operator("summer", Summer::logged(&log));
    let sink = dag.operator(
        "sink",
        Collect {
            seen: Arc::clone(&seen),
            ..Default::default()
        },
    );
    dag.connect(&source, &summer).connect(&summer, &sink);
    dag.default_checkpoint_window_count(2);
    let config = config(&storage, 10).async_checkpoints(async_checkpoints);
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("run");

    // 100 tuples in windows 1..=10, the last ending the stream.
    assert_eq!(seen.lock().expect("seen").len(), 100);
    assert_eq!(report.committed, Some(w(10)));
    let summer_report = report.operator("summer").expect("summer");
    assert_eq!(
        (summer_report.tuples_in, summer_report.tuples_out, summer_report.windows),
        (100, 100, 10)
    );

    let hooks = hooks_of(&log, "summer");
    assert_eq!(hooks[0], Hook::Setup(w(0)));
    assert_eq!(hooks.last(), Some(&Hook::Teardown));
    // Begin/End alternate, ten of each.
    let windows: Vec<&Hook> = hooks
        .iter()
        .filter(|h| matches!(h, Hook::Begin(_) | Hook::End))
        .collect();
    assert_eq!(windows.len(), 20);
    for (i, pair) in windows.chunks(2).enumerate() {
        assert_eq!(pair, [&Hook::Begin(w(i as u32 + 1)), &Hook::End]);
    }
    // Checkpoints after windows 1, 3, 5, 7, 9 ((seq + 1) % 2 == 0) and the
    // final window 10; each before_checkpoint directly after its End.
    let before: Vec<WindowId> = hooks
        .iter()
        .filter_map(|h| {
            if let Hook::BeforeCheckpoint(w) = h {
                Some(*w)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(before, [w(1), w(3), w(5), w(7), w(9), w(10)]);
    for (i, h) in hooks.iter().enumerate() {
        if let Hook::BeforeCheckpoint(_) = h {
            assert_eq!(hooks[i - 1], Hook::End, "{hooks:?}");
        }
    }
    // checkpointed(W) precedes every committed(X >= W); commits ascend.
    let mut checkpointed = Vec::new();
    let mut last_commit = None;
    for h in &hooks {
        match h {
            Hook::Checkpointed(w) => checkpointed.push(*w),
            Hook::Committed(c) => {
                assert!(last_commit < Some(*c), "commits must ascend: {hooks:?}");
                last_commit = Some(*c);
                for b in &before {
                    if b <= c {
                        assert!(
                            checkpointed.contains(b),
                            "committed({c}) before checkpointed({b}): {hooks:?}"
                        );
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(checkpointed, before);
    assert_eq!(last_commit, Some(w(10)));

    // On storage: the initial checkpoint and retention. Every remaining
    // snapshot holds the state at its window: the sum of the first
    // 10 * seq values.
    for name in ["source", "summer"] {
        let windows = storage.windows(name).expect("windows");
        assert_eq!(windows.last(), Some(&w(10)), "{name}: {windows:?}");
        // Retention keeps back to the recovery point of the previous commit
        // (window 9 or 10, depending on which operator reported first).
        assert!(windows.iter().all(|x| *x >= w(9)), "{name}: {windows:?}");
    }
    for window in storage.windows("summer").expect("windows") {
        let (_, state) = Snapshot::decode::<Summer>(&storage.load("summer", window).expect("load")).expect("decode");
        let n = 10 * u64::from(window.sequence());
        assert_eq!(
            (state.count, state.sum, state.misaligned),
            (n, n * n.saturating_sub(1) / 2, 0)
        );
    }
    // The sink is stateless... no: Collect persists nothing but is not
    // marked stateless, so it has (empty) snapshots too.
    assert_eq!(storage.windows("sink").expect("windows").last(), Some(&w(10)));

    let manifest = JobManifest::from_bytes(&storage.load_manifest().expect("load").expect("a manifest")).expect("json");
    assert_eq!(manifest.committed, Some(w(10)));
    assert_eq!(manifest.window_base, BASE);
    assert_eq!(
        manifest.operators.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["source", "summer", "sink"]
    );
}

#[test]
fn a_chain_checkpoints_and_commits_in_order_with_synchronous_saves() {
    chain_run(false);
}

#[test]
fn a_chain_checkpoints_and_commits_in_order_with_asynchronous_saves() {
    chain_run(true);
}

#[test]
fn retention_deletes_checkpoints_older_than_the_previous_recovery_point() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(400, 1));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer).default_checkpoint_window_count(4);
    with_watchdog({
        let config = config(&storage, 10).async_checkpoints(false);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    // 40 windows, checkpoints at 3, 7, ..., 39 and the final 40. After the
    // final commit at 40, the recovery point computed at the previous
    // commit (39) is kept, and everything older is gone.
    assert_eq!(storage.windows("summer").expect("windows"), [w(39), w(40)]);
    assert_eq!(storage.windows("source").expect("windows"), [w(39), w(40)]);
}

/// Per window: (sequence, tuples from the left, tuples from the right).
type PerWindow = Arc<Mutex<Vec<(u32, u64, u64)>>>;

#[test]
fn fan_in_of_different_types_aligns_windows() {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    enum Either {
        Left(Tagged),
        Right(String),
    }

    #[derive(Default, Checkpoint)]
    struct Join {
        left: u64,
        right: u64,
        #[checkpoint(transient)]
        window: Option<WindowId>,
        misaligned: u64,
        #[checkpoint(transient)]
        per_window: Vec<(u32, u64, u64)>,
        #[checkpoint(transient)]
        out: Option<PerWindow>,
    }

    impl checkpoint_runtime::Operator for Join {
        type Input = Either;
        type Output = ();
        fn begin_window(&mut self, window: WindowId) -> checkpoint_runtime::OperatorResult {
            self.window = Some(window);
            self.per_window.push((window.sequence(), 0, 0));
            Ok(())
        }
        fn process(&mut self, t: Either, _: checkpoint_runtime::Output<'_, ()>) -> checkpoint_runtime::OperatorResult {
            let last = self.per_window.last_mut().ok_or("outside a window")?;
            match t {
                Either::Left(t) => {
                    self.misaligned += u64::from(Some(t.window) != self.window);
                    self.left += 1;
                    last.1 += 1;
                }
                Either::Right(s) => {
                    let window: WindowId = s.parse().map_err(|e| format!("{e}"))?;
                    self.misaligned += u64::from(Some(window) != self.window);
                    self.right += 1;
                    last.2 += 1;
                }
            }
            Ok(())
        }
        fn teardown(&mut self) {
            if let Some(out) = &self.out {
                out.lock().expect("lock").extend(self.per_window.drain(..));
                out.lock().expect("lock").push((0, self.misaligned, 0));
            }
        }
    }

    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut dag = Dag::new();
    // Left: 60 tuples, 3 per call: 4 calls (12 tuples) per 10-tuple window,
    // so windows 1..=5. Right: 25 strings, windows of 10: windows 1..=3.
    let left = dag.input("left", Counting::new(60, 3));
    let right_src = dag.input("right", Counting::new(25, 1));
    let to_text = dag.operator("to-text", ToText);
    let join = dag.operator(
        "join",
        Join {
            out: Some(Arc::clone(&out)),
            ..Default::default()
        },
    );
    dag.connect(&right_src, &to_text);
    dag.connect_with(&left, &join, Either::Left);
    dag.connect_with(&to_text, &join, Either::Right);
    dag.default_checkpoint_window_count(2);
    let report = with_watchdog({
        let config = config(&storage, 10).channel_capacity(1).batch_size(1);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    let out = out.lock().expect("lock").clone();
    let (misaligned, per_window) = out.split_last().expect("teardown ran");
    assert_eq!(misaligned.1, 0, "tuples processed outside their window");
    assert_eq!(
        per_window,
        [(1, 12, 10), (2, 12, 10), (3, 12, 5), (4, 12, 0), (5, 12, 0)],
        "each window holds exactly what each input emitted in it; `right` left the alignment set after window 3"
    );
    assert_eq!(report.committed, Some(w(5)));
}

/// Converts a tagged tuple to its window id's text (a different type).
#[derive(Default, Checkpoint)]
#[checkpoint(stateless)]
struct ToText;

impl checkpoint_runtime::Operator for ToText {
    type Input = Tagged;
    type Output = String;
    fn process(
        &mut self,
        t: Tagged,
        out: checkpoint_runtime::Output<'_, String>,
    ) -> checkpoint_runtime::OperatorResult {
        out.emit(t.window.to_string());
        Ok(())
    }
}

#[test]
fn stateless_operators_are_never_saved_but_commits_advance() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(50, 1));
    let text = dag.operator("to-text", ToText);
    let seen = Arc::new(Mutex::new(0u64));
    let sink = dag.operator(
        "count",
        CountStrings {
            seen: Arc::clone(&seen),
        },
    );
    dag.connect(&source, &text)
        .connect(&text, &sink)
        .default_checkpoint_window_count(2);
    let report = with_watchdog({
        let config = config(&storage, 10);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    assert_eq!(*seen.lock().expect("lock"), 50);
    assert_eq!(storage.operators().expect("operators"), ["count", "source"]);
    assert_eq!(report.committed, Some(w(5)));
    assert_eq!(report.operator("to-text").expect("report").checkpoints, 0);
}

#[derive(Default, Checkpoint)]
struct CountStrings {
    #[checkpoint(transient)]
    seen: Arc<Mutex<u64>>,
}

impl checkpoint_runtime::Operator for CountStrings {
    type Input = String;
    type Output = ();
    fn process(&mut self, _: String, _: checkpoint_runtime::Output<'_, ()>) -> checkpoint_runtime::OperatorResult {
        *self.seen.lock().expect("lock") += 1;
        Ok(())
    }
}

#[test]
fn a_diamond_with_tiny_queues_does_not_deadlock_and_stays_aligned() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let misaligned = Arc::new(Mutex::new(0));
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(2_000, 5));
    let fast = dag.operator("fast", Summer::default());
    let slow = dag.operator("slow", Slow);
    let join = dag.operator(
        "join",
        Collect {
            seen: Arc::clone(&seen),
            misaligned: Arc::clone(&misaligned),
            ..Default::default()
        },
    );
    dag.connect(&source, &fast)
        .connect(&source, &slow)
        .connect(&fast, &join)
        .connect(&slow, &join)
        .default_checkpoint_window_count(3);
    let report = with_watchdog({
        let config = config(&storage, 50).channel_capacity(1).batch_size(1);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    assert_eq!(seen.lock().expect("lock").len(), 4_000, "every tuple by both paths");
    assert_eq!(*misaligned.lock().expect("lock"), 0);
    assert_eq!(report.committed, Some(w(40)));
}

/// Passes tuples on, yielding the thread on each so it lags behind.
#[derive(Default, Checkpoint)]
struct Slow;

impl checkpoint_runtime::Operator for Slow {
    type Input = Tagged;
    type Output = Tagged;
    fn process(
        &mut self,
        t: Tagged,
        out: checkpoint_runtime::Output<'_, Tagged>,
    ) -> checkpoint_runtime::OperatorResult {
        std::thread::yield_now();
        out.emit(t);
        Ok(())
    }
}

#[test]
fn partitions_each_get_their_keys_state_and_checkpoints() {
    use checkpoint_runtime::StableHash;

    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1_000, 4));
    let count = dag.operator_partitioned("count", 4, |_| Summer::default());
    dag.connect_by_key(&source, &count, |t: &Tagged| t.value % 97)
        .default_checkpoint_window_count(2);
    let report = with_watchdog({
        let config = config(&storage, 100);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    let mut total = 0;
    for p in 0..4u64 {
        let name = format!("count#{p}");
        let last = *storage.windows(&name).expect("windows").last().expect("checkpoints");
        assert_eq!(last, w(10));
        let (header, state) = Snapshot::decode::<Summer>(&storage.load(&name, last).expect("load")).expect("decode");
        assert_eq!(header.operator, name);
        // Exactly the values whose key's group this partition owns.
        let groups = checkpoint_core::KeyGroups::default();
        let expected: Vec<u64> = (0..1_000u64)
            .filter(|v| groups.partition_of_group(groups.group_of_hash((v % 97).stable_hash()), 4) == p as usize)
            .collect();
        assert_eq!(state.count, expected.len() as u64, "{name}");
        assert_eq!(state.sum, expected.iter().sum::<u64>(), "{name}");
        assert_eq!(report.operator(&name).expect("report").tuples_in, expected.len() as u64);
        total += state.count;
    }
    assert_eq!(total, 1_000);
    assert!(storage.windows("count").expect("windows").is_empty());
}

#[test]
fn a_thread_local_operator_runs_on_its_upstreams_thread() {
    #[derive(Default, Checkpoint)]
    struct ThreadName {
        #[checkpoint(transient)]
        names: Arc<Mutex<Vec<String>>>,
        count: u64,
    }

    impl checkpoint_runtime::Operator for ThreadName {
        type Input = Tagged;
        type Output = Tagged;
        fn process(
            &mut self,
            t: Tagged,
            out: checkpoint_runtime::Output<'_, Tagged>,
        ) -> checkpoint_runtime::OperatorResult {
            if self.count == 0 {
                let name = std::thread::current().name().unwrap_or("?").to_owned();
                self.names.lock().expect("lock").push(name);
            }
            self.count += 1;
            out.emit(t);
            Ok(())
        }
    }

    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(300, 3));
    let chained = dag.operator(
        "chained",
        ThreadName {
            names: Arc::clone(&names),
            count: 0,
        },
    );
    let queued = dag.operator(
        "queued",
        ThreadName {
            names: Arc::clone(&names),
            count: 0,
        },
    );
    let sink = dag.operator(
        "sink",
        Collect {
            seen: Arc::clone(&seen),
            ..Default::default()
        },
    );
    dag.connect_thread_local(&source, &chained)
        .connect(&chained, &queued)
        .connect(&queued, &sink)
        .default_checkpoint_window_count(5);
    let report = with_watchdog({
        let config = config(&storage, 30);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    assert_eq!(*names.lock().expect("lock"), ["source", "queued"]);
    assert_eq!(seen.lock().expect("lock").len(), 300);
    // The chained operator checkpoints and commits like any other.
    let (_, state) = Snapshot::decode::<ThreadName>(&storage.load("chained", w(10)).expect("load")).expect("decode");
    assert_eq!(state.count, 300);
    assert_eq!(report.committed, Some(w(10)));
}

#[test]
fn application_windows_span_several_streaming_windows() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let log = log();
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(100, 1));
    let summer = dag.operator("summer", Summer::logged(&log));
    dag.connect(&source, &summer);
    dag.application_window_count(&summer, 3)
        .checkpoint_window_count(&summer, 6);
    with_watchdog({
        let config = config(&storage, 10);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    let hooks: Vec<Hook> = hooks_of(&log, "summer")
        .into_iter()
        .filter(|h| !matches!(h, Hook::Committed(_) | Hook::Checkpointed(_)))
        .collect();
    // Ends fall where (seq + 1) % 3 == 0: after 2, 5, 8, then the short
    // application window [9, 10] ends with the stream. Checkpoints where
    // (seq + 1) % 6 == 0 (window 5) and at the final window 10.
    assert_eq!(
        hooks,
        [
            Hook::Setup(w(0)),
            Hook::Begin(w(1)),
            Hook::End,
            Hook::Begin(w(3)),
            Hook::End,
            Hook::BeforeCheckpoint(w(5)),
            Hook::Begin(w(6)),
            Hook::End,
            Hook::Begin(w(9)),
            Hook::End,
            Hook::BeforeCheckpoint(w(10)),
            Hook::Teardown,
        ]
    );
}

#[test]
fn checkpointed_fires_only_once_the_snapshot_is_on_disk() {
    #[derive(Default, Checkpoint)]
    struct Probe {
        #[checkpoint(transient)]
        dir: std::path::PathBuf,
        #[checkpoint(transient)]
        missing: Arc<Mutex<Vec<WindowId>>>,
        #[checkpoint(transient)]
        checked: Arc<Mutex<u32>>,
        n: u64,
    }

    impl checkpoint_runtime::Operator for Probe {
        type Input = Tagged;
        type Output = ();
        fn process(&mut self, _: Tagged, _: checkpoint_runtime::Output<'_, ()>) -> checkpoint_runtime::OperatorResult {
            self.n += 1;
            Ok(())
        }
        fn checkpointed(&mut self, window: WindowId) -> checkpoint_runtime::OperatorResult {
            let path = self.dir.join("probe").join(format!("{:016x}", window.as_u64()));
            if !path.is_file() {
                self.missing.lock().expect("lock").push(window);
            }
            *self.checked.lock().expect("lock") += 1;
            Ok(())
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = Arc::new(Mutex::new(Vec::new()));
    let checked = Arc::new(Mutex::new(0));
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(500, 1));
    let probe = dag.operator(
        "probe",
        Probe {
            dir: dir.path().to_path_buf(),
            missing: Arc::clone(&missing),
            checked: Arc::clone(&checked),
            n: 0,
        },
    );
    dag.connect(&source, &probe).default_checkpoint_window_count(1);
    let config = Config::default()
        .storage(FsStorageAgent::new(dir.path()).expect("storage"))
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .async_checkpoints(true);
    with_watchdog(move || Runtime::new(config).run(dag)).expect("run");
    assert_eq!(*checked.lock().expect("lock"), 50);
    assert_eq!(*missing.lock().expect("lock"), []);
}

#[test]
fn past_the_restart_limit_an_operator_error_fails_the_job_naming_operator_and_window() {
    for panic in [false, true] {
        let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(1_000, 1));
        let summer = dag.operator(
            "summer",
            Summer {
                fail_at: Some((3, panic)),
                ..Default::default()
            },
        );
        let sink = dag.operator("sink", Collect::default());
        dag.connect(&source, &summer).connect(&summer, &sink);
        let result = with_watchdog({
            let config = config(&storage, 10).channel_capacity(1).restart_limit(0);
            move || Runtime::new(config).run(dag)
        });
        match result {
            Err(RunError::OperatorFailed {
                operator,
                window,
                cause,
                ..
            }) => {
                assert_eq!(operator, "summer");
                assert_eq!(window, Some(w(3)));
                let expected = if panic {
                    "panicked: injected panic"
                } else {
                    "injected error"
                };
                assert!(cause.starts_with(expected), "{cause}");
                assert!(cause.contains("gave up after 0 restarts"), "{cause}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[test]
fn a_stop_request_ends_a_time_windowed_job_gracefully() {
    #[derive(Default, Checkpoint)]
    struct Forever {
        next: u64,
        #[checkpoint(transient)]
        window: Option<WindowId>,
    }

    impl checkpoint_runtime::InputOperator for Forever {
        type Output = Tagged;
        fn begin_window(&mut self, window: WindowId) -> checkpoint_runtime::OperatorResult {
            self.window = Some(window);
            Ok(())
        }
        fn emit_tuples(
            &mut self,
            out: checkpoint_runtime::Output<'_, Tagged>,
        ) -> checkpoint_runtime::OperatorResult<checkpoint_runtime::Emit> {
            let window = self.window.ok_or("outside a window")?;
            out.emit(Tagged {
                window,
                value: self.next,
            });
            self.next += 1;
            Ok(if self.next.is_multiple_of(64) {
                checkpoint_runtime::Emit::Idle
            } else {
                checkpoint_runtime::Emit::Continue
            })
        }
    }

    /// Asks for the stop once it has seen enough.
    #[derive(Default, Checkpoint)]
    struct StopAfter {
        #[checkpoint(transient)]
        stop: Option<checkpoint_runtime::StopHandle>,
        n: u64,
    }

    impl checkpoint_runtime::Operator for StopAfter {
        type Input = Tagged;
        type Output = ();
        fn process(&mut self, _: Tagged, _: checkpoint_runtime::Output<'_, ()>) -> checkpoint_runtime::OperatorResult {
            self.n += 1;
            if self.n == 5_000
                && let Some(stop) = &self.stop
            {
                stop.stop();
            }
            Ok(())
        }
    }

    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let runtime = Runtime::new(
        Config::default()
            .shared_storage(Arc::clone(&storage))
            .window_mode(WindowMode::Time(std::time::Duration::from_millis(20)))
            .window_base(BASE),
    );
    let mut dag = Dag::new();
    let source = dag.input("source", Forever::default());
    let sink = dag.operator(
        "sink",
        StopAfter {
            stop: Some(runtime.stop_handle()),
            n: 0,
        },
    );
    dag.connect(&source, &sink).default_checkpoint_window_count(1_000);
    let report = with_watchdog(move || runtime.run(dag)).expect("run");
    // The final checkpoint is at the last window, whatever its sequence,
    // and it is committed.
    let last = report.committed.expect("committed");
    assert_eq!(storage.windows("sink").expect("windows").last(), Some(&last));
    let (_, state) = Snapshot::decode::<StopAfter>(&storage.load("sink", last).expect("load")).expect("decode");
    let (_, source_state) = Snapshot::decode::<Forever>(&storage.load("source", last).expect("load")).expect("decode");
    assert!(state.n >= 5_000);
    assert_eq!(state.n, source_state.next, "the sink saw everything the source emitted");
}

#[test]
fn invalid_dags_report_every_problem_at_once() {
    let mut dag = Dag::new();
    let a = dag.operator("a/b", Summer::default());
    let b = dag.operator("dup", Summer::default());
    let c = dag.operator("dup", Summer::default());
    let p = dag.operator_partitioned("parts", 2, |_| Summer::default());
    dag.connect(&a, &b).connect(&b, &a).connect(&a, &p);
    dag.application_window_count(&c, 4).checkpoint_window_count(&c, 6);
    let errors = dag.validate().expect_err("invalid");
    let has = |f: &dyn Fn(&DagError) -> bool| errors.iter().any(f);
    assert!(
        has(&|e| matches!(e, DagError::InvalidName { name, .. } if name == "a/b")),
        "{errors:?}"
    );
    assert!(has(&|e| matches!(e, DagError::DuplicateName(n) if n == "dup")));
    assert!(has(&|e| matches!(e, DagError::NoInput)));
    assert!(has(&|e| matches!(e, DagError::Unconnected(n) if n == "dup")));
    assert!(has(&|e| matches!(e, DagError::Cycle(path) if path.len() == 3)));
    assert!(has(
        &|e| matches!(e, DagError::PartitionedNeedsKey { downstream, .. } if downstream == "parts")
    ));
    assert!(has(&|e| matches!(
        e,
        DagError::CheckpointNotAligned {
            checkpoint: 6,
            application: 4,
            ..
        }
    )));
    let message = match Runtime::new(Config::default()).run(dag) {
        Err(e @ RunError::DagErrors(_)) => e.to_string(),
        other => panic!("expected DAG errors, got {other:?}"),
    };
    assert!(
        message.contains("not a multiple") && message.contains("cycle"),
        "{message}"
    );
}

#[test]
fn thread_local_edges_need_single_partitions_and_one_upstream() {
    let mut dag = Dag::new();
    let s1 = dag.input("s1", Counting::new(1, 1));
    let s2 = dag.input("s2", Counting::new(1, 1));
    let x = dag.operator("x", Summer::default());
    dag.connect_thread_local(&s1, &x).connect(&s2, &x);
    let errors = dag.validate().expect_err("invalid");
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, DagError::ThreadLocal { reason, .. } if reason.contains("no other upstream"))),
        "{errors:?}"
    );
}

#[test]
fn storage_of_another_job_is_refused() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let run = |storage: &Arc<dyn StorageAgent>, sink_name: &str| {
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(10, 1));
        let sink = dag.operator(sink_name, Collect::default());
        dag.connect(&source, &sink);
        Runtime::new(config(storage, 5)).run(dag)
    };
    run(&storage, "sink").expect("first run");
    match run(&storage, "other-sink") {
        Err(e @ RunError::Manifest { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("other-sink") && message.contains("another checkpoint directory"),
                "{message}"
            );
        }
        other => panic!("expected a manifest mismatch, got {other:?}"),
    }
    // Checkpoints without a manifest are not a job this runtime wrote.
    let orphan: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let bytes = Snapshot::encode(&1u64, checkpoint_core::SnapshotMeta::new("x", w(1))).expect("encode");
    orphan.save("x", w(1), &bytes).expect("save");
    assert!(matches!(run(&orphan, "sink"), Err(RunError::StorageInUse { .. })));
}

/// A storage agent whose saves fail after the first `ok` ones.
#[derive(Debug)]
struct Failing {
    inner: MemoryStorageAgent,
    ok: Mutex<u32>,
}

impl StorageAgent for Failing {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), checkpoint_core::StorageError> {
        let mut ok = self.ok.lock().expect("lock");
        if operator == "summer" {
            if *ok == 0 {
                return Err(checkpoint_core::StorageError::Io {
                    action: "writing",
                    path: "summer".into(),
                    source: std::io::Error::other("disk full"),
                });
            }
            *ok -= 1;
        }
        self.inner.save(operator, window, snapshot)
    }
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, checkpoint_core::StorageError> {
        self.inner.load(operator, window)
    }
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), checkpoint_core::StorageError> {
        self.inner.delete(operator, window)
    }
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, checkpoint_core::StorageError> {
        self.inner.windows(operator)
    }
    fn operators(&self) -> Result<Vec<String>, checkpoint_core::StorageError> {
        self.inner.operators()
    }
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), checkpoint_core::StorageError> {
        self.inner.save_manifest(manifest)
    }
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, checkpoint_core::StorageError> {
        self.inner.load_manifest()
    }
}

#[test]
fn a_failed_save_is_a_failure_of_that_operator() {
    for async_checkpoints in [false, true] {
        let inner = MemoryStorageAgent::new();
        let storage: Arc<dyn StorageAgent> = Arc::new(Failing {
            inner: inner.clone(),
            ok: Mutex::new(2),
        });
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(1_000, 1));
        let summer = dag.operator("summer", Summer::default());
        dag.connect(&source, &summer).default_checkpoint_window_count(2);
        let result = with_watchdog({
            let config = config(&storage, 10).async_checkpoints(async_checkpoints);
            move || Runtime::new(config).run(dag)
        });
        match result {
            Err(RunError::OperatorFailed {
                operator,
                window,
                cause,
                ..
            }) => {
                assert_eq!(operator, "summer");
                // Saves: initial (0), 1, then 3 fails.
                assert!(
                    cause.contains("saving its checkpoint at") && cause.contains("disk full"),
                    "{cause}"
                );
                assert!(window.is_some());
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // The failed checkpoint left nothing behind; the good one before it
        // is kept (window 0 may be gone already: retention).
        let kept = inner.windows("summer").expect("windows");
        assert_eq!(kept.last(), Some(&w(1)), "{kept:?}");
    }
}

#[test]
fn stepped_windows_end_only_when_the_test_steps() {
    use checkpoint_runtime::{Emit, InputOperator, WindowStepper};

    /// Reports every `emit_tuples` call (its window and the call's number in
    /// that window); emits one tuple per window; done after window 5.
    #[derive(Default, Checkpoint)]
    struct Calls {
        #[checkpoint(transient)]
        window: Option<WindowId>,
        #[checkpoint(transient)]
        calls: u32,
        #[checkpoint(transient)]
        tx: Option<crossbeam_channel::Sender<(u32, u32)>>,
    }

    impl InputOperator for Calls {
        type Output = Tagged;
        fn begin_window(&mut self, window: WindowId) -> checkpoint_runtime::OperatorResult {
            self.window = Some(window);
            self.calls = 0;
            Ok(())
        }
        fn emit_tuples(
            &mut self,
            out: checkpoint_runtime::Output<'_, Tagged>,
        ) -> checkpoint_runtime::OperatorResult<Emit> {
            let window = self.window.ok_or("outside a window")?;
            if window.sequence() > 5 {
                return Ok(Emit::Done);
            }
            self.calls += 1;
            if self.calls == 1 {
                out.emit(Tagged {
                    window,
                    value: u64::from(window.sequence()),
                });
            }
            if let Some(tx) = &self.tx {
                tx.send((window.sequence(), self.calls)).map_err(|e| e.to_string())?;
            }
            Ok(Emit::Idle)
        }
    }

    let stepper = WindowStepper::new();
    let (tx, rx) = crossbeam_channel::unbounded();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut dag = Dag::new();
    let source = dag.input(
        "source",
        Calls {
            tx: Some(tx),
            ..Default::default()
        },
    );
    let sink = dag.operator(
        "sink",
        Collect {
            seen: Arc::clone(&seen),
            ..Default::default()
        },
    );
    dag.connect(&source, &sink);
    let config = Config::default()
        .window_mode(WindowMode::Stepped(stepper.clone()))
        .window_base(BASE)
        .batch_size(1);
    let runtime = Runtime::new(config);
    let progress = runtime.progress();
    let job = std::thread::spawn(move || runtime.run(dag));
    // The window stays open through many calls until the test steps.
    for seq in 1..=5u32 {
        loop {
            let (window, calls) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("calls");
            assert_eq!(window, seq, "the window moved without a step");
            if calls >= 3 {
                break;
            }
        }
        // The live progress view sees the windows completed so far.
        let snapshot = progress.snapshot().expect("the job started");
        assert_eq!(snapshot.windows, u64::from(seq - 1));
        stepper.step();
        // Drain the calls made before the step took effect.
        while let Ok((window, _)) = rx.try_recv() {
            if window != seq {
                assert_eq!(window, seq + 1);
                break;
            }
        }
    }
    let report = job.join().expect("job thread").expect("run");
    assert_eq!(report.operator("sink").expect("sink").tuples_in, 5);
    let seen = seen.lock().expect("seen");
    assert_eq!(
        seen.iter().map(|t| (t.window, t.value)).collect::<Vec<_>>(),
        (1..=5).map(|s| (w(s), u64::from(s))).collect::<Vec<_>>()
    );
}

#[test]
fn a_stop_in_a_deterministic_mode_ends_where_every_application_window_ends() {
    /// Asks for the stop when it sees a given value.
    #[derive(Default, Checkpoint)]
    struct StopAt {
        seen: u64,
        #[checkpoint(transient)]
        at: u64,
        #[checkpoint(transient)]
        stop: Option<checkpoint_runtime::StopHandle>,
    }

    impl checkpoint_runtime::Operator for StopAt {
        type Input = Tagged;
        type Output = ();
        fn process(&mut self, t: Tagged, _: checkpoint_runtime::Output<'_, ()>) -> checkpoint_runtime::OperatorResult {
            self.seen += 1;
            if t.value == self.at
                && let Some(stop) = &self.stop
            {
                stop.stop();
            }
            Ok(())
        }
    }

    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let runtime = Runtime::new(config(&storage, 10).channel_capacity(1).batch_size(1));
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1_000, 1));
    let sink = dag.operator(
        "sink",
        StopAt {
            seen: 0,
            at: 55, // in window 6
            stop: Some(runtime.stop_handle()),
        },
    );
    dag.connect(&source, &sink);
    dag.application_window_count(&sink, 3).checkpoint_window_count(&sink, 3);
    let report = with_watchdog(move || runtime.run(dag)).expect("run");
    // The stop came in window 6; application windows end after 2, 5, 8: the
    // stream ends after window 8, whole windows only.
    assert_eq!(report.committed, Some(w(8)));
    let (_, state) = Snapshot::decode::<StopAt>(&storage.load("sink", w(8)).expect("load")).expect("decode");
    assert_eq!(state.seen, 80);
}
