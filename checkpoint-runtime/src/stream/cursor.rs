//! Replay cursors: how a recovered downstream reads its upstream's stream
//! from the stream's one store (the replay buffer) until it has caught up,
//! then goes back to live delivery.
//!
//! A cursor is a position in the store and the channel to one downstream.
//! It sends what the channel has room for and never blocks: the upstream's
//! thread advances it after each message it emits and whenever it would
//! otherwise wait (for input, for room on another channel, for control), so
//! a recovered downstream that is slow, or waits for another upstream's
//! replay, holds no upstream back and is handed nothing unbounded. Once the
//! cursor reaches the head of the store it hands its channel back to the
//! stream, with the position it reached: the channel skips any message the
//! cursor already sent and is back on the bounded channel's back-pressure.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};

use super::Message;
use crate::failure::Failure;
use crate::operator::Tuple;
use crate::replay::{ReplayBuffer, SpillReader};

/// What became of a message offered to a cursor's receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Delivered (or nothing of it was for this receiver).
    Sent,
    /// No room: the sink keeps it until [`Sink::retry`] delivers it.
    Full,
    /// The receiver is gone (the downstream failed again).
    Gone,
}

/// The end of a cursor that reaches one downstream: the channel, and what
/// the edge does to each message on the way (a key partition's share, a
/// conversion to the downstream's input type).
pub(crate) trait Sink<T>: Send {
    /// Offers `message` without blocking.
    fn offer(&mut self, message: &Message<T>) -> Flow;
    /// Delivers the message kept by an `offer` that found no room.
    fn retry(&mut self) -> Flow;
    /// Adds the send operation a waiting thread should wake for.
    fn register<'a>(&'a self, select: &mut Select<'a>);
    /// Hands the channel back to the live stream: messages at positions
    /// before `delivered` were sent by the cursor, and `finished` says
    /// whether it also sent the stream's end (`Closed` or the last `End`).
    fn hand_back(&mut self, delivered: u64, finished: bool);
}

/// What the live side of a channel finds when a cursor has finished.
pub(crate) enum Handback<W> {
    /// The cursor is still catching up: live messages are in the store and
    /// the cursor will send them.
    Catching,
    /// Caught up: the channel, the position the cursor reached, and
    /// whether it sent the stream's end (a `Closed` has no position).
    Live(Sender<Message<W>>, u64, bool),
    /// The receiver went away.
    Gone,
}

/// Shared by a catching-up channel and its cursor's sink.
pub(crate) struct Handoff<W> {
    pub(crate) state: Mutex<Handback<W>>,
    /// Messages appended to the store so far: the live message a channel is
    /// given is the last of them.
    pub(crate) appended: Arc<AtomicU64>,
}

impl<W> Handoff<W> {
    pub(crate) fn new(appended: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Handoff {
            state: Mutex::new(Handback::Catching),
            appended,
        })
    }

    pub(crate) fn take(&self) -> Handback<W> {
        std::mem::replace(&mut *lock(&self.state), Handback::Catching)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // One thread uses each of these at a time; a panic elsewhere leaves
    // nothing half-changed that matters here.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A cursor's end at a channel of the stream's own type.
pub(crate) struct ChannelSink<W> {
    tx: Option<Sender<Message<W>>>,
    held: Option<Message<W>>,
    handoff: Arc<Handoff<W>>,
}

impl<W: Send + Sync + 'static> ChannelSink<W> {
    pub(crate) fn new(tx: Sender<Message<W>>, handoff: Arc<Handoff<W>>) -> Self {
        ChannelSink {
            tx: Some(tx),
            held: None,
            handoff,
        }
    }

    fn put(&mut self, message: Message<W>) -> Flow {
        let Some(tx) = &self.tx else {
            return Flow::Gone;
        };
        match tx.try_send(message) {
            Ok(()) => Flow::Sent,
            Err(TrySendError::Full(message)) => {
                self.held = Some(message);
                Flow::Full
            }
            Err(TrySendError::Disconnected(_)) => {
                self.tx = None;
                *lock(&self.handoff.state) = Handback::Gone;
                Flow::Gone
            }
        }
    }

    /// Offers a message already of the channel's type.
    pub(crate) fn offer_owned(&mut self, message: Message<W>) -> Flow {
        self.put(message)
    }
}

impl<W: Send + Sync + 'static> Sink<W> for ChannelSink<W> {
    fn offer(&mut self, message: &Message<W>) -> Flow {
        self.put(message.clone())
    }

    fn retry(&mut self) -> Flow {
        match self.held.take() {
            Some(message) => self.put(message),
            None if self.tx.is_none() => Flow::Gone,
            None => Flow::Sent,
        }
    }

    fn register<'a>(&'a self, select: &mut Select<'a>) {
        if let Some(tx) = &self.tx {
            select.send(tx);
        }
    }

    fn hand_back(&mut self, delivered: u64, finished: bool) {
        if let Some(tx) = self.tx.take() {
            *lock(&self.handoff.state) = Handback::Live(tx, delivered, finished);
        }
    }
}

/// A cursor the thread advances, whatever its stream's type.
pub(crate) trait Pending: Send {
    fn register<'a>(&'a self, select: &mut Select<'a>);
    /// Sends what the receiver has room for; `true` once finished (caught
    /// up and handed back, or the receiver is gone).
    fn advance(&mut self) -> Result<bool, Failure>;
}

/// A position in a stream's store and the sink it feeds.
pub(crate) struct Cursor<T> {
    store: Arc<Mutex<ReplayBuffer<T>>>,
    next: u64,
    sink: Box<dyn Sink<T>>,
    reader: Option<SpillReader>,
    /// A `Closed` or the stream's last `End` went out: nothing follows.
    finished_stream: bool,
}

impl<T: Tuple> Cursor<T> {
    pub(crate) fn new(store: Arc<Mutex<ReplayBuffer<T>>>, next: u64, sink: Box<dyn Sink<T>>) -> Self {
        Cursor {
            store,
            next,
            sink,
            reader: None,
            finished_stream: false,
        }
    }
}

impl<T: Tuple> Pending for Cursor<T> {
    fn register<'a>(&'a self, select: &mut Select<'a>) {
        self.sink.register(select);
    }

    fn advance(&mut self) -> Result<bool, Failure> {
        match self.sink.retry() {
            Flow::Sent => {}
            Flow::Full => return Ok(false),
            Flow::Gone => return Ok(true),
        }
        let store = lock(&self.store);
        loop {
            let Some(message) = store.message_at(self.next, &mut self.reader)? else {
                // At the head. A stream that ended without this downstream
                // seeing its end (it was restored at or after it) is closed.
                self.reader = None;
                if store.over() && !self.finished_stream {
                    self.finished_stream = true;
                    match self.sink.offer(&Message::Closed) {
                        Flow::Sent => {}
                        Flow::Full => return Ok(false),
                        Flow::Gone => return Ok(true),
                    }
                }
                self.sink.hand_back(self.next, self.finished_stream);
                return Ok(true);
            };
            self.next += 1;
            if let Message::End { last: true, .. } = message {
                self.finished_stream = true;
            }
            match self.sink.offer(&message) {
                Flow::Sent => {}
                Flow::Full => return Ok(false),
                Flow::Gone => return Ok(true),
            }
        }
    }
}

#[derive(Default)]
struct Registry {
    count: AtomicUsize,
    list: Mutex<Vec<Box<dyn Pending>>>,
}

/// The cursors of one thread (its operator and those chained on it) still
/// catching up. Every place the thread blocks waits for their channels too.
#[derive(Clone, Default)]
pub(crate) struct Cursors(Arc<Registry>);

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursors({})", self.0.count.load(Ordering::Relaxed))
    }
}

impl Cursors {
    /// Whether none is catching up: one atomic load, what the hot path pays.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.count.load(Ordering::Relaxed) == 0
    }

    pub(crate) fn add(&self, cursor: Box<dyn Pending>) {
        let mut list = lock(&self.0.list);
        list.push(cursor);
        self.0.count.store(list.len(), Ordering::Relaxed);
    }

    /// Advances every cursor as far as its channel has room; drops finished
    /// ones.
    pub(crate) fn advance(&self) -> Result<(), Failure> {
        if self.is_empty() {
            return Ok(());
        }
        let mut list = lock(&self.0.list);
        let mut i = 0;
        let mut result = Ok(());
        while i < list.len() {
            match list[i].advance() {
                Ok(true) => {
                    list.swap_remove(i);
                }
                Ok(false) => i += 1,
                Err(failure) => {
                    result = Err(failure);
                    break;
                }
            }
        }
        self.0.count.store(list.len(), Ordering::Relaxed);
        result
    }

    /// Blocks until one of the `own` operations first added to `select` is
    /// ready (`Some(index)`), or a cursor's channel has room (`None`, after
    /// advancing the cursors). In `Select::ready` fashion: the caller then
    /// tries its operation, which may find nothing.
    pub(crate) fn ready(&self, select: Select<'_>, own: usize) -> Result<Option<usize>, Failure> {
        if self.is_empty() {
            let mut select = select;
            return Ok(Some(select.ready()));
        }
        let index = {
            // Held while blocked: only this thread ever takes it.
            let list = lock(&self.0.list);
            let mut select = select;
            for cursor in list.iter() {
                cursor.register(&mut select);
            }
            select.ready()
        };
        if index < own {
            return Ok(Some(index));
        }
        self.advance()?;
        Ok(None)
    }
}

impl Cursors {
    /// [`Cursors::ready`] for at most `timeout`: `None` also when it passed.
    pub(crate) fn ready_timeout(
        &self,
        select: Select<'_>,
        own: usize,
        timeout: std::time::Duration,
    ) -> Result<Option<usize>, Failure> {
        let index = {
            // Held while blocked: only this thread ever takes it.
            let list = lock(&self.0.list);
            let mut select = select;
            for cursor in list.iter() {
                cursor.register(&mut select);
            }
            match select.ready_timeout(timeout) {
                Ok(index) => index,
                Err(_) => return Ok(None),
            }
        };
        if index < own {
            return Ok(Some(index));
        }
        self.advance()?;
        Ok(None)
    }
}

/// What a thread's sends need: its kill signal and its cursors.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) kill: Receiver<()>,
    pub(crate) cursors: Cursors,
}

/// Sends on a bounded channel, giving up when this operator is killed or
/// the job aborts. A full channel blocks (back-pressure) but never past a
/// kill, and the thread's cursors advance meanwhile. `Ok(false)`: the
/// receiver is gone (a failed downstream, to be reconnected after its
/// recovery).
pub(crate) fn send<T>(tx: &Sender<T>, message: T, link: &Link) -> Result<bool, Failure> {
    let mut message = message;
    loop {
        match tx.try_send(message) {
            Ok(()) => return Ok(true),
            Err(TrySendError::Disconnected(_)) => return Ok(false),
            Err(TrySendError::Full(back)) => message = back,
        }
        if link.cursors.is_empty() {
            return crossbeam_channel::select! {
                send(tx, message) -> sent => Ok(sent.is_ok()),
                recv(link.kill) -> _ => Err(Failure::Aborted),
            };
        }
        let mut select = Select::new();
        select.send(tx);
        select.recv(&link.kill);
        if link.cursors.ready(select, 2)? == Some(1) {
            return Err(Failure::Aborted);
        }
    }
}
