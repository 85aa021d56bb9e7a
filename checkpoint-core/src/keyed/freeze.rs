//! What a [`KeyedMap`](super::KeyedMap) does inside an incremental
//! snapshot: while one is encoded on this thread (`Freezer`), a map freezes
//! its groups (a reference count each) instead of writing them, and while
//! one is decoded (`Thawer`), it takes its groups from the loaded chunks.
//! Thread-locals, so `Checkpoint::encode_state` keeps its signature and a
//! map nested at any depth of a state takes part.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use crate::chunk::{ChunkId, ChunkRef};
use crate::error::PayloadError;
use crate::window::WindowId;

/// Encodes one frozen group's entries into the buffer; returns how many.
pub(crate) type EncodeGroup = Box<dyn FnOnce(&mut Vec<u8>) -> Result<u64, PayloadError> + Send>;

/// A group to write as a new chunk.
pub(crate) struct PendingChunk {
    pub(crate) id: ChunkId,
    pub(crate) key_groups: u32,
    pub(crate) encode: EncodeGroup,
}

/// The keyed maps of one snapshot being encoded.
pub(crate) struct Freezer {
    pub(crate) window: WindowId,
    next_map: u32,
    /// Groups changed since their last chunk, to write.
    pub(crate) pending: Vec<PendingChunk>,
    /// Groups unchanged since their chunk was written: referred to again.
    pub(crate) reused: Vec<ChunkRef>,
    /// The chunks the previous snapshot lists: only these can be referred
    /// to again.
    pub(crate) known: HashMap<ChunkId, ChunkRef>,
}

impl Freezer {
    /// The next keyed map's index in the state.
    pub(crate) fn next_map(&mut self) -> u32 {
        let map = self.next_map;
        self.next_map += 1;
        map
    }
}

thread_local! {
    static FREEZER: RefCell<Option<Freezer>> = const { RefCell::new(None) };
    static THAWER: RefCell<Option<Thawer>> = const { RefCell::new(None) };
}

impl Freezer {
    fn new(window: WindowId, known: HashMap<ChunkId, ChunkRef>) -> Self {
        Freezer {
            window,
            next_map: 0,
            pending: Vec::new(),
            reused: Vec::new(),
            known,
        }
    }
}

/// Puts back what a thread-local held before, even if the code run with
/// another value in it panicked.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<T>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        self.key.with(|cell| *cell.borrow_mut() = previous);
    }
}

/// Runs `encode` with a freezer for `window` on this thread; returns what
/// it returned and what the keyed maps it encoded froze.
pub(crate) fn freezing<R>(
    window: WindowId,
    known: HashMap<ChunkId, ChunkRef>,
    encode: impl FnOnce() -> R,
) -> (R, Freezer) {
    let previous = FREEZER.with(|f| f.replace(Some(Freezer::new(window, known))));
    let restore = Restore {
        key: &FREEZER,
        previous,
    };
    let result = encode();
    let frozen = FREEZER
        .with(|f| f.borrow_mut().take())
        .unwrap_or_else(|| Freezer::new(window, HashMap::new()));
    drop(restore);
    (result, frozen)
}

/// Calls `f` with this thread's freezer, if a snapshot is being encoded
/// incrementally.
pub(crate) fn with_freezer<R>(f: impl FnOnce(Option<&mut Freezer>) -> R) -> R {
    FREEZER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.as_mut()),
        // A map encoded from inside another's freeze (not done by this
        // crate): saved inline, which is always correct.
        Err(_) => f(None),
    })
}

/// The loaded chunks of one snapshot being decoded.
pub(crate) struct Thawer {
    /// The operator restoring: a chunk of this operator may be referred to
    /// again by its next checkpoint; another operator's (a rescaled job's)
    /// is written again under this one.
    pub(crate) operator: String,
    next_map: u32,
    /// By map and group: the reference and the chunk's bytes.
    pub(crate) chunks: HashMap<(u32, u32), (ChunkRef, String, Vec<u8>)>,
    /// The groups this partition owns; chunks of others are not loaded.
    pub(crate) owned: Option<Range<u32>>,
    /// Several partitions' snapshots merged (a rescaled operator), for a
    /// job of these key groups: a map that is empty in the payload decoded
    /// takes its groups from the chunks of the others, and a map of
    /// another key-group count is refused.
    pub(crate) merging: Option<crate::key_group::KeyGroups>,
}

impl Thawer {
    pub(crate) fn new(operator: &str, owned: Option<Range<u32>>) -> Self {
        Thawer {
            operator: operator.to_owned(),
            next_map: 0,
            chunks: HashMap::new(),
            owned,
            merging: None,
        }
    }

    /// The next keyed map's index in the state.
    pub(crate) fn next_map(&mut self) -> u32 {
        let map = self.next_map;
        self.next_map += 1;
        map
    }
}

/// Runs `decode` with `thawer` on this thread.
pub(crate) fn thawing<R>(thawer: Thawer, decode: impl FnOnce() -> R) -> R {
    let previous = THAWER.with(|t| t.replace(Some(thawer)));
    let _restore = Restore { key: &THAWER, previous };
    decode()
}

/// Calls `f` with this thread's thawer, if a snapshot with chunks is being
/// decoded.
pub(crate) fn with_thawer<R>(f: impl FnOnce(Option<&mut Thawer>) -> R) -> R {
    THAWER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.as_mut()),
        Err(_) => f(None),
    })
}
