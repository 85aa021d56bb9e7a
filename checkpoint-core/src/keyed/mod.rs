//! Keyed state: [`KeyedMap`], a map split into key groups, saved group by
//! group.

mod encode;
pub(crate) mod freeze;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chunk::ChunkId;
use crate::key_group::KeyGroups;
use crate::stable_hash::StableHash;

/// The hasher inside a group: foldhash with its fixed seed, fast and the
/// same in every run (a key's group comes from [`StableHash`]; this only
/// places it inside its group's table).
pub(crate) type GroupHasher = foldhash::fast::FixedState;

/// One key group's entries.
pub(crate) type Group<K, V> = HashMap<K, V, GroupHasher>;

/// What a key of a [`KeyedMap`] needs: a [`StableHash`] for its key group
/// (the one that routes tuples, so a partition holds exactly the state of
/// the keys it receives), `Hash + Eq` for its place in the group, `Ord` so
/// equal maps encode to identical bytes (entries are written in key order),
/// `Clone` for copy-on-write, and serde for the snapshot.
///
/// # Examples
///
/// ```
/// use checkpoint_core::StateKey;
///
/// fn usable<K: StateKey>() {}
/// usable::<u64>();
/// usable::<String>();
/// usable::<(String, u32)>();
/// ```
pub trait StateKey:
    StableHash + Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

impl<K: StableHash + Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateKey for K {}

/// What a value of a [`KeyedMap`] needs: `Clone` for copy-on-write and
/// serde for the snapshot.
///
/// # Examples
///
/// ```
/// use checkpoint_core::StateValue;
///
/// fn usable<V: StateValue>() {}
/// usable::<u64>();
/// usable::<Vec<(u64, String)>>();
/// ```
pub trait StateValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> StateValue for V {}

/// Keyed state: a map split into the job's key groups, for a field of an
/// operator that holds one entry per key (counts, sessions, open joins).
///
/// Mark the field `#[checkpoint(keyed)]`. A key's group is
/// `key.stable_hash() % key_groups`, the same hash `Dag::connect_by_key`
/// routes tuples by, so a partition of a keyed operator holds exactly the
/// groups it owns, and a snapshot is saved and restored group by group:
/// - entries are written in key order, so equal maps encode to identical
///   bytes whatever order they were filled in;
/// - a restore decodes groups on several threads and builds each group's
///   table at its final size;
/// - each group sits behind its own reference count, so a snapshot can
///   share a group with the running operator until the operator next
///   writes to it (copy-on-write).
///
/// The key-group count is the job's (`Config::key_groups` in the runtime,
/// 128 by default), taken when the map first holds a key on the operator's
/// thread ([`KeyGroups::current`]); [`with_key_groups`] fixes it by hand.
///
/// Iteration visits groups in order and the entries of a group in no
/// particular order.
///
/// Values are changed through the map (`get_mut`, `entry`, `insert`, ...),
/// which is how it knows a group changed and copies a group a snapshot
/// still shares: a value with interior mutability (`Cell`, `Mutex`, an
/// `Arc` shared elsewhere) changed through `get` would escape both, and a
/// snapshot could hold it half-changed. Keep such values out of keyed
/// state. A partition should only hold keys of the groups it owns (the
/// keys `connect_by_key` sends it): a key stored under another key than
/// the routing one lands in a group another partition owns.
///
/// [`with_key_groups`]: KeyedMap::with_key_groups
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, KeyedMap, Snapshot, SnapshotMeta, WindowId};
///
/// #[derive(Checkpoint, Default)]
/// struct Counter {
///     #[checkpoint(keyed)]
///     counts: KeyedMap<String, u64>,
/// }
///
/// let mut counter = Counter::default();
/// for word in ["apex", "flink", "apex"] {
///     *counter.counts.entry(word.to_owned()).or_insert(0) += 1;
/// }
/// assert_eq!(counter.counts.get("apex"), Some(&2));
/// assert_eq!(counter.counts.len(), 2);
///
/// let window = WindowId::new(1_700_000_000, 9);
/// let bytes = Snapshot::encode(&counter, SnapshotMeta::new("counter", window))?;
/// let (_, restored) = Snapshot::decode::<Counter>(&bytes)?;
/// assert_eq!(restored.counts, counter.counts);
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
pub struct KeyedMap<K, V> {
    /// Empty until the map first holds a key (or is given its count).
    groups: Vec<Arc<Group<K, V>>>,
    key_groups: Option<KeyGroups>,
    /// Per group: which chunk holds its entries as they are, and whether
    /// another reference to it may exist. Behind a lock because a snapshot
    /// is encoded through `&self`; the writes of the operator's thread
    /// reach it through `&mut self` (`Mutex::get_mut`), with no locking.
    marks: Mutex<Vec<Mark>>,
}

/// What a [`KeyedMap`] knows of one of its groups.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mark {
    /// The chunk that holds the group's entries as they are, if one does.
    pub(crate) chunk: Option<ChunkId>,
    /// Whether the group's `Arc` was cloned (by a freeze or a `clone`) since
    /// the map last made it unique. While `false` the map holds the only
    /// reference, so a write needs no atomic operation.
    pub(crate) shared: bool,
}

impl<K, V> Default for KeyedMap<K, V> {
    fn default() -> Self {
        KeyedMap {
            groups: Vec::new(),
            key_groups: None,
            marks: Mutex::new(Vec::new()),
        }
    }
}

impl<K: Clone, V: Clone> Clone for KeyedMap<K, V> {
    /// Shares every group with the original until either writes to it.
    fn clone(&self) -> Self {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        for mark in marks.iter_mut() {
            mark.shared = true;
        }
        KeyedMap {
            groups: self.groups.clone(),
            key_groups: self.key_groups,
            marks: Mutex::new(marks.clone()),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for KeyedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.groups.iter().flat_map(|g| g.iter()))
            .finish()
    }
}

impl<K: StateKey, V: StateValue + PartialEq> PartialEq for KeyedMap<K, V> {
    /// The same entries (the key-group count aside: an empty map has none yet).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: StateKey, V: StateValue + Eq> Eq for KeyedMap<K, V> {}

impl<K: StateKey, V: StateValue> KeyedMap<K, V> {
    /// An empty map that takes the job's key-group count when it first
    /// holds a key.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with `key_groups` groups, whatever the job's count.
    /// A snapshot of a map whose count differs from the job's cannot be
    /// saved by the runtime; this is for tests and tools.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{KeyGroups, KeyedMap};
    ///
    /// let map: KeyedMap<u64, u64> = KeyedMap::with_key_groups(KeyGroups::new(4)?);
    /// assert_eq!(map.key_groups(), Some(KeyGroups::new(4)?));
    /// # Ok::<(), checkpoint_core::InvalidKeyGroups>(())
    /// ```
    pub fn with_key_groups(key_groups: KeyGroups) -> Self {
        let mut map = Self::default();
        map.init(key_groups);
        map
    }

    fn init(&mut self, key_groups: KeyGroups) {
        self.key_groups = Some(key_groups);
        self.groups = (0..key_groups.count())
            .map(|_| Arc::new(Group::with_hasher(GroupHasher::default())))
            .collect();
        *self.marks.get_mut().unwrap_or_else(PoisonError::into_inner) =
            vec![Mark::default(); key_groups.count() as usize];
    }

    /// Group `index`, to change: it no longer matches its chunk, and it is
    /// copied first if a snapshot still shares it.
    fn write_group(&mut self, index: usize) -> &mut Group<K, V> {
        let mark = &mut self.marks.get_mut().unwrap_or_else(PoisonError::into_inner)[index];
        mark.chunk = None;
        if std::mem::take(&mut mark.shared) {
            return Arc::make_mut(&mut self.groups[index]);
        }
        self.unshared(index).0
    }

    /// Group `index` and its mark, side by side, for a group no snapshot
    /// shares (its mark says so).
    fn unshared(&mut self, index: usize) -> (&mut Group<K, V>, &mut Mark) {
        let mark = &mut self.marks.get_mut().unwrap_or_else(PoisonError::into_inner)[index];
        debug_assert!(!mark.shared);
        // SAFETY: the group's mark is not `shared`, so this map holds the
        // only reference to it: every `Arc::clone` of a group (in
        // `freeze` and in `clone`) marks it `shared`, which only
        // `write_group`'s `Arc::make_mut` (after which the reference is
        // unique) clears; no `Weak` is ever made, and the field is private.
        // `&mut self` excludes every other access through the map. This
        // spares the hot path `Arc::make_mut`'s atomic compare-and-swap.
        let group = unsafe { &mut *Arc::as_ptr(&self.groups[index]).cast_mut() };
        (group, mark)
    }

    /// The map's key-group count, once it has one.
    pub fn key_groups(&self) -> Option<KeyGroups> {
        self.key_groups
    }

    fn group_index<Q: StableHash + ?Sized>(&self, key: &Q) -> Option<usize> {
        self.key_groups.map(|g| g.group_of(key) as usize)
    }

    /// The group `key` belongs to, copied first if a snapshot still shares
    /// it.
    fn group_for_write(&mut self, key: &K) -> &mut Group<K, V> {
        let key_groups = match self.key_groups {
            Some(g) => g,
            None => {
                let g = KeyGroups::current();
                self.init(g);
                g
            }
        };
        let index = key_groups.group_of(key) as usize;
        self.write_group(index)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.len()).sum()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.is_empty())
    }

    /// The value of `key`. A borrowed form of the key (`&str` for a
    /// `String` key) must hash as the key does, as `str` and `String` do.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: StableHash + Hash + Eq + ?Sized,
    {
        let index = self.group_index(key)?;
        self.groups[index].get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: StableHash + Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The value of `key`, to change in place.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: StableHash + Hash + Eq + ?Sized,
    {
        let index = self.group_index(key)?;
        let mark = self.marks.get_mut().unwrap_or_else(PoisonError::into_inner)[index];
        if mark.shared {
            // Looked up first: a lookup that finds nothing copies nothing.
            if !self.groups[index].contains_key(key) {
                return None;
            }
            return self.write_group(index).get_mut(key);
        }
        // One lookup; only a key found changes the group.
        let (group, mark) = self.unshared(index);
        let value = group.get_mut(key)?;
        mark.chunk = None;
        Some(value)
    }

    /// Sets `key`'s value; returns the previous one.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.group_for_write(&key).insert(key, value)
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: StableHash + Hash + Eq + ?Sized,
    {
        let index = self.group_index(key)?;
        if !self.groups[index].contains_key(key) {
            return None;
        }
        self.write_group(index).remove(key)
    }

    /// `key`'s entry, to read, insert or change in place (std's
    /// [`Entry`]).
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.group_for_write(&key).entry(key)
    }

    /// Every entry: groups in order, each group's entries in no particular
    /// order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.groups.iter().flat_map(|g| g.iter())
    }

    /// Every key, as [`iter`](KeyedMap::iter) visits them.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, as [`iter`](KeyedMap::iter) visits them.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Every value, to change in place (copies every group a snapshot
    /// still shares).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        for index in 0..self.groups.len() {
            self.write_group(index);
        }
        self.groups.iter_mut().flat_map(|g| Arc::make_mut(g).values_mut())
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for index in 0..self.groups.len() {
            if !self.groups[index].is_empty() {
                self.write_group(index).retain(|k, v| keep(k, v));
            }
        }
    }

    /// Removes every entry (the key-group count stays).
    pub fn clear(&mut self) {
        let marks = self.marks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for (group, mark) in self.groups.iter_mut().zip(marks.iter_mut()) {
            if !group.is_empty() {
                // A new, unique group; a snapshot sharing the old one keeps it.
                *group = Arc::new(Group::with_hasher(GroupHasher::default()));
                *mark = Mark::default();
            }
        }
    }
}

impl<K: StateKey, V: StateValue> FromIterator<(K, V)> for KeyedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = KeyedMap::new();
        map.extend(iter);
        map
    }
}

impl<K: StateKey, V: StateValue> Extend<(K, V)> for KeyedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests;
