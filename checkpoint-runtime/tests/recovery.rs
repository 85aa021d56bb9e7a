//! Recovery in the three processing modes, on a deterministic job: failures
//! injected at the first window, a checkpoint window, the window after a
//! checkpoint and the last window, in the source, the middle operator and
//! the sink. Every run is compared with a failure-free run of the same job.
//!
//! - AT_LEAST_ONCE and EXACTLY_ONCE operators end in exactly the state of
//!   the failure-free run, and the sink sees every tuple at least once.
//! - AT_MOST_ONCE operators never process a window twice in their state,
//!   and their state is the failure-free one minus exactly the windows they
//!   skipped.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use checkpoint_core::{Checkpoint, MemoryStorageAgent, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::{
    Config, Dag, Fault, FaultPoint, Operator, OperatorResult, Output, ProcessingMode, RunReport, Runtime, WindowMode,
};
use common::{Counting, Tagged, with_watchdog};
use serde::{Deserialize, Serialize};

const BASE: u32 = 0x6553_f100;
const TUPLES: u64 = 100;
const PER_WINDOW: u64 = 10;
const LAST: u32 = (TUPLES / PER_WINDOW) as u32;
const CHECKPOINT_EVERY: u32 = 3;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

/// What an operator saw, per window: how many times the window was
/// processed in this state's history, and its tuples' count and sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Checkpoint)]
struct Tally {
    per_window: BTreeMap<u32, (u32, u64, u64)>,
    count: u64,
    sum: u64,
}

impl Tally {
    fn begin(&mut self, window: WindowId) {
        self.per_window.entry(window.sequence()).or_default().0 += 1;
    }

    fn add(&mut self, window: Option<WindowId>, t: &Tagged) {
        let seq = window.map_or(0, |w| w.sequence());
        let entry = self.per_window.entry(seq).or_default();
        entry.1 += 1;
        entry.2 += t.value;
        self.count += 1;
        self.sum += t.value;
    }
}

#[derive(Default, Checkpoint)]
struct Middle {
    #[checkpoint(nested)]
    tally: Tally,
    #[checkpoint(transient)]
    window: Option<WindowId>,
}

impl Operator for Middle {
    type Input = Tagged;
    type Output = Tagged;
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        self.tally.begin(window);
        Ok(())
    }
    fn process(&mut self, t: Tagged, out: Output<'_, Tagged>) -> OperatorResult {
        self.tally.add(self.window, &t);
        out.emit(t);
        Ok(())
    }
}

/// Every tuple any incarnation of a run's sink saw, by run.
static SEEN: LazyLock<Mutex<HashMap<String, Vec<u64>>>> = LazyLock::new(Default::default);

#[derive(Default, Checkpoint)]
struct Sink {
    run: String,
    #[checkpoint(nested)]
    tally: Tally,
    #[checkpoint(transient)]
    window: Option<WindowId>,
}

impl Operator for Sink {
    type Input = Tagged;
    type Output = ();
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        self.tally.begin(window);
        Ok(())
    }
    fn process(&mut self, t: Tagged, _: Output<'_, ()>) -> OperatorResult {
        self.tally.add(self.window, &t);
        SEEN.lock()
            .expect("seen")
            .entry(self.run.clone())
            .or_default()
            .push(t.value);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modes {
    AllAtLeastOnce,
    /// The middle operator EXACTLY_ONCE, hence the sink AT_MOST_ONCE.
    ExactlyOnceMiddle,
    AllAtMostOnce,
}

struct Outcome {
    report: RunReport,
    source: Counting,
    middle: Tally,
    sink: Tally,
    seen: Vec<u64>,
}

fn run(run_id: &str, modes: Modes, faults: &[Fault], async_checkpoints: bool) -> Outcome {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 1));
    let middle = dag.operator("middle", Middle::default());
    let sink = dag.operator(
        "sink",
        Sink {
            run: run_id.to_owned(),
            ..Default::default()
        },
    );
    dag.connect(&source, &middle).connect(&middle, &sink);
    dag.default_checkpoint_window_count(CHECKPOINT_EVERY);
    match modes {
        Modes::AllAtLeastOnce => {}
        Modes::ExactlyOnceMiddle => {
            dag.processing_mode(&middle, ProcessingMode::ExactlyOnce)
                .processing_mode(&sink, ProcessingMode::AtMostOnce);
        }
        Modes::AllAtMostOnce => {
            dag.processing_mode(&source, ProcessingMode::AtMostOnce)
                .processing_mode(&middle, ProcessingMode::AtMostOnce)
                .processing_mode(&sink, ProcessingMode::AtMostOnce);
        }
    }
    let mut config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(PER_WINDOW))
        .window_base(BASE)
        .batch_size(3)
        .async_checkpoints(async_checkpoints);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    if std::env::var_os("RECOVERY_TRACE").is_some() {
        eprintln!("run {run_id}");
    }
    let report = with_watchdog(move || Runtime::new(config).run(dag)).unwrap_or_else(|e| panic!("{run_id}: {e}"));
    // An at-most-once operator that rejoined after its upstreams finished
    // ends its stream early; every other one ends at the last window.
    let last = |name: &str, at_most_once: bool| {
        let window = *storage.windows(name).expect("windows").last().expect("a checkpoint");
        if !at_most_once {
            assert_eq!(window, w(LAST), "{run_id}: {name}'s final checkpoint");
        }
        storage.load(name, window).expect("load")
    };
    let amo = |op: &str| match modes {
        Modes::AllAtLeastOnce => false,
        Modes::ExactlyOnceMiddle => op == "sink",
        Modes::AllAtMostOnce => true,
    };
    let (_, source) = Snapshot::decode::<Counting>(&last("source", amo("source"))).expect("source");
    let (_, middle) = Snapshot::decode::<Middle>(&last("middle", amo("middle"))).expect("middle");
    let (_, sink) = Snapshot::decode::<Sink>(&last("sink", amo("sink"))).expect("sink");
    let seen = SEEN.lock().expect("seen").remove(run_id).unwrap_or_default();
    Outcome {
        report,
        source,
        middle: middle.tally,
        sink: sink.tally,
        seen,
    }
}

/// At-most-once: no window twice, and exactly the failure-free state minus
/// the windows skipped.
fn assert_at_most_once(context: &str, reference: &Tally, tally: &Tally) {
    let mut skipped = BTreeSet::new();
    for (seq, expected) in &reference.per_window {
        match tally.per_window.get(seq) {
            Some(got) => {
                assert_eq!(got.0, 1, "{context}: window {seq} processed twice: {tally:?}");
                assert_eq!((got.1, got.2), (expected.1, expected.2), "{context}: window {seq}");
            }
            None => {
                skipped.insert(*seq);
            }
        }
    }
    assert!(
        tally.per_window.keys().all(|s| reference.per_window.contains_key(s)),
        "{context}"
    );
    let lost: (u64, u64) = skipped
        .iter()
        .map(|s| (reference.per_window[s].1, reference.per_window[s].2))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(
        (tally.count, tally.sum),
        (reference.count - lost.0, reference.sum - lost.1),
        "{context}"
    );
}

fn check(modes: Modes, async_checkpoints: bool) {
    let reference = run(
        &format!("{modes:?}-reference-{async_checkpoints}"),
        modes,
        &[],
        async_checkpoints,
    );
    assert_eq!(reference.source.next, TUPLES);
    assert_eq!(reference.middle.count, TUPLES);
    assert_eq!(reference.sink.count, TUPLES);
    assert!(reference.report.recoveries.is_empty());

    // First window, a checkpoint window ((seq + 1) % 3 == 0), the one after,
    // the last; at the start of the window and in its middle.
    let windows = [1, 5, 6, LAST];
    for operator in ["source", "middle", "sink"] {
        for seq in windows {
            for point in [FaultPoint::BeginWindow, FaultPoint::Tuple(4)] {
                let context =
                    format!("{modes:?} async={async_checkpoints}: {operator} fails at window {seq} {point:?}");
                let fault = Fault::panic(operator, seq).at(point);
                let outcome = run(&context, modes, &[fault], async_checkpoints);
                assert_eq!(
                    outcome.report.recoveries.len(),
                    1,
                    "{context}: {:?}",
                    outcome.report.recoveries
                );
                assert_eq!(outcome.report.recoveries[0].operator, operator, "{context}");
                assert_eq!(outcome.source.next, TUPLES, "{context}");
                match modes {
                    Modes::AllAtLeastOnce => {
                        assert_eq!(outcome.middle, reference.middle, "{context}");
                        assert_eq!(outcome.sink, reference.sink, "{context}");
                    }
                    Modes::ExactlyOnceMiddle => {
                        assert_eq!(outcome.middle, reference.middle, "{context}");
                        assert_at_most_once(&context, &reference.sink, &outcome.sink);
                    }
                    Modes::AllAtMostOnce => {
                        assert_at_most_once(&context, &reference.middle, &outcome.middle);
                        assert_at_most_once(&context, &reference.sink, &outcome.sink);
                    }
                }
                if modes == Modes::AllAtLeastOnce {
                    let seen: BTreeSet<u64> = outcome.seen.iter().copied().collect();
                    assert_eq!(seen.len() as u64, TUPLES, "{context}: the sink missed tuples");
                }
            }
        }
    }
}

#[test]
fn at_least_once_recovers_exactly_the_failure_free_state() {
    check(Modes::AllAtLeastOnce, true);
    check(Modes::AllAtLeastOnce, false);
}

#[test]
fn exactly_once_operators_recover_exactly_and_their_at_most_once_downstream_loses_only_whole_windows() {
    check(Modes::ExactlyOnceMiddle, true);
}

#[test]
fn at_most_once_never_processes_a_window_twice() {
    check(Modes::AllAtMostOnce, true);
}

#[test]
fn a_fault_that_keeps_firing_stops_the_job_at_the_restart_limit() {
    let outcome = std::panic::catch_unwind(|| {
        run(
            "limit",
            Modes::AllAtLeastOnce,
            &[Fault::error("middle", 4).times(10)],
            true,
        )
    });
    // `run` panics with the job's error.
    let message = match outcome {
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
        Ok(_) => panic!("the job should have failed"),
    };
    assert!(
        message.contains("\"middle\" failed at window 0x6553f10000000004"),
        "{message}"
    );
    assert!(message.contains("gave up after 5 restarts"), "{message}");
}

#[test]
fn a_fault_firing_twice_is_recovered_twice() {
    let outcome = run(
        "twice",
        Modes::AllAtLeastOnce,
        &[Fault::panic("sink", 7).times(2), Fault::error("source", 3)],
        true,
    );
    assert_eq!(outcome.report.recoveries.len(), 3);
    assert_eq!(outcome.report.operator("sink").expect("sink").restarts, 2);
    assert_eq!(outcome.sink.count, TUPLES);
    assert_eq!(outcome.sink.sum, TUPLES * (TUPLES - 1) / 2);
}
