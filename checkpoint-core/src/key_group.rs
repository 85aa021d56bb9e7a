//! Key groups (Flink's max parallelism): the fixed number of parts a job's
//! keys are split into. A key belongs to group `stable_hash(key) % groups`;
//! each partition of a keyed operator owns a contiguous range of groups, and
//! keyed state is saved and moved group by group, so a job can be restarted
//! with another partition count without rehashing a single key.

use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use crate::stable_hash::StableHash;

/// The key-group count of a job when none is configured (Flink's default
/// max parallelism for small jobs).
pub const DEFAULT_KEY_GROUPS: u32 = 128;

/// The most key groups a job may have (Flink's limit, 2^15).
pub const MAX_KEY_GROUPS: u32 = 1 << 15;

/// A job's key-group count: fixed for the life of the job (recorded in the
/// job manifest and in every keyed snapshot), and the most partitions a
/// keyed operator can ever have.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{KeyGroups, StableHash};
///
/// let groups = KeyGroups::new(128)?;
/// let group = groups.group_of(&"user-42");
/// assert_eq!(group, ("user-42".stable_hash() % 128) as u32);
///
/// // Three partitions own contiguous ranges that cover every group once.
/// assert_eq!(groups.range_of_partition(0, 3), 0..43);
/// assert_eq!(groups.range_of_partition(1, 3), 43..86);
/// assert_eq!(groups.range_of_partition(2, 3), 86..128);
/// assert_eq!(groups.partition_of_group(group, 3), (0..3).find(|&p| groups.range_of_partition(p, 3).contains(&group)).unwrap());
/// # Ok::<(), checkpoint_core::InvalidKeyGroups>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroups(u32);

/// A key-group count outside `1..=MAX_KEY_GROUPS`.
///
/// # Examples
///
/// ```
/// use checkpoint_core::KeyGroups;
///
/// let err = KeyGroups::new(0).unwrap_err();
/// assert_eq!(err.to_string(), "0 key groups: a job has between 1 and 32768 key groups");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKeyGroups(pub u64);

impl fmt::Display for InvalidKeyGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key groups: a job has between 1 and {MAX_KEY_GROUPS} key groups",
            self.0
        )
    }
}

impl std::error::Error for InvalidKeyGroups {}

impl Default for KeyGroups {
    fn default() -> Self {
        KeyGroups(DEFAULT_KEY_GROUPS)
    }
}

impl fmt::Display for KeyGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key groups", self.0)
    }
}

thread_local! {
    static AMBIENT: Cell<Option<KeyGroups>> = const { Cell::new(None) };
}

impl KeyGroups {
    /// `count` key groups, between 1 and [`MAX_KEY_GROUPS`].
    pub fn new(count: u32) -> Result<Self, InvalidKeyGroups> {
        if count == 0 || count > MAX_KEY_GROUPS {
            return Err(InvalidKeyGroups(u64::from(count)));
        }
        Ok(KeyGroups(count))
    }

    /// How many groups.
    pub fn count(self) -> u32 {
        self.0
    }

    /// The group of a key hash.
    #[inline]
    pub fn group_of_hash(self, hash: u64) -> u32 {
        // A power of two (the default 128) needs no division, which costs
        // more than the rest of a lookup on the hot path.
        if self.0.is_power_of_two() {
            (hash & u64::from(self.0 - 1)) as u32
        } else {
            (hash % u64::from(self.0)) as u32
        }
    }

    /// The group of `key`: `key.stable_hash() % count`.
    #[inline]
    pub fn group_of<K: StableHash + ?Sized>(self, key: &K) -> u32 {
        self.group_of_hash(key.stable_hash())
    }

    /// The partition (of `partitions`) that owns `group`: `group *
    /// partitions / count`, so each partition owns a contiguous range.
    #[inline]
    pub fn partition_of_group(self, group: u32, partitions: usize) -> usize {
        (u64::from(group) * partitions as u64 / u64::from(self.0)) as usize
    }

    /// The groups `partition` (of `partitions`) owns: from `ceil(partition *
    /// count / partitions)` up to the next partition's first group. Empty if
    /// there are more partitions than groups.
    pub fn range_of_partition(self, partition: usize, partitions: usize) -> Range<u32> {
        let first = |p: usize| (p as u64 * u64::from(self.0)).div_ceil(partitions.max(1) as u64) as u32;
        first(partition)..first(partition + 1)
    }

    /// The key groups of the keyed operator running on this thread: what a
    /// [`KeyedMap`](crate::KeyedMap) made with `KeyedMap::new()` takes when
    /// it first holds a key. The runtime sets it on its operator threads;
    /// elsewhere (a unit test) it is the default, 128.
    pub fn current() -> KeyGroups {
        AMBIENT.with(Cell::get).unwrap_or_default()
    }

    /// The count entered on this thread, if any (the runtime's operator
    /// threads): unlike [`current`](KeyGroups::current), no default.
    pub(crate) fn ambient() -> Option<KeyGroups> {
        AMBIENT.with(Cell::get)
    }

    /// Makes `self` what [`current`](KeyGroups::current) returns on this
    /// thread until the guard is dropped (the runtime does this on every
    /// operator thread; tests may too).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::KeyGroups;
    ///
    /// let groups = KeyGroups::new(16)?;
    /// {
    ///     let _entered = groups.enter();
    ///     assert_eq!(KeyGroups::current(), groups);
    /// }
    /// assert_eq!(KeyGroups::current(), KeyGroups::default());
    /// # Ok::<(), checkpoint_core::InvalidKeyGroups>(())
    /// ```
    pub fn enter(self) -> KeyGroupsGuard {
        let previous = AMBIENT.with(|a| a.replace(Some(self)));
        KeyGroupsGuard {
            previous,
            _not_send: std::marker::PhantomData,
        }
    }
}

/// Restores the previous [`KeyGroups::current`] when dropped.
#[derive(Debug)]
#[must_use = "the key groups are current only while the guard lives"]
pub struct KeyGroupsGuard {
    previous: Option<KeyGroups>,
    // Restores a thread-local: must be dropped on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for KeyGroupsGuard {
    fn drop(&mut self) {
        AMBIENT.with(|a| a.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_every_group_once_and_agree_with_partition_of() {
        for count in [1u32, 2, 3, 7, 128, 1000] {
            let groups = KeyGroups::new(count).expect("valid");
            for partitions in 1..=(count as usize).min(40) {
                let mut next = 0;
                for p in 0..partitions {
                    let range = groups.range_of_partition(p, partitions);
                    assert_eq!(range.start, next, "{count} groups, {partitions} partitions");
                    assert!(
                        !range.is_empty(),
                        "partition {p} of {partitions} owns no group of {count}"
                    );
                    for g in range.clone() {
                        assert_eq!(groups.partition_of_group(g, partitions), p);
                    }
                    next = range.end;
                }
                assert_eq!(next, count);
            }
        }
    }

    #[test]
    fn counts_out_of_range_are_errors() {
        assert!(KeyGroups::new(0).is_err());
        assert!(KeyGroups::new(MAX_KEY_GROUPS + 1).is_err());
        assert_eq!(KeyGroups::new(MAX_KEY_GROUPS).map(KeyGroups::count), Ok(MAX_KEY_GROUPS));
    }

    #[test]
    fn keys_spread_over_groups() {
        let groups = KeyGroups::new(4).expect("valid");
        let mut counts = [0usize; 4];
        for k in 0..4000u64 {
            counts[groups.group_of(&k) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn the_guard_restores_what_was_current() {
        let outer = KeyGroups::new(8).expect("valid");
        let inner = KeyGroups::new(9).expect("valid");
        let _a = outer.enter();
        {
            let _b = inner.enter();
            assert_eq!(KeyGroups::current(), inner);
        }
        assert_eq!(KeyGroups::current(), outer);
    }
}
