//! Streams: the messages on an edge, the emitter an operator writes to, and
//! the subscribers that carry its batches to downstream operators.

use std::fmt;
use std::sync::Arc;

use checkpoint_core::WindowId;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::failure::Failure;
use crate::partition::partition_of;
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
    /// Gives a chained operator the chance to act on its control messages
    /// between windows. Channels have nothing to do.
    fn between_windows(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    /// Waits for a chained operator's shutdown.
    fn shutdown(&mut self) {}
    /// Tears a chained operator down.
    fn teardown(&mut self) {}
}

/// Sends on a bounded channel, giving up when the job aborts. A full
/// channel blocks (back-pressure) but never past an abort.
pub(crate) fn send<T>(tx: &Sender<T>, msg: T, abort: &Receiver<()>) -> Result<(), Failure> {
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(TrySendError::Disconnected(_)) => Err(Failure::Aborted),
        Err(TrySendError::Full(msg)) => crossbeam_channel::select! {
            send(tx, msg) -> sent => sent.map_err(|_| Failure::Aborted),
            recv(abort) -> _ => Err(Failure::Aborted),
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
/// use checkpoint_runtime::{Operator, OperatorResult, Output};
/// # use checkpoint_core::Checkpoint;
/// # #[derive(Checkpoint)]
/// # #[checkpoint(stateless)]
/// # #[derive(Default)] struct Split;
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

impl<T: Send + Sync + 'static> Emitter<T> {
    pub(crate) fn new(batch_size: usize, subscribers: Vec<Box<dyn Subscriber<T>>>, replay: bool) -> Self {
        Emitter {
            batch: Vec::with_capacity(batch_size),
            batch_size,
            subscribers,
            replay: replay.then(ReplayBuffer::new),
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

    pub(crate) fn emitted(&self) -> u64 {
        self.emitted
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
        if let Some(replay) = &mut self.replay {
            replay.push(&batch);
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
        if let Some(replay) = &mut self.replay {
            replay.begin_window(window);
        }
        for subscriber in &mut self.subscribers {
            subscriber.begin_window(window)?;
        }
        Ok(())
    }

    pub(crate) fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.flush();
        self.take_failure()?;
        for subscriber in &mut self.subscribers {
            subscriber.end_window(window, last)?;
        }
        Ok(())
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

    pub(crate) fn shutdown(&mut self) {
        for subscriber in &mut self.subscribers {
            subscriber.shutdown();
        }
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
        self.replay.as_ref().map_or(0, ReplayBuffer::bytes)
    }
}

/// A plain edge: every batch, shared, to one downstream thread.
pub(crate) struct ChannelSubscriber<T> {
    pub(crate) tx: Sender<Message<T>>,
    pub(crate) abort: Receiver<()>,
}

impl<T: Send + Sync + 'static> Subscriber<T> for ChannelSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        send(&self.tx, Message::Begin(window), &self.abort)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        send(&self.tx, Message::Batch(Arc::clone(batch)), &self.abort)
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        send(&self.tx, Message::End { window, last }, &self.abort)
    }
}

/// A key-partitioned edge: each tuple to the partition its key hashes to;
/// window boundaries to all partitions.
pub(crate) struct KeyedSubscriber<T> {
    pub(crate) key: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) partitions: Vec<Sender<Message<T>>>,
    pub(crate) abort: Receiver<()>,
}

impl<T: Clone + Send + Sync + 'static> Subscriber<T> for KeyedSubscriber<T> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        for tx in &self.partitions {
            send(tx, Message::Begin(window), &self.abort)?;
        }
        Ok(())
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let n = self.partitions.len();
        let mut split: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
        for tuple in batch.iter() {
            split[partition_of((self.key)(tuple), n)].push(tuple.clone());
        }
        for (tx, part) in self.partitions.iter().zip(split) {
            if !part.is_empty() {
                send(tx, Message::Batch(Arc::new(part)), &self.abort)?;
            }
        }
        Ok(())
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        for tx in &self.partitions {
            send(tx, Message::End { window, last }, &self.abort)?;
        }
        Ok(())
    }
}

/// An edge that converts each tuple into the downstream's input type (an
/// enum variant, for an operator with several upstreams).
pub(crate) struct ConvertSubscriber<T, In> {
    pub(crate) convert: Arc<dyn Fn(T) -> In + Send + Sync>,
    pub(crate) inner: Box<dyn Subscriber<In>>,
}

impl<T: Clone + Send + Sync + 'static, In: Send + Sync + 'static> Subscriber<T> for ConvertSubscriber<T, In> {
    fn begin_window(&mut self, window: WindowId) -> Result<(), Failure> {
        self.inner.begin_window(window)
    }
    fn batch(&mut self, batch: &Arc<Vec<T>>) -> Result<(), Failure> {
        let converted: Vec<In> = batch.iter().cloned().map(|t| (self.convert)(t)).collect();
        self.inner.batch(&Arc::new(converted))
    }
    fn end_window(&mut self, window: WindowId, last: bool) -> Result<(), Failure> {
        self.inner.end_window(window, last)
    }
    fn between_windows(&mut self) -> Result<(), Failure> {
        self.inner.between_windows()
    }
    fn start(&mut self) -> Result<(), Failure> {
        self.inner.start()
    }
    fn shutdown(&mut self) {
        self.inner.shutdown();
    }
    fn teardown(&mut self) {
        self.inner.teardown();
    }
}
