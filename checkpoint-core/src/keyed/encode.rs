//! How a [`KeyedMap`] is written into its operator's snapshot payload, and
//! read back with its groups decoded in parallel (`docs/FORMAT.md`,
//! "Keyed state").

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use super::freeze::{self, PendingChunk};
use super::{Group, GroupHasher, KeyedMap, Mark, StateKey, StateValue};
use crate::checkpoint::{Checkpoint, LayoutHasher, payload};
use crate::chunk::{Chunk, ChunkId};
use crate::error::PayloadError;
use crate::key_group::KeyGroups;

/// The map never held a key: no key-group count, no groups.
const UNSET: u8 = 0;
/// Every group follows, in group order, entries in key order.
const INLINE: u8 = 1;
/// The groups are in chunks the snapshot's chunk table lists.
const CHUNKED: u8 = 2;
#[cfg(test)]
pub(super) const INLINE_FOR_TESTS: u8 = INLINE;

/// Below this many bytes of groups, decoding on one thread is faster than
/// starting others.
pub(super) const PARALLEL_DECODE_BYTES: usize = 1 << 20;

/// Appends one group's entries, in key order, to `out`; returns how many.
pub(super) fn encode_group<K: StateKey, V: StateValue>(
    group: &Group<K, V>,
    out: &mut Vec<u8>,
) -> Result<u64, PayloadError> {
    let mut entries: Vec<(&K, &V)> = group.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (k, v) in &entries {
        payload::encode(k, out)?;
        payload::encode(v, out)?;
    }
    Ok(entries.len() as u64)
}

/// Reads `entries` entries of group `group` from exactly `bytes`, into a
/// table built at its final size; checks each key's group and that keys
/// ascend (so a snapshot has one encoding, and no key twice).
pub(super) fn decode_group<K: StateKey, V: StateValue>(
    key_groups: KeyGroups,
    group: u32,
    entries: u64,
    mut bytes: &[u8],
) -> Result<Group<K, V>, PayloadError> {
    // A damaged count must not reserve memory the bytes cannot fill: keys
    // ascend strictly, so every entry but a zero-sized key's one takes at
    // least a byte.
    let capacity = usize::try_from(entries).unwrap_or(usize::MAX).min(bytes.len().max(1));
    let mut table = Group::with_capacity_and_hasher(capacity, GroupHasher::default());
    let mut previous: Option<K> = None;
    for _ in 0..entries {
        let key: K = payload::decode(&mut bytes)?;
        let value: V = payload::decode(&mut bytes)?;
        let home = key_groups.group_of(&key);
        if home != group {
            return Err(PayloadError::custom(format!(
                "a key of key group {home} is stored in group {group}: the snapshot was written with another \
                 key hash or is damaged"
            )));
        }
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(PayloadError::custom(format!(
                "the keys of key group {group} are not in ascending order: the snapshot is damaged"
            )));
        }
        previous = Some(key.clone());
        table.insert(key, value);
    }
    if !bytes.is_empty() {
        return Err(PayloadError::custom(format!(
            "key group {group} has {} byte(s) after its {entries} entries",
            bytes.len()
        )));
    }
    Ok(table)
}

/// A run of decoded groups.
type Decoded<K, V> = Result<Vec<Arc<Group<K, V>>>, PayloadError>;

/// Decodes the groups whose bytes are `parts` (entries, bytes), on several
/// threads when they are large.
pub(super) fn decode_groups<K: StateKey, V: StateValue>(
    key_groups: KeyGroups,
    parts: &[(u64, &[u8])],
) -> Decoded<K, V> {
    let total: usize = parts.iter().map(|(_, b)| b.len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(parts.len());
    let decode_range = |first: usize, slice: &[(u64, &[u8])]| -> Decoded<K, V> {
        slice
            .iter()
            .enumerate()
            .map(|(i, &(entries, bytes))| decode_group(key_groups, (first + i) as u32, entries, bytes).map(Arc::new))
            .collect()
    };
    if total < PARALLEL_DECODE_BYTES || threads <= 1 {
        return decode_range(0, parts);
    }
    // Contiguous runs of groups of about equal bytes, one per thread.
    let share = total.div_ceil(threads);
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, b)) in parts.iter().enumerate() {
        bytes += b.len();
        if bytes >= share {
            runs.push(start..i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < parts.len() {
        runs.push(start..parts.len());
    }
    let decoded: Vec<Decoded<K, V>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|run| {
                let run = run.clone();
                scope.spawn(move || decode_range(run.start, &parts[run]))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(PayloadError::custom("a key group's decoder panicked")))
            })
            .collect()
    });
    let mut groups = Vec::with_capacity(parts.len());
    for run in decoded {
        groups.extend(run?);
    }
    Ok(groups)
}

impl<K: StateKey, V: StateValue> Checkpoint for KeyedMap<K, V> {
    const TYPE_NAME: &'static str = "KeyedMap";
    const KEYED_ONLY: bool = true;
    // The key and value types are not visible to a constant: the derive
    // fingerprints a `keyed` field by its written type, as any field.
    const FINGERPRINT: u64 = LayoutHasher::new().write_str("KeyedMap").write_u64(1).finish();

    fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        // Every keyed map of a state takes its index, empty or not, so the
        // same map has the same index in every partition's snapshot.
        let map = freeze::with_freezer(|freezer| freezer.map(|f| f.next_map()));
        let Some(key_groups) = self.key_groups else {
            out.write_all(&[UNSET])?;
            return Ok(());
        };
        // On an operator's thread the job's count is known: a map of
        // another count holds keys in groups the routing does not use.
        if let Some(job) = KeyGroups::ambient()
            && job != key_groups
        {
            return Err(PayloadError::custom(format!(
                "a KeyedMap has {key_groups} but the job has {job} (`Config::key_groups`): make it with \
                 `KeyedMap::new()`, which takes the job's count when it first holds a key on the operator's \
                 thread, not `with_key_groups`, and do not fill it before the job runs"
            )));
        }
        if let Some(map) = map
            && self.freeze(key_groups, map)
        {
            out.write_all(&[CHUNKED])?;
            payload::encode(&key_groups.count(), out)?;
            payload::encode(&map, out)?;
            return Ok(());
        }
        out.write_all(&[INLINE])?;
        payload::encode(&key_groups.count(), out)?;
        let mut bytes = Vec::new();
        for group in &self.groups {
            bytes.clear();
            let entries = encode_group(group, &mut bytes)?;
            payload::encode(&entries, out)?;
            payload::encode(&(bytes.len() as u64), out)?;
            out.write_all(&bytes)?;
        }
        Ok(())
    }

    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
        let tag: u8 = match input.split_first() {
            Some((&tag, rest)) => {
                *input = rest;
                tag
            }
            None => return Err(PayloadError::custom("a keyed map's payload is empty")),
        };
        // (index, merging) inside `decode_with_chunks` / `decode_rescaled`.
        let thawing = freeze::with_thawer(|thawer| thawer.map(|t| (t.next_map(), t.merging.is_some())));
        match tag {
            UNSET => match thawing {
                // This source's map never held a key; other sources' may.
                Some((index, true)) => Self::thaw(None, index),
                _ => Ok(KeyedMap::default()),
            },
            INLINE => {
                let count: u32 = payload::decode(input)?;
                let key_groups = KeyGroups::new(count).map_err(PayloadError::custom)?;
                let mut parts = Vec::with_capacity((count as usize).min(input.len()));
                for group in 0..count {
                    let entries: u64 = payload::decode(input)?;
                    let len: u64 = payload::decode(input)?;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&len| len <= input.len())
                        .ok_or_else(|| {
                            PayloadError::custom(format!(
                                "key group {group} says it has {len} bytes; {} are left",
                                input.len()
                            ))
                        })?;
                    let (bytes, rest) = input.split_at(len);
                    parts.push((entries, bytes));
                    *input = rest;
                }
                if let Some((index, true)) = thawing {
                    // Merging partitions: an inline map is an empty one
                    // (a storage that keeps chunks writes every other map
                    // as chunks); the groups come from the chunks.
                    if parts.iter().any(|(entries, _)| *entries > 0) {
                        return Err(PayloadError::custom(
                            "a keyed map saved inline cannot be split or merged across partitions: it needs a \
                             storage agent that keeps chunks",
                        ));
                    }
                    return Self::thaw(Some(key_groups), index);
                }
                let groups = decode_groups(key_groups, &parts)?;
                Ok(KeyedMap {
                    groups,
                    key_groups: Some(key_groups),
                    marks: Mutex::new(vec![Mark::default(); count as usize]),
                })
            }
            CHUNKED => {
                let count: u32 = payload::decode(input)?;
                let key_groups = KeyGroups::new(count).map_err(PayloadError::custom)?;
                let map: u32 = payload::decode(input)?;
                match thawing {
                    Some((index, _)) if index == map => Self::thaw(Some(key_groups), map),
                    Some((index, _)) => Err(PayloadError::custom(format!(
                        "the snapshot says this is keyed map {map}; it is the state's map {index}: the snapshot is \
                         damaged"
                    ))),
                    None => Err(PayloadError::custom(
                        "this keyed map is saved in chunks: decode the snapshot with `Snapshot::decode_with_chunks`",
                    )),
                }
            }
            other => Err(PayloadError::custom(format!(
                "a keyed map's payload starts with layout {other}, which this version does not know"
            ))),
        }
    }
}

impl<K: StateKey, V: StateValue> KeyedMap<K, V> {
    /// Inside an incremental snapshot (a freezer on this thread): hands
    /// every group changed since its chunk to the freezer, to be written as
    /// a new chunk from a frozen reference (no copy now; the operator's
    /// next write to it copies it), and refers to the chunk of every
    /// other group; `false` outside one, or for an empty map (written
    /// inline).
    fn freeze(&self, key_groups: KeyGroups, map: u32) -> bool {
        // A map with no entry is written inline (a few bytes): then a
        // snapshot whose maps are all empty has no chunk table and decodes
        // anywhere.
        if self.is_empty() {
            return false;
        }
        freeze::with_freezer(|freezer| {
            let Some(freezer) = freezer else {
                return false;
            };
            let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
            for (g, group) in self.groups.iter().enumerate() {
                let Some(mark) = marks.get_mut(g) else {
                    break;
                };
                if group.is_empty() {
                    mark.chunk = None;
                    continue;
                }
                // Referred to again only if the previous snapshot lists
                // it (a map restored from elsewhere, or put back from an
                // older copy, may carry a mark of a chunk that is gone).
                match mark
                    .chunk
                    .and_then(|id| freezer.known.get(&id).filter(|_| id.map == map))
                {
                    Some(reference) => freezer.reused.push(*reference),
                    None => {
                        let id = ChunkId {
                            window: freezer.window,
                            map,
                            group: g as u32,
                        };
                        // The map's next write to the group copies it first.
                        mark.shared = true;
                        let frozen = Arc::clone(group);
                        freezer.pending.push(PendingChunk {
                            id,
                            key_groups: key_groups.count(),
                            encode: Box::new(move |out| encode_group(&frozen, out)),
                        });
                        mark.chunk = Some(id);
                    }
                }
            }
            true
        })
    }

    /// Inside `Snapshot::decode_with_chunks` (a thawer on this thread):
    /// the map's groups from their chunks, decoded in parallel. A group
    /// without a chunk is empty, and so is one this partition does not
    /// own.
    fn thaw(key_groups: Option<KeyGroups>, map: u32) -> Result<Self, PayloadError> {
        let taken = freeze::with_thawer(|thawer| {
            let Some(thawer) = thawer else {
                return Err(PayloadError::custom(
                    "this keyed map is saved in chunks: decode the snapshot with `Snapshot::decode_with_chunks`",
                ));
            };
            let mut taken = Vec::new();
            let mut groups: Vec<u32> = thawer
                .chunks
                .keys()
                .filter(|(m, _)| *m == map)
                .map(|(_, g)| *g)
                .collect();
            groups.sort_unstable();
            for g in groups {
                if thawer.owned.as_ref().is_some_and(|owned| !owned.contains(&g)) {
                    continue;
                }
                if let Some((reference, owner, bytes)) = thawer.chunks.remove(&(map, g)) {
                    let ours = owner == thawer.operator;
                    taken.push((reference, owner, bytes, ours));
                }
            }
            Ok(taken)
        })?;
        // The count the payload says, or (an empty map in the payload of
        // one of several merged partitions) the one the chunks say.
        let key_groups = match key_groups {
            Some(key_groups) => key_groups,
            None => match taken.first() {
                Some((_, _, bytes, _)) => {
                    let (header, _) = Chunk::decode(bytes).map_err(PayloadError::custom)?;
                    KeyGroups::new(header.key_groups).map_err(PayloadError::custom)?
                }
                None => return Ok(KeyedMap::default()),
            },
        };
        let count = key_groups.count();
        let job = freeze::with_thawer(|thawer| thawer.and_then(|t| t.merging));
        if let Some(job) = job
            && job != key_groups
        {
            return Err(PayloadError::custom(format!(
                "the keyed map has {key_groups} and the job has {job}: its groups cannot be split by the job's \
                 partitions (was it filled before the job ran, with another count?)"
            )));
        }
        let mut parts: Vec<(u64, &[u8])> = vec![(0, &[][..]); count as usize];
        let mut marks = vec![Mark::default(); count as usize];
        for (reference, owner, bytes, ours) in &taken {
            if reference.id.group >= count {
                return Err(PayloadError::custom(format!(
                    "chunk {owner}/{} is for key group {}, past the map's {count}",
                    reference.id, reference.id.group
                )));
            }
            let (header, payload) =
                Chunk::decode_expected(bytes, owner, reference, count).map_err(PayloadError::custom)?;
            let g = header.id.group as usize;
            parts[g] = (header.entries, payload);
            if *ours {
                marks[g].chunk = Some(reference.id);
            }
        }
        let groups = decode_groups(key_groups, &parts)?;
        Ok(KeyedMap {
            groups,
            key_groups: Some(key_groups),
            marks: Mutex::new(marks),
        })
    }
}
