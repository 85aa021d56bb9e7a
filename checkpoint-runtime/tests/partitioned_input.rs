//! A partitioned input on the threaded runtime: each partition its own
//! input thread, with its own state, windows and end; the result is the
//! same with failures of a partition and of its downstream, in both
//! recovery scopes, and when the job is stopped and resumed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, KeyedMap, MemoryStorageAgent, StorageAgent};
use checkpoint_runtime::io::{ExactlyOnceFileSink, SortWindow, read_output};
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, InputOperator, Operator, OperatorResult, Output, RecoveryScope, Runtime, StopHandle,
    WindowMode,
};

const TUPLES: u64 = 6_000;
const KEYS: u64 = 41;
const WINDOW: u64 = 100;
const PARTITIONS: usize = 3;

/// Partition `p`: the numbers `n` from `p`, step 3, below its end; it may
/// stop the job half way through its own numbers.
#[derive(Checkpoint)]
struct Slice {
    next: u64,
    #[checkpoint(config)]
    end: u64,
    #[checkpoint(config)]
    stop: Option<StopHandle>,
    /// Microseconds to sleep before each tuple: a slow partition.
    #[checkpoint(config)]
    pace_us: u64,
}

impl InputOperator for Slice {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        if self.next >= self.end {
            return Ok(Emit::Done);
        }
        if self.next >= self.end / 2
            && let Some(stop) = self.stop.take()
        {
            stop.stop();
        }
        if self.pace_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(self.pace_us));
        }
        out.emit(self.next);
        self.next += PARTITIONS as u64;
        Ok(Emit::Continue)
    }
}

/// Partition 1 ends far earlier than the others: the stream outlives it.
fn end_of(p: usize) -> u64 {
    if p == 1 { 1_000 } else { TUPLES }
}

#[derive(Default, Checkpoint)]
struct Count {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
}

impl Operator for Count {
    type Input = u64;
    type Output = String;
    fn process(&mut self, n: u64, out: Output<'_, String>) -> OperatorResult {
        let count = self.counts.entry(n % KEYS).or_insert(0);
        *count += 1;
        out.emit(format!("{} {count}", n % KEYS));
        Ok(())
    }
}

fn expected() -> Vec<String> {
    let mut counts = BTreeMap::new();
    let mut lines = Vec::new();
    let mut numbers: Vec<u64> = (0..PARTITIONS)
        .flat_map(|p| (p as u64..end_of(p)).step_by(PARTITIONS))
        .collect();
    numbers.sort_unstable();
    for n in numbers {
        let count = counts.entry(n % KEYS).or_insert(0u64);
        *count += 1;
        lines.push(format!("{} {count}", n % KEYS));
    }
    lines.sort();
    lines
}

/// Runs the job on `storage`, publishing into `dir`; the published lines,
/// sorted, and the report.
fn run(
    storage: &Arc<dyn StorageAgent>,
    dir: &std::path::Path,
    config: Config,
    stop: bool,
) -> (Vec<String>, checkpoint_runtime::RunReport) {
    run_paced(storage, dir, config, stop, 0)
}

/// [`run`], partition 0 sleeping `pace_us` before each tuple.
fn run_paced(
    storage: &Arc<dyn StorageAgent>,
    dir: &std::path::Path,
    config: Config,
    stop: bool,
    pace_us: u64,
) -> (Vec<String>, checkpoint_runtime::RunReport) {
    let config = config
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(WINDOW))
        .window_base(0x6553_f600)
        .restart_limit(3);
    let runtime = Runtime::new(config);
    let handle = Arc::new(Mutex::new(stop.then(|| runtime.stop_handle())));
    let mut dag = Dag::new();
    let numbers = dag.input_partitioned("numbers", PARTITIONS, move |p| Slice {
        next: p as u64,
        end: end_of(p),
        // Partition 0 stops the job.
        stop: if p == 0 {
            handle.lock().expect("lock").take()
        } else {
            None
        },
        pace_us: if p == 0 { pace_us } else { 0 },
    });
    let count = dag.operator_partitioned("count", 2, |_| Count::default());
    let sorted = dag.operator("sorted", SortWindow::<String>::new());
    let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(dir));
    dag.connect_by_key(&numbers, &count, |n: &u64| *n % KEYS)
        .connect(&count, &sorted)
        .connect(&sorted, &sink)
        .default_checkpoint_window_count(4);
    let report = runtime.run(dag).expect("the job");
    let output = String::from_utf8(read_output(dir).expect("output")).expect("utf-8");
    let mut lines: Vec<String> = output.lines().map(str::to_owned).collect();
    lines.sort();
    (lines, report)
}

#[test]
fn every_partition_is_read_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let (lines, report) = run(&storage, dir.path(), Config::default(), false);
    assert!(report.recoveries.is_empty());
    assert_eq!(lines, expected());
    // Each partition checkpointed under its own name.
    for p in 0..PARTITIONS {
        assert!(
            !storage.windows(&format!("numbers#{p}")).expect("windows").is_empty(),
            "numbers#{p}"
        );
    }
}

#[test]
fn failures_of_a_partition_and_downstream_lose_and_repeat_nothing_in_both_scopes() {
    for scope in [RecoveryScope::Partial, RecoveryScope::Global] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
        // Partition 2 fails in its window 7, after partition 1 ended (in
        // its window 4); the count later.
        let config = Config::default()
            .recovery_scope(scope)
            .inject(Fault::panic("numbers#2", 7))
            .inject(Fault::panic("count#1", 12));
        let (lines, report) = run(&storage, dir.path(), config, false);
        assert_eq!(report.recoveries.len(), 2, "{scope:?}: {:?}", report.recoveries);
        assert_eq!(lines, expected(), "{scope:?}");
    }
}

#[test]
fn a_stopped_job_resumes_each_partition_where_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let (half, _) = run(&storage, dir.path(), Config::default(), true);
    let expected = expected();
    assert!(
        !half.is_empty() && half.len() < expected.len(),
        "{} of {}",
        half.len(),
        expected.len()
    );
    let (all, report) = run(&storage, dir.path(), Config::default(), false);
    assert!(!report.resumed_from.is_empty());
    let missing: Vec<&String> = expected.iter().filter(|l| !all.contains(l)).collect();
    let extra: Vec<&String> = all.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && all.len() == expected.len(),
        "missing {missing:?}, extra {extra:?}, {} lines of {}; resumed from {:?}",
        all.len(),
        expected.len(),
        report.resumed_from
    );
}

/// A stop seen by a slow partition while the others run far ahead, with
/// queues of one batch and no replay stores (the global scope): no
/// partition waits for another to see the stop, the stop ends the job (a
/// watchdog says if not), and the resumed job loses and repeats nothing.
#[test]
fn a_stop_seen_while_a_partition_is_held_back_ends_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (storage, path) = (Arc::clone(&storage), dir.path().to_owned());
        std::thread::spawn(move || {
            let config = Config::default()
                .channel_capacity(1)
                .batch_size(10)
                .recovery_scope(RecoveryScope::Global);
            let _ = tx.send(run_paced(&storage, &path, config, true, 20));
        });
    }
    let (half, _) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("watchdog: the stopped job did not end in 60 s");
    let expected = expected();
    assert!(half.len() < expected.len(), "{} of {}", half.len(), expected.len());
    let (all, _) = run(&storage, dir.path(), Config::default(), false);
    assert_eq!(all, expected);
}
