//! What the runtime reports through the `metrics` facade, seen by a
//! recorder of the test's own (installed once: this binary holds one test):
//! per-operator counters, checkpoint histograms, and the alignment wait of
//! an operator with two inputs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use checkpoint_core::{Checkpoint, MemoryStorageAgent};
use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Every metric by name and `operator` label: counters' values, histograms'
/// recorded values.
#[derive(Default)]
struct Seen {
    counters: Mutex<BTreeMap<(String, String), Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<(String, String), Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(value);
    }
}

struct Ignore;

impl metrics::GaugeFn for Ignore {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}

fn id(key: &Key) -> (String, String) {
    let operator = key
        .labels()
        .find(|l| l.key() == "operator")
        .map(|l| l.value().to_owned());
    (key.name().to_owned(), operator.unwrap_or_default())
}

#[derive(Clone, Default)]
struct Capture(Arc<Seen>);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.0.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Counter::from_arc(Arc::clone(counters.entry(id(key)).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Ignore))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.0.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        Histogram::from_arc(Arc::clone(histograms.entry(id(key)).or_default()))
    }
}

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        out.emit(self.next);
        self.next += 1;
        Ok(if self.next == 1_000 { Emit::Done } else { Emit::Continue })
    }
}

#[derive(Default, Checkpoint)]
struct Sum {
    total: u64,
}

impl Operator for Sum {
    type Input = u64;
    type Output = ();
    fn process(&mut self, n: u64, _out: Output<'_, ()>) -> OperatorResult {
        self.total += n;
        Ok(())
    }
}

#[test]
fn the_runtime_reports_its_counters_checkpoints_and_alignment_waits() {
    let capture = Capture::default();
    metrics::set_global_recorder(capture.clone()).expect("the only recorder of this binary");
    let mut dag = Dag::new();
    let left = dag.input("left", Numbers { next: 0 });
    let right = dag.input("right", Numbers { next: 0 });
    let sum = dag.operator("sum", Sum::default());
    dag.connect(&left, &sum)
        .connect(&right, &sum)
        .default_checkpoint_window_count(5);
    let config = Config::default()
        .storage(MemoryStorageAgent::new())
        .window_mode(WindowMode::Tuples(50));
    let report = Runtime::new(config).run(dag).expect("the job");

    let counter = |name: &str, operator: &str| {
        let counters = capture.0.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .get(&(name.to_owned(), operator.to_owned()))
            .map(|c| c.load(Ordering::Relaxed))
    };
    let samples = |name: &str, operator: &str| {
        let histograms = capture.0.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        histograms
            .get(&(name.to_owned(), operator.to_owned()))
            .map(|h| h.0.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .unwrap_or_default()
    };
    let sum_report = report.operator("sum").expect("sum");
    assert_eq!(counter("checkpoint_num_records_in", "sum"), Some(2_000));
    assert_eq!(counter("checkpoint_num_records_out", "left"), Some(1_000));
    assert_eq!(counter("checkpoint_windows", "sum"), Some(sum_report.windows));
    // The initial checkpoint is counted by the report, not as a durable
    // checkpoint of a window.
    let completed = counter("checkpoint_number_of_completed_checkpoints", "sum").expect("completed");
    assert!(
        completed >= 4 && completed <= sum_report.checkpoints,
        "{completed} of {}",
        sum_report.checkpoints
    );
    assert_eq!(
        samples("checkpoint_durable_latency_seconds", "sum").len() as u64,
        completed
    );
    assert!(!samples("checkpoint_encode_seconds", "sum").is_empty());
    // One alignment wait per window of the operator with two inputs.
    let waits = samples("checkpoint_alignment_wait_seconds", "sum");
    assert_eq!(waits.len() as u64, sum_report.windows, "{waits:?}");
    assert!(waits.iter().all(|w| (0.0..60.0).contains(w)), "{waits:?}");
    assert_eq!(
        report.checkpoint_history.iter().filter(|c| c.operator == "sum").count() as u64,
        completed
    );
}
