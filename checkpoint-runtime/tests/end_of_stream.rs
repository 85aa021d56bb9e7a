//! End of stream: an operator flushes what it holds when every input has
//! ended, with partitions, and again after a failure in the last window.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, MemoryStorageAgent, StorageAgent, splitmix64};
use checkpoint_runtime::io::{ExactlyOnceFileSink, SortWindow, read_output};
use checkpoint_runtime::{
    Config, Dag, Emit, Fault, FaultPoint, InputOperator, Operator, OperatorResult, Output, Runtime, StopHandle,
    WindowMode,
};
use serde::{Deserialize, Serialize};

const EVENTS: u64 = 3_000;
const USERS: u64 = 25;
/// A user's session ends after this long without an event.
const GAP: u64 = 60;
const WINDOW: u64 = 100;

/// Event `n` at time `n`, by user `user_of(n)`.
fn user_of(n: u64) -> u64 {
    splitmix64(n) % USERS
}

/// The events; with `stop`, asks the job to stop half way.
#[derive(Checkpoint)]
struct Events {
    next: u64,
    #[checkpoint(config)]
    stop: Option<StopHandle>,
}

impl InputOperator for Events {
    type Output = (u64, u64);
    fn emit_tuples(&mut self, out: Output<'_, (u64, u64)>) -> OperatorResult<Emit> {
        out.emit((user_of(self.next), self.next));
        self.next += 1;
        if self.next == EVENTS / 2
            && let Some(stop) = &self.stop
        {
            stop.stop();
        }
        Ok(if self.next == EVENTS {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Open {
    start: u64,
    last: u64,
    events: u64,
}

/// A finished session, as a line: `user start last events`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Session(u64, u64, u64, u64);

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02} {:05} {:05} {}", self.0, self.1, self.2, self.3)
    }
}

#[derive(Default, Checkpoint)]
struct Sessionizer {
    #[checkpoint(keyed)]
    open: KeyedMap<u64, Open>,
}

impl Operator for Sessionizer {
    type Input = (u64, u64);
    type Output = Session;
    fn process(&mut self, (user, t): (u64, u64), out: Output<'_, Session>) -> OperatorResult {
        match self.open.get_mut(&user) {
            Some(open) if t - open.last <= GAP => {
                open.last = t;
                open.events += 1;
            }
            Some(open) => {
                out.emit(Session(user, open.start, open.last, open.events));
                *open = Open {
                    start: t,
                    last: t,
                    events: 1,
                };
            }
            None => {
                self.open.insert(
                    user,
                    Open {
                        start: t,
                        last: t,
                        events: 1,
                    },
                );
            }
        }
        Ok(())
    }
    fn end_of_stream(&mut self, out: Output<'_, Session>) -> OperatorResult {
        let mut open: Vec<(u64, Open)> = self.open.iter().map(|(u, o)| (*u, *o)).collect();
        open.sort_unstable_by_key(|(u, _)| *u);
        for (user, o) in open {
            out.emit(Session(user, o.start, o.last, o.events));
        }
        self.open.clear();
        Ok(())
    }
}

/// The sessions, computed directly.
fn expected() -> Vec<String> {
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    let mut sessions = Vec::new();
    for t in 0..EVENTS {
        let user = user_of(t);
        match open.get_mut(&user) {
            Some(o) if t - o.last <= GAP => {
                o.last = t;
                o.events += 1;
            }
            Some(o) => {
                sessions.push(Session(user, o.start, o.last, o.events));
                *o = Open {
                    start: t,
                    last: t,
                    events: 1,
                };
            }
            None => {
                open.insert(
                    user,
                    Open {
                        start: t,
                        last: t,
                        events: 1,
                    },
                );
            }
        }
    }
    sessions.extend(open.into_iter().map(|(u, o)| Session(u, o.start, o.last, o.events)));
    let mut lines: Vec<String> = sessions.iter().map(ToString::to_string).collect();
    lines.sort();
    lines
}

fn run(faults: &[Fault]) -> (Vec<String>, checkpoint_runtime::RunReport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    run_on(&storage, dir.path(), faults, false)
}

/// Runs the job on `storage`, publishing into `dir`; with `stop`, it stops
/// half way. The published lines, sorted.
fn run_on(
    storage: &Arc<dyn StorageAgent>,
    dir: &std::path::Path,
    faults: &[Fault],
    stop: bool,
) -> (Vec<String>, checkpoint_runtime::RunReport) {
    let mut config = Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(WINDOW))
        .window_base(0x6553_f600)
        .key_groups(KeyGroups::new(16).expect("valid"))
        .restart_limit(3);
    for fault in faults {
        config = config.inject(fault.clone());
    }
    let runtime = Runtime::new(config);
    let mut dag = Dag::new();
    let events = dag.input(
        "events",
        Events {
            next: 0,
            stop: stop.then(|| runtime.stop_handle()),
        },
    );
    let sessions = dag.operator_partitioned("sessions", 3, |_| Sessionizer::default());
    let sorted = dag.operator("sorted", SortWindow::<Session>::new());
    let sink = dag.operator("sink", ExactlyOnceFileSink::<Session>::new(dir));
    dag.connect_by_key(&events, &sessions, |(user, _): &(u64, u64)| *user)
        .connect(&sessions, &sorted)
        .connect(&sorted, &sink)
        .default_checkpoint_window_count(4);
    let report = runtime.run(dag).expect("the job");
    let output = String::from_utf8(read_output(dir).expect("output")).expect("utf-8");
    let mut lines: Vec<String> = output.lines().map(str::to_owned).collect();
    lines.sort();
    (lines, report)
}

#[test]
fn open_sessions_are_flushed_when_the_stream_ends() {
    let (lines, report) = run(&[]);
    assert!(report.recoveries.is_empty());
    let expected = expected();
    // Sessions still open at the end are a good part of the output.
    assert!(expected.len() > USERS as usize);
    assert_eq!(lines, expected);
}

#[test]
fn a_failure_in_the_last_window_flushes_once_more_from_the_restored_state() {
    let last = (EVENTS / WINDOW) as u32;
    // In the last window: one partition at its start, another just before
    // its `end_window` (and so before the flush).
    let faults = [
        Fault::panic("sessions#1", last),
        Fault::panic("sessions#2", last).at(FaultPoint::EndWindow),
    ];
    let (lines, report) = run(&faults);
    assert_eq!(report.recoveries.len(), 2, "{:?}", report.recoveries);
    assert_eq!(lines, expected(), "every session once, flushed ones included");
}

#[test]
fn a_stop_is_not_the_end_of_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let (half, _) = run_on(&storage, dir.path(), &[], true);
    // Stopped half way: only sessions a gap closed are out, none flushed.
    let expected = expected();
    assert!(
        !half.is_empty() && half.len() < expected.len(),
        "{} of {}",
        half.len(),
        expected.len()
    );
    for line in &half {
        let last: u64 = line
            .split(' ')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .expect("a session line");
        assert!(last + GAP < EVENTS / 2 + WINDOW, "flushed at the stop: {line}");
        assert!(expected.contains(line), "a session the stop cut short: {line}");
    }
    // Resumed, the job ends for good and flushes then.
    let (all, report) = run_on(&storage, dir.path(), &[], false);
    assert!(!report.resumed_from.is_empty());
    assert_eq!(all, expected);
}
