//! EXACTLY_ONCE: an operator in this mode checkpoints at the end of every
//! application window, and its save is durable before its next
//! `begin_window` runs, so no window is ever processed twice in its state.

mod common;

use std::sync::{Arc, Mutex};

use checkpoint_core::{Checkpoint, MemoryStorageAgent, WindowId};
use checkpoint_runtime::{Config, Dag, Operator, OperatorResult, Output, ProcessingMode, Runtime, WindowMode};
use common::{Counting, Intercept, Op, Tagged, with_watchdog};

const BASE: u32 = 0x6553_f100;

type Log = Arc<Mutex<Vec<(&'static str, u32)>>>;

/// Counts tuples; logs every `begin_window`.
#[derive(Default, Checkpoint)]
struct Watched {
    seen: u64,
    #[checkpoint(transient)]
    log: Option<Log>,
}

impl Operator for Watched {
    type Input = Tagged;
    type Output = ();
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        if let Some(log) = &self.log {
            log.lock().expect("log").push(("begin", window.sequence()));
        }
        Ok(())
    }
    fn process(&mut self, _t: Tagged, _out: Output<'_, ()>) -> OperatorResult {
        self.seen += 1;
        Ok(())
    }
}

#[test]
fn an_exactly_once_operator_checkpoints_every_application_window_before_the_next_begins() {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    // Slow storage that logs when a save of `watched` starts and ends: a
    // save left in flight would still be running when the next window
    // begins.
    let (start_log, end_log) = (log.clone(), log.clone());
    let storage = Intercept::new(MemoryStorageAgent::new())
        .before(move |_, op| {
            if let Op::Save("watched", w) = op {
                start_log.lock().expect("log").push(("save-start", w.sequence()));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            None
        })
        .after(move |op, _| {
            if let Op::Save("watched", w) = op {
                end_log.lock().expect("log").push(("save-end", w.sequence()));
            }
        });
    let mut dag = Dag::new();
    // 5 tuples per window, 60 tuples: 12 streaming windows; application
    // windows of 2 aligned on (sequence + 1) % 2 == 0: [1], [2, 3], ...,
    // [10, 11], and [12], the last one short.
    let source = dag.input("source", Counting::new(60, 1));
    let watched = dag.operator(
        "watched",
        Watched {
            seen: 0,
            log: Some(log.clone()),
        },
    );
    dag.connect(&source, &watched);
    dag.processing_mode(&watched, ProcessingMode::ExactlyOnce)
        .application_window_count(&watched, 2)
        .default_checkpoint_window_count(6);
    let config = Config::default()
        .storage(storage)
        .window_mode(WindowMode::Tuples(5))
        .window_base(BASE)
        // Asynchronous saves for the job: EXACTLY_ONCE saves synchronously
        // all the same.
        .async_checkpoints(true);
    with_watchdog(move || Runtime::new(config).run(dag)).expect("the job");
    let log = log.lock().expect("log").clone();

    // A checkpoint at the end of every application window, after the
    // initial one (its default count of 6 does not apply in this mode).
    let saved: Vec<u32> = log.iter().filter(|(e, _)| *e == "save-end").map(|(_, w)| *w).collect();
    assert_eq!(saved, [0, 1, 3, 5, 7, 9, 11, 12], "{log:?}");
    // Every `begin_window` finds no save in flight, and the save of the
    // application window before it done.
    let begins: Vec<u32> = log.iter().filter(|(e, _)| *e == "begin").map(|(_, w)| *w).collect();
    assert_eq!(begins, [1, 2, 4, 6, 8, 10, 12]);
    for (i, (event, window)) in log.iter().enumerate() {
        if *event != "begin" {
            continue;
        }
        let before = &log[..i];
        let started = before.iter().filter(|(e, _)| *e == "save-start").count();
        let ended = before.iter().filter(|(e, _)| *e == "save-end").count();
        assert_eq!(started, ended, "a save in flight when window {window} began: {log:?}");
        assert!(
            before.contains(&("save-end", window - 1)),
            "window {window} began before the checkpoint at {} was durable: {log:?}",
            window - 1
        );
    }
}
