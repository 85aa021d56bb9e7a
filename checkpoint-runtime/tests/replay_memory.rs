//! Replay memory stays bounded before, during and after a recovery: a
//! recovered downstream reads its upstream's store through a cursor, which
//! never blocks the upstream, while the store keeps at most its cap in
//! memory (in real bytes, heap included) and spills the rest.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};

use checkpoint_core::{Checkpoint, MemoryStorageAgent, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, FaultPoint, InputOperator, Operator, OperatorContext, OperatorResult, Output, RunReport,
    Runtime, WindowMode,
};
use common::with_watchdog_secs;

const BASE: u32 = 0x6553_f200;

/// A one-shot event a thread can wait for without polling.
struct Event {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Event {
    const fn new() -> Self {
        Event {
            set: Mutex::new(false),
            changed: Condvar::new(),
        }
    }

    fn set(&self) {
        *self.set.lock().expect("event") = true;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let mut set = self.set.lock().expect("event");
        while !*set {
            set = self.changed.wait(set).expect("event");
        }
    }
}

/// Emits `0..end`, `per_call` per call; says when it emitted the last.
#[derive(Default, Checkpoint)]
struct Numbers {
    next: u64,
    end: u64,
    per_call: u64,
}

impl Numbers {
    fn new(end: u64, per_call: u64) -> Self {
        Numbers { next: 0, end, per_call }
    }
}

static NUMBERS_DONE: Event = Event::new();

impl InputOperator for Numbers {
    type Output = u64;

    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let stop = (self.next + self.per_call).min(self.end);
        for value in self.next..stop {
            out.emit(value);
        }
        self.next = stop;
        if self.next == self.end {
            NUMBERS_DONE.set();
            return Ok(Emit::Done);
        }
        Ok(Emit::Continue)
    }
}

static SLOW_SETUPS: AtomicU32 = AtomicU32::new(0);
static SLOW_WAITED: AtomicBool = AtomicBool::new(false);

/// Sums; restored after its failure, it stops at its first tuple until the
/// input has emitted everything: the slowest downstream there is.
#[derive(Default, Checkpoint)]
struct SlowAfterRestore {
    sum: u64,
    count: u64,
    #[checkpoint(transient)]
    incarnation: u32,
}

impl Operator for SlowAfterRestore {
    type Input = u64;
    type Output = ();

    fn setup(&mut self, _ctx: &OperatorContext) -> OperatorResult {
        self.incarnation = SLOW_SETUPS.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(())
    }

    fn process(&mut self, value: u64, _out: Output<'_, ()>) -> OperatorResult {
        if self.incarnation > 1 && !SLOW_WAITED.swap(true, Ordering::SeqCst) {
            // Were the input held back by this operator, it would never
            // finish, and the watchdog would fail the test.
            NUMBERS_DONE.wait();
        }
        self.sum += value;
        self.count += 1;
        Ok(())
    }
}

fn report_of<'a>(report: &'a RunReport, name: &str) -> &'a checkpoint_runtime::OperatorReport {
    report
        .operators
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no operator {name}"))
}

fn last_state<T: Checkpoint>(storage: &MemoryStorageAgent, name: &str) -> T {
    let window: WindowId = *storage.windows(name).expect("windows").last().expect("a checkpoint");
    Snapshot::decode::<T>(&storage.load(name, window).expect("load"))
        .expect("decode")
        .1
}

/// The store keeps tuples encoded: a `u64` below 2^21 takes at most 3
/// bytes, plus a few per batch; 8 per tuple is an upper bound.
const U64_BYTES: u64 = 8;

#[test]
fn a_recovered_slow_downstream_holds_no_upstream_back_and_the_store_stays_under_its_cap() {
    const TUPLES: u64 = 30_000;
    const WINDOW: u64 = 100;
    const CAP: usize = 10_000;
    let spill = tempfile::tempdir().expect("tempdir");
    let storage = MemoryStorageAgent::new();
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers::new(TUPLES, 10));
    let slow = dag.operator("slow", SlowAfterRestore::default());
    dag.connect(&numbers, &slow).default_checkpoint_window_count(4);
    let config = Config::default()
        .storage(storage.clone())
        .window_mode(WindowMode::Tuples(WINDOW))
        .window_base(BASE)
        .batch_size(10)
        .channel_capacity(4)
        .replay_memory_cap(CAP)
        .spill_dir(spill.path())
        .inject(Fault::panic("slow", 20));
    let report = with_watchdog_secs(120, move || Runtime::new(config).run(dag)).expect("the job");

    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
    assert!(SLOW_WAITED.load(Ordering::SeqCst), "the restored operator never waited");
    let slow: SlowAfterRestore = last_state(&storage, "slow");
    assert_eq!((slow.count, slow.sum), (TUPLES, TUPLES * (TUPLES - 1) / 2));

    let numbers = report_of(&report, "numbers");
    let window_bytes = WINDOW * U64_BYTES;
    assert!(
        numbers.replay_peak_bytes <= CAP as u64 + window_bytes,
        "the store held {} bytes; cap {CAP} + one window {window_bytes}",
        numbers.replay_peak_bytes
    );
    // Nothing committed while the downstream waited: the input's ~270
    // windows after the failure could only go to disk.
    assert!(numbers.spilled_windows >= 200, "{} spilled", numbers.spilled_windows);
    assert!(
        std::fs::read_dir(spill.path()).expect("spill base").next().is_none(),
        "the job's spill directory goes with it"
    );
}

/// Emits `end` strings of about 1 KB, `(i, text)`.
#[derive(Default, Checkpoint)]
struct Texts {
    next: u64,
    end: u64,
}

fn text(i: u64) -> String {
    format!("{i:016x}").repeat(64)
}

impl InputOperator for Texts {
    type Output = String;

    fn emit_tuples(&mut self, out: Output<'_, String>) -> OperatorResult<Emit> {
        if self.next == self.end {
            return Ok(Emit::Done);
        }
        out.emit(text(self.next));
        self.next += 1;
        Ok(Emit::Continue)
    }
}

/// An order-sensitive digest of every string it received.
#[derive(Default, Checkpoint, Debug, PartialEq, Eq)]
struct Digest {
    count: u64,
    bytes: u64,
    digest: u64,
}

impl Operator for Digest {
    type Input = String;
    type Output = ();

    fn process(&mut self, text: String, _out: Output<'_, ()>) -> OperatorResult {
        self.count += 1;
        self.bytes += text.len() as u64;
        for b in text.bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

fn text_job(fault: Option<Fault>, spill: &std::path::Path) -> (Digest, RunReport) {
    let storage = MemoryStorageAgent::new();
    let mut dag = Dag::new();
    let texts = dag.input("texts", Texts { next: 0, end: 2_000 });
    let digest = dag.operator("digest", Digest::default());
    dag.connect(&texts, &digest).default_checkpoint_window_count(5);
    let mut config = Config::default()
        .storage(storage.clone())
        .window_mode(WindowMode::Tuples(20))
        .window_base(BASE + 1)
        .batch_size(5)
        .replay_memory_cap(64 * 1024)
        .spill_dir(spill);
    if let Some(fault) = fault {
        config = config.inject(fault);
    }
    let report = with_watchdog_secs(120, move || Runtime::new(config).run(dag)).expect("the job");
    (last_state(&storage, "digest"), report)
}

#[test]
fn kilobyte_strings_spill_past_a_small_cap_and_a_replay_gives_the_failure_free_result() {
    let spill = tempfile::tempdir().expect("tempdir");
    let (reference, clean) = text_job(None, spill.path());
    assert_eq!(reference.count, 2_000);
    assert_eq!(reference.bytes, 2_000 * 1_024);
    assert!(clean.recoveries.is_empty());

    // Fails in window 60 of 100: the last commit is about 5 windows back,
    // so the replay reads windows written to disk.
    let (replayed, report) = text_job(Some(Fault::panic("digest", 60).at(FaultPoint::EndWindow)), spill.path());
    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
    assert_eq!(replayed, reference, "the replay gives the failure-free result");

    for run in [&clean, &report] {
        let texts = report_of(run, "texts");
        // Kept encoded: 1,024 bytes of text and a 2-byte length each, plus
        // a few bytes per batch; 1,030 per string is an upper bound.
        let window_bytes = 20 * 1_030;
        assert!(
            texts.replay_peak_bytes <= 64 * 1024 + window_bytes,
            "the store held {} bytes",
            texts.replay_peak_bytes
        );
        assert!(
            texts.replay_peak_bytes >= 64 * 1024 - window_bytes,
            "the store kept {} bytes: are the strings' heap bytes counted?",
            texts.replay_peak_bytes
        );
    }
    // Between two commits at least 5 windows of 20 KB are kept: over the
    // 64 KB cap, so both runs spill, and the replay reads spilled windows.
    for run in [&clean, &report] {
        assert!(report_of(run, "texts").spilled_windows > 0, "nothing spilled");
    }
}

static SINK_SEEN: Mutex<Vec<(u32, u64)>> = Mutex::new(Vec::new());

/// A stateless sink: records what it sees, with the window.
#[derive(Default, Checkpoint)]
#[checkpoint(stateless)]
struct Record {
    #[checkpoint(transient)]
    window: u32,
}

impl Operator for Record {
    type Input = u64;
    type Output = ();

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = window.sequence();
        Ok(())
    }

    fn process(&mut self, value: u64, _out: Output<'_, ()>) -> OperatorResult {
        SINK_SEEN.lock().expect("seen").push((self.window, value));
        Ok(())
    }
}

/// A stateless sink's recovery checkpoint is the last window it
/// completed, so its upstream's store drops windows as the sink completes
/// them, long before any commit (the input here checkpoints once, at the
/// start). A failure of the sink still gets every window after the last
/// one it completed, read from spill files: nothing it needs was dropped.
#[test]
fn a_stateless_sinks_upstream_drops_what_it_completed_and_a_failure_still_replays_the_rest() {
    const TUPLES: u64 = 20_000;
    let spill = tempfile::tempdir().expect("tempdir");
    let storage = MemoryStorageAgent::new();
    let mut dag = Dag::new();
    // Two calls make a window of 10.
    let numbers = dag.input("numbers", Numbers::new(TUPLES, 5));
    let record = dag.operator("record", Record::default());
    dag.connect(&numbers, &record).default_checkpoint_window_count(1 << 20);
    let config = Config::default()
        .storage(storage)
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE + 2)
        .batch_size(4)
        .replay_memory_cap(0)
        .spill_dir(spill.path())
        .inject(Fault::panic("record", 500).at(FaultPoint::Tuple(6)))
        .inject(Fault::panic("record", 1_200));
    let report = with_watchdog_secs(120, move || Runtime::new(config).run(dag)).expect("the job");
    assert_eq!(report.recoveries.len(), 2, "{:?}", report.recoveries);
    let seen = std::mem::take(&mut *SINK_SEEN.lock().expect("seen"));
    let mut values: Vec<u64> = seen.iter().map(|(_, v)| *v).collect();
    values.sort_unstable();
    let before = values.len();
    values.dedup();
    assert_eq!(
        values,
        (0..TUPLES).collect::<Vec<_>>(),
        "every tuple, after both failures"
    );
    // Only the 6 tuples window 500 processed before its failure came twice:
    // the sink resumed right after window 499, the last it completed.
    let twice = before - values.len();
    assert_eq!(twice, 6, "{twice} tuples seen twice");
    assert_eq!(seen.iter().filter(|(w, _)| *w == 500).count(), 16);
}
