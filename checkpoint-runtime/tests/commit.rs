//! Committed-window computation, retention and commit delivery at the end
//! of a job, on jobs whose inputs end at different windows.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_core::{Checkpoint, MemoryStorageAgent, StorageAgent, WindowId};
use checkpoint_runtime::coordinator::{OperatorCheckpoints, Topology, plan};
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, RunError, Runtime, WindowMode,
};
use common::{Collect, Counting, Hook, Summer, Tagged, hooks_of, log, with_watchdog};

const BASE: u32 = 0x6553_f100;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

fn config(storage: &Arc<dyn StorageAgent>) -> Config {
    Config::default()
        .shared_storage(Arc::clone(storage))
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .batch_size(7)
}

/// A finished operator's recovery point is the downstream bound, a window
/// past its final checkpoint; retention keeps the final checkpoint, which
/// stands for it.
///
/// short (windows 1..=2) and long (windows 1..=30) -> join; checkpoint every
/// 2 windows.
#[test]
fn a_finished_input_keeps_its_final_checkpoint() {
    for async_checkpoints in [false, true] {
        let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
        let mut dag = Dag::new();
        let short = dag.input("short", Counting::new(20, 1));
        let long = dag.input("long", Counting::new(300, 1));
        let join = dag.operator("join", Summer::default());
        dag.connect(&short, &join)
            .connect(&long, &join)
            .default_checkpoint_window_count(2);
        let report = with_watchdog({
            let config = config(&storage).async_checkpoints(async_checkpoints);
            move || Runtime::new(config).run(dag)
        })
        .expect("run");
        assert_eq!(report.committed, Some(w(30)));
        assert_eq!(storage.windows("join").expect("windows").last(), Some(&w(30)));
        let short_windows = storage.windows("short").expect("windows");
        assert!(
            short_windows.contains(&w(2)),
            "async={async_checkpoints}: the final checkpoint of `short` (window 2) was purged; storage holds {short_windows:?}"
        );
    }
}

/// A sink that finished early does not cap the committed window of the
/// rest of the job, which still gets its final commit.
///
/// short -> join, long -> join, short -> side (a sink).
#[test]
fn a_side_sink_of_a_short_input_does_not_cap_the_final_commit() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let hooks = log();
    let mut dag = Dag::new();
    let short = dag.input("short", Counting::new(20, 1));
    let long = dag.input("long", Counting::new(300, 1));
    let join = dag.operator("join", Summer::logged(&hooks));
    let side = dag.operator("side", Collect::default());
    dag.connect(&short, &join)
        .connect(&long, &join)
        .connect(&short, &side)
        .default_checkpoint_window_count(2);
    let report = with_watchdog({
        let config = config(&storage);
        move || Runtime::new(config).run(dag)
    })
    .expect("run");
    let commits: Vec<WindowId> = hooks_of(&hooks, "join")
        .into_iter()
        .filter_map(|h| if let Hook::Committed(c) = h { Some(c) } else { None })
        .collect();
    assert_eq!(
        report.committed,
        Some(w(30)),
        "every operator finished with a durable final checkpoint, yet the job's last commit is {:?}; join saw commits {commits:?}",
        report.committed
    );
}

/// The same as a pure function: 0 = short (finished at 3), 1 = long,
/// 2 = join, 3 = side sink of short (finished at 3).
#[test]
fn plan_lets_a_finished_sink_go() {
    let w7 = |s| WindowId::new(7, s);
    let topology = Topology::new(vec![vec![2, 3], vec![2], vec![], vec![]]);
    let mut short = OperatorCheckpoints::durable(vec![w7(0), w7(3)]);
    short.finished_at = Some(w7(3));
    let mut side = OperatorCheckpoints::durable(vec![w7(0), w7(3)]);
    side.finished_at = Some(w7(3));
    let mut long = OperatorCheckpoints::durable(vec![w7(0), w7(10), w7(20)]);
    long.finished_at = Some(w7(20));
    let mut join = OperatorCheckpoints::durable(vec![w7(0), w7(10), w7(20)]);
    join.finished_at = Some(w7(20));
    let plan = plan(&topology, &[short, long, join, side]);
    assert_eq!(plan.committed, Some(w7(20)), "{plan:?}");
}

/// An error (or panic) in a `committed` hook for the final commit, after
/// every operator has finished, still fails the job.
///
/// short (finished at 2) and long (30) -> join. `short` only gets
/// `committed(30)` after it finished (its recovery point only passes 2
/// through `finished_at`); its hook fails once `join` was torn down, which
/// only happens after the coordinator sent `Shutdown`. (The timeout only
/// keeps the test finite if a fix makes the coordinator wait for the hook.)
#[test]
fn a_failing_committed_hook_at_the_final_commit_fails_the_job() {
    #[derive(Default, Checkpoint)]
    struct Short {
        next: u64,
        #[checkpoint(transient)]
        window: Option<WindowId>,
        #[checkpoint(transient)]
        torn_down: Option<Arc<Mutex<std::sync::mpsc::Receiver<()>>>>,
    }
    impl InputOperator for Short {
        type Output = Tagged;
        fn begin_window(&mut self, window: WindowId) -> OperatorResult {
            self.window = Some(window);
            Ok(())
        }
        fn emit_tuples(&mut self, out: Output<'_, Tagged>) -> OperatorResult<Emit> {
            out.emit(Tagged {
                window: self.window.ok_or("outside a window")?,
                value: self.next,
            });
            self.next += 1;
            Ok(if self.next == 20 { Emit::Done } else { Emit::Continue })
        }
        fn committed(&mut self, window: WindowId) -> OperatorResult {
            if window == w(30) {
                if let Some(rx) = &self.torn_down {
                    let _ = rx.lock().expect("lock").recv_timeout(Duration::from_secs(10));
                }
                return Err("publishing the final window failed".into());
            }
            Ok(())
        }
    }

    #[derive(Default, Checkpoint)]
    struct Join {
        n: u64,
        #[checkpoint(transient)]
        torn_down: Option<std::sync::mpsc::Sender<()>>,
    }
    impl Operator for Join {
        type Input = Tagged;
        type Output = ();
        fn process(&mut self, _: Tagged, _: Output<'_, ()>) -> OperatorResult {
            self.n += 1;
            Ok(())
        }
        fn teardown(&mut self) {
            if let Some(tx) = &self.torn_down {
                let _ = tx.send(());
            }
        }
    }

    let (tx, rx) = std::sync::mpsc::channel();
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let mut dag = Dag::new();
    let short = dag.input(
        "short",
        Short {
            torn_down: Some(Arc::new(Mutex::new(rx))),
            ..Default::default()
        },
    );
    let long = dag.input("long", Counting::new(300, 1));
    let join = dag.operator(
        "join",
        Join {
            torn_down: Some(tx),
            n: 0,
        },
    );
    dag.connect(&short, &join)
        .connect(&long, &join)
        .default_checkpoint_window_count(2);
    let result = with_watchdog({
        let config = config(&storage);
        move || Runtime::new(config).run(dag)
    });
    match result {
        Err(RunError::OperatorFailed { operator, .. }) => assert_eq!(operator, "short"),
        other => panic!("`short`'s committed(final) hook failed, but run returned {other:?}"),
    }
}

/// With checkpointing off nothing is committed and no commit is delivered.
#[test]
fn without_storage_nothing_is_committed() {
    let hooks = log();
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(50, 1));
    let summer = dag.operator("summer", Summer::logged(&hooks));
    dag.connect(&source, &summer);
    let report = with_watchdog(move || {
        Runtime::new(Config::default().window_mode(WindowMode::Tuples(10)).window_base(BASE)).run(dag)
    })
    .expect("run");
    let summer_hooks = hooks_of(&hooks, "summer");
    assert!(
        !summer_hooks
            .iter()
            .any(|h| matches!(h, Hook::Committed(_) | Hook::Checkpointed(_))),
        "checkpointing is off: {summer_hooks:?}"
    );
    assert_eq!(report.committed, None);
}
