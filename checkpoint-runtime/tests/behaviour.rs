//! Runtime behaviour at scale and under pressure: a partitioned keyed count
//! against a single-threaded reference, back-pressure bounds, replay buffers
//! dropped at commits, the report's checkpoint timings, and every DAG
//! validation error on its own.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, MemoryStorageAgent, Snapshot, StorageAgent};
use checkpoint_runtime::{
    Config, Dag, DagError, Emit, InputOperator, Operator, OperatorResult, Output, ProcessingMode, RunError, Runtime,
    WindowMode,
};
use common::{Collect, Counting, Summer, Tagged, with_watchdog};

const BASE: u32 = 0x6553_f100;

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The benchmark workload's keys: key(i) = splitmix64(i) mod K.
#[derive(Checkpoint)]
struct Keys {
    next: u64,
    end: u64,
    keys: u64,
}

impl InputOperator for Keys {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let stop = (self.next + 4096).min(self.end);
        for i in self.next..stop {
            out.emit(splitmix64(i) % self.keys);
        }
        self.next = stop;
        Ok(if stop == self.end { Emit::Done } else { Emit::Continue })
    }
}

#[derive(Default, Checkpoint)]
struct Count {
    counts: HashMap<u64, u64>,
}

impl Operator for Count {
    type Input = u64;
    type Output = ();
    fn process(&mut self, key: u64, _: Output<'_, ()>) -> OperatorResult {
        *self.counts.entry(key).or_default() += 1;
        Ok(())
    }
}

#[test]
fn a_partitioned_keyed_count_equals_a_single_threaded_reference() {
    const N: u64 = 1_000_000;
    const K: u64 = 10_000;
    let mut reference: HashMap<u64, u64> = HashMap::new();
    for i in 0..N {
        *reference.entry(splitmix64(i) % K).or_default() += 1;
    }
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let keys = dag.input(
        "keys",
        Keys {
            next: 0,
            end: N,
            keys: K,
        },
    );
    let count = dag.operator_partitioned("count", 4, |_| Count::default());
    dag.connect_by_key(&keys, &count, |k: &u64| *k)
        .default_checkpoint_window_count(5);
    let config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(50_000))
        .window_base(BASE);
    with_watchdog(move || Runtime::new(config).run(dag)).expect("run");
    let mut merged: HashMap<u64, u64> = HashMap::new();
    for p in 0..4 {
        let name = format!("count#{p}");
        let window = *storage.windows(&name).expect("windows").last().expect("a checkpoint");
        let (_, state) = Snapshot::decode::<Count>(&storage.load(&name, window).expect("load")).expect("decode");
        for (key, n) in state.counts {
            assert!(merged.insert(key, n).is_none(), "key {key} in two partitions");
        }
    }
    assert_eq!(merged, reference);
}

/// A sink that processes a tuple only when the test lets it.
#[derive(Default, Checkpoint)]
struct Gated {
    n: u64,
    #[checkpoint(transient)]
    gate: Option<crossbeam_channel::Receiver<()>>,
}

impl Operator for Gated {
    type Input = Tagged;
    type Output = ();
    fn process(&mut self, _: Tagged, _: Output<'_, ()>) -> OperatorResult {
        if let Some(gate) = &self.gate {
            gate.recv().map_err(|_| "the test went away")?;
        }
        self.n += 1;
        Ok(())
    }
}

#[test]
fn a_slow_sink_bounds_what_the_source_runs_ahead() {
    const TUPLES: u64 = 20_000;
    const BATCH: usize = 16;
    const CAPACITY: usize = 4;
    // A rendezvous: each send lets exactly one tuple through.
    let (open, gate) = crossbeam_channel::bounded(0);
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 50));
    let sink = dag.operator("sink", Gated { n: 0, gate: Some(gate) });
    dag.connect(&source, &sink);
    let runtime = Runtime::new(
        Config::default()
            .window_mode(WindowMode::Tuples(1_000))
            .window_base(BASE)
            .batch_size(BATCH)
            .channel_capacity(CAPACITY),
    );
    let progress = runtime.progress();
    let job = std::thread::spawn(move || runtime.run(dag));
    // Queued batches, the batch the sink holds, and the one the source is
    // filling and trying to send (plus one `emit_tuples` call's worth).
    let bound = ((CAPACITY + 3) * BATCH + 50) as u64;
    let mut max_ahead = 0;
    for _ in 0..TUPLES {
        if let Some(snapshot) = progress.snapshot() {
            let emitted = snapshot.operators[0].tuples_out;
            let processed = snapshot.operators[1].tuples_in;
            max_ahead = max_ahead.max(emitted.saturating_sub(processed));
            assert!(
                emitted.saturating_sub(processed) <= bound,
                "source {emitted} ahead of sink {processed}"
            );
        }
        open.send(()).expect("the sink is running");
    }
    let report = job.join().expect("job thread").expect("run");
    assert_eq!(report.operator("sink").expect("sink").tuples_in, TUPLES);
    assert!(
        max_ahead > BATCH as u64,
        "the source never ran ahead: the test saw no queue ({max_ahead})"
    );
}

/// Emits `0..end`, 10 per call like `Counting`, but does not begin emitting
/// window `w` before the job committed window `w - 3`: paced by the
/// commit itself, so what a store holds at a window's end does not depend
/// on how the threads happen to be scheduled.
#[derive(Default, Checkpoint)]
struct PacedByCommit {
    next: u64,
    end: u64,
    #[checkpoint(transient)]
    window: Option<checkpoint_core::WindowId>,
}

static PACE: std::sync::OnceLock<checkpoint_runtime::Progress> = std::sync::OnceLock::new();

impl InputOperator for PacedByCommit {
    type Output = Tagged;

    fn begin_window(&mut self, window: checkpoint_core::WindowId) -> OperatorResult {
        self.window = Some(window);
        Ok(())
    }

    fn emit_tuples(&mut self, out: Output<'_, Tagged>) -> OperatorResult<Emit> {
        let window = self.window.ok_or("outside a window")?;
        let behind = |committed: checkpoint_core::WindowId| committed.sequence() + 3 < window.sequence();
        let committed = PACE.get().and_then(|p| p.snapshot()).and_then(|s| s.committed);
        if window.sequence() > 3 && committed.is_none_or(behind) {
            return Ok(Emit::Idle);
        }
        let stop = (self.next + 10).min(self.end);
        for value in self.next..stop {
            out.emit(Tagged { window, value });
        }
        self.next = stop;
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

#[test]
fn replay_buffers_are_dropped_at_each_commit_and_checkpoints_are_timed() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input(
        "source",
        PacedByCommit {
            end: 10_000,
            ..Default::default()
        },
    );
    let summer = dag.operator("summer", Summer::default());
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &summer)
        .connect(&summer, &sink)
        .default_checkpoint_window_count(1);
    let config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(100))
        .window_base(BASE)
        .async_checkpoints(true);
    let runtime = Runtime::new(config);
    PACE.set(runtime.progress()).expect("one job uses the pace");
    let report = with_watchdog(move || runtime.run(dag)).expect("run");
    // 100 windows of 100 tuples. Kept until committed, everything would be
    // 10,000 tuples; with a commit after every window, and the source
    // never more than 3 windows past it, a few windows at most are held.    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("run");
    // 100 windows of 100 tuples. Kept until committed, everything would be
    // 10,000 tuples; with a commit after every window at most a few windows
    // are held at any window's end.
    let tuple = std::mem::size_of::<Tagged>() as u64;
    for name in ["source", "summer"] {
        let op = report.operator(name).expect("operator");
        assert!(
            op.replay_peak_bytes <= 20 * 100 * tuple,
            "{name} held {} bytes",
            op.replay_peak_bytes
        );
        assert!(op.checkpoints >= 100, "{name}: {}", op.checkpoints);
        assert!(
            op.max_encode_time >= op.last_encode_time && !op.max_encode_time.is_zero(),
            "{op:?}"
        );
        assert!(!op.max_durable_latency.is_zero(), "{op:?}");
    }
}

fn expect_error(dag: Dag, check: impl Fn(&DagError) -> bool) {
    let errors = dag.validate().expect_err("invalid");
    assert!(errors.iter().any(&check), "{errors:?}");
    match Runtime::new(Config::default()).run(dag) {
        Err(RunError::Dag(e)) => assert!(check(&e), "{e}"),
        Err(RunError::DagErrors(errors)) => assert!(errors.iter().any(check), "{errors:?}"),
        other => panic!("expected a DAG error, got {other:?}"),
    }
}

fn source_and_sink() -> (Dag, checkpoint_runtime::Node<checkpoint_runtime::NoInput, Tagged>) {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1, 1));
    (dag, source)
}

#[test]
fn validation_rejects_an_invalid_name() {
    let (mut dag, source) = source_and_sink();
    let bad = dag.operator("../escape", Collect::default());
    dag.connect(&source, &bad);
    expect_error(
        dag,
        |e| matches!(e, DagError::InvalidName { name, .. } if name == "../escape"),
    );
}

#[test]
fn validation_rejects_a_hash_in_a_name() {
    let (mut dag, source) = source_and_sink();
    let bad = dag.operator("count#1", Collect::default());
    dag.connect(&source, &bad);
    expect_error(
        dag,
        |e| matches!(e, DagError::InvalidName { reason, .. } if reason.contains("partition")),
    );
}

#[test]
fn validation_rejects_a_duplicate_name() {
    let (mut dag, source) = source_and_sink();
    let a = dag.operator("sink", Collect::default());
    let b = dag.operator("sink", Collect::default());
    dag.connect(&source, &a).connect(&source, &b);
    expect_error(dag, |e| matches!(e, DagError::DuplicateName(n) if n == "sink"));
}

#[test]
fn validation_rejects_a_dag_without_inputs() {
    let mut dag = Dag::new();
    let a = dag.operator("a", Summer::default());
    let b = dag.operator("b", Collect::default());
    dag.connect(&a, &b);
    expect_error(dag, |e| matches!(e, DagError::NoInput));
}

#[test]
fn validation_rejects_an_unconnected_operator() {
    let (mut dag, source) = source_and_sink();
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &sink);
    dag.operator("lonely", Collect::default());
    expect_error(dag, |e| matches!(e, DagError::Unconnected(n) if n == "lonely"));
}

#[test]
fn validation_rejects_a_cycle() {
    let (mut dag, source) = source_and_sink();
    let a = dag.operator("a", Summer::default());
    let b = dag.operator("b", Summer::default());
    dag.connect(&source, &a).connect(&a, &b).connect(&b, &a);
    expect_error(
        dag,
        |e| matches!(e, DagError::Cycle(path) if path.first() == path.last() && path.len() == 3),
    );
}

#[test]
fn validation_rejects_a_checkpoint_count_not_a_multiple_of_the_application_window() {
    let (mut dag, source) = source_and_sink();
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &sink);
    dag.application_window_count(&sink, 4)
        .checkpoint_window_count(&sink, 10);
    expect_error(dag, |e| {
        matches!(
            e,
            DagError::CheckpointNotAligned {
                checkpoint: 10,
                application: 4,
                ..
            }
        )
    });
}

#[test]
fn validation_rejects_zero_counts() {
    let (mut dag, source) = source_and_sink();
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &sink);
    dag.application_window_count(&sink, 0);
    expect_error(
        dag,
        |e| matches!(e, DagError::Zero { what, .. } if what.contains("application")),
    );
}

#[test]
fn validation_rejects_a_plain_edge_into_partitions() {
    let (mut dag, source) = source_and_sink();
    let parts = dag.operator_partitioned("parts", 3, |_| Collect::default());
    dag.connect(&source, &parts);
    expect_error(dag, |e| {
        matches!(e, DagError::PartitionedNeedsKey { partitions: 3, .. })
    });
}

#[test]
fn validation_rejects_a_thread_local_edge_into_partitions() {
    let (mut dag, source) = source_and_sink();
    let parts = dag.operator_partitioned("parts", 2, |_| Collect::default());
    dag.connect_thread_local(&source, &parts);
    expect_error(
        dag,
        |e| matches!(e, DagError::ThreadLocal { reason, .. } if reason.contains("single partition")),
    );
}

#[test]
fn validation_rejects_a_non_at_most_once_downstream_of_exactly_once() {
    let (mut dag, source) = source_and_sink();
    let middle = dag.operator("middle", Summer::default());
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &middle).connect(&middle, &sink);
    dag.processing_mode(&middle, ProcessingMode::ExactlyOnce);
    expect_error(
        dag,
        |e| matches!(e, DagError::ProcessingMode { downstream, .. } if downstream == "sink"),
    );
}

#[test]
fn validation_rejects_a_handle_from_another_dag() {
    let (mut dag, source) = source_and_sink();
    let mut other = Dag::new();
    let foreign = other.operator("foreign", Collect::default());
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &sink).connect(&source, &foreign);
    expect_error(dag, |e| matches!(e, DagError::ForeignNode));
}

#[test]
fn a_too_short_streaming_window_is_refused() {
    let (mut dag, source) = source_and_sink();
    let sink = dag.operator("sink", Collect::default());
    dag.connect(&source, &sink);
    let config = Config::default().window_mode(WindowMode::Time(std::time::Duration::ZERO));
    assert!(matches!(Runtime::new(config).run(dag), Err(RunError::Config { .. })));
}
