//! Streams: the messages on an edge, the emitter an operator writes to, and
//! the subscribers that carry its batches to downstream operators.

mod cursor;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use checkpoint_core::WindowId;
use crossbeam_channel::Sender;

use cursor::{ChannelSink, ConvertSink, Cursor, Handback, Handoff, KeyedSink, Sink};
pub(crate) use cursor::{Cursors, Link, send};

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
    /// Takes the channel to the downstream physical operator `target`
    /// (`sender`, a `Sender<Message<W>>` of this subscriber's wire type) if
    /// it feeds that operator. `Reconnect::CatchUp` returns the sink a
    /// cursor feeds until it hands the channel back.
    fn reconnect(
        &mut self,
        _target: usize,
        _sender: &mut Option<Box<dyn Any + Send>>,
        _how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        Ok(Reconnected::NotHere)
    }
    /// Ends the stream of `target` alone, without a window. Returns whether
    /// it feeds `target`.
    fn close_target(&mut self, _target: usize) -> Result<bool, Failure> {
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

/// How a reconnected channel resumes.
pub(crate) enum Reconnect {
    /// Live at once; for a rejoin (AT_MOST_ONCE) from the next window the
    /// upstream begins.
    Direct { next_window: bool },
    /// Fed by a cursor from the stream's store until it catches up; the
    /// store's count of appended messages.
    CatchUp(Arc<AtomicU64>),
}

/// What a subscriber did with a reconnect.
pub(crate) enum Reconnected<T> {
    /// It does not feed the target.
    NotHere,
    /// The channel is live.
    Direct,
    /// The channel waits for this sink's cursor.
    CatchUp(Box<dyn Sink<T>>),
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
    /// The stream's store, shared with the cursors reading it.
    replay: Option<Arc<Mutex<ReplayBuffer<T>>>>,
    /// The thread's cursors still catching up (this emitter's among them).
    cursors: Cursors,
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

fn lock<T>(store: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only this emitter's thread uses the store.
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Tuple> Emitter<T> {
    pub(crate) fn new(
        batch_size: usize,
        subscribers: Vec<Box<dyn Subscriber<T>>>,
        replay: Option<ReplayBuffer<T>>,
        cursors: Cursors,
    ) -> Self {
        Emitter {
            batch: Vec::with_capacity(batch_size),
            batch_size,
            subscribers,
            replay: replay.map(|r| Arc::new(Mutex::new(r))),
            cursors,
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
        if let Some(replay) = &self.replay {
            lock(replay).push(&batch);
        }
        for subscriber in &mut self.subscribers {
            if let Err(failure) = subscriber.batch(&batch) {
                self.failure = Some(failure);
                return;
            }
        }
        if let Err(failure) = self.cursors.advance() {
            self.failure = Some(failure);
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
        if let Some(replay) = &self.replay {
            lock(replay).begin_window(window);
        }
        for subscriber in &mut self.subscribers {
            subscriber.begin_window(window)?;
        }
        self.cursors.advance()
    }

    pub(crate) fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        self.window = None;
        self.ended = Some((window, last));
        if let Some(replay) = &self.replay {
            lock(replay).end_window(last)?;
        }
        for subscriber in &mut self.subscribers {
            subscriber.end_window(window, last)?;
        }
        self.cursors.advance()
    }

    /// Points the stream at new channels to recovered downstream operators.
    /// One that replays (AT_LEAST_ONCE, EXACTLY_ONCE) gets a cursor into
    /// the stream's store at the first kept window after its recovery
    /// point, which sends as its channel has room and hands the channel
    /// back once caught up; one that rejoins (AT_MOST_ONCE) goes live from
    /// the next window. No cursor waits for another, so a downstream waiting
    /// for another upstream's replay cannot block this one.
    pub(crate) fn reconnect(&mut self, targets: Vec<(usize, Box<dyn Any + Send>, Resume)>) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        let stream_over = self.closed || (self.window.is_none() && matches!(self.ended, Some((_, true))));
        for (target, sender, resume) in targets {
            let mut sender = Some(sender);
            match (&self.replay, resume) {
                (Some(store), Resume::After(after)) => {
                    let how = Reconnect::CatchUp(lock(store).appended());
                    for subscriber in &mut self.subscribers {
                        match subscriber.reconnect(target, &mut sender, &how)? {
                            Reconnected::NotHere => continue,
                            Reconnected::Direct => break,
                            Reconnected::CatchUp(sink) => {
                                let start = lock(store).replay_start(after);
                                self.cursors.add(Box::new(Cursor::new(Arc::clone(store), start, sink)));
                                break;
                            }
                        }
                    }
                }
                (_, resume) => {
                    let how = Reconnect::Direct {
                        next_window: resume == Resume::NextWindow,
                    };
                    for subscriber in &mut self.subscribers {
                        if !matches!(subscriber.reconnect(target, &mut sender, &how)?, Reconnected::NotHere) {
                            break;
                        }
                    }
                    // Nothing kept to replay: a stream already over ends here.
                    if stream_over {
                        for subscriber in &mut self.subscribers {
                            if subscriber.close_target(target)? {
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.cursors.advance()
    }

    /// Advances the thread's catching-up cursors (an atomic load when there
    /// are none).
    #[inline]
    pub(crate) fn advance_cursors(&self) -> Result<(), Failure> {
        self.cursors.advance()
    }

    pub(crate) fn close(&mut self) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        self.closed = true;
        if let Some(replay) = &self.replay {
            lock(replay).close();
        }
        for subscriber in &mut self.subscribers {
            subscriber.close()?;
        }
        self.cursors.advance()
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
        if let Some(replay) = &self.replay {
            lock(replay).purge_through(window);
        }
    }

    /// The store's bytes in memory now, the most they ever were, and the
    /// windows it spilled.
    pub(crate) fn replay_stats(&self) -> (usize, usize, u64) {
        self.replay.as_ref().map_or((0, 0, 0), |replay| {
            let replay = lock(replay);
            (replay.memory_bytes(), replay.peak_bytes(), replay.spilled_windows())
        })
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
    /// A recovered downstream catching up: a cursor sends from the store,
    /// live messages are left to it until it hands the channel back.
    Catching(Arc<Handoff<W>>),
    /// The receiver is gone (a failed downstream awaiting its recovery).
    Gone,
}

impl<W: Send + Sync + 'static> Channel<W> {
    pub(crate) fn new(target: usize, tx: Sender<Message<W>>) -> Self {
        Channel {
            target,
            route: Route::Direct(tx),
            awaiting_begin: false,
        }
    }

    fn send(&mut self, message: Message<W>, link: &Link) -> Result<(), Failure> {
        if let Route::Catching(handoff) = &self.route {
            match handoff.take() {
                Handback::Catching => return Ok(()),
                Handback::Gone => {
                    self.route = Route::Gone;
                    return Ok(());
                }
                Handback::Live(tx, delivered) => {
                    // `message` is the store's last; the cursor sent every
                    // position before `delivered`.
                    let sent_by_cursor = handoff.appended.load(Ordering::Relaxed) <= delivered;
                    self.route = Route::Direct(tx);
                    if sent_by_cursor {
                        return Ok(());
                    }
                }
            }
        }
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
        if let Route::Direct(tx) = &self.route
            && !send(tx, message, link)?
        {
            self.route = Route::Gone;
        }
        Ok(())
    }

    /// Takes `sender` if it is for this channel's target.
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        how: &Reconnect,
    ) -> Result<Option<Option<ChannelSink<W>>>, Failure> {
        if target != self.target {
            return Ok(None);
        }
        let Some(boxed) = sender.take() else {
            return Ok(None);
        };
        let Ok(tx) = boxed.downcast::<Sender<Message<W>>>() else {
            return Err(Failure::operator(
                "runtime",
                None,
                "internal error: a reconnect carried a channel of the wrong type",
            ));
        };
        match how {
            Reconnect::Direct { next_window } => {
                self.route = Route::Direct(*tx);
                // A rejoin starts at the next window: drop the rest of this one.
                self.awaiting_begin = *next_window;
                Ok(Some(None))
            }
            Reconnect::CatchUp(appended) => {
                let handoff = Handoff::new(Arc::clone(appended));
                self.route = Route::Catching(Arc::clone(&handoff));
                self.awaiting_begin = false;
                Ok(Some(Some(ChannelSink::new(*tx, handoff))))
            }
        }
    }

    /// Sends `Closed` to a channel just reconnected live.
    fn close_now(&mut self, link: &Link) -> Result<(), Failure> {
        self.awaiting_begin = false;
        self.send(Message::Closed, link)
    }
}

fn reconnected<T: Send + Sync + 'static>(found: Option<Option<ChannelSink<T>>>) -> Reconnected<T> {
    match found {
        None => Reconnected::NotHere,
        Some(None) => Reconnected::Direct,
        Some(Some(sink)) => Reconnected::CatchUp(Box::new(sink)),
    }
}

/// A plain edge: every batch, shared, to one downstream thread.
pub(crate) struct ChannelSubscriber<T> {
    pub(crate) channel: Channel<T>,
    pub(crate) link: Link,
}

impl<T: Send + Sync + 'static> Subscriber<T> for ChannelSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.channel.send(Message::Begin(window), &self.link)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        self.channel.send(Message::Batch(Arc::clone(batch)), &self.link)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.channel.send(Message::End { window, last }, &self.link)
    }
    fn close(&mut self) -> Result<(), Failure> {
        self.channel.send(Message::Closed, &self.link)
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        Ok(reconnected(self.channel.reconnect(target, sender, how)?))
    }
    fn close_target(&mut self, target: usize) -> Result<bool, Failure> {
        if target != self.channel.target {
            return Ok(false);
        }
        self.channel.close_now(&self.link)?;
        Ok(true)
    }
}

/// A key-partitioned edge: each tuple to the partition its key hashes to;
/// window boundaries to all partitions.
pub(crate) struct KeyedSubscriber<T> {
    pub(crate) key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) partitions: Vec<Channel<T>>,
    pub(crate) link: Link,
}

impl<T: Clone + Send + Sync + 'static> KeyedSubscriber<T> {
    fn split(&self, batch: &[T]) -> Vec<Vec<T>> {
        let n = self.partitions.len();
        // Sized for an even spread plus a margin: most shares never regrow.
        let share = batch.len() / n + batch.len() / (8 * n) + 1;
        let mut split: Vec<Vec<T>> = (0..n).map(|_| Vec::with_capacity(share)).collect();
        for tuple in batch {
            split[partition_of((self.key)(tuple), n)].push(tuple.clone());
        }
        split
    }
}

impl<T: Clone + Send + Sync + 'static> Subscriber<T> for KeyedSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::Begin(window), &self.link)?;
        }
        Ok(())
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let split = self.split(batch);
        for (channel, part) in self.partitions.iter_mut().zip(split) {
            if !part.is_empty() {
                channel.send(Message::Batch(Arc::new(part)), &self.link)?;
            }
        }
        Ok(())
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::End { window, last }, &self.link)?;
        }
        Ok(())
    }
    fn close(&mut self) -> Result<(), Failure> {
        for channel in &mut self.partitions {
            channel.send(Message::Closed, &self.link)?;
        }
        Ok(())
    }
    fn reconnect(
        &mut self,
        target: usize,
        sender: &mut Option<Box<dyn Any + Send>>,
        how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        let partitions = self.partitions.len();
        let Some(partition) = self.partitions.iter().position(|c| c.target == target) else {
            return Ok(Reconnected::NotHere);
        };
        Ok(match self.partitions[partition].reconnect(target, sender, how)? {
            None => Reconnected::NotHere,
            Some(None) => Reconnected::Direct,
            Some(Some(inner)) => Reconnected::CatchUp(Box::new(KeyedSink {
                key: Arc::clone(&self.key),
                partitions,
                partition,
                inner,
            })),
        })
    }
    fn close_target(&mut self, target: usize) -> Result<bool, Failure> {
        match self.partitions.iter_mut().find(|c| c.target == target) {
            Some(channel) => channel.close_now(&self.link).map(|()| true),
            None => Ok(false),
        }
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
        how: &Reconnect,
    ) -> Result<Reconnected<T>, Failure> {
        Ok(match self.inner.reconnect(target, sender, how)? {
            Reconnected::NotHere => Reconnected::NotHere,
            Reconnected::Direct => Reconnected::Direct,
            Reconnected::CatchUp(inner) => Reconnected::CatchUp(Box::new(ConvertSink {
                convert: Arc::clone(&self.convert),
                inner,
            })),
        })
    }
    fn close_target(&mut self, target: usize) -> Result<bool, Failure> {
        self.inner.close_target(target)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossbeam_channel::Receiver;

    use super::*;
    use crate::replay::SpillPolicy;

    fn w(seq: u32) -> WindowId {
        WindowId::new(1, seq)
    }

    fn show(message: &Message<u64>) -> String {
        match message {
            Message::Begin(w) => format!("B{}", w.sequence()),
            Message::Batch(b) => format!("{:?}", b.as_slice()),
            Message::End { window, last } => format!("E{}{}", window.sequence(), if *last { "!" } else { "" }),
            Message::Closed => "C".to_owned(),
        }
    }

    fn drain(rx: &Receiver<Message<u64>>, out: &mut Vec<String>) {
        while let Ok(message) = rx.try_recv() {
            out.push(show(&message));
        }
    }

    /// An emitter of batches of 2 with a store spilling past `cap`, and one
    /// plain edge to downstream 7 (its first receiver returned).
    fn emitter(cap: usize, dir: &Path) -> (Emitter<u64>, Receiver<Message<u64>>, crossbeam_channel::Sender<()>) {
        let (kill_tx, kill) = crossbeam_channel::bounded(0);
        let link = Link {
            kill,
            cursors: Cursors::default(),
        };
        let (tx, rx) = crossbeam_channel::bounded(64);
        let subscriber: Box<dyn Subscriber<u64>> = Box::new(ChannelSubscriber {
            channel: Channel::new(7, tx),
            link: link.clone(),
        });
        let store = ReplayBuffer::new(
            "op",
            SpillPolicy {
                memory_cap: cap,
                dir: dir.to_path_buf(),
            },
        );
        (Emitter::new(2, vec![subscriber], Some(store), link.cursors), rx, kill_tx)
    }

    fn window(emitter: &mut Emitter<u64>, seq: u32, values: &[u64]) {
        emitter.begin_window(w(seq)).expect("begin");
        for &v in values {
            emitter.emit(v);
        }
        emitter.end_window(w(seq), false).expect("end");
    }

    /// A recovered downstream gets every kept window after its recovery
    /// point from a cursor that sends only what its channel has room for,
    /// then the live stream, each message exactly once and in order,
    /// whatever was emitted while it caught up.
    #[test]
    fn a_cursor_catches_up_without_blocking_and_hands_the_channel_back_exactly_once() {
        for cap in [usize::MAX, 0] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut emitter, _first, _kill) = emitter(cap, dir.path());
            window(&mut emitter, 1, &[1, 2]);
            window(&mut emitter, 2, &[3, 4]);
            emitter.begin_window(w(3)).expect("begin");
            emitter.emit(5);
            emitter.emit(6);

            let (tx, rx) = crossbeam_channel::bounded::<Message<u64>>(4);
            emitter
                .reconnect(vec![(7, Box::new(tx), Resume::After(w(1)))])
                .expect("reconnect");
            let mut got = Vec::new();
            // Four fit; the cursor waits with the fifth, never blocking.
            assert_eq!(rx.len(), 4, "cap {cap}");
            got.push(show(&rx.try_recv().expect("one")));
            emitter.emit(7);
            emitter.emit(8); // flushed while the cursor still catches up
            drain(&rx, &mut got);
            emitter.end_window(w(3), false).expect("end");
            drain(&rx, &mut got);
            // Caught up: live again from here.
            window(&mut emitter, 4, &[9]);
            drain(&rx, &mut got);
            assert_eq!(
                got,
                ["B2", "[3, 4]", "E2", "B3", "[5, 6]", "[7, 8]", "E3", "B4", "[9]", "E4"],
                "cap {cap}"
            );
            assert!(emitter.cursors.is_empty());
        }
    }

    /// A downstream restored at or after the stream's end gets `Closed`;
    /// one restored before gets the rest and the last `End`.
    #[test]
    fn a_cursor_at_the_end_of_a_finished_stream_closes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut emitter, _first, _kill) = emitter(usize::MAX, dir.path());
        window(&mut emitter, 1, &[1]);
        emitter.begin_window(w(2)).expect("begin");
        emitter.end_window(w(2), true).expect("end");
        let (late, late_rx) = crossbeam_channel::bounded::<Message<u64>>(8);
        let (early, early_rx) = crossbeam_channel::bounded::<Message<u64>>(8);
        emitter
            .reconnect(vec![(7, Box::new(late), Resume::After(w(2)))])
            .expect("reconnect");
        let mut got = Vec::new();
        drain(&late_rx, &mut got);
        assert_eq!(got, ["C"]);
        emitter
            .reconnect(vec![(7, Box::new(early), Resume::After(w(1)))])
            .expect("reconnect");
        got.clear();
        drain(&early_rx, &mut got);
        assert_eq!(got, ["B2", "E2!"]);
    }
}
