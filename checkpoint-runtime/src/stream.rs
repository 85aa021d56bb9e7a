//! Streams: the messages on an edge, the emitter an operator writes to, and
//! the subscribers that carry its batches to downstream operators.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use checkpoint_core::WindowId;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::failure::Failure;
use crate::operator::Tuple;
use crate::partition::partition_of;
use crate::protocol::Control;
use crate::replay::ReplayBuffer;

/// What travels on an edge, in order: every window is bracketed by `Begin`
/// and `End`, data only inside.
#[derive(Debug)]
pub(crate) enum Message<T> {
    Begin(WindowId),
    Batch(Arc<Vec<T>>),
    /// The end of a window; `last` ends the stream too.
    End {
        window: WindowId,
        last: bool,
    },
    /// The upstream's stream ended before the windows this receiver needs
    /// (sent to a restored downstream).
    Closed,
}

impl<T> Clone for Message<T> {
    fn clone(&self) -> Self {
        match self {
            Message::Begin(w) => Message::Begin(*w),
            Message::Batch(b) => Message::Batch(Arc::clone(b)),
            Message::End { window, last } => Message::End {
                window: *window,
                last: *last,
            },
            Message::Closed => Message::Closed,
        }
    }
}

/// How a reconnected downstream wants its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Replay every window after this one (AT_LEAST_ONCE, EXACTLY_ONCE).
    After(WindowId),
    /// No replay: live from the next window the upstream begins
    /// (AT_MOST_ONCE).
    NextWindow,
}

/// A receiver of one stream's batches and window boundaries: a channel to
/// another thread, or an operator chained on this thread.
pub(crate) trait Subscriber<T>: Send {
    /// Starts a chained operator (setup, initial checkpoint).
    fn start(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure>;
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure>;
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure>;
    /// Ends the stream without a window (an operator whose upstreams all
    /// ended before its restored checkpoint).
    fn close(&mut self) -> Result<(), Failure>;
    /// Replaces the channel to the downstream physical operator `target`
    /// with `sender` (a `Sender<Message<W>>` of this subscriber's wire
    /// type); a rejoin (`Resume::NextWindow`) drops the rest of the current
    /// window. Returns whether it feeds `target`.
    fn reconnect(
        &mut self,
        _target: usize,
        _sender: &mut Option<Box<dyn Any + Send>>,
        _resume: Resume,
    ) -> Result<bool, Failure> {
        Ok(false)
    }
    /// Sends replayed messages to `target` only. Returns whether it feeds
    /// `target`.
    fn replay(&mut self, _target: usize, _messages: &[Message<T>]) -> Result<bool, Failure> {
        Ok(false)
    }
    /// Hands a control message to the chained operator `node`; returns it
    /// back if this subscriber does not lead to that operator.
    fn deliver(&mut self, node: usize, message: Control) -> Result<Option<Control>, Failure> {
        let _ = node;
        Ok(Some(message))
    }
    /// Gives a chained operator the chance to act on its control messages
    /// between windows. Channels have nothing to do.
    fn between_windows(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    /// Waits for a chained operator's shutdown.
    fn shutdown(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    /// Tears a chained operator down.
    fn teardown(&mut self) {}
}

/// Sends on a bounded channel, giving up when this operator is killed or
/// the job aborts. A full channel blocks (back-pressure) but never past a
/// kill. `Ok(false)`: the receiver is gone (a failed downstream, to be
/// reconnected after its recovery).
pub(crate) fn send<T>(tx: &Sender<T>, msg: T, kill: &Receiver<()>) -> Result<bool, Failure> {
    match tx.try_send(msg) {
        Ok(()) => Ok(true),
        Err(TrySendError::Disconnected(_)) => Ok(false),
        Err(TrySendError::Full(msg)) => crossbeam_channel::select! {
            send(tx, msg) -> sent => Ok(sent.is_ok()),
            recv(kill) -> _ => Err(Failure::Aborted),
        },
    }
}

/// Where an operator emits tuples: they are collected into batches, kept in
/// the stream's replay buffer (when checkpointing is on) and handed to every
/// subscriber, sharing one allocation.
///
/// # Examples
///
/// ```
/// use checkpoint_core::Checkpoint;
/// use checkpoint_runtime::{Operator, OperatorResult, Output};
///
/// #[derive(Default, Checkpoint)]
/// #[checkpoint(stateless)]
/// struct Split;
///
/// impl Operator for Split {
///     type Input = String;
///     type Output = String;
///     fn process(&mut self, line: String, out: Output<'_, String>) -> OperatorResult {
///         for word in line.split_whitespace() {
///             out.emit(word.to_owned());
///         }
///         Ok(())
///     }
/// }
/// ```
pub struct Emitter<T> {
    batch: Vec<T>,
    batch_size: usize,
    subscribers: Vec<Box<dyn Subscriber<T>>>,
    replay: Option<ReplayBuffer<T>>,
    window: Option<WindowId>,
    ended: Option<(WindowId, bool)>,
    closed: bool,
    emitted: u64,
    emitted_in_window: u64,
    failure: Option<Failure>,
}

impl<T> fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("buffered", &self.batch.len())
            .field("subscribers", &self.subscribers.len())
            .field("emitted", &self.emitted)
            .finish()
    }
}

impl<T: Tuple> Emitter<T> {
    pub(crate) fn new(
        batch_size: usize,
        subscribers: Vec<Box<dyn Subscriber<T>>>,
        replay: Option<ReplayBuffer<T>>,
    ) -> Self {
        Emitter {
            batch: Vec::with_capacity(batch_size),
            batch_size,
            subscribers,
            replay,
            window: None,
            ended: None,
            closed: false,
            emitted: 0,
            emitted_in_window: 0,
            failure: None,
        }
    }

    /// Emits one tuple to every downstream operator.
    #[inline]
    pub fn emit(&mut self, tuple: T) {
        self.batch.push(tuple);
        self.emitted_in_window += 1;
        if self.batch.len() >= self.batch_size {
            self.flush();
        }
    }

    /// Tuples emitted in the current window so far.
    pub fn emitted_in_window(&self) -> u64 {
        self.emitted_in_window
    }

    /// Tuples emitted so far, sent or still in the batch being filled.
    pub(crate) fn emitted(&self) -> u64 {
        self.emitted + self.batch.len() as u64
    }

    /// Sends the buffered tuples. A send that fails (the job is aborting) is
    /// remembered and reported by [`Emitter::take_failure`].
    pub(crate) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = Arc::new(std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size)));
        self.emitted += batch.len() as u64;
        if self.failure.is_some() {
            return;
        }
        if let Some(replay) = &mut self.replay
            && let Err(failure) = replay.push(&batch)
        {
            self.failure = Some(failure);
            return;
        }
        for subscriber in &mut self.subscribers {
            if let Err(failure) = subscriber.batch(&batch) {
                self.failure = Some(failure);
                return;
            }
        }
    }

    pub(crate) fn take_failure(&mut self) -> Result<(), Failure> {
        match self.failure.take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    pub(crate) fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.take_failure()?;
        self.emitted_in_window = 0;
        self.window = Some(window);
        if let Some(replay) = &mut self.replay {
            replay.begin_window(window)?;
        }
        for subscriber in &mut self.subscribers {
            subscriber.begin_window(window)?;
        }
        Ok(())
    }

    pub(crate) fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        self.window = None;
        self.ended = Some((window, last));
        if let Some(replay) = &mut self.replay {
            replay.end_window(last)?;
        }
        for subscriber in &mut self.subscribers {
            subscriber.end_window(window, last)?;
        }
        Ok(())
    }

    /// Points the stream at new channels to recovered downstream operators
    /// and replays what each needs: every kept window after its recovery
    /// point (the window in progress so far included), or nothing for a
    /// rejoin. The replay goes window by window to all of them, as live
    /// windows do, so a downstream waiting for another of them cannot
    /// block it.
    pub(crate) fn reconnect(&mut self, targets: Vec<(usize, Box<dyn Any + Send>, Resume)>) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        let stream_over = self.closed || (self.window.is_none() && matches!(self.ended, Some((_, true))));
        let mut replays: Vec<(usize, WindowId)> = Vec::new();
        for (target, sender, resume) in targets {
            let mut sender = Some(sender);
            for subscriber in &mut self.subscribers {
                if subscriber.reconnect(target, &mut sender, resume)? {
                    break;
                }
            }
            match resume {
                Resume::After(after) => replays.push((target, after)),
                Resume::NextWindow if stream_over => self.replay_to(target, &[Message::Closed])?,
                Resume::NextWindow => {}
            }
        }
        let Some(oldest) = replays.iter().map(|(_, after)| *after).min() else {
            return Ok(());
        };
        let mut messages = Vec::new();
        if let Some(buffer) = &self.replay {
            buffer.messages_after(oldest, &mut messages)?;
        }
        // Window by window, to every target that needs the window.
        let mut sent_any = vec![false; replays.len()];
        let mut start = 0;
        while start < messages.len() {
            let Message::Begin(window) = messages[start] else {
                return Err(Failure::operator(
                    "runtime",
                    None,
                    "internal error: a replay not starting with a window",
                ));
            };
            let end = messages[start + 1..]
                .iter()
                .position(|m| matches!(m, Message::Begin(_)))
                .map_or(messages.len(), |i| start + 1 + i);
            for (k, (target, after)) in replays.iter().enumerate() {
                if window > *after {
                    self.replay_to(*target, &messages[start..end])?;
                    sent_any[k] = true;
                }
            }
            start = end;
        }
        // A stream that ended at or before a target's recovery point.
        for (k, (target, _)) in replays.iter().enumerate() {
            if !sent_any[k] && stream_over {
                self.replay_to(*target, &[Message::Closed])?;
            }
        }
        Ok(())
    }

    fn replay_to(&mut self, target: usize, messages: &[Message<T>]) -> Result<(), Failure> {
        for subscriber in &mut self.subscribers {
            if subscriber.replay(target, messages)? {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn close(&mut self) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        self.closed = true;
        for subscriber in &mut self.subscribers {
            subscriber.close()?;
        }
        Ok(())
    }

    pub(crate) fn deliver(&mut self, node: usize, message: Control) -> Result<Option<Control>, Failure> {
        let mut message = Some(message);
        for subscriber in &mut self.subscribers {
            if let Some(m) = message.take() {
                message = subscriber.deliver(node, m)?;
            }
        }
        Ok(message)
    }

    pub(crate) fn between_windows(&mut self) -> Result<(), Failure> {
        for subscriber in &mut self.subscribers {
            subscriber.between_windows()?;
        }
        Ok(())
    }

    pub(crate) fn start(&mut self) -> Result<(), Failure> {
        for subscriber in &mut self.subscribers {
            subscriber.start()?;
        }
        Ok(())
    }

    pub(crate) fn shutdown(&mut self) -> Result<(), Failure> {
        for subscriber in &mut self.subscribers {
            subscriber.shutdown()?;
        }
        Ok(())
    }

    pub(crate) fn teardown(&mut self) {
        for subscriber in &mut self.subscribers {
            subscriber.teardown();
        }
    }

    pub(crate) fn committed(&mut self, window: WindowId) {
        if let Some(replay) = &mut self.replay {
            replay.purge_through(window);
        }
    }

    pub(crate) fn replay_bytes(&self) -> usize {
        self.replay.as_ref().map_or(0, ReplayBuffer::memory_bytes)
    }
}

/// One channel to one downstream physical operator. Once its receiver is
/// gone (the downstream failed) it drops what it is given until the
/// downstream's replacement reconnects.
pub(crate) struct Channel<W> {
    pub(crate) target: usize,
    route: Route<W>,
    /// After a rejoin: drop messages until the next window begins.
    awaiting_begin: bool,
}

/// How a channel's messages reach their receiver.
enum Route<W> {
    /// Straight into the bounded channel: a full one blocks the sender
    /// (back-pressure).
    Direct(Sender<Message<W>>),
    /// Through a relay thread, for a recovered downstream catching up on
    /// its replay: the upstream never waits for it, so it cannot be held
    /// back by a downstream that waits for another upstream's replay.
    Relay(Relay<W>),
    /// The receiver is gone (a failed downstream awaiting its recovery).
    Gone,
}

struct Relay<W> {
    queue: Sender<Message<W>>,
    pending: Receiver<Message<W>>,
    /// Held by the relay while it holds a message; free and with an empty
    /// queue, the relay has delivered everything.
    forwarding: Arc<std::sync::Mutex<()>>,
    direct: Sender<Message<W>>,
}

impl<W: Send + Sync + 'static> Relay<W> {
    fn spawn(direct: Sender<Message<W>>, kill: &Receiver<()>) -> Result<Self, Failure> {
        let (queue, pending) = crossbeam_channel::unbounded::<Message<W>>();
        let forwarding = Arc::new(std::sync::Mutex::new(()));
        let relay = Relay {
            queue,
            pending: pending.clone(),
            forwarding: Arc::clone(&forwarding),
            direct: direct.clone(),
        };
        let kill = kill.clone();
        std::thread::Builder::new()
            .name("replay-relay".to_owned())
            .spawn(move || {
                loop {
                    let guard = forwarding.lock().unwrap_or_else(|p| p.into_inner());
                    match pending.try_recv() {
                        Ok(message) => match send(&direct, message, &kill) {
                            Ok(true) => {}
                            // The receiver or the sender is gone: nothing left to relay to.
                            Ok(false) | Err(_) => break,
                        },
                        Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                        Err(crossbeam_channel::TryRecvError::Empty) => {
                            drop(guard);
                            let mut select = crossbeam_channel::Select::new();
                            select.recv(&pending);
                            select.recv(&kill);
                            select.ready();
                            if let Err(crossbeam_channel::TryRecvError::Disconnected) = kill.try_recv() {
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| Failure::operator("runtime", None, format!("starting a replay relay: {e}")))?;
        Ok(relay)
    }

    /// Whether everything queued has been delivered; then the relay is not
    /// needed any more (checked with its lock held, so no message is in its
    /// hands).
    fn drained(&self) -> bool {
        self.pending.is_empty()
            && self
                .forwarding
                .try_lock()
                .map(|_held| self.pending.is_empty())
                .unwrap_or(false)
    }
}

impl<W: Send + Sync + 'static> Channel<W> {
    pub(crate) fn new(target: usize, tx: Sender<Message<W>>) -> Self {
        Channel {
            target,
            route: Route::Direct(tx),
            awaiting_begin: false,
        }
    }

    fn send(&mut self, message: Message<W>, kill: &Receiver<()>) -> Result<(), Failure> {
        let message = if self.awaiting_begin {
            match message {
                Message::Begin(_) | Message::Closed => {
                    self.awaiting_begin = false;
                    message
                }
                // The stream ends before the rejoining receiver's next window.
                Message::End { last: true, .. } => {
                    self.awaiting_begin = false;
                    Message::Closed
                }
                Message::Batch(_) | Message::End { .. } => return Ok(()),
            }
        } else {
            message
        };
        if let Route::Relay(relay) = &self.route
            && relay.drained()
        {
            // Caught up: back to the bounded channel and its back-pressure.
            // Dropping the relay's queue ends its thread.
            self.route = Route::Direct(relay.direct.clone());
        }
        self.route_message(message, kill)
    }

    /// Puts a message on the route as it is: the bounded channel (blocking
    /// while full), or the relay's queue (never blocking).
    fn route_message(&mut self, message: Message<W>, kill: &Receiver<()>) -> Result<(), Failure> {
        let delivered = match &self.route {
            Route::Direct(tx) => send(tx, message, kill)?,
            // Unbounded: the batches are shared with the replay buffer.
            Route::Relay(relay) => relay.queue.send(message).is_ok(),
            Route::Gone => true,
        };
        if !delivered {
            self.route = Route::Gone;
        }
        Ok(())
    }

    /// Takes `sender` if it is for this channel's target; what follows goes
    /// through a relay until the recovered downstream has caught up.
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        resume: Resume,
        kill: &Receiver<()>,
    ) -> Result<bool, Failure> {
        if target != self.target {
            return Ok(false);
        }
        let Some(boxed) = sender.take() else {
            return Ok(false);
        };
        let Ok(tx) = boxed.downcast::<Sender<Message<W>>>() else {
            return Err(Failure::operator(
                "runtime",
                None,
                "internal error: a reconnect carried a channel of the wrong type",
            ));
        };
        self.route = Route::Relay(Relay::spawn(*tx, kill)?);
        // A rejoin starts at the next window: drop the rest of this one.
        self.awaiting_begin = resume == Resume::NextWindow;
        Ok(true)
    }

    /// Queues replayed messages on the relay (never blocking), bypassing a
    /// rejoin's wait for a window.
    fn replay(&mut self, messages: impl Iterator<Item = Message<W>>, kill: &Receiver<()>) -> Result<(), Failure> {
        for message in messages {
            self.route_message(message, kill)?;
        }
        Ok(())
    }
}

/// A plain edge: every batch, shared, to one downstream thread.
pub(crate) struct ChannelSubscriber<T> {
    pub(crate) channel: Channel<T>,
    pub(crate) kill: Receiver<()>,
}

impl<T: Send + Sync + 'static> Subscriber<T> for ChannelSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.channel.send(Message::Begin(window), &self.kill)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        self.channel.send(Message::Batch(Arc::clone(batch)), &self.kill)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.channel.send(Message::End { window, last }, &self.kill)
    }
    fn close(&mut self) -> Result<(), Failure> {
        self.channel.send(Message::Closed, &self.kill)
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        resume: Resume,
    ) -> Result<bool, Failure> {
        self.channel.reconnect(target, sender, resume, &self.kill)
    }
    fn replay(&mut self, target: usize, messages: &[Message<T>]) -> Result<bool, Failure> {
        if target != self.channel.target {
            return Ok(false);
        }
        self.channel.replay(messages.iter().cloned(), &self.kill)?;
        Ok(true)
    }
}

/// A key-partitioned edge: each tuple to the partition its key hashes to;
/// window boundaries to all partitions.
pub(crate) struct KeyedSubscriber<T> {
    pub(crate) key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) partitions: Vec<Channel<T>>,
    pub(crate) kill: Receiver<()>,
}

impl<T: Clone + Send + Sync + 'static> KeyedSubscriber<T> {
    fn split(&self, batch: &[T]) -> Vec<Vec<T>> {
        let n = self.partitions.len();
        let mut split: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
        for tuple in batch {
            split[partition_of((self.key)(tuple), n)].push(tuple.clone());
        }
        split
    }
}

impl<T: Clone + Send + Sync + 'static> Subscriber<T> for KeyedSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::Begin(window), &self.kill)?;
        }
        Ok(())
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let split = self.split(batch);
        for (channel, part) in self.partitions.iter_mut().zip(split) {
            if !part.is_empty() {
                channel.send(Message::Batch(Arc::new(part)), &self.kill)?;
            }
        }
        Ok(())
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::End { window, last }, &self.kill)?;
        }
        Ok(())
    }
    fn close(&mut self) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::Closed, &self.kill)?;
        }
        Ok(())
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        resume: Resume,
    ) -> Result<bool, Failure> {
        match self.partitions.iter_mut().find(|c| c.target == target) {
            Some(channel) => channel.reconnect(target, sender, resume, &self.kill),
            None => Ok(false),
        }
    }
    fn replay(&mut self, target: usize, messages: &[Message<T>]) -> Result<bool, Failure> {
        let n = self.partitions.len();
        let Some(p) = self.partitions.iter().position(|c| c.target == target) else {
            return Ok(false);
        };
        let key = Arc::clone(&self.key);
        let only_p: Vec<Message<T>> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Batch(b) => {
                    let part: Vec<T> = b.iter().filter(|t| partition_of(key(t), n) == p).cloned().collect();
                    (!part.is_empty()).then(|| Message::Batch(Arc::new(part)))
                }
                other => Some(other.clone()),
            })
            .collect();
        self.partitions[p].replay(only_p.into_iter(), &self.kill)?;
        Ok(true)
    }
}

/// An edge that converts each tuple into the downstream's input type (an
/// enum variant, for an operator with several upstreams).
pub(crate) struct ConvertSubscriber<T, In> {
    pub(crate) convert: Arc<dyn Fn(T) -> In + Send + Sync>,
    pub(crate) inner: Box<dyn Subscriber<In>>,
}

impl<T: Clone + Send + Sync + 'static, In: Send + Sync + 'static> ConvertSubscriber<T, In> {
    fn convert_batch(&self, batch: &Arc<Vec<T>>) -> Arc<Vec<In>> {
        Arc::new(batch.iter().cloned().map(|t| (self.convert)(t)).collect())
    }
}

impl<T: Clone + Send + Sync + 'static, In: Send + Sync + 'static> Subscriber<T> for ConvertSubscriber<T, In> {
    fn start(&mut self) -> Result<(), Failure> {
        self.inner.start()
    }
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.inner.begin_window(window)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let converted = self.convert_batch(batch);
        self.inner.batch(&converted)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.inner.end_window(window, last)
    }
    fn close(&mut self) -> Result<(), Failure> {
        self.inner.close()
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        resume: Resume,
    ) -> Result<bool, Failure> {
        self.inner.reconnect(target, sender, resume)
    }
    fn replay(&mut self, target: usize, messages: &[Message<T>]) -> Result<bool, Failure> {
        let converted: Vec<Message<In>> = messages
            .iter()
            .map(|m| match m {
                Message::Begin(w) => Message::Begin(*w),
                Message::Batch(b) => Message::Batch(self.convert_batch(b)),
                Message::End { window, last } => Message::End {
                    window: *window,
                    last: *last,
                },
                Message::Closed => Message::Closed,
            })
            .collect();
        self.inner.replay(target, &converted)
    }
    fn deliver(&mut self, node: usize, message: Control) -> Result<Option<Control>, Failure> {
        self.inner.deliver(node, message)
    }
    fn between_windows(&mut self) -> Result<(), Failure> {
        self.inner.between_windows()
    }
    fn shutdown(&mut self) -> Result<(), Failure> {
        self.inner.shutdown()
    }
    fn teardown(&mut self) {
        self.inner.teardown();
    }
}
