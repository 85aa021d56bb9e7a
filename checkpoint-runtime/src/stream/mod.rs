//! Streams: the messages on an edge, the emitter an operator writes to
//! (`emitter.rs`), the subscribers that carry its batches to downstream
//! operators (`channel.rs`, `keyed.rs`, `convert.rs`), and the cursors that
//! replay a stream's store to recovered ones (`cursor.rs`).

mod broadcast;
mod channel;
mod convert;
mod cursor;
mod emitter;
mod keyed;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use checkpoint_core::WindowId;

pub(crate) use broadcast::BroadcastSubscriber;
pub(crate) use channel::{Channel, ChannelSubscriber};
pub(crate) use convert::ConvertSubscriber;
use cursor::Sink;
pub(crate) use cursor::{Cursors, Link};
pub use emitter::Emitter;
pub(crate) use keyed::{KeyedSubscriber, partition_of};

use crate::failure::Failure;
use crate::protocol::Control;

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
    /// A batch this subscriber may be the only holder of (the emitter's
    /// last subscriber): an edge that owns it moves its tuples instead of
    /// cloning them.
    fn batch_owned(&mut self, batch: Arc<Vec<T>>) -> Result<(), Failure> {
        self.batch(&batch)
    }
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
