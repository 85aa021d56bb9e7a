//! Channels to downstream threads: one per downstream physical operator,
//! live (bounded, back-pressured) or left to a catching-up cursor.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use checkpoint_core::WindowId;
use crossbeam_channel::Sender;

use super::cursor::{ChannelSink, Handback, Handoff, Link, send};
use super::{Message, Reconnect, Reconnected, Subscriber};
use crate::failure::Failure;

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

    pub(super) fn send(&mut self, message: Message<W>, link: &Link) -> Result<(), Failure> {
        if let Route::Catching(handoff) = &self.route {
            match handoff.take() {
                Handback::Catching => return Ok(()),
                Handback::Gone => {
                    self.route = Route::Gone;
                    return Ok(());
                }
                Handback::Live(tx, delivered, finished) => {
                    // `message` is the store's last (a `Closed` is not
                    // stored); the cursor sent every position before
                    // `delivered`, and the stream's end if `finished`.
                    let sent_by_cursor = match message {
                        Message::Closed => finished,
                        _ => handoff.appended.load(Ordering::Relaxed) <= delivered,
                    };
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
    pub(super) fn reconnect(
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
    pub(super) fn close_now(&mut self, link: &Link) -> Result<(), Failure> {
        self.awaiting_begin = false;
        self.send(Message::Closed, link)
    }
}

/// Sends a copy of `message` (a window boundary, the end of the stream) to
/// every channel of a fan-out edge (keyed, broadcast).
pub(super) fn send_each<W: Send + Sync + 'static>(
    channels: &mut [Channel<W>],
    message: &Message<W>,
    link: &Link,
) -> Result<(), Failure> {
    for channel in channels {
        channel.send(message.clone(), link)?;
    }
    Ok(())
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
    fn batch_owned(&mut self, batch: Arc<Vec<T>>) -> Result<(), Failure> {
        self.channel.send(Message::Batch(batch), &self.link)
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
