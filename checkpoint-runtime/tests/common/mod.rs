//! Operators and helpers shared by the runtime's integration tests.
#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(unreachable_pub, reason = "a test helper module, shared by `mod common;`")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint_core::{Checkpoint, WindowId};
use checkpoint_runtime::{Emit, InputOperator, Operator, OperatorContext, OperatorResult, Output};
use serde::{Deserialize, Serialize};

/// What the hooks of recording operators saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Setup(WindowId),
    Begin(WindowId),
    End,
    BeforeCheckpoint(WindowId),
    Checkpointed(WindowId),
    Committed(WindowId),
    Teardown,
}

pub type Log = Arc<Mutex<Vec<(String, Hook)>>>;

pub fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

pub fn hooks_of(log: &Log, name: &str) -> Vec<Hook> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, h)| h.clone())
        .collect()
}

/// A tuple tagged with the window its input emitted it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tagged {
    pub window: WindowId,
    pub value: u64,
}

/// Emits `0..end`, `per_call` per `emit_tuples`, each tagged with its window.
#[derive(Default, Checkpoint)]
pub struct Counting {
    pub next: u64,
    pub end: u64,
    pub per_call: u64,
    #[checkpoint(transient)]
    pub window: Option<WindowId>,
    #[checkpoint(transient)]
    pub log: Option<Log>,
    #[checkpoint(transient)]
    pub name: String,
}

impl Counting {
    pub fn new(end: u64, per_call: u64) -> Self {
        Counting {
            end,
            per_call,
            ..Default::default()
        }
    }

    pub fn logged(mut self, log: &Log) -> Self {
        self.log = Some(log.clone());
        self
    }

    fn record(&self, hook: Hook) {
        if let Some(log) = &self.log {
            log.lock().expect("log").push((self.name.clone(), hook));
        }
    }
}

impl InputOperator for Counting {
    type Output = Tagged;

    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.name = ctx.name().to_owned();
        self.record(Hook::Setup(ctx.activation_window()));
        Ok(())
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        self.record(Hook::Begin(window));
        Ok(())
    }

    fn emit_tuples(&mut self, out: Output<'_, Tagged>) -> OperatorResult<Emit> {
        let window = self.window.ok_or("emit_tuples outside a window")?;
        let stop = (self.next + self.per_call).min(self.end);
        for value in self.next..stop {
            out.emit(Tagged { window, value });
        }
        self.next = stop;
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }

    fn end_window(&mut self, _out: Output<'_, Tagged>) -> OperatorResult {
        self.record(Hook::End);
        Ok(())
    }

    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        self.record(Hook::BeforeCheckpoint(window));
        Ok(())
    }

    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        self.record(Hook::Checkpointed(window));
        Ok(())
    }

    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.record(Hook::Committed(window));
        Ok(())
    }

    fn teardown(&mut self) {
        self.record(Hook::Teardown);
    }
}

/// Sums values, checks every tuple belongs to the window it is processed
/// in (window alignment), records hooks, and passes tuples on.
#[derive(Default, Checkpoint)]
pub struct Summer {
    pub sum: u64,
    pub count: u64,
    #[checkpoint(transient)]
    pub window: Option<WindowId>,
    pub misaligned: u64,
    #[checkpoint(transient)]
    pub log: Option<Log>,
    #[checkpoint(transient)]
    pub name: String,
    #[checkpoint(transient)]
    pub fail_at: Option<(u32, bool)>,
}

impl Summer {
    pub fn logged(log: &Log) -> Self {
        Summer {
            log: Some(log.clone()),
            ..Default::default()
        }
    }

    fn record(&self, hook: Hook) {
        if let Some(log) = &self.log {
            log.lock().expect("log").push((self.name.clone(), hook));
        }
    }
}

impl Operator for Summer {
    type Input = Tagged;
    type Output = Tagged;

    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.name = ctx.name().to_owned();
        self.record(Hook::Setup(ctx.activation_window()));
        Ok(())
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        self.record(Hook::Begin(window));
        if let Some((seq, panic)) = self.fail_at
            && window.sequence() == seq
        {
            if panic {
                panic!("injected panic at {window}");
            }
            return Err(format!("injected error at {window}").into());
        }
        Ok(())
    }

    fn process(&mut self, t: Tagged, out: Output<'_, Tagged>) -> OperatorResult {
        if Some(t.window) != self.window {
            self.misaligned += 1;
        }
        self.sum += t.value;
        self.count += 1;
        out.emit(t);
        Ok(())
    }

    fn end_window(&mut self, _out: Output<'_, Tagged>) -> OperatorResult {
        self.record(Hook::End);
        Ok(())
    }

    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        self.record(Hook::BeforeCheckpoint(window));
        Ok(())
    }

    fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
        self.record(Hook::Checkpointed(window));
        Ok(())
    }

    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.record(Hook::Committed(window));
        Ok(())
    }

    fn teardown(&mut self) {
        self.record(Hook::Teardown);
    }
}

/// A sink that shares what it received with the test.
#[derive(Default, Checkpoint)]
pub struct Collect {
    #[checkpoint(transient)]
    pub seen: Arc<Mutex<Vec<Tagged>>>,
    #[checkpoint(transient)]
    pub window: Option<WindowId>,
    #[checkpoint(transient)]
    pub misaligned: Arc<Mutex<u64>>,
}

impl Operator for Collect {
    type Input = Tagged;
    type Output = ();

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        Ok(())
    }

    fn process(&mut self, t: Tagged, _out: Output<'_, ()>) -> OperatorResult {
        if Some(t.window) != self.window {
            *self.misaligned.lock().expect("lock") += 1;
        }
        self.seen.lock().expect("lock").push(t);
        Ok(())
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than a
/// generous watchdog limit (a deadlock), instead of hanging CI.
pub fn with_watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    with_watchdog_secs(120, f)
}

/// [`with_watchdog`] with a limit of `secs` seconds.
pub fn with_watchdog_secs<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(_) => panic!("watchdog: the job did not finish in {secs} s (deadlock?)"),
    }
}

/// A storage call, as [`Intercept`]'s hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Save(&'a str, WindowId),
    Load(&'a str, WindowId),
    Delete(&'a str, WindowId),
    SaveManifest,
}

/// One storage call that returned: the thread that made it, the call, its
/// operator and window (empty and 0 for the manifest), whether it succeeded
/// (for a delete: whether the snapshot existed), and when it returned.
#[derive(Debug, Clone)]
pub struct Call {
    pub thread: String,
    pub kind: &'static str,
    pub operator: String,
    pub window: WindowId,
    pub ok: bool,
    pub at: std::time::Instant,
}

/// Runs before a call; an error returned fails the call without making it
/// (it may also block, sleep or panic, as a sick storage would).
pub type Before =
    Box<dyn Fn(&dyn checkpoint_core::StorageAgent, Op<'_>) -> Option<checkpoint_core::StorageError> + Send + Sync>;

/// Runs after a call that was made, with whether it succeeded.
pub type After = Box<dyn Fn(Op<'_>, bool) + Send + Sync>;

/// A storage agent around another that runs hooks around the calls that
/// change or read snapshots, and logs every call that returned: how tests
/// make a storage fail, hang or go slow at one chosen call.
pub struct Intercept {
    pub inner: Arc<dyn checkpoint_core::StorageAgent>,
    pub before: Option<Before>,
    pub after: Option<After>,
    pub log: Mutex<Vec<Call>>,
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept").field("inner", &self.inner).finish()
    }
}

impl Intercept {
    pub fn new(inner: impl checkpoint_core::StorageAgent + 'static) -> Self {
        Intercept {
            inner: Arc::new(inner),
            before: None,
            after: None,
            log: Mutex::new(Vec::new()),
        }
    }

    pub fn before(
        mut self,
        hook: impl Fn(&dyn checkpoint_core::StorageAgent, Op<'_>) -> Option<checkpoint_core::StorageError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.before = Some(Box::new(hook));
        self
    }

    pub fn after(mut self, hook: impl Fn(Op<'_>, bool) + Send + Sync + 'static) -> Self {
        self.after = Some(Box::new(hook));
        self
    }

    /// The calls of `kind` that returned, in order.
    pub fn calls(&self, kind: &str) -> Vec<Call> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|c| c.kind == kind)
            .cloned()
            .collect()
    }

    fn around<T>(
        &self,
        op: Op<'_>,
        call: impl FnOnce() -> Result<T, checkpoint_core::StorageError>,
    ) -> Result<T, checkpoint_core::StorageError> {
        if let Some(error) = self.before.as_ref().and_then(|hook| hook(&*self.inner, op)) {
            return Err(error);
        }
        let existed = match op {
            Op::Delete(operator, window) => self.inner.windows(operator).is_ok_and(|w| w.contains(&window)),
            _ => false,
        };
        let result = call();
        if let Some(hook) = &self.after {
            hook(op, result.is_ok());
        }
        let (kind, operator, window) = match op {
            Op::Save(o, w) => ("save", o, w),
            Op::Load(o, w) => ("load", o, w),
            Op::Delete(o, w) => ("delete", o, w),
            Op::SaveManifest => ("manifest", "", WindowId::from_u64(0)),
        };
        self.log.lock().expect("log").push(Call {
            thread: std::thread::current().name().unwrap_or("?").to_owned(),
            kind,
            operator: operator.to_owned(),
            window,
            ok: if kind == "delete" { existed } else { result.is_ok() },
            at: std::time::Instant::now(),
        });
        result
    }
}

/// An injected EIO, as a failing disk gives.
pub fn eio(action: &'static str) -> checkpoint_core::StorageError {
    checkpoint_core::StorageError::Io {
        action,
        path: std::path::PathBuf::from("<injected>"),
        source: std::io::Error::from_raw_os_error(5),
    }
}

impl checkpoint_core::StorageAgent for Intercept {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), checkpoint_core::StorageError> {
        self.around(Op::Save(operator, window), || {
            self.inner.save(operator, window, snapshot)
        })
    }
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, checkpoint_core::StorageError> {
        self.around(Op::Load(operator, window), || self.inner.load(operator, window))
    }
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), checkpoint_core::StorageError> {
        self.around(Op::Delete(operator, window), || self.inner.delete(operator, window))
    }
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, checkpoint_core::StorageError> {
        self.inner.windows(operator)
    }
    fn operators(&self) -> Result<Vec<String>, checkpoint_core::StorageError> {
        self.inner.operators()
    }
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), checkpoint_core::StorageError> {
        self.around(Op::SaveManifest, || self.inner.save_manifest(manifest))
    }
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, checkpoint_core::StorageError> {
        self.inner.load_manifest()
    }
    fn lock(&self) -> Result<checkpoint_core::StorageLock, checkpoint_core::StorageError> {
        self.inner.lock()
    }
    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), checkpoint_core::StorageError> {
        self.inner.set_aside(operator, window)
    }
    fn supports_chunks(&self) -> bool {
        self.inner.supports_chunks()
    }
    fn save_chunks(
        &self,
        operator: &str,
        chunks: &[(checkpoint_core::ChunkId, Vec<u8>)],
    ) -> Result<(), checkpoint_core::StorageError> {
        self.inner.save_chunks(operator, chunks)
    }
    fn load_chunk(
        &self,
        operator: &str,
        id: checkpoint_core::ChunkId,
    ) -> Result<Vec<u8>, checkpoint_core::StorageError> {
        self.inner.load_chunk(operator, id)
    }
    fn delete_chunk(&self, operator: &str, id: checkpoint_core::ChunkId) -> Result<(), checkpoint_core::StorageError> {
        self.inner.delete_chunk(operator, id)
    }
    fn chunks(&self, operator: &str) -> Result<Vec<checkpoint_core::ChunkId>, checkpoint_core::StorageError> {
        self.inner.chunks(operator)
    }
}
