//! Per-stream replay buffers (Apex's buffer server), the seam recovery
//! replays from.

use std::collections::VecDeque;
use std::sync::Arc;

use checkpoint_core::WindowId;

/// The batches one output stream emitted in each window not yet committed.
///
/// Batches are `Arc`s shared with every subscriber (no copy per
/// subscriber). At a commit the windows up to it are dropped: they will
/// never be replayed. With checkpointing off no buffer exists.
#[derive(Debug)]
pub(crate) struct ReplayBuffer<T> {
    windows: VecDeque<(WindowId, Vec<Arc<Vec<T>>>)>,
    tuples: usize,
}

impl<T> ReplayBuffer<T> {
    pub(crate) fn new() -> Self {
        ReplayBuffer {
            windows: VecDeque::new(),
            tuples: 0,
        }
    }

    /// Records that `window` began, so an empty window is replayed as one.
    pub(crate) fn begin_window(&mut self, window: WindowId) {
        self.windows.push_back((window, Vec::new()));
    }

    /// Keeps a batch of the current window.
    pub(crate) fn push(&mut self, batch: &Arc<Vec<T>>) {
        if let Some((_, batches)) = self.windows.back_mut() {
            self.tuples += batch.len();
            batches.push(Arc::clone(batch));
        }
    }

    /// Drops every window `<= committed`.
    pub(crate) fn purge_through(&mut self, committed: WindowId) {
        while let Some((window, batches)) = self.windows.front() {
            if *window > committed {
                break;
            }
            self.tuples -= batches.iter().map(|b| b.len()).sum::<usize>();
            self.windows.pop_front();
        }
    }

    /// Bytes held by the buffered tuples (their in-memory size, not what
    /// they own on the heap).
    pub(crate) fn bytes(&self) -> usize {
        self.tuples * std::mem::size_of::<T>()
    }

    /// The windows held, oldest first.
    #[cfg(test)]
    pub(crate) fn windows(&self) -> impl Iterator<Item = (WindowId, usize)> + '_ {
        self.windows
            .iter()
            .map(|(w, batches)| (*w, batches.iter().map(|b| b.len()).sum()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_drops_exactly_the_committed_windows() {
        let mut buffer = ReplayBuffer::new();
        for seq in 1..=4 {
            buffer.begin_window(WindowId::new(1, seq));
            buffer.push(&Arc::new(vec![seq as u64; seq as usize]));
        }
        assert_eq!(buffer.bytes(), 10 * 8);
        buffer.purge_through(WindowId::new(1, 2));
        assert_eq!(
            buffer.windows().collect::<Vec<_>>(),
            [(WindowId::new(1, 3), 3), (WindowId::new(1, 4), 4)]
        );
        assert_eq!(buffer.bytes(), 7 * 8);
        buffer.purge_through(WindowId::new(1, 9));
        assert_eq!(buffer.bytes(), 0);
        assert_eq!(buffer.windows().count(), 0);
    }

    #[test]
    fn batches_are_shared_not_copied() {
        let mut buffer = ReplayBuffer::new();
        buffer.begin_window(WindowId::new(1, 1));
        let batch = Arc::new(vec![1u8, 2, 3]);
        buffer.push(&batch);
        assert_eq!(Arc::strong_count(&batch), 2);
        buffer.purge_through(WindowId::new(1, 1));
        assert_eq!(Arc::strong_count(&batch), 1);
    }
}
