//! The messages between the coordinator, operator threads and their
//! savers: what workers report (`Event`) and what they are told
//! (`Control`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpoint_core::WindowId;
use crossbeam_channel::Sender;

use crate::failure::Failure;
use crate::stream::Resume;

/// What workers tell the coordinator. `epoch` is the incarnation of the
/// operator that sent it: reports from an instance torn down by a recovery
/// are ignored.
#[derive(Debug)]
pub(crate) enum Event {
    /// A checkpoint is durable (or, for a stateless operator, a window
    /// completed).
    Checkpointed { node: usize, epoch: u32, window: WindowId },
    /// The operator ended its stream at `window`, its final checkpoint durable.
    Finished { node: usize, epoch: u32, window: WindowId },
    /// An operator on this thread failed.
    Failed { node: usize, epoch: u32, failure: Failure },
    /// An input's source said `Done`: its final checkpoint will be at
    /// `window`. The coordinator records that durably and then answers, so
    /// a restart from that checkpoint knows the stream is over.
    Ending {
        node: usize,
        epoch: u32,
        window: WindowId,
        done: crossbeam_channel::Sender<Result<(), String>>,
    },
}

/// What the coordinator and savers tell a worker thread, addressed to one
/// operator of the thread (the thread's own, or one chained on it).
pub(crate) enum Control {
    /// Deliver `committed(window)` at the next window boundary.
    Committed(WindowId),
    /// No downstream that reads this operator's stream from its store can
    /// be restored to a window up to this one: the store may drop them (a
    /// stateless sink completes windows long before the commit moves).
    Release(WindowId),
    /// An asynchronous save finished; the buffer comes back for reuse.
    /// For a frozen state, the result holds the new snapshot's chunk
    /// table, which the next checkpoint refers to.
    Saved {
        window: WindowId,
        buffer: Vec<u8>,
        result: Result<Option<Vec<checkpoint_core::ChunkRef>>, SaveFailed>,
    },
    /// Recovered downstream operators need the stream again, each on a new
    /// channel (an erased `Sender<Message<_>>`): all of one recovery's in
    /// one message, so their replays go out window by window together.
    Reconnect(Vec<(usize, Box<dyn std::any::Any + Send>, Resume)>),
    /// The job is over: tear down and exit.
    Shutdown,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Committed(w) => write!(f, "Committed({w})"),
            Control::Release(w) => write!(f, "Release({w})"),
            Control::Saved { window, result, .. } => write!(
                f,
                "Saved({window}, {:?})",
                result.as_ref().map(|_| ()).map_err(|e| &e.message)
            ),
            Control::Reconnect(targets) => {
                let targets: Vec<_> = targets.iter().map(|(t, _, r)| (t, r)).collect();
                write!(f, "Reconnect({targets:?})")
            }
            Control::Shutdown => write!(f, "Shutdown"),
        }
    }
}

/// Kills one operator thread when dropped (the supervisor holds it): the
/// flag is what a busy thread polls between calls (one atomic load), the
/// channel's disconnection what wakes a thread blocked in a `select`.
pub(crate) struct KillSwitch {
    flag: Arc<AtomicBool>,
    _wake: Sender<()>,
}

impl KillSwitch {
    /// A switch, the flag its thread polls, and the channel its thread's
    /// blocking selects include.
    pub(crate) fn new() -> (KillSwitch, Arc<AtomicBool>, crossbeam_channel::Receiver<()>) {
        let flag = Arc::new(AtomicBool::new(false));
        let (wake, woken) = crossbeam_channel::bounded(0);
        (
            KillSwitch {
                flag: Arc::clone(&flag),
                _wake: wake,
            },
            flag,
            woken,
        )
    }
}

impl Drop for KillSwitch {
    fn drop(&mut self) {
        // Before the channel disconnects (fields drop after this body).
        self.flag.store(true, Ordering::Release);
    }
}

/// A checkpoint save that failed (after its retries, or past its
/// deadline).
#[derive(Debug)]
pub(crate) struct SaveFailed {
    pub(crate) message: String,
    /// The chunks it wrote or tried to: what abandoning it removes.
    pub(crate) written: Vec<checkpoint_core::ChunkId>,
    /// It was still running when given up on (a storage that cannot cancel):
    /// removing what it wrote could race its writes, so nothing is.
    pub(crate) running: bool,
}
