//! Failures outside the operator hooks: user key functions and wrappers
//! run by the emitter, and a storage agent that panics in the saver.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_core::{MemoryStorageAgent, StorageAgent, StorageError, WindowId};
use checkpoint_runtime::{Config, Dag, RunError, Runtime, WindowMode};
use common::{Counting, Hook, Summer, Tagged, hooks_of, log};

const BASE: u32 = 0x6553_f100;

fn w(seq: u32) -> WindowId {
    WindowId::new(BASE, seq)
}

/// A watchdog with a shorter limit than `common::with_watchdog`.
fn with_watchdog_secs<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(_) => panic!("watchdog: the job did not finish in {secs} s (hang)"),
    }
}

/// A key function that panics in the flush at `end_window` is a failure of
/// its operator at that window, and the operator is torn down.
#[test]
fn a_panicking_key_function_is_reported_at_its_window_and_tears_down() {
    let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
    let hooks = log();
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(100, 1).logged(&hooks));
    let count = dag.operator_partitioned("count", 2, |_| Summer::default());
    dag.connect_by_key(&source, &count, |t: &Tagged| {
        assert!(t.value != 15, "bad key");
        t.value
    });
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        // Large batches: window 2's tuples are flushed by end_window.
        .batch_size(1_000);
    let result = with_watchdog_secs(60, move || Runtime::new(config).run(dag));
    match result {
        Err(RunError::OperatorFailed { operator, window, .. }) => {
            assert_eq!(operator, "source");
            let source_hooks = hooks_of(&hooks, "source");
            assert_eq!(
                source_hooks.last(),
                Some(&Hook::Teardown),
                "teardown was not called: {source_hooks:?}"
            );
            assert_eq!(window, Some(w(2)));
        }
        other => panic!("expected a failure of `source`, got {other:?}"),
    }
}

/// A storage agent whose saves for `summer` fail after the initial one, and
/// whose `delete` then panics (an object-store client's `unwrap`, say).
#[derive(Debug)]
struct PanickyDelete {
    inner: MemoryStorageAgent,
    saves: Mutex<u32>,
}

impl StorageAgent for PanickyDelete {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        if operator == "summer" {
            let mut saves = self.saves.lock().expect("lock");
            *saves += 1;
            if *saves > 1 {
                return Err(StorageError::Io {
                    action: "writing",
                    path: "summer".into(),
                    source: std::io::Error::other("connection reset"),
                });
            }
        }
        self.inner.save(operator, window, snapshot)
    }
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        self.inner.load(operator, window)
    }
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        if operator == "summer" && window != w(0) {
            panic!("delete: client not connected");
        }
        self.inner.delete(operator, window)
    }
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        self.inner.windows(operator)
    }
    fn operators(&self) -> Result<Vec<String>, StorageError> {
        self.inner.operators()
    }
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        self.inner.save_manifest(manifest)
    }
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.load_manifest()
    }
}

/// A storage agent that panics while a failed save is cleaned up fails the
/// job instead of hanging it.
#[test]
fn a_dying_saver_thread_fails_the_job_instead_of_hanging() {
    let storage: Arc<dyn StorageAgent> = Arc::new(PanickyDelete {
        inner: MemoryStorageAgent::new(),
        saves: Mutex::new(0),
    });
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(1_000, 1));
    let summer = dag.operator("summer", Summer::default());
    dag.connect(&source, &summer).default_checkpoint_window_count(2);
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(10))
        .window_base(BASE)
        .async_checkpoints(true);
    match with_watchdog_secs(20, move || Runtime::new(config).run(dag)) {
        Err(RunError::OperatorFailed { operator, .. }) => assert_eq!(operator, "summer"),
        other => panic!("expected a failure of `summer`, got {other:?}"),
    }
}
