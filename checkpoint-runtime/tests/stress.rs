//! Failures while every other operator is blocked on full queues, and where
//! the listener hooks fall.

mod common;

use std::sync::Arc;

use checkpoint_core::{Checkpoint, MemoryStorageAgent, StorageAgent, WindowId};
use checkpoint_runtime::{Config, Dag, Operator, OperatorResult, Output, RunError, Runtime, WindowMode};
use common::{Counting, Hook, Summer, Tagged, hooks_of, log, with_watchdog};

const BASE: u32 = 0x6553_f100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    Begin,
    Process,
    End,
    Before,
    Checkpointed,
    Committed,
}

#[derive(Default, Checkpoint)]
struct Faulty {
    n: u64,
    #[checkpoint(transient)]
    site: Option<(Site, u32, bool)>,
    #[checkpoint(transient)]
    window: u32,
}

impl Faulty {
    fn hit(&self, site: Site, seq: u32) -> OperatorResult {
        if let Some((s, at, panic)) = self.site
            && s == site
            && seq >= at
        {
            if panic {
                panic!("injected {site:?} at {seq}");
            }
            return Err(format!("injected {site:?} at {seq}").into());
        }
        Ok(())
    }
}

impl Operator for Faulty {
    type Input = Tagged;
    type Output = ();
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = window.sequence();
        self.hit(Site::Begin, window.sequence())
    }
    fn process(&mut self, _: Tagged, _: Output<'_, ()>) -> OperatorResult {
        self.n += 1;
        self.hit(Site::Process, self.window)
    }
    fn end_window(&mut self, _: Output<'_, ()>) -> OperatorResult {
        self.hit(Site::End, self.window)
    }
    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        self.hit(Site::Before, window.sequence())
    }
    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        self.hit(Site::Checkpointed, window.sequence())
    }
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.hit(Site::Committed, window.sequence())
    }
}

/// source -(thread-local)-> a -> {b, c} -> j; j fails at some site while
/// everything upstream is blocked on queues of one batch. With no restarts
/// allowed, every run must end with j's failure, never hang.
#[test]
fn a_failure_anywhere_ends_the_job() {
    let sites = [
        Site::Begin,
        Site::Process,
        Site::End,
        Site::Before,
        Site::Checkpointed,
        Site::Committed,
    ];
    for round in 0..4 {
        for site in sites {
            for panic in [false, true] {
                for async_checkpoints in [false, true] {
                    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
                    let mut dag = Dag::new();
                    let source = dag.input("source", Counting::new(3_000, 3));
                    let a = dag.operator("a", Summer::default());
                    let b = dag.operator("b", Summer::default());
                    let c = dag.operator("c", Summer::default());
                    let j = dag.operator(
                        "j",
                        Faulty {
                            site: Some((site, 4 + round, panic)),
                            ..Default::default()
                        },
                    );
                    dag.connect_thread_local(&source, &a)
                        .connect(&a, &b)
                        .connect(&a, &c)
                        .connect(&b, &j)
                        .connect(&c, &j)
                        .default_checkpoint_window_count(2);
                    let config = Config::default()
                        .shared_storage(storage)
                        .window_mode(WindowMode::Tuples(10))
                        .window_base(BASE)
                        .batch_size(1)
                        .channel_capacity(1)
                        .async_checkpoints(async_checkpoints)
                        .restart_limit(0);
                    match with_watchdog(move || Runtime::new(config).run(dag)) {
                        Err(RunError::OperatorFailed { operator, .. }) => assert_eq!(operator, "j"),
                        other => panic!("{site:?} panic={panic} async={async_checkpoints}: {other:?}"),
                    }
                }
            }
        }
    }
}

/// With `application_window_count > 1`, `checkpointed` (async) and
/// `committed` are delivered between application windows, never between an
/// operator's `begin_window` and `end_window`.
#[test]
fn hooks_fall_between_application_windows() {
    for _ in 0..20 {
        let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
        let hooks = log();
        let mut dag = Dag::new();
        let source = dag.input("source", Counting::new(300, 1));
        let summer = dag.operator("summer", Summer::logged(&hooks));
        let sink = dag.operator("sink", common::Collect::default());
        dag.connect(&source, &summer).connect(&summer, &sink);
        dag.application_window_count(&summer, 3)
            .checkpoint_window_count(&summer, 3);
        dag.default_checkpoint_window_count(3);
        let config = Config::default()
            .shared_storage(storage)
            .window_mode(WindowMode::Tuples(10))
            .window_base(BASE)
            .async_checkpoints(true);
        with_watchdog(move || Runtime::new(config).run(dag)).expect("run");
        let mut inside = false;
        let mut bad = Vec::new();
        for h in hooks_of(&hooks, "summer") {
            match h {
                Hook::Begin(_) => inside = true,
                Hook::End => inside = false,
                Hook::Committed(_) | Hook::Checkpointed(_) if inside => bad.push(h),
                _ => {}
            }
        }
        assert!(bad.is_empty(), "hooks inside an application window: {bad:?}");
    }
}
