//! Tasks: one operator's lifecycle, driven by its worker thread or, for a
//! chained operator, by its upstream's emitter: windows, application
//! windows, the listener hooks in their fixed order, and control messages.
//! Saving checkpoints is in `checkpoint`, chaining in `chain`, the worker
//! threads' loops in `worker`.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use checkpoint_core::{Checkpoint, StorageAgent, WindowId};
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};

use crate::failure::{Failure, panic_message};
use crate::fault::{FaultPoint, Faults};
use crate::metrics::Metrics;
use crate::operator::{Emit, InputOperator, Operator, OperatorContext, OperatorResult, ProcessingMode, Tuple};
use crate::protocol::{Control, Event};
use crate::stream::{Cursors, Emitter};

mod chain;
mod checkpoint;
mod worker;

pub(crate) use chain::InlineSubscriber;
use checkpoint::Saver;
pub(crate) use worker::{StopFlag, run_input, run_operator};

/// The hooks shared by [`Operator`] and [`InputOperator`].
pub(crate) trait Lifecycle: Send + 'static {
    type State: Checkpoint;
    type Out: Tuple;
    fn state(&self) -> &Self::State;
    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult;
    fn begin_window(&mut self, window: WindowId) -> OperatorResult;
    fn end_window(&mut self, out: &mut Emitter<Self::Out>) -> OperatorResult;
    /// Every input ended (an operator's hook; nothing for an input, whose
    /// own `Emit::Done` ended the stream).
    fn end_of_stream(&mut self, out: &mut Emitter<Self::Out>) -> OperatorResult;
    fn teardown(&mut self);
    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult;
    fn checkpointed(&mut self, window: WindowId) -> OperatorResult;
    fn committed(&mut self, window: WindowId) -> OperatorResult;
}

/// An [`Operator`] seen through [`Lifecycle`].
pub(crate) struct AsOperator<O>(pub(crate) O);

/// An [`InputOperator`] seen through [`Lifecycle`].
pub(crate) struct AsInput<I>(pub(crate) I);

macro_rules! lifecycle {
    ($wrapper:ident, $bound:ident, $end_of_stream:expr) => {
        impl<O: $bound> Lifecycle for $wrapper<O> {
            type State = O;
            type Out = O::Output;
            fn state(&self) -> &O {
                &self.0
            }
            fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
                self.0.setup(ctx)
            }
            fn begin_window(&mut self, window: WindowId) -> OperatorResult {
                self.0.begin_window(window)
            }
            fn end_window(&mut self, out: &mut Emitter<O::Output>) -> OperatorResult {
                self.0.end_window(out)
            }
            fn end_of_stream(&mut self, out: &mut Emitter<O::Output>) -> OperatorResult {
                let end_of_stream: fn(&mut O, &mut Emitter<O::Output>) -> OperatorResult = $end_of_stream;
                end_of_stream(&mut self.0, out)
            }
            fn teardown(&mut self) {
                self.0.teardown()
            }
            fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
                self.0.before_checkpoint(window)
            }
            fn checkpointed(&mut self, window: WindowId) -> OperatorResult {
                self.0.checkpointed(window)
            }
            fn committed(&mut self, window: WindowId) -> OperatorResult {
                self.0.committed(window)
            }
        }
    };
}
lifecycle!(AsOperator, Operator, |op, out| op.end_of_stream(out));
lifecycle!(AsInput, InputOperator, |_, _| Ok(()));

/// What a physical operator needs from the runtime.
pub(crate) struct NodeEnv {
    pub(crate) node: usize,
    /// Which incarnation of the operator this is (0, then +1 per restore).
    pub(crate) epoch: u32,
    pub(crate) ctx: OperatorContext,
    pub(crate) storage: Option<Arc<dyn StorageAgent>>,
    pub(crate) async_saves: bool,
    /// The thread's control channel; `None` for an operator chained on
    /// another's thread, whose messages the thread's root hands over.
    pub(crate) control: Option<Receiver<(usize, Control)>>,
    pub(crate) control_tx: Sender<(usize, Control)>,
    pub(crate) events: Sender<Event>,
    /// Disconnected when this operator is killed or the job aborts.
    pub(crate) kill: Receiver<()>,
    /// Set when this operator is killed: what a busy loop polls.
    pub(crate) killed: Arc<std::sync::atomic::AtomicBool>,
    /// The thread's replay cursors still catching up: every wait of the
    /// thread wakes for them too.
    pub(crate) cursors: Cursors,
    pub(crate) metrics: Arc<Metrics>,
    /// Restored from a checkpoint (no initial checkpoint to take).
    pub(crate) restored: bool,
    /// An input restored from the final checkpoint of a stream that ended:
    /// it opens no further window.
    pub(crate) ended: bool,
    pub(crate) mode: ProcessingMode,
    pub(crate) faults: Option<Faults>,
    /// How long a save may take to become durable.
    pub(crate) save_timeout: std::time::Duration,
    pub(crate) save_retry: crate::config::SaveRetry,
    pub(crate) tolerable_failed_checkpoints: u32,
    /// The chunk table of the snapshot the operator is restored from.
    pub(crate) chunks: Vec<checkpoint_core::ChunkRef>,
    /// Inputs whose stream ended for good (their source said `Done`), as
    /// opposed to one a stop ended: what tells an operator its stream is
    /// over rather than paused.
    pub(crate) ended_inputs: EndedInputs,
    /// The inputs this node reads from, directly or through others.
    pub(crate) sources: Vec<usize>,
}

/// The job's inputs whose stream ended for good, by node.
pub(crate) type EndedInputs = Arc<std::sync::Mutex<std::collections::BTreeSet<usize>>>;

/// A failure from the emitter (a chained operator's, an abort) passed
/// through [`Core::call`] unchanged.
#[derive(Debug)]
struct Forward(Failure);

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Forward {}

/// A hook call waiting for the next window boundary.
#[derive(Debug)]
enum Deferred {
    Checkpointed(WindowId),
    Committed(WindowId),
}

/// One physical operator and everything around it.
pub(crate) struct Core<L: Lifecycle> {
    op: L,
    pub(crate) out: Emitter<L::Out>,
    env: NodeEnv,
    stateless: bool,
    window: Option<WindowId>,
    last_ended: WindowId,
    last_checkpoint: Option<WindowId>,
    in_app_window: bool,
    deferred: VecDeque<Deferred>,
    buffer: Vec<u8>,
    /// The chunk table of the operator's last snapshot (restored or
    /// saved): what the next incremental snapshot refers to for its
    /// unchanged key groups.
    chunks: Vec<checkpoint_core::ChunkRef>,
    saver: Option<Saver>,
    in_flight: Option<WindowId>,
    shutdown: bool,
    torn_down: bool,
    faults: Option<Faults>,
    tuples_in_window: u64,
    save_started: Option<std::time::Instant>,
    /// Checkpoints abandoned since the last durable one.
    failed_in_a_row: u32,
    /// Spilled windows already added to the run's count.
    spilled_reported: u64,
}

impl<L: Lifecycle> Core<L> {
    pub(crate) fn new(op: L, out: Emitter<L::Out>, mut env: NodeEnv) -> Self {
        let activation = env.ctx.activation_window;
        let faults = env.faults.take().filter(|f| f.targets(&env.ctx.name));
        env.metrics.operators[env.node].new_incarnation();
        let chunks = std::mem::take(&mut env.chunks);
        let mut core = Core {
            op,
            out,
            stateless: <L::State as Checkpoint>::STATELESS,
            env,
            window: None,
            last_ended: activation,
            last_checkpoint: None,
            in_app_window: false,
            deferred: VecDeque::new(),
            buffer: Vec::new(),
            chunks,
            saver: None,
            in_flight: None,
            shutdown: false,
            torn_down: false,
            faults: None,
            tuples_in_window: 0,
            save_started: None,
            failed_in_a_row: 0,
            spilled_reported: 0,
        };
        core.faults = faults;
        core
    }

    pub(crate) fn node(&self) -> usize {
        self.env.node
    }

    pub(crate) fn application_window_count(&self) -> u32 {
        self.env.ctx.application_window_count
    }

    pub(crate) fn mode(&self) -> ProcessingMode {
        self.env.mode
    }

    pub(crate) fn restored(&self) -> bool {
        self.env.restored
    }

    pub(crate) fn ended(&self) -> bool {
        self.env.ended
    }

    /// Has the coordinator record, durably, that this input's stream ends
    /// at `window` (where its final checkpoint comes next), and waits for
    /// it. Without storage there is nothing to record.
    pub(crate) fn record_end(&mut self, window: WindowId) -> Result<(), Failure> {
        // Before the window's end goes downstream, whose operators check it.
        self.env
            .ended_inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.env.node);
        if !self.checkpointing() {
            return Ok(());
        }
        let (done, answer) = crossbeam_channel::bounded(1);
        self.report(Event::Ending {
            node: self.env.node,
            epoch: self.env.epoch,
            window,
            done,
        })?;
        let answer = loop {
            let mut select = Select::new();
            select.recv(&answer);
            select.recv(&self.env.kill);
            match self.env.cursors.ready(select, 2)? {
                Some(0) => match answer.try_recv() {
                    Ok(answer) => break answer,
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return Err(Failure::Aborted),
                },
                Some(_) => return Err(Failure::Aborted),
                None => {}
            }
        };
        answer.map_err(|e| {
            // Not recorded: the end does not stand until it is.
            self.env
                .ended_inputs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.env.node);
            self.fail(format!("recording the end of its stream: {e}"))
        })
    }

    /// Fires an injected fault armed for this point.
    fn fault(&mut self, point: FaultPoint) -> Result<(), Failure> {
        let (Some(faults), Some(window)) = (self.faults.clone(), self.window) else {
            return Ok(());
        };
        let name = self.env.ctx.name.clone();
        self.call(|_, _| faults.check(&name, window, point).map_err(Into::into))
    }

    pub(crate) fn name(&self) -> &str {
        &self.env.ctx.name
    }

    pub(crate) fn activation(&self) -> WindowId {
        self.env.ctx.activation_window
    }

    /// The thread's control channel (the root operator of a thread only).
    pub(crate) fn control(&self) -> Option<&Receiver<(usize, Control)>> {
        self.env.control.as_ref()
    }

    pub(crate) fn kill(&self) -> &Receiver<()> {
        &self.env.kill
    }

    pub(crate) fn cursors(&self) -> &Cursors {
        &self.env.cursors
    }

    fn fail(&self, cause: impl std::fmt::Display) -> Failure {
        Failure::operator(&self.env.ctx.name, self.window.or(Some(self.last_ended)), cause)
    }

    /// Calls a hook, turning an error or a panic into a failure of this
    /// operator at the current window.
    pub(crate) fn call<R>(
        &mut self,
        hook: impl FnOnce(&mut L, &mut Emitter<L::Out>) -> OperatorResult<R>,
    ) -> Result<R, Failure> {
        let result = catch_unwind(AssertUnwindSafe(|| hook(&mut self.op, &mut self.out)));
        let value = match result {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                return Err(match e.downcast::<Forward>() {
                    Ok(forward) => forward.0,
                    Err(e) => Failure::returned(&self.env.ctx.name, self.window.or(Some(self.last_ended)), e),
                });
            }
            Err(panic) => return Err(self.fail(panic_message(&*panic))),
        };
        // A failure inside the emitter (a chained operator's, or an abort).
        self.out.take_failure()?;
        Ok(value)
    }

    fn checkpointing(&self) -> bool {
        self.env.storage.is_some()
    }

    /// `setup`, then (unless restored from it) the initial checkpoint at the
    /// activation window.
    pub(crate) fn start(&mut self) -> Result<(), Failure> {
        let ctx = self.env.ctx.clone();
        self.call(|op, _| op.setup(&ctx))?;
        if self.checkpointing() {
            let activation = self.activation();
            let chained = self.env.control.is_none();
            if let (false, true, false, Some(storage)) =
                (self.stateless, self.env.async_saves, chained, &self.env.storage)
            {
                self.saver = Some(Saver::spawn(&self.env, Arc::clone(storage))?);
            }
            if self.env.restored {
                self.last_checkpoint = Some(activation);
            } else if self.stateless {
                self.report_checkpointed(activation)?;
            } else {
                // Synchronously: a failure in the first window needs it.
                self.save(activation, true)?;
            }
        }
        self.out.start()
    }

    fn report_checkpointed(&self, window: WindowId) -> Result<(), Failure> {
        self.report(Event::Checkpointed {
            node: self.env.node,
            epoch: self.env.epoch,
            window,
        })
    }

    fn report(&self, event: Event) -> Result<(), Failure> {
        self.env.events.send(event).map_err(|_| Failure::Aborted)
    }

    pub(crate) fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.between_windows()?;
        self.window = Some(window);
        self.tuples_in_window = 0;
        self.fault(FaultPoint::BeginWindow)?;
        self.call(|_, out| out.begin_window(window).map_err(|f| Box::new(Forward(f)).into()))?;
        if !self.in_app_window {
            self.in_app_window = true;
            self.call(|op, _| op.begin_window(window))?;
        }
        Ok(())
    }

    pub(crate) fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        let ctx = &self.env.ctx;
        let app_end = last || window.ends_group_of(ctx.application_window_count);
        let checkpoint_window = window.ends_group_of(ctx.checkpoint_window_count);
        self.fault(FaultPoint::EndWindow)?;
        if app_end && self.in_app_window {
            self.call(|op, out| op.end_window(out))?;
            self.in_app_window = false;
        }
        if last && self.stream_ended() {
            self.call(|op, out| op.end_of_stream(out))?;
        }
        self.call(|_, out| out.end_window(window, last).map_err(|f| Box::new(Forward(f)).into()))?;
        self.window = None;
        self.last_ended = window;
        tracing::trace!(operator = %self.env.ctx.name, window = %window, last, "window ended");
        let metrics = &self.env.metrics.operators[self.env.node];
        metrics.windows.fetch_add(1, Ordering::Relaxed);
        metrics.tuples_out.store(self.out.emitted(), Ordering::Relaxed);
        let (replay_bytes, replay_peak, spilled) = self.out.replay_stats();
        metrics.replay_bytes.store(replay_bytes as u64, Ordering::Relaxed);
        metrics.replay_peak.fetch_max(replay_peak as u64, Ordering::Relaxed);
        // Over the run: this incarnation's count adds to earlier ones'.
        metrics
            .spilled_windows
            .fetch_add(spilled - self.spilled_reported, Ordering::Relaxed);
        self.spilled_reported = spilled;
        if self.checkpointing() {
            if self.stateless {
                if checkpoint_window || last {
                    self.call(|op, _| op.before_checkpoint(window))?;
                    self.call(|op, _| op.checkpointed(window))?;
                }
                self.report_checkpointed(window)?;
            } else if checkpoint_window || (last && self.last_checkpoint != Some(window)) {
                self.call(|op, _| op.before_checkpoint(window))?;
                self.save(window, false)?;
            }
        }
        self.between_windows()?;
        if last {
            self.wait_for_save()?;
            self.between_windows()?;
            self.report(Event::Finished {
                node: self.env.node,
                epoch: self.env.epoch,
                window,
            })?;
        }
        Ok(())
    }

    /// Whether every input this operator reads from ended for good: a
    /// stream a stop ended is only paused (the job resumes it), and gets no
    /// `end_of_stream`.
    fn stream_ended(&self) -> bool {
        let ended = self
            .env
            .ended_inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !self.env.sources.is_empty() && self.env.sources.iter().all(|s| ended.contains(s))
    }

    /// Ends the stream without a window: every upstream ended before this
    /// (restored) operator's checkpoint, whose state stands as final.
    pub(crate) fn close_stream(&mut self) -> Result<(), Failure> {
        self.call(|_, out| out.close().map_err(|f| Box::new(Forward(f)).into()))?;
        self.wait_for_save()?;
        self.between_windows()?;
        self.report(Event::Finished {
            node: self.env.node,
            epoch: self.env.epoch,
            window: self.last_ended,
        })
    }

    /// Takes a control message addressed to `node`: this operator's own, or
    /// one chained on it. Hooks it asks for wait, in order, for the next
    /// window boundary.
    pub(crate) fn accept(&mut self, (node, message): (usize, Control)) -> Result<(), Failure> {
        if node != self.env.node {
            // A chained operator's; one no longer here (restored) is dropped.
            let _ = self.out.deliver(node, message)?;
            return Ok(());
        }
        self.accept_own(message)
    }

    pub(crate) fn accept_own(&mut self, message: Control) -> Result<(), Failure> {
        match message {
            // The initial checkpoint has no `checkpointed`, so it gets no
            // `committed` either. A restored operator does get commits up to
            // its checkpoint: an exactly-once sink publishes its pending
            // windows on them.
            Control::Committed(window) if window <= self.activation() && !self.env.restored => {}
            Control::Committed(window) => self.deferred.push_back(Deferred::Committed(window)),
            // No hook: only the stream's store changes.
            Control::Release(window) => self.out.committed(window),
            Control::Saved { window, buffer, result } => {
                self.in_flight = None;
                // One buffer per operator: a save is always back before the
                // next encode (`save` waits for it), so the state's encoding
                // is held once, not twice.
                if self.buffer.capacity() == 0 {
                    self.buffer = buffer;
                }
                match result {
                    Err(failed) => return self.save_failed(window, failed),
                    Ok(Some(chunks)) => self.chunks = chunks,
                    Ok(None) => {}
                }
                self.saved(window);
                if window != self.activation() {
                    self.deferred.push_back(Deferred::Checkpointed(window));
                }
            }
            Control::Reconnect(targets) => self.out.reconnect(targets)?,
            Control::Shutdown => self.shutdown = true,
        }
        Ok(())
    }

    /// Drains control messages without blocking.
    pub(crate) fn poll_control(&mut self) -> Result<(), Failure> {
        // Called between every two `emit_tuples`: an atomic load and an
        // empty-queue check, no lock and no clone.
        if self.env.killed.load(Ordering::Acquire) {
            return Err(Failure::Aborted);
        }
        self.out.advance_cursors()?;
        let Some(control) = self.env.control.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        while let Ok(message) = control.try_recv() {
            result = self.accept(message);
            if result.is_err() {
                break;
            }
        }
        self.env.control = Some(control);
        result
    }

    /// Delivers waiting hooks: the operator is between windows.
    pub(crate) fn between_windows(&mut self) -> Result<(), Failure> {
        self.poll_control()?;
        while !self.in_app_window
            && let Some(deferred) = self.deferred.pop_front()
        {
            match deferred {
                Deferred::Checkpointed(window) => self.call(|op, _| op.checkpointed(window))?,
                Deferred::Committed(window) => {
                    tracing::trace!(operator = %self.env.ctx.name, window = %window, "committed");
                    self.out.committed(window);
                    self.call(|op, _| op.committed(window))?;
                }
            }
        }
        self.out.between_windows()
    }

    /// After the stream ended: delivers commits (and replays for recovered
    /// downstreams) until the job shuts down.
    pub(crate) fn await_shutdown(&mut self) -> Result<(), Failure> {
        let Some(control) = self.env.control.clone() else {
            // Chained: the thread's root received everything addressed here.
            return self.between_windows().and_then(|()| self.out.shutdown());
        };
        while !self.shutdown {
            let mut select = Select::new();
            select.recv(&control);
            select.recv(&self.env.kill);
            match self.env.cursors.ready(select, 2)? {
                Some(0) => match control.try_recv() {
                    Ok(message) => {
                        self.accept(message)?;
                        self.between_windows()?;
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return Err(Failure::Aborted),
                },
                Some(_) => return Err(Failure::Aborted),
                // Recovered downstreams reading this stream's store.
                None => {}
            }
        }
        self.out.shutdown()
    }

    /// `teardown`, once; a panic in it is ignored (the operator is done).
    pub(crate) fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let patience = self.env.save_timeout;
        if let Some(saver) = &mut self.saver {
            saver.stop(patience);
        }
        let _ = catch_unwind(AssertUnwindSafe(|| self.op.teardown()));
        self.out.teardown();
    }
}

impl<L: Lifecycle> Drop for Core<L> {
    /// Tears down even when a panic unwinds past the thread's loop.
    fn drop(&mut self) {
        self.teardown();
    }
}

impl<O: Operator> Core<AsOperator<O>> {
    /// Processes a batch: moved out if this operator is its only holder,
    /// cloned tuple by tuple if it is shared.
    pub(crate) fn process_batch(&mut self, batch: Arc<Vec<O::Input>>) -> Result<(), Failure> {
        self.env.metrics.operators[self.env.node]
            .tuples_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if self.faults.is_some() {
            return self.process_batch_with_faults(batch);
        }
        self.tuples_in_window += batch.len() as u64;
        let result = self.call(|op, out| {
            match Arc::try_unwrap(batch) {
                Ok(owned) => {
                    for tuple in owned {
                        op.0.process(tuple, out)?;
                    }
                }
                Err(shared) => {
                    for tuple in shared.iter() {
                        op.0.process(tuple.clone(), out)?;
                    }
                }
            }
            Ok(())
        });
        self.env.metrics.operators[self.env.node]
            .tuples_out
            .store(self.out.emitted(), Ordering::Relaxed);
        result
    }
}

impl<O: Operator> Core<AsOperator<O>> {
    /// One tuple at a time, so a fault can fire after exactly the k-th.
    fn process_batch_with_faults(&mut self, batch: Arc<Vec<O::Input>>) -> Result<(), Failure> {
        for tuple in batch.iter() {
            let tuple = tuple.clone();
            self.call(|op, out| op.0.process(tuple, out))?;
            self.tuples_in_window += 1;
            self.fault(FaultPoint::Tuple(self.tuples_in_window))?;
        }
        Ok(())
    }
}

impl<I: InputOperator> Core<AsInput<I>> {
    pub(crate) fn emit_tuples(&mut self) -> Result<Emit, Failure> {
        let emit = self.call(|op, out| op.0.emit_tuples(out))?;
        self.env.metrics.operators[self.env.node]
            .tuples_out
            .store(self.out.emitted(), Ordering::Relaxed);
        if self.faults.is_some() {
            let before = self.tuples_in_window;
            self.tuples_in_window = self.out.emitted_in_window();
            for k in before + 1..=self.tuples_in_window {
                self.fault(FaultPoint::Tuple(k))?;
            }
        }
        Ok(emit)
    }
}
