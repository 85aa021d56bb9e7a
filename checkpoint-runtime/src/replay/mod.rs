//! Per-stream replay buffers (Apex's buffer server): every window an output
//! stream emitted since the last commit, so a recovered downstream can be
//! sent its windows again.

mod encode;
mod spill_dir;
mod streaming_copy;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use checkpoint_core::WindowId;

use crate::failure::Failure;
use crate::operator::Tuple;
use crate::stream::Message;

pub(crate) use encode::encode_into;
pub(crate) use spill_dir::SpillDir;

/// Where a buffer spills, and past how many bytes in memory.
#[derive(Debug, Clone)]
pub(crate) struct SpillPolicy {
    /// Past this many bytes held by the stores sharing `held`, a store
    /// spills its own completed windows.
    pub(crate) memory_cap: usize,
    /// Bytes held in memory by every store of the job together.
    pub(crate) held: Arc<AtomicUsize>,
    pub(crate) dir: PathBuf,
}

#[derive(Debug)]
struct WindowEntry {
    window: WindowId,
    /// The stream position of the window's `Begin`; its batches follow, then
    /// its `End`.
    first_seq: u64,
    /// The window's batches, encoded: per batch a 4-byte little-endian
    /// length and a postcard frame. Empty once spilled: the file holds the
    /// same bytes.
    frames: Vec<u8>,
    /// Where each batch's frame starts in `frames` (and in the file).
    offsets: Vec<u64>,
    /// `Some(last)` once the window ended.
    ended: Option<bool>,
    /// The file holding the frames once spilled.
    spilled: Option<PathBuf>,
    /// The file's length: where its last frame ends.
    spilled_len: u64,
}

/// The one store of an output stream (Apex's buffer server): every window
/// it emitted since the last commit, in stream order, read by every
/// subscriber that needs a replay through a cursor.
///
/// Each message of the stream (`Begin`, a batch, `End`) has a position,
/// counted from 0 over the incarnation's stream; a cursor is a position.
/// Batches are kept encoded (postcard), so the bytes the store holds are
/// real bytes, counted exactly, and the live batch stays the subscribers'
/// alone: a single downstream owns it and takes its tuples without a copy.
/// Past its memory cap, whole completed windows are written to files as
/// they are (no second encode) and read back a batch at a time. At a commit
/// the windows up to it are dropped, files included: they will never be
/// replayed. With checkpointing off, or in the global recovery scope, no
/// store exists.
#[derive(Debug)]
pub(crate) struct ReplayBuffer<T> {
    owner: String,
    windows: VecDeque<WindowEntry>,
    /// Messages appended so far; shared with the channels a cursor hands
    /// back, which compare it with what the cursor delivered.
    appended: Arc<AtomicU64>,
    /// The stream ended (its last window ended, or it closed without one).
    over: bool,
    /// Bytes of the windows held in memory (their allocations).
    memory_bytes: usize,
    /// What `memory_bytes` was when last added to the job's total.
    reported: usize,
    /// How many bytes the last window encoded to.
    last_window_bytes: usize,
    /// Cleared buffers of committed windows, for the next ones (counted in
    /// `memory_bytes`).
    spare: Vec<Vec<u8>>,
    /// Where a batch is encoded before it is copied into its window.
    scratch: Vec<u8>,
    peak_bytes: usize,
    spill: SpillPolicy,
    spilled_windows: u64,
    /// Unique in the process: the buffer of a restored operator never
    /// shares a file with the one it replaces, which deletes its own files
    /// whenever it is dropped.
    id: u64,
    _tuples: std::marker::PhantomData<fn(T) -> T>,
}

/// How many bytes of the owner's name a spill file name carries: enough to
/// tell whose file it is, short enough for any operator name to fit.
const SPILL_NAME_PREFIX: usize = 100;

/// `<pid>-<buffer id>-<name prefix>-<window>.spill`: at most 10 + 20 + 100 +
/// 16 + 9 = 155 bytes whatever the operator's name.
fn spill_file_name(id: u64, owner: &str, window: WindowId) -> String {
    let mut end = owner.len().min(SPILL_NAME_PREFIX);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}-{id}-{}-{:016x}.spill",
        std::process::id(),
        owner[..end].replace(['/', '\\'], "_"),
        window.as_u64()
    )
}

/// Bytes a spare buffer may exceed twice a window's expected size by and
/// still be reused: small windows vary more than their size.
const SPARE_SLACK: usize = 64 * 1024;

/// A cursor's open spill file: the window it belongs to and where it is.
#[derive(Debug)]
pub(crate) struct SpillReader {
    first_seq: u64,
    position: u64,
    file: BufReader<File>,
}

impl<T: Tuple> ReplayBuffer<T> {
    pub(crate) fn new(owner: &str, spill: SpillPolicy) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        ReplayBuffer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            owner: owner.to_owned(),
            windows: VecDeque::new(),
            appended: Arc::new(AtomicU64::new(0)),
            over: false,
            memory_bytes: 0,
            reported: 0,
            last_window_bytes: 0,
            spare: Vec::new(),
            scratch: Vec::new(),
            peak_bytes: 0,
            spill,
            spilled_windows: 0,
            _tuples: std::marker::PhantomData,
        }
    }

    /// Brings the job's total up to date with this store's bytes; returns
    /// the total.
    fn sync_held(&mut self) -> usize {
        let held = &self.spill.held;
        let total = if self.memory_bytes >= self.reported {
            held.fetch_add(self.memory_bytes - self.reported, Ordering::Relaxed) + (self.memory_bytes - self.reported)
        } else {
            held.fetch_sub(self.reported - self.memory_bytes, Ordering::Relaxed) - (self.reported - self.memory_bytes)
        };
        self.reported = self.memory_bytes;
        total
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Failure {
        Failure::operator(&self.owner, None, format!("replay buffer: {what}: {e}"))
    }

    fn append(&self) {
        // Only the emitter's thread appends; the counter is read there too.
        self.appended.fetch_add(1, Ordering::Relaxed);
    }

    /// The count of messages appended, shared (see the field).
    pub(crate) fn appended(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.appended)
    }

    /// Records that `window` began, so an empty window is replayed as one.
    pub(crate) fn begin_window(&mut self, window: WindowId) {
        // Windows are alike: sized like the last one, a window's frames
        // rarely regrow (each regrowth copies them and may double them).
        let expected = self.last_window_bytes + self.last_window_bytes / 8;
        let frames = match self.spare.pop() {
            // Already counted, its pages already mapped: no page faults.
            // One far larger than the window needs (the stream slowed down)
            // is given back instead.
            Some(mut frames) if frames.capacity() <= 2 * expected + SPARE_SLACK => {
                self.memory_bytes -= frames.capacity();
                frames.reserve(expected);
                frames
            }
            Some(frames) => {
                self.memory_bytes -= frames.capacity();
                drop(frames);
                Vec::with_capacity(expected)
            }
            None => Vec::with_capacity(expected),
        };
        self.memory_bytes += frames.capacity();
        self.peak_bytes = self.peak_bytes.max(self.memory_bytes);
        self.windows.push_back(WindowEntry {
            window,
            first_seq: self.appended.load(Ordering::Relaxed),
            frames,
            offsets: Vec::new(),
            ended: None,
            spilled: None,
            spilled_len: 0,
        });
        self.append();
        self.sync_held();
    }

    /// Keeps a batch of the current window, encoded.
    pub(crate) fn push(&mut self, batch: &[T]) -> Result<(), Failure> {
        let Some(entry) = self.windows.back_mut() else {
            return Ok(());
        };
        if entry.ended.is_some() {
            return Err(self.fail("internal error", "a batch outside a window"));
        }
        let before = entry.frames.capacity();
        let start = entry.frames.len();
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.extend_from_slice(&[0; 4]);
        let encoded = encode::encode_into(batch, scratch);
        let len = scratch.len() - 4;
        let failed = match (encoded, u32::try_from(len)) {
            (Ok(()), Ok(len)) => {
                scratch[..4].copy_from_slice(&len.to_le_bytes());
                streaming_copy::extend_streaming(&mut entry.frames, scratch);
                None
            }
            (Err(e), _) => Some(format!("encoding a batch to keep for replay: {e}")),
            (_, Err(_)) => Some("a batch encodes to more than 4 GiB".to_owned()),
        };
        // Counted whatever happened: the buffer may have grown either way.
        self.memory_bytes = self.memory_bytes - before + entry.frames.capacity();
        if let Some(failed) = failed {
            // The window stays as it was: no frame, no offset.
            entry.frames.truncate(start);
            return Err(self.fail("keeping a batch for replay", failed));
        }
        entry.offsets.push(start as u64);
        self.peak_bytes = self.peak_bytes.max(self.memory_bytes);
        self.append();
        self.sync_held();
        Ok(())
    }

    /// The current window ended; spills old windows if over the cap.
    pub(crate) fn end_window(&mut self, last: bool) -> Result<(), Failure> {
        if let Some(entry) = self.windows.back_mut() {
            if entry.ended.is_some() {
                return Err(self.fail("internal error", "a window ended twice"));
            }
            entry.ended = Some(last);
            self.last_window_bytes = entry.frames.len();
            if entry.frames.capacity() > 2 * entry.frames.len() {
                let before = entry.frames.capacity();
                entry.frames.shrink_to_fit();
                self.memory_bytes = self.memory_bytes - before + entry.frames.capacity();
            }
            self.append();
        }
        self.over = last;
        if self.sync_held() > self.spill.memory_cap {
            // Spare buffers go before any window is written to disk.
            for spare in self.spare.drain(..) {
                self.memory_bytes -= spare.capacity();
            }
        }
        while self.sync_held() > self.spill.memory_cap {
            let Some(index) = self
                .windows
                .iter()
                .position(|e| e.ended.is_some() && e.spilled.is_none() && !e.offsets.is_empty())
            else {
                break;
            };
            self.spill_window(index)?;
        }
        Ok(())
    }

    /// The stream ended without a window.
    pub(crate) fn close(&mut self) {
        self.over = true;
    }

    /// Whether the stream ended.
    pub(crate) fn over(&self) -> bool {
        self.over
    }

    fn spill_window(&mut self, index: usize) -> Result<(), Failure> {
        fs::create_dir_all(&self.spill.dir).map_err(|e| self.fail("creating its spill directory", e))?;
        let entry = &self.windows[index];
        let path = self.spill.dir.join(spill_file_name(self.id, &self.owner, entry.window));
        if let Err(e) = fs::write(&path, &entry.frames) {
            let _ = fs::remove_file(&path);
            return Err(self.fail(&format!("writing {}", path.display()), e));
        }
        let entry = &mut self.windows[index];
        self.memory_bytes -= entry.frames.capacity();
        entry.spilled_len = entry.frames.len() as u64;
        // Freed, not kept as a spare: the store is over its cap.
        entry.frames = Vec::new();
        entry.spilled = Some(path);
        self.spilled_windows += 1;
        Ok(())
    }

    /// The position of the first message of the first kept window after
    /// `after`: where a replay to a downstream restored at `after` starts.
    /// The head (nothing to replay) if there is none.
    pub(crate) fn replay_start(&self, after: WindowId) -> u64 {
        self.windows
            .iter()
            .find(|e| e.window > after)
            .map_or_else(|| self.appended.load(Ordering::Relaxed), |e| e.first_seq)
    }

    /// The message at position `seq`, or `None` at the head. A batch of a
    /// spilled window is read from its file through `reader`, which a
    /// cursor keeps open to read the next batch from where it is.
    pub(crate) fn message_at(&self, seq: u64, reader: &mut Option<SpillReader>) -> Result<Option<Message<T>>, Failure> {
        if seq >= self.appended.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let after = self.windows.partition_point(|e| e.first_seq <= seq);
        let Some(entry) = after.checked_sub(1).and_then(|i| self.windows.get(i)) else {
            return Err(self.fail("internal error", format!("position {seq} was already dropped")));
        };
        let k = seq - entry.first_seq;
        if k == 0 {
            return Ok(Some(Message::Begin(entry.window)));
        }
        let Some(&offset) = usize::try_from(k - 1).ok().and_then(|i| entry.offsets.get(i)) else {
            return match entry.ended {
                Some(last) => Ok(Some(Message::End {
                    window: entry.window,
                    last,
                })),
                None => Err(self.fail("internal error", format!("position {seq} is past its window"))),
            };
        };
        let batch = match &entry.spilled {
            None => {
                let at = offset as usize;
                let frame = entry
                    .frames
                    .get(at..at + 4)
                    .map(|len| u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
                    .and_then(|len| entry.frames.get(at + 4..at + 4 + len));
                let Some(frame) = frame else {
                    return Err(self.fail("internal error", format!("a batch frame at {offset} is cut short")));
                };
                self.decode(frame, "memory")?
            }
            Some(path) => {
                let end = entry.offsets.get(k as usize).copied().unwrap_or(entry.spilled_len);
                let read = self.read_spilled(entry.first_seq, path, offset, end, reader);
                if read.is_err() {
                    // Never go on from a position a failed read left behind.
                    *reader = None;
                }
                read?
            }
        };
        Ok(Some(Message::Batch(Arc::new(batch))))
    }

    fn decode(&self, frame: &[u8], place: &str) -> Result<Vec<T>, Failure> {
        postcard::from_bytes(frame).map_err(|e| self.fail(&format!("decoding a batch kept in {place}"), e))
    }

    fn read_spilled(
        &self,
        first_seq: u64,
        path: &std::path::Path,
        offset: u64,
        end: u64,
        reader: &mut Option<SpillReader>,
    ) -> Result<Vec<T>, Failure> {
        let reading = |e: &dyn std::fmt::Display| self.fail(&format!("reading {}", path.display()), e);
        let open = match reader {
            Some(open) if open.first_seq == first_seq => open,
            _ => {
                let file = File::open(path).map_err(|e| reading(&e))?;
                reader.insert(SpillReader {
                    first_seq,
                    position: 0,
                    file: BufReader::with_capacity(256 * 1024, file),
                })
            }
        };
        if open.position != offset {
            open.file.seek(SeekFrom::Start(offset)).map_err(|e| reading(&e))?;
        }
        let mut len = [0u8; 4];
        open.file.read_exact(&mut len).map_err(|e| reading(&e))?;
        let len = u64::from(u32::from_le_bytes(len));
        // Checked before allocating: a damaged length is an error, not a
        // 4 GiB allocation or a frame read from the wrong place.
        if offset.checked_add(4 + len) != Some(end) {
            return Err(reading(&format!(
                "the batch at byte {offset} says it has {len} bytes; its window's layout says {}",
                end.saturating_sub(offset).saturating_sub(4)
            )));
        }
        let mut frame = vec![0; len as usize];
        open.file.read_exact(&mut frame).map_err(|e| reading(&e))?;
        open.position = offset + 4 + frame.len() as u64;
        self.decode(&frame, &path.display().to_string())
    }

    /// Drops every window `<= committed`.
    pub(crate) fn purge_through(&mut self, committed: WindowId) {
        let mut dropped = 0;
        while let Some(entry) = self.windows.front() {
            if entry.window > committed {
                break;
            }
            if let Some(entry) = self.windows.pop_front() {
                if let Some(path) = &entry.spilled {
                    // A leftover scratch file is harmless; the window is gone either way.
                    let _ = fs::remove_file(path);
                } else {
                    self.memory_bytes -= entry.frames.capacity();
                    self.recycle(entry.frames);
                }
                dropped += 1;
            }
        }
        // The windows until the next commit are about as many as this one
        // dropped: as many spares are kept, the others given back.
        if dropped > 0 && self.spare.len() > dropped {
            let extra = self.spare.len() - dropped;
            for spare in self.spare.drain(..extra) {
                self.memory_bytes -= spare.capacity();
            }
        }
        self.sync_held();
    }

    /// Keeps a committed window's buffer for a later window: a new window
    /// then writes to pages already mapped instead of faulting in fresh
    /// ones, hundreds of megabytes a second at high rates. Spares count as
    /// held memory and are the first thing dropped over the cap; a commit
    /// keeps as many as it dropped windows (`purge_through`).
    fn recycle(&mut self, mut frames: Vec<u8>) {
        if frames.capacity() > 0 {
            frames.clear();
            self.memory_bytes += frames.capacity();
            self.spare.push(frames);
        }
    }

    /// Bytes held in memory: the allocations of the windows' encoded
    /// batches, and spare buffers kept for the next windows.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// The most `memory_bytes` ever was.
    pub(crate) fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Windows written to disk so far.
    pub(crate) fn spilled_windows(&self) -> u64 {
        self.spilled_windows
    }

    /// Every message after `after`, read as a cursor would (tests).
    #[cfg(test)]
    fn messages_after(&self, after: WindowId, out: &mut Vec<Message<T>>) -> Result<(), Failure> {
        let mut reader = None;
        let mut seq = self.replay_start(after);
        while let Some(message) = self.message_at(seq, &mut reader)? {
            out.push(message);
            seq += 1;
        }
        Ok(())
    }
}

impl<T> Drop for ReplayBuffer<T> {
    fn drop(&mut self) {
        self.spill.held.fetch_sub(self.reported, Ordering::Relaxed);
        for entry in &self.windows {
            if let Some(path) = &entry.spilled {
                let _ = fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(seq: u32) -> WindowId {
        WindowId::new(1, seq)
    }

    fn buffer(cap: usize, dir: &std::path::Path) -> ReplayBuffer<u64> {
        ReplayBuffer::new(
            "op",
            SpillPolicy {
                memory_cap: cap,
                held: Default::default(),
                dir: dir.to_path_buf(),
            },
        )
    }

    fn replay(buffer: &ReplayBuffer<u64>, after: u32) -> Vec<String> {
        let mut out = Vec::new();
        buffer.messages_after(w(after), &mut out).expect("replay");
        out.iter()
            .map(|m| match m {
                Message::Begin(w) => format!("B{}", w.sequence()),
                Message::Batch(b) => format!("{:?}", b.as_slice()),
                Message::End { window, last } => format!("E{}{}", window.sequence(), if *last { "!" } else { "" }),
                Message::Closed => "C".to_owned(),
            })
            .collect()
    }

    #[test]
    fn commit_drops_exactly_the_committed_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = buffer(usize::MAX, dir.path());
        for seq in 1..=4u32 {
            buffer.begin_window(w(seq));
            buffer.push(&vec![u64::from(seq); seq as usize]).expect("push");
            buffer.end_window(seq == 4).expect("end");
        }
        // A window of n small u64s: a 4-byte frame length, a 1-byte
        // sequence length, a byte per value; counted as allocated.
        let held = |b: &ReplayBuffer<u64>| b.windows.iter().map(|e| e.frames.capacity()).sum::<usize>();
        let spare = |b: &ReplayBuffer<u64>| b.spare.iter().map(Vec::capacity).sum::<usize>();
        assert!(held(&buffer) >= 6 + 7 + 8 + 9);
        assert_eq!(buffer.memory_bytes(), held(&buffer) + spare(&buffer));
        buffer.purge_through(w(2));
        assert_eq!(
            replay(&buffer, 0),
            ["B3", "[3, 3, 3]", "E3", "B4", "[4, 4, 4, 4]", "E4!"]
        );
        assert_eq!(buffer.memory_bytes(), held(&buffer) + spare(&buffer));
        assert_eq!(buffer.spare.len(), 2, "dropped windows' buffers kept for reuse");
        buffer.purge_through(w(9));
        assert_eq!(buffer.spare.len(), 2, "as many as the last commit dropped");
        assert_eq!(buffer.memory_bytes(), spare(&buffer));
        // A new window reuses one: nothing new allocated, nothing counted twice.
        buffer.begin_window(w(10));
        assert_eq!(buffer.spare.len(), 1);
        assert_eq!(buffer.memory_bytes(), held(&buffer) + spare(&buffer));
        buffer.purge_through(w(10));
        assert!(replay(&buffer, 0).is_empty());
    }

    #[test]
    fn a_spare_far_larger_than_the_next_window_is_given_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = buffer(usize::MAX, dir.path());
        buffer.begin_window(w(1));
        buffer.push(&vec![1; 200_000]).expect("push");
        buffer.end_window(false).expect("end");
        buffer.begin_window(w(2));
        buffer.push(&[2]).expect("push");
        buffer.end_window(false).expect("end");
        buffer.purge_through(w(1));
        assert_eq!(buffer.spare.len(), 1);
        let big = buffer.spare[0].capacity();
        assert!(big >= 200_000);
        // The stream slowed down to a few bytes a window: the 200 KB buffer
        // is freed, not kept for it.
        buffer.begin_window(w(3));
        assert!(buffer.spare.is_empty());
        let held = buffer.windows.iter().map(|e| e.frames.capacity()).sum::<usize>();
        assert!(held < 1024, "{held} bytes held for two tiny windows");
        assert_eq!(buffer.memory_bytes(), held);
    }

    #[test]
    fn a_replay_starts_after_the_given_window_and_includes_the_open_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = buffer(usize::MAX, dir.path());
        buffer.begin_window(w(1));
        buffer.push(&Arc::new(vec![1])).expect("push");
        buffer.end_window(false).expect("end");
        buffer.begin_window(w(2));
        buffer.end_window(false).expect("end");
        buffer.begin_window(w(3));
        buffer.push(&Arc::new(vec![3, 3])).expect("push");
        assert_eq!(replay(&buffer, 1), ["B2", "E2", "B3", "[3, 3]"]);
    }

    #[test]
    fn past_the_cap_whole_windows_go_to_disk_and_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Each window encodes to 7 bytes: room for one.
        let mut buffer = buffer(7, dir.path());
        for seq in 1..=4u32 {
            buffer.begin_window(w(seq));
            buffer.push(&[u64::from(seq); 2]).expect("push");
            buffer.end_window(false).expect("end");
        }
        assert_eq!(buffer.spilled_windows(), 3);
        assert_eq!(buffer.memory_bytes(), 7);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 3);
        assert_eq!(
            replay(&buffer, 1),
            ["B2", "[2, 2]", "E2", "B3", "[3, 3]", "E3", "B4", "[4, 4]", "E4"]
        );
        buffer.purge_through(w(2));
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        drop(buffer);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    /// 1 KB strings are 24 bytes each in memory but own 1 KB on the heap:
    /// the cap counts the latter, so past it windows spill, and a replay of
    /// spilled windows gives the same tuples back.
    #[test]
    fn the_cap_counts_what_tuples_own_on_the_heap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = 64 * 1024;
        let mut buffer = ReplayBuffer::<String>::new(
            "op",
            SpillPolicy {
                memory_cap: cap,
                held: Default::default(),
                dir: dir.path().to_path_buf(),
            },
        );
        let window_bytes = 10 * 1024;
        for seq in 1..=100u32 {
            buffer.begin_window(w(seq));
            let text = format!("{seq:04}").repeat(256);
            buffer.push(&vec![text; 10]).expect("push");
            buffer.end_window(false).expect("end");
            assert!(
                buffer.memory_bytes() <= cap + window_bytes + 10 * 64,
                "window {seq}: {} bytes held",
                buffer.memory_bytes()
            );
        }
        assert!(buffer.spilled_windows() >= 90, "{} spilled", buffer.spilled_windows());
        let mut out = Vec::new();
        buffer.messages_after(w(0), &mut out).expect("replay");
        let tuples: Vec<String> = out
            .iter()
            .filter_map(|m| match m {
                Message::Batch(b) => Some(b.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(tuples.len(), 1000);
        assert!(
            tuples
                .iter()
                .enumerate()
                .all(|(i, t)| *t == format!("{:04}", i / 10 + 1).repeat(256))
        );
    }

    #[test]
    fn spill_file_names_fit_whatever_the_operator_name() {
        let long = "é".repeat(200); // 400 bytes, a multi-byte char at byte 100
        let name = spill_file_name(u64::MAX, &long, WindowId::from_u64(u64::MAX));
        assert!(name.len() <= 155, "{} bytes", name.len());
        assert!(name.contains(&"é".repeat(50)));
        assert!(!name.contains(&"é".repeat(51)));
        assert_ne!(
            spill_file_name(1, "op", w(1)),
            spill_file_name(2, "op", w(1)),
            "two buffers of one operator never share a file"
        );
    }

    #[test]
    fn a_long_operator_name_spills_and_replays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = "n".repeat(crate::MAX_PHYSICAL_NAME_LEN);
        let mut buffer: ReplayBuffer<u64> = ReplayBuffer::new(
            &name,
            SpillPolicy {
                memory_cap: 0,
                held: Default::default(),
                dir: dir.path().to_path_buf(),
            },
        );
        buffer.begin_window(w(1));
        buffer.push(&Arc::new(vec![7, 8])).expect("push");
        buffer.end_window(false).expect("a 243-byte name spills");
        assert_eq!(buffer.spilled_windows(), 1);
        assert_eq!(replay(&buffer, 0), ["B1", "[7, 8]", "E1"]);
    }

    /// The cap is the job's: stores share one count of held bytes, and the
    /// one that ends a window over it spills its own windows.
    #[test]
    fn stores_share_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held: Arc<AtomicUsize> = Arc::default();
        let store = |name: &str| {
            ReplayBuffer::<u64>::new(
                name,
                SpillPolicy {
                    memory_cap: 1_000,
                    held: Arc::clone(&held),
                    dir: dir.path().to_path_buf(),
                },
            )
        };
        let (mut a, mut b) = (store("a"), store("b"));
        for seq in 1..=3u32 {
            a.begin_window(w(seq));
            a.push(&[7u64; 100]).expect("push");
            a.end_window(false).expect("end");
        }
        assert_eq!(a.spilled_windows(), 0, "alone it fits");
        assert_eq!(held.load(Ordering::Relaxed), a.memory_bytes());
        for seq in 1..=4u32 {
            b.begin_window(w(seq));
            b.push(&[9u64; 200]).expect("push");
            b.end_window(false).expect("end");
            assert!(held.load(Ordering::Relaxed) <= 1_000, "window {seq}: {held:?}");
        }
        assert!(b.spilled_windows() > 0, "b went over the job's cap");
        assert_eq!(a.spilled_windows(), 0, "a did not end a window since");
        assert_eq!(held.load(Ordering::Relaxed), a.memory_bytes() + b.memory_bytes());
        let b_bytes = b.memory_bytes();
        drop(a);
        assert_eq!(
            held.load(Ordering::Relaxed),
            b_bytes,
            "a dropped store gives its share back"
        );
    }

    /// The store keeps an encoded copy: the live batch stays its owner's
    /// alone, so a single downstream can take its tuples without cloning.
    #[test]
    fn the_store_keeps_its_own_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = buffer(usize::MAX, dir.path());
        buffer.begin_window(w(1));
        let batch = Arc::new(vec![1u64, 2, 3]);
        buffer.push(&batch).expect("push");
        assert_eq!(Arc::strong_count(&batch), 1);
        drop(batch);
        assert_eq!(replay(&buffer, 0), ["B1", "[1, 2, 3]"]);
    }

    fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
        let files: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    /// A damaged frame length in a spill file is an error, checked before
    /// anything is allocated for it.
    #[test]
    fn a_damaged_frame_length_is_an_error_not_a_huge_allocation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = buffer(0, dir.path());
        buffer.begin_window(w(1));
        buffer.push(&[1u64, 2]).expect("push");
        buffer.push(&[3u64]).expect("push");
        buffer.end_window(false).expect("end");
        let file = only_file(dir.path());
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&file, &bytes).expect("damage");
        let mut out = Vec::new();
        let error = buffer.messages_after(w(0), &mut out).expect_err("damaged");
        assert!(error.to_string().contains("says it has 4294967295 bytes"), "{error}");
    }

    /// A spill file cut short (the disk filled, someone truncated it) is an
    /// error naming the file, not a panic or a silently shorter replay.
    #[test]
    fn a_truncated_spill_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = buffer(0, dir.path());
        buffer.begin_window(w(1));
        buffer.push(&vec![1u64; 100]).expect("push");
        buffer.end_window(false).expect("end");
        let file = only_file(dir.path());
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate");
        let mut out = Vec::new();
        let error = buffer.messages_after(w(0), &mut out).expect_err("cut short");
        assert!(error.to_string().contains(&file.display().to_string()), "{error}");
    }
}
