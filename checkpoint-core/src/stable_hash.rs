//! The stable hash that assigns keys to key groups, and so keyed tuples to
//! partitions and keyed state to the partition that owns it.

/// A key that can be hashed the same way on every build, machine and run,
/// so a tuple goes to the same partition after a restart.
///
/// The hash is part of the job's persistent contract (a partition's state
/// holds exactly the keys that hash to it), so it is fixed and documented:
/// - unsigned and signed integers, `bool` and `char`: the value as a `u64`
///   (sign-extended for signed types) through the splitmix64 finalizer;
/// - strings and byte slices: FNV-1a 64 over the bytes, then splitmix64;
/// - tuples and references: see their implementations (tuples combine their
///   elements' hashes as `h = splitmix64(h ^ element)` from left to right).
///
/// A key with hash `h` belongs to key group `h % key_groups`
/// ([`KeyGroups::group_of`](crate::KeyGroups::group_of)), and a keyed tuple goes to the
/// partition that owns its key's group. Never `std`'s `RandomState`, whose
/// seed changes every run.
///
/// # Examples
///
/// ```
/// use checkpoint_core::StableHash;
///
/// assert_eq!(42u64.stable_hash(), 42u32.stable_hash());
/// assert_eq!("zone-7".stable_hash(), String::from("zone-7").stable_hash());
/// assert_ne!("zone-7".stable_hash(), "zone-8".stable_hash());
/// // Fixed forever: a partition's checkpoints depend on it.
/// assert_eq!(0u64.stable_hash(), 0xe220a8397b1dcdaf);
/// ```
pub trait StableHash {
    /// The key's stable 64-bit hash.
    fn stable_hash(&self) -> u64;
}

/// The splitmix64 finalizer (the benchmark workload's generator, DESIGN.md),
/// which [`StableHash`] ends with.
///
/// # Examples
///
/// ```
/// assert_eq!(checkpoint_core::splitmix64(0), 0xe220a8397b1dcdaf);
/// ```
pub const fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl StableHash for $t {
            fn stable_hash(&self) -> u64 {
                splitmix64(*self as u64)
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl StableHash for $t {
            fn stable_hash(&self) -> u64 {
                splitmix64(*self as i64 as u64)
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

impl StableHash for bool {
    fn stable_hash(&self) -> u64 {
        splitmix64(u64::from(*self))
    }
}

impl StableHash for char {
    fn stable_hash(&self) -> u64 {
        splitmix64(u64::from(*self))
    }
}

impl StableHash for str {
    fn stable_hash(&self) -> u64 {
        splitmix64(fnv1a(self.as_bytes()))
    }
}

impl StableHash for String {
    fn stable_hash(&self) -> u64 {
        self.as_str().stable_hash()
    }
}

impl StableHash for [u8] {
    fn stable_hash(&self) -> u64 {
        splitmix64(fnv1a(self))
    }
}

impl StableHash for Vec<u8> {
    fn stable_hash(&self) -> u64 {
        self.as_slice().stable_hash()
    }
}

impl<T: StableHash + ?Sized> StableHash for &T {
    fn stable_hash(&self) -> u64 {
        (**self).stable_hash()
    }
}

impl<A: StableHash, B: StableHash> StableHash for (A, B) {
    fn stable_hash(&self) -> u64 {
        splitmix64(splitmix64(self.0.stable_hash()) ^ self.1.stable_hash())
    }
}

impl<A: StableHash, B: StableHash, C: StableHash> StableHash for (A, B, C) {
    fn stable_hash(&self) -> u64 {
        splitmix64(splitmix64(splitmix64(self.0.stable_hash()) ^ self.1.stable_hash()) ^ self.2.stable_hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_values() {
        // The first outputs of splitmix64 seeded with 0 (Vigna's reference).
        assert_eq!(splitmix64(0), 0xe220a8397b1dcdaf);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6e789e6aa1b965f4);
    }

    #[test]
    fn hashes_are_fixed() {
        assert_eq!("".stable_hash(), splitmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!((-1i32).stable_hash(), splitmix64(u64::MAX));
        assert_eq!(b"ab"[..].stable_hash(), "ab".stable_hash());
        assert_ne!((1u8, 2u8).stable_hash(), (2u8, 1u8).stable_hash());
    }
}
