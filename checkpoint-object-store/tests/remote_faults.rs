//! Remote faults between a job and its S3 endpoint, made by a loopback
//! proxy that resets, swallows or delays chosen requests: a failed save is
//! retried and succeeds; a save that does not become durable in time is
//! abandoned and the job goes on; past the tolerated count of failed
//! checkpoints the operator fails and is recovered; and the committed
//! window never passes a checkpoint the store did not acknowledge.

mod common;
mod proxy;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use checkpoint_core::{Checkpoint, StorageAgent, WindowId};
use checkpoint_object_store::ObjectStoreAgent;
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, RunReport, Runtime, WindowMode,
};
use proxy::{Fault, Proxy, Rule};

const TUPLES: u64 = 600;

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        out.emit(self.next);
        self.next += 1;
        Ok(if self.next == TUPLES {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// What the sum was told, window by window.
#[derive(Default)]
struct Hooks {
    /// Windows it began a checkpoint at.
    began: BTreeSet<WindowId>,
    /// Windows it was told were durable.
    durable: BTreeSet<WindowId>,
    /// Windows it was told were committed.
    committed: Vec<WindowId>,
    /// A committed window that passed every durable checkpoint (never
    /// expected).
    ahead: Vec<WindowId>,
}

#[derive(Default, Checkpoint)]
struct Sum {
    total: u64,
    /// Configuration: a recovered sum records into the same hooks.
    #[checkpoint(config)]
    hooks: Option<Arc<Mutex<Hooks>>>,
}

impl Sum {
    fn hooks(&self) -> std::sync::MutexGuard<'_, Hooks> {
        self.hooks
            .as_ref()
            .expect("hooks")
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Operator for Sum {
    type Input = u64;
    type Output = ();
    fn process(&mut self, n: u64, _out: Output<'_, ()>) -> OperatorResult {
        self.total += n;
        Ok(())
    }
    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        self.hooks().began.insert(window);
        Ok(())
    }
    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        self.hooks().durable.insert(window);
        Ok(())
    }
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        let mut hooks = self.hooks();
        // The sum is the job's sink: the committed window is at most its
        // own newest durable checkpoint.
        if hooks.durable.range(window..).next().is_none() && hooks.durable.last().is_some_and(|d| *d < window) {
            hooks.ahead.push(window);
        }
        hooks.committed.push(window);
        Ok(())
    }
}

/// An agent reaching the endpoint through `proxy`, on a fresh prefix.
fn agent(proxy: &Proxy, prefix: &str) -> (ObjectStoreAgent, String) {
    let url = common::location(prefix);
    let through = proxy.url();
    let mut settings = common::settings();
    for (key, value) in &mut settings {
        if *key == "aws_endpoint" {
            value.clone_from(&through);
        }
    }
    let agent = ObjectStoreAgent::from_url_with(&url, settings.iter().map(|(k, v)| (*k, v.as_str()))).expect("agent");
    (agent, url)
}

fn run(storage: &Arc<dyn StorageAgent>, hooks: &Arc<Mutex<Hooks>>, config: impl Fn(Config) -> Config) -> RunReport {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers { next: 0 });
    let sum = dag.operator(
        "sum",
        Sum {
            total: 0,
            hooks: Some(Arc::clone(hooks)),
        },
    );
    dag.connect(&numbers, &sum).default_checkpoint_window_count(2);
    let base = Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(20))
        .window_base(0x6553_f100)
        .restart_limit(3);
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = Runtime::new(config(base));
    std::thread::spawn(move || {
        let _ = tx.send(runtime.run(dag));
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("watchdog: the job did not finish in 120 s")
        .expect("the job")
}

fn sum_report(report: &RunReport) -> &checkpoint_runtime::OperatorReport {
    report.operators.iter().find(|o| o.name == "sum").expect("sum")
}

/// The total the sum holds in its newest stored checkpoint.
fn stored_total(storage: &dyn StorageAgent) -> u64 {
    let last = *storage.windows("sum").expect("windows").last().expect("a checkpoint");
    let (_, sum) = checkpoint_core::Snapshot::decode::<Sum>(&storage.load("sum", last).expect("load")).expect("decode");
    sum.total
}

/// The snapshot writes of the sum, after its initial checkpoint.
fn sum_snapshots(fault: Fault, count: u32) -> Rule {
    Rule {
        method: "PUT",
        path: "/sum/".to_owned(),
        skip: 1,
        count,
        fault,
    }
}

#[test]
fn a_save_whose_connection_is_reset_is_retried_and_succeeds() {
    let proxy = Proxy::start(&common::endpoint());
    let (agent, _) = agent(&proxy, "jobs/retried");
    let storage: Arc<dyn StorageAgent> = Arc::new(agent);
    proxy.set(sum_snapshots(Fault::Reset, 2));
    let hooks = Arc::default();
    let report = run(&storage, &hooks, |c| {
        c.save_retries(3, Duration::from_millis(10), Duration::from_millis(100))
    });
    assert_eq!(proxy.faulted(), 2, "both resets happened");
    let sum = sum_report(&report);
    assert_eq!(sum.save_retries, 2, "{sum:?}");
    assert_eq!(sum.failed_checkpoints, 0, "{sum:?}");
    assert!(report.recoveries.is_empty(), "{:?}", report.recoveries);
    let hooks = hooks.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(hooks.began, hooks.durable, "every checkpoint became durable");
    assert_eq!(stored_total(&*storage), TUPLES * (TUPLES - 1) / 2);
}

#[test]
fn a_save_not_durable_in_time_is_abandoned_and_the_job_goes_on() {
    let proxy = Proxy::start(&common::endpoint());
    let (agent, _) = agent(&proxy, "jobs/abandoned");
    let storage: Arc<dyn StorageAgent> = Arc::new(agent);
    // One snapshot write is never answered.
    proxy.set(sum_snapshots(Fault::Swallow, 1));
    let hooks: Arc<Mutex<Hooks>> = Arc::default();
    let report = run(&storage, &hooks, |c| {
        c.save_timeout(Duration::from_millis(1500))
            .tolerable_failed_checkpoints(2)
    });
    assert_eq!(proxy.faulted(), 1);
    let sum = sum_report(&report);
    assert_eq!(sum.failed_checkpoints, 1, "{sum:?}");
    assert!(report.recoveries.is_empty(), "tolerated: {:?}", report.recoveries);
    let hooks = hooks.lock().unwrap_or_else(PoisonError::into_inner);
    let abandoned: Vec<WindowId> = hooks.began.difference(&hooks.durable).copied().collect();
    assert_eq!(
        abandoned.len(),
        1,
        "began {:?}, durable {:?}",
        hooks.began,
        hooks.durable
    );
    // Never reported durable, never committed as such, and removed.
    assert!(!hooks.committed.contains(&abandoned[0]), "{:?}", hooks.committed);
    assert!(
        hooks.ahead.is_empty(),
        "committed past every durable checkpoint: {:?}",
        hooks.ahead
    );
    assert!(!storage.windows("sum").expect("windows").contains(&abandoned[0]));
    assert!(hooks.durable.last() > abandoned.last(), "later checkpoints succeeded");
    assert_eq!(stored_total(&*storage), TUPLES * (TUPLES - 1) / 2);
}

#[test]
fn past_the_tolerated_count_the_operator_fails_and_recovers() {
    let proxy = Proxy::start(&common::endpoint());
    let (agent, _) = agent(&proxy, "jobs/intolerable");
    let storage: Arc<dyn StorageAgent> = Arc::new(agent);
    // Two checkpoints in a row fail (no retries); one is tolerated.
    proxy.set(sum_snapshots(Fault::Reset, 2));
    let hooks: Arc<Mutex<Hooks>> = Arc::default();
    let report = run(&storage, &hooks, |c| {
        c.save_retries(0, Duration::ZERO, Duration::ZERO)
            .tolerable_failed_checkpoints(1)
    });
    assert_eq!(proxy.faulted(), 2);
    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
    let sum = sum_report(&report);
    assert_eq!(sum.failed_checkpoints, 1, "{sum:?}");
    assert_eq!(sum.save_retries, 0, "{sum:?}");
    let hooks = hooks.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        hooks.ahead.is_empty(),
        "committed past every durable checkpoint: {:?}",
        hooks.ahead
    );
    assert_eq!(stored_total(&*storage), TUPLES * (TUPLES - 1) / 2);
}
