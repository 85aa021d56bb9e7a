//! The emitter: where an operator's tuples are batched, kept in the
//! stream's store, and handed to its subscribers.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use checkpoint_core::WindowId;

use super::cursor::{Cursor, Cursors};
use super::{Reconnect, Reconnected, Resume, Subscriber};
use crate::failure::Failure;
use crate::operator::Tuple;
use crate::protocol::Control;
use crate::replay::ReplayBuffer;

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
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        self.emitted += batch.len() as u64;
        if self.failure.is_some() {
            return;
        }
        if let Some(replay) = &self.replay
            && let Err(failure) = lock(replay).push(&batch)
        {
            self.failure = Some(failure);
            return;
        }
        // The store keeps its own encoded copy: the batch is the
        // subscribers' alone, and the last one is handed it, so a single
        // downstream owns it and takes its tuples without cloning them.
        let mut batch = Arc::new(batch);
        let last = self.subscribers.len().saturating_sub(1);
        for (i, subscriber) in self.subscribers.iter_mut().enumerate() {
            let result = if i == last {
                subscriber.batch_owned(std::mem::replace(&mut batch, Arc::new(Vec::new())))
            } else {
                subscriber.batch(&batch)
            };
            if let Err(failure) = result {
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
        // Two edges from this operator to one downstream (a self-join) come
        // in edge order, as the subscribers are: each subscriber takes the
        // first target of its own not yet taken.
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for (target, sender, resume) in targets {
            let mut sender = Some(sender);
            let how = match (&self.replay, resume) {
                (Some(store), Resume::After(_)) => Reconnect::CatchUp(lock(store).appended()),
                (_, resume) => Reconnect::Direct {
                    next_window: resume == Resume::NextWindow,
                },
            };
            let mut found = None;
            for (i, subscriber) in self.subscribers.iter_mut().enumerate() {
                if taken.contains(&(i, target)) {
                    continue;
                }
                match subscriber.reconnect(target, &mut sender, &how)? {
                    Reconnected::NotHere => continue,
                    reconnected => {
                        found = Some((i, reconnected));
                        break;
                    }
                }
            }
            let Some((i, reconnected)) = found else {
                continue;
            };
            taken.push((i, target));
            match (reconnected, &self.replay, resume) {
                (Reconnected::CatchUp(sink), Some(store), Resume::After(after)) => {
                    let start = lock(store).replay_start(after);
                    self.cursors.add(Box::new(Cursor::new(Arc::clone(store), start, sink)));
                }
                // Nothing kept to replay: a stream already over ends here.
                _ if stream_over => {
                    self.subscribers[i].close_target(target)?;
                }
                _ => {}
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossbeam_channel::Receiver;

    use super::*;
    use crate::replay::SpillPolicy;
    use crate::stream::{Channel, ChannelSubscriber, Link, Message};

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
                held: Default::default(),
                dir: dir.to_path_buf(),
            },
        );
        (
            Emitter::new(2, vec![subscriber], Some(store), link.cursors),
            rx,
            kill_tx,
        )
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

    /// A downstream reconnected before a restored upstream closes its
    /// stream without a window: the cursor hands back at once (nothing
    /// stored), and the live `Closed` still reaches it.
    #[test]
    fn a_stream_closed_after_a_cursor_handed_back_is_closed_for_its_downstream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut emitter, _first, _kill) = emitter(usize::MAX, dir.path());
        let (tx, rx) = crossbeam_channel::bounded::<Message<u64>>(8);
        emitter
            .reconnect(vec![(7, Box::new(tx), Resume::After(w(3)))])
            .expect("reconnect");
        assert!(emitter.cursors.is_empty(), "nothing to replay: handed back");
        emitter.close().expect("close");
        let mut got = Vec::new();
        drain(&rx, &mut got);
        assert_eq!(got, ["C"]);
    }

    /// Two edges from one operator to one downstream (a self-join) are
    /// reconnected each to its own channel.
    #[test]
    fn two_edges_to_one_downstream_reconnect_each_to_its_own_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (kill_tx, kill) = crossbeam_channel::bounded::<()>(0);
        let link = Link {
            kill,
            cursors: Cursors::default(),
        };
        let subscribers: Vec<Box<dyn Subscriber<u64>>> = (0..2)
            .map(|_| {
                let (tx, _rx) = crossbeam_channel::bounded(64);
                let subscriber: Box<dyn Subscriber<u64>> = Box::new(ChannelSubscriber {
                    channel: Channel::new(7, tx),
                    link: link.clone(),
                });
                subscriber
            })
            .collect();
        let store = ReplayBuffer::new(
            "op",
            SpillPolicy {
                memory_cap: usize::MAX,
                held: Default::default(),
                dir: dir.path().to_path_buf(),
            },
        );
        let mut emitter = Emitter::new(2, subscribers, Some(store), link.cursors);
        window(&mut emitter, 1, &[1]);
        let (a, a_rx) = crossbeam_channel::bounded::<Message<u64>>(8);
        let (b, b_rx) = crossbeam_channel::bounded::<Message<u64>>(8);
        emitter
            .reconnect(vec![
                (7, Box::new(a), Resume::After(w(0))),
                (7, Box::new(b), Resume::After(w(0))),
            ])
            .expect("reconnect");
        window(&mut emitter, 2, &[2]);
        for rx in [&a_rx, &b_rx] {
            let mut got = Vec::new();
            drain(rx, &mut got);
            assert_eq!(got, ["B1", "[1]", "E1", "B2", "[2]", "E2"]);
        }
        drop(kill_tx);
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
