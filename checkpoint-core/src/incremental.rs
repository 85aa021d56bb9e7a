//! Incremental snapshots: the keyed groups of a state saved as chunks, each
//! written once and referred to by every later snapshot until it changes
//! (Flink's incremental checkpoints with a shared-state registry, here one
//! operator's previous chunk table).
//!
//! Saving is in two steps so the operator's thread pauses only for the
//! first: [`Snapshot::freeze`] encodes the state's other fields and freezes
//! its [`KeyedMap`](crate::KeyedMap)s (a reference count per group), and
//! [`FrozenSnapshot::finish`], on any thread, encodes the changed groups,
//! has them saved, and assembles the snapshot that refers to them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use crate::checkpoint::{Checkpoint, StateLayout};
use crate::chunk::{Chunk, ChunkId, ChunkRef};
use crate::error::{SnapshotError, StorageError};
use crate::key_group::KeyGroups;
use crate::keyed::freeze::{self, PendingChunk, Thawer};
use crate::snapshot::{MAX_OPERATOR_NAME_LEN, Snapshot, SnapshotHeader, SnapshotMeta};
use crate::window::WindowId;

/// How many bytes of new chunks are encoded before they are handed to
/// storage together: large enough to share a directory sync among many
/// chunks, small enough that a big state is never held twice in memory.
const CHUNK_BATCH_BYTES: usize = 32 << 20;

/// A state frozen at a checkpoint: its payload encoded, its changed keyed
/// groups held by reference until [`finish`](FrozenSnapshot::finish)
/// writes them.
pub struct FrozenSnapshot {
    operator: String,
    window: WindowId,
    type_name: &'static str,
    version: u32,
    fingerprint: u64,
    payload: Vec<u8>,
    pending: Vec<PendingChunk>,
    reused: Vec<ChunkRef>,
    description: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for FrozenSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenSnapshot")
            .field("operator", &self.operator)
            .field("window", &self.window)
            .field("payload_len", &self.payload.len())
            .field("new_chunks", &self.pending.len())
            .field("reused_chunks", &self.reused.len())
            .finish()
    }
}

/// What [`FrozenSnapshot::finish`] produced.
#[derive(Debug)]
pub struct FinishedSnapshot {
    /// The snapshot, to save as the operator's checkpoint at its window.
    pub bytes: Vec<u8>,
    /// Its chunk table: what the next snapshot of this operator refers to.
    pub chunks: Vec<ChunkRef>,
    /// How many chunks were written (the rest were referred to again).
    pub written_chunks: usize,
    /// Bytes of the chunks written.
    pub written_bytes: u64,
    /// The payload buffer, for the next freeze.
    pub payload_buffer: Vec<u8>,
}

impl Snapshot {
    /// Freezes `state` at `meta.window` for an incremental snapshot: the
    /// payload is encoded now, into `buffer` (reused), with every
    /// [`KeyedMap`](crate::KeyedMap) writing only its index and key-group
    /// count; the groups changed since their last chunk are kept by
    /// reference for [`FrozenSnapshot::finish`]. `previous` is the
    /// operator's previous snapshot's chunk table (empty for its first):
    /// an unchanged group whose chunk it lists is referred to again; any
    /// other is written anew. O(key groups) for the maps, whatever their
    /// size.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
    ///
    /// #[derive(Checkpoint, Default)]
    /// struct Counter {
    ///     #[checkpoint(keyed)]
    ///     counts: KeyedMap<u64, u64>,
    /// }
    ///
    /// let storage = MemoryStorageAgent::new();
    /// let mut counter = Counter { counts: KeyedMap::with_key_groups(KeyGroups::new(8)?) };
    /// counter.counts.extend((0..100).map(|k| (k, k)));
    ///
    /// // First checkpoint: every non-empty group is written.
    /// let w1 = WindowId::new(1, 1);
    /// let frozen = Snapshot::freeze(&counter, SnapshotMeta::new("count", w1), Vec::new(), &[])?;
    /// let first = frozen.finish(|chunks| storage.save_chunks("count", chunks))?;
    /// storage.save("count", w1, &first.bytes)?;
    /// assert_eq!(first.written_chunks, 8);
    ///
    /// // One key changes: only its group is written again.
    /// *counter.counts.get_mut(&7).unwrap() += 1;
    /// let w2 = WindowId::new(1, 2);
    /// let frozen = Snapshot::freeze(&counter, SnapshotMeta::new("count", w2), first.payload_buffer, &first.chunks)?;
    /// let second = frozen.finish(|chunks| storage.save_chunks("count", chunks))?;
    /// storage.save("count", w2, &second.bytes)?;
    /// assert_eq!(second.written_chunks, 1);
    ///
    /// let (_, restored) = Snapshot::decode_with_chunks::<Counter>(&storage.load("count", w2)?, "count", None, |op, id| storage.load_chunk(op, id))?;
    /// assert_eq!(restored.counts.get(&7), Some(&8));
    /// assert_eq!(restored.counts, counter.counts);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn freeze<T: Checkpoint>(
        state: &T,
        meta: SnapshotMeta<'_>,
        mut buffer: Vec<u8>,
        previous: &[ChunkRef],
    ) -> Result<FrozenSnapshot, SnapshotError> {
        if meta.operator.len() > MAX_OPERATOR_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(format!(
                "operator name is {} bytes, at most {MAX_OPERATOR_NAME_LEN} fit",
                meta.operator.len()
            )));
        }
        buffer.clear();
        let known: HashMap<ChunkId, ChunkRef> = previous.iter().map(|c| (c.id, *c)).collect();
        let (encoded, frozen) = freeze::freezing(meta.window, known, || state.encode_state(&mut buffer));
        encoded.map_err(|source| SnapshotError::Payload {
            type_name: T::TYPE_NAME,
            source,
        })?;
        Ok(FrozenSnapshot {
            operator: meta.operator.to_owned(),
            window: meta.window,
            type_name: T::TYPE_NAME,
            version: T::VERSION,
            fingerprint: T::FINGERPRINT,
            payload: buffer,
            pending: frozen.pending,
            reused: frozen.reused,
            description: crate::description::description_json_of::<T>(),
        })
    }

    /// Decodes a snapshot of `T` whose keyed groups may be in chunks,
    /// loading each with `load(chunk's operator, chunk id)` (on several
    /// threads) and checking it is the chunk the snapshot refers to. A
    /// snapshot without chunks decodes as [`Snapshot::decode`] does.
    ///
    /// `operator` is the operator restoring: chunks of its own are
    /// referred to again by its next incremental snapshot. `owned`, for a
    /// partition of a keyed operator, is the key groups it owns: chunks of
    /// other groups are not loaded and those groups are empty.
    pub fn decode_with_chunks<T: Checkpoint>(
        bytes: &[u8],
        operator: &str,
        owned: Option<Range<u32>>,
        load: impl Fn(&str, ChunkId) -> Result<Vec<u8>, StorageError> + Sync,
    ) -> Result<(SnapshotHeader, T), SnapshotError> {
        let (header, payload) = Snapshot::verified_parts(bytes)?;
        let wanted: Vec<ChunkRef> = header
            .chunks
            .iter()
            .filter(|c| owned.as_ref().is_none_or(|owned| owned.contains(&c.id.group)))
            .copied()
            .collect();
        let loaded = load_all(&header.operator, &wanted, &load)?;
        let mut thawer = Thawer::new(operator, owned);
        for (reference, bytes) in wanted.into_iter().zip(loaded) {
            thawer.chunks.insert(
                (reference.id.map, reference.id.group),
                (reference, header.operator.clone(), bytes),
            );
        }
        freeze::thawing(thawer, || Snapshot::decode_payload(header, payload))
    }
}

impl Snapshot {
    /// Decodes the state of a partition of a keyed operator whose
    /// partition count changed: of the job's `key_groups`, it owns
    /// `owned`, and
    /// `sources` are the snapshots, all at one window, of the old
    /// partitions (`(name, bytes)`) that held any of them. Each group comes
    /// from the chunk of whichever source held it; the state must be keyed
    /// only (`#[checkpoint(keyed)]` maps, [`SnapshotError::NotRescalable`]
    /// if not).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
    ///
    /// #[derive(Checkpoint, Default)]
    /// struct Counter {
    ///     #[checkpoint(keyed)]
    ///     counts: KeyedMap<u64, u64>,
    /// }
    ///
    /// // Two partitions, each holding the keys of its half of 8 groups.
    /// let groups = KeyGroups::new(8)?;
    /// let storage = MemoryStorageAgent::new();
    /// let w = WindowId::new(1, 10);
    /// for p in 0..2 {
    ///     let owned = groups.range_of_partition(p, 2);
    ///     let mut state = Counter { counts: KeyedMap::with_key_groups(groups) };
    ///     state.counts.extend((0..100u64).filter(|k| owned.contains(&groups.group_of(k))).map(|k| (k, k)));
    ///     let name = format!("count#{p}");
    ///     let frozen = Snapshot::freeze(&state, SnapshotMeta::new(&name, w), Vec::new(), &[])?;
    ///     let done = frozen.finish(|chunks| storage.save_chunks(&name, chunks))?;
    ///     storage.save(&name, w, &done.bytes)?;
    /// }
    /// // One partition now: it owns every group, from both old ones.
    /// let sources: Vec<(String, Vec<u8>)> = (0..2).map(|p| { let n = format!("count#{p}"); let b = storage.load(&n, w).unwrap(); (n, b) }).collect();
    /// let sources: Vec<(&str, &[u8])> = sources.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    /// let (_, merged) = Snapshot::decode_rescaled::<Counter>(&sources, "count", groups, groups.range_of_partition(0, 1), |op, id| storage.load_chunk(op, id))?;
    /// assert_eq!(merged.counts.len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode_rescaled<T: Checkpoint>(
        sources: &[(&str, &[u8])],
        operator: &str,
        key_groups: KeyGroups,
        owned: Range<u32>,
        load: impl Fn(&str, ChunkId) -> Result<Vec<u8>, StorageError> + Sync,
    ) -> Result<(SnapshotHeader, T), SnapshotError> {
        let refuse = |reason: String| SnapshotError::NotRescalable {
            type_name: T::TYPE_NAME,
            reason,
        };
        if !T::KEYED_ONLY {
            return Err(refuse(
                "it keeps state outside `#[checkpoint(keyed)]` maps; make its other fields keyed maps or \
                 transient, or keep the partition count"
                    .to_owned(),
            ));
        }
        let mut verified = Vec::with_capacity(sources.len());
        for (name, bytes) in sources {
            let (header, payload) = Snapshot::verified_parts(bytes)?;
            if header.operator != *name {
                return Err(SnapshotError::InvalidHeader(format!(
                    "the snapshot given as {name:?}'s says it is {:?}'s",
                    header.operator
                )));
            }
            verified.push((header, payload));
        }
        let Some((first, _)) = verified.first() else {
            return Err(SnapshotError::InvalidHeader(
                "no snapshot to restore the partition from".to_owned(),
            ));
        };
        // An older version decodes as its own type, which may hold the
        // keys in a plain map: only the current version's maps are split.
        if first.state_version != T::VERSION {
            return Err(refuse(format!(
                "its snapshots were saved by version {} and it is version {} now; run it once with the old \
                 partition count, so a checkpoint of version {} is committed, then change the count",
                first.state_version,
                T::VERSION,
                T::VERSION
            )));
        }
        for (header, _) in &verified[1..] {
            if header.window != first.window || header.layout() != first.layout() {
                return Err(SnapshotError::InvalidHeader(format!(
                    "the partitions' snapshots differ: {} at {} ({} v{}) and {} at {} ({} v{})",
                    first.operator,
                    first.window,
                    first.type_name,
                    first.state_version,
                    header.operator,
                    header.window,
                    header.type_name,
                    header.state_version
                )));
            }
        }
        let mut thawer = Thawer::new(operator, Some(owned.clone()));
        thawer.merging = Some(key_groups);
        for (header, _) in &verified {
            let wanted: Vec<ChunkRef> = header
                .chunks
                .iter()
                .filter(|c| owned.contains(&c.id.group))
                .copied()
                .collect();
            let loaded = load_all(&header.operator, &wanted, &load)?;
            for (reference, bytes) in wanted.into_iter().zip(loaded) {
                let key = (reference.id.map, reference.id.group);
                if thawer.chunks.contains_key(&key) {
                    return Err(SnapshotError::BadChunk {
                        chunk: format!("{}/{}", header.operator, reference.id),
                        detail: "another partition's snapshot at the same window holds the same key group".to_owned(),
                    });
                }
                thawer.chunks.insert(key, (reference, header.operator.clone(), bytes));
            }
        }
        let mut verified = verified.into_iter();
        let Some((header, payload)) = verified.next() else {
            unreachable!("checked above");
        };
        freeze::thawing(thawer, || Snapshot::decode_payload(header, payload))
    }
}

/// One chunk's bytes, or why they could not be read.
type Loaded = Result<Vec<u8>, StorageError>;

/// Loads `chunks` of `operator` on a few threads, in order.
fn load_all(
    operator: &str,
    chunks: &[ChunkRef],
    load: &(impl Fn(&str, ChunkId) -> Result<Vec<u8>, StorageError> + Sync),
) -> Result<Vec<Vec<u8>>, SnapshotError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8)
        .min(chunks.len().max(1));
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Loaded>>> = Mutex::new((0..chunks.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut next = next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let i = *next;
                        *next += 1;
                        i
                    };
                    let Some(reference) = chunks.get(i) else {
                        break;
                    };
                    let result = load(operator, reference.id);
                    let failed = result.is_err();
                    results.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(result);
                    if failed {
                        break;
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::with_capacity(chunks.len());
    for (reference, result) in chunks.iter().zip(results) {
        match result {
            Some(Ok(bytes)) => out.push(bytes),
            Some(Err(source)) => {
                return Err(SnapshotError::ChunkStorage {
                    chunk: format!("{operator}/{}", reference.id),
                    source: Box::new(source),
                });
            }
            // A loader stopped at an earlier failure, reported above in order.
            None => {
                return Err(SnapshotError::BadChunk {
                    chunk: format!("{operator}/{}", reference.id),
                    detail: "not loaded: an earlier chunk could not be".to_owned(),
                });
            }
        }
    }
    Ok(out)
}

impl FrozenSnapshot {
    /// The window it was frozen at.
    pub fn window(&self) -> WindowId {
        self.window
    }

    /// How many groups changed since their chunk (the chunks `finish`
    /// writes).
    pub fn changed_groups(&self) -> usize {
        self.pending.len()
    }

    /// Encodes the changed groups as chunks (on several threads), hands
    /// them to `save` in batches of about 32 MiB (each batch must be
    /// durable when `save` returns), and assembles the snapshot, whose
    /// table refers to the new chunks and, for unchanged groups, to the
    /// chunks of the previous snapshot given to [`Snapshot::freeze`].
    /// The snapshot is to be saved only after this returns: a snapshot
    /// never refers to a chunk that is not durable.
    pub fn finish(
        self,
        mut save: impl FnMut(&[(ChunkId, Vec<u8>)]) -> Result<(), StorageError>,
    ) -> Result<FinishedSnapshot, SnapshotError> {
        let mut table: Vec<ChunkRef> = Vec::with_capacity(self.pending.len() + self.reused.len());
        table.extend_from_slice(&self.reused);
        let operator = self.operator.as_str();
        let mut written_bytes = 0u64;
        let written_chunks = self.pending.len();
        let mut batch: Vec<(ChunkId, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut flush = |batch: &mut Vec<(ChunkId, Vec<u8>)>, batch_bytes: &mut usize| -> Result<(), SnapshotError> {
            if batch.is_empty() {
                return Ok(());
            }
            save(batch).map_err(|source| SnapshotError::ChunkStorage {
                chunk: format!("{operator}/{}", batch[0].0),
                source: Box::new(source),
            })?;
            batch.clear();
            *batch_bytes = 0;
            Ok(())
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from).max(1);
        let mut pending = self.pending.into_iter();
        loop {
            // A round of up to `threads` chunks encoded side by side.
            let round: Vec<PendingChunk> = pending.by_ref().take(threads).collect();
            if round.is_empty() {
                break;
            }
            let encoded: Vec<Result<(Vec<u8>, ChunkRef), SnapshotError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = round
                    .into_iter()
                    .map(|chunk| scope.spawn(move || encode_chunk(operator, chunk)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(SnapshotError::InvalidHeader("a chunk's encoder panicked".to_owned()))
                        })
                    })
                    .collect()
            });
            for result in encoded {
                let (bytes, reference) = result?;
                written_bytes += bytes.len() as u64;
                batch_bytes += bytes.len();
                table.push(reference);
                batch.push((reference.id, bytes));
            }
            if batch_bytes >= CHUNK_BATCH_BYTES {
                flush(&mut batch, &mut batch_bytes)?;
            }
        }
        flush(&mut batch, &mut batch_bytes)?;
        table.sort_unstable_by_key(|c| (c.id.map, c.id.group));
        let layout = StateLayout {
            type_name: self.type_name,
            version: self.version,
            fingerprint: self.fingerprint,
        };
        let bytes = Snapshot::assemble(
            SnapshotMeta::new(operator, self.window),
            layout,
            &self.payload,
            &table,
            self.description.as_deref(),
        )?;
        Ok(FinishedSnapshot {
            bytes,
            chunks: table,
            written_chunks,
            written_bytes,
            payload_buffer: self.payload,
        })
    }
}

fn encode_chunk(operator: &str, chunk: PendingChunk) -> Result<(Vec<u8>, ChunkRef), SnapshotError> {
    let mut entries_bytes = Vec::new();
    let entries = (chunk.encode)(&mut entries_bytes).map_err(|source| SnapshotError::Payload {
        type_name: "KeyedMap",
        source,
    })?;
    Chunk::encode(operator, chunk.id, chunk.key_groups, entries, &entries_bytes)
}
