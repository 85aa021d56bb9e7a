//! Broadcast edges: every partition of the downstream receives every
//! broadcast tuple, once per window, in the window it was emitted in, also
//! across a recovery.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use checkpoint_core::{Checkpoint, MemoryStorageAgent, StorageAgent, WindowId};
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, InputOperator, Operator, OperatorContext, OperatorResult, Output, Runtime, WindowMode,
};
use serde::{Deserialize, Serialize};

const PER_INPUT: u64 = 200;
const PER_WINDOW: u64 = 5;
const PARTITIONS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Input {
    Event(u64),
    Rule(u64),
}

/// Emits `0..PER_INPUT` as `wrap(n)`, one per call.
#[derive(Checkpoint)]
struct Source<T> {
    next: u64,
    #[checkpoint(config)]
    wrap: Option<fn(u64) -> T>,
}

impl<T: checkpoint_runtime::Tuple> InputOperator for Source<T> {
    type Output = T;
    fn emit_tuples(&mut self, out: Output<'_, T>) -> OperatorResult<Emit> {
        let wrap = self.wrap.ok_or("no wrap")?;
        out.emit(wrap(self.next));
        self.next += 1;
        Ok(if self.next == PER_INPUT {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// What a partition saw that it should not have: (partition, window,
/// rules seen).
type Violations = Arc<Mutex<Vec<(String, u32, Vec<u64>)>>>;

#[derive(Default, Checkpoint)]
struct Check {
    rules: u64,
    rule_sum: u64,
    events: u64,
    #[checkpoint(transient)]
    window: Option<WindowId>,
    #[checkpoint(transient)]
    seen: Vec<u64>,
    #[checkpoint(transient)]
    name: String,
    #[checkpoint(config)]
    violations: Option<Violations>,
}

impl Operator for Check {
    type Input = Input;
    type Output = ();
    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.name = ctx.name().to_owned();
        Ok(())
    }
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        self.seen.clear();
        Ok(())
    }
    fn process(&mut self, input: Input, _out: Output<'_, ()>) -> OperatorResult {
        match input {
            Input::Event(_) => self.events += 1,
            Input::Rule(r) => {
                self.seen.push(r);
                self.rules += 1;
                self.rule_sum += r;
            }
        }
        Ok(())
    }
    fn end_window(&mut self, _out: Output<'_, ()>) -> OperatorResult {
        // Window w (from 1) of the rule input holds rules 5(w-1) .. 5w-1.
        let w = u64::from(self.window.ok_or("no window")?.sequence());
        let expected: Vec<u64> = ((w - 1) * PER_WINDOW..w * PER_WINDOW).collect();
        let mut seen = std::mem::take(&mut self.seen);
        seen.sort_unstable();
        if seen != expected {
            let violations = self.violations.as_ref().ok_or("no log")?;
            violations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((self.name.clone(), w as u32, seen));
        }
        Ok(())
    }
}

fn run(faults: &[Fault]) -> (checkpoint_runtime::RunReport, Violations, Arc<dyn StorageAgent>) {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let violations: Violations = Arc::default();
    let mut dag = Dag::new();
    let events = dag.input(
        "events",
        Source {
            next: 0,
            wrap: Some(Input::Event as fn(u64) -> Input),
        },
    );
    let rules = dag.input(
        "rules",
        Source {
            next: 0,
            wrap: Some((|n| n) as fn(u64) -> u64),
        },
    );
    let check = dag.operator_partitioned("check", PARTITIONS, {
        let violations = Arc::clone(&violations);
        move |_| Check {
            violations: Some(Arc::clone(&violations)),
            ..Check::default()
        }
    });
    dag.connect_by_key(&events, &check, |input: &Input| match input {
        Input::Event(n) | Input::Rule(n) => *n,
    })
    .connect_broadcast_with(&rules, &check, Input::Rule)
    .default_checkpoint_window_count(4);
    let mut config = Config::default()
        .shared_storage(Arc::clone(&storage))
        .window_mode(WindowMode::Tuples(PER_WINDOW))
        .window_base(0x6553_f700)
        .restart_limit(3);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    let report = Runtime::new(config).run(dag).expect("the job");
    (report, violations, storage)
}

/// Each partition's final state: (rules, rule sum, events).
fn finals(storage: &dyn StorageAgent) -> BTreeMap<String, (u64, u64, u64)> {
    (0..PARTITIONS)
        .map(|p| {
            let name = format!("check#{p}");
            let last = *storage.windows(&name).expect("windows").last().expect("a checkpoint");
            let bytes = storage.load(&name, last).expect("load");
            let (_, state) = checkpoint_core::Snapshot::decode::<Check>(&bytes).expect("decode");
            (name, (state.rules, state.rule_sum, state.events))
        })
        .collect()
}

fn check_outcome(faults: &[Fault]) -> checkpoint_runtime::RunReport {
    let (report, violations, storage) = run(faults);
    let violations = violations.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        violations.is_empty(),
        "windows with other rules than emitted: {violations:?}"
    );
    let finals = finals(&*storage);
    let rule_sum = PER_INPUT * (PER_INPUT - 1) / 2;
    for (name, (rules, sum, _)) in &finals {
        assert_eq!((*rules, *sum), (PER_INPUT, rule_sum), "{name}: every rule once");
    }
    let events: u64 = finals.values().map(|(_, _, e)| e).sum();
    assert_eq!(events, PER_INPUT, "events are split by key, not broadcast");
    assert!(finals.values().all(|(_, _, e)| *e < PER_INPUT), "{finals:?}");
    report
}

#[test]
fn every_partition_sees_every_broadcast_tuple_once_per_window() {
    let report = check_outcome(&[]);
    assert!(report.recoveries.is_empty());
}

#[test]
fn a_recovered_partition_sees_the_broadcast_windows_again_exactly() {
    let report = check_outcome(&[Fault::panic("check#1", 17)]);
    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
}

#[test]
fn a_recovered_broadcast_input_sends_its_windows_again_to_every_partition() {
    let report = check_outcome(&[Fault::panic("rules", 23)]);
    assert_eq!(report.recoveries.len(), 1, "{:?}", report.recoveries);
    let restored: Vec<&str> = report.recoveries[0].restored.iter().map(|(n, _)| n.as_str()).collect();
    for p in 0..PARTITIONS {
        assert!(restored.contains(&format!("check#{p}").as_str()), "{restored:?}");
    }
}
