use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::checkpoint::Checkpoint;
use crate::key_group::KeyGroups;

fn encoded<K: StateKey, V: StateValue>(map: &KeyedMap<K, V>) -> Vec<u8> {
    let mut out = Vec::new();
    map.encode_state(&mut out).expect("encodes");
    out
}

fn decoded<K: StateKey, V: StateValue>(mut bytes: &[u8]) -> Result<KeyedMap<K, V>, crate::PayloadError> {
    let map = KeyedMap::decode_state(&mut bytes)?;
    assert!(bytes.is_empty(), "{} bytes left", bytes.len());
    Ok(map)
}

fn groups(n: u32) -> KeyGroups {
    KeyGroups::new(n).expect("valid")
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    Remove(u16),
    Add(u16, u32),
    Retain(u8),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 500, v)),
        2 => any::<u16>().prop_map(|k| Op::Remove(k % 500)),
        3 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Add(k % 500, v % 1000)),
        1 => any::<u8>().prop_map(Op::Retain),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The map behaves as a `BTreeMap` under random operations, and every
    /// clone taken along the way (what a snapshot holds) keeps the entries
    /// it had when taken, however the map changes afterwards.
    #[test]
    fn behaves_as_a_map_and_clones_keep_their_entries(ops in proptest::collection::vec(op(), 0..300)) {
        let _entered = groups(8).enter();
        let mut map: KeyedMap<u16, u32> = KeyedMap::new();
        let mut model: BTreeMap<u16, u32> = BTreeMap::new();
        let mut snapshots: Vec<(KeyedMap<u16, u32>, BTreeMap<u16, u32>)> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(map.insert(k, v), model.insert(k, v)),
                Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                Op::Add(k, v) => {
                    *map.entry(k).or_insert(0) += v;
                    *model.entry(k).or_insert(0) += v;
                }
                Op::Retain(m) => {
                    let keep = |k: &u16| !k.is_multiple_of(u16::from(m.max(1)));
                    map.retain(|k, _| keep(k));
                    model.retain(|k, _| keep(k));
                }
                Op::Snapshot => snapshots.push((map.clone(), model.clone())),
            }
            prop_assert_eq!(map.len(), model.len());
        }
        let entries: BTreeMap<u16, u32> = map.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(&entries, &model);
        for (snapshot, expected) in snapshots {
            let entries: BTreeMap<u16, u32> = snapshot.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&entries, &expected);
            let restored: KeyedMap<u16, u32> = decoded(&encoded(&snapshot)).expect("decodes");
            prop_assert_eq!(restored, snapshot);
        }
    }

    /// The same entries, inserted in any order (with removals on the way),
    /// encode to the same bytes.
    #[test]
    fn equal_maps_encode_to_identical_bytes(
        entries in proptest::collection::btree_map(any::<u32>(), any::<u64>(), 0..300),
        seed in any::<u64>(),
    ) {
        let forward: KeyedMap<u32, u64> = {
            let mut map = KeyedMap::with_key_groups(groups(16));
            map.extend(entries.iter().map(|(k, v)| (*k, *v)));
            map
        };
        let shuffled: KeyedMap<u32, u64> = {
            let mut map = KeyedMap::with_key_groups(groups(16));
            let mut order: Vec<_> = entries.iter().collect();
            order.sort_by_key(|(k, _)| crate::splitmix64(u64::from(**k) ^ seed));
            for (k, v) in order {
                map.insert(k.wrapping_add(1), 0);
                map.insert(*k, *v);
            }
            for k in entries.keys() {
                if !entries.contains_key(&k.wrapping_add(1)) {
                    map.remove(&k.wrapping_add(1));
                }
            }
            map
        };
        prop_assert_eq!(encoded(&forward), encoded(&shuffled));
    }

    /// Damaged bytes give an error or a map, never a panic or a huge
    /// allocation.
    #[test]
    fn damaged_bytes_never_panic(
        entries in proptest::collection::btree_map(any::<u16>(), any::<u16>(), 1..50),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let map: KeyedMap<u16, u16> = {
            let mut map = KeyedMap::with_key_groups(groups(4));
            map.extend(entries);
            map
        };
        let mut bytes = encoded(&map);
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor.max(1);
        }
        // Decoded as a snapshot's payload decoder would: an error, or a
        // map (possibly with bytes left, which the envelope then refuses).
        let _ = KeyedMap::<u16, u16>::decode_state(&mut &bytes[..]);
        let _ = KeyedMap::<u16, u16>::decode_state(&mut &bytes[..cut.index(bytes.len())]);
    }
}

#[test]
fn a_new_map_takes_the_key_groups_of_its_thread_when_it_first_holds_a_key() {
    let mut map: KeyedMap<String, u64> = KeyedMap::new();
    assert_eq!(map.key_groups(), None);
    {
        let _entered = groups(32).enter();
        map.insert("a".to_owned(), 1);
    }
    assert_eq!(map.key_groups(), Some(groups(32)));
    assert_eq!(map.get("a"), Some(&1));
    // A map that never held a key saves no count, and restores as new.
    let empty: KeyedMap<String, u64> = KeyedMap::new();
    let restored: KeyedMap<String, u64> = decoded(&encoded(&empty)).expect("decodes");
    assert_eq!(restored.key_groups(), None);
}

#[test]
fn each_key_sits_in_the_group_of_its_stable_hash() {
    let mut map: KeyedMap<u64, u64> = KeyedMap::with_key_groups(groups(8));
    map.extend((0..1000).map(|k| (k, k)));
    for g in 0..8u32 {
        for k in map.groups[g as usize].keys() {
            assert_eq!(groups(8).group_of(k), g);
        }
    }
}

#[test]
fn a_clone_shares_groups_until_one_side_writes() {
    let mut map: KeyedMap<u64, u64> = KeyedMap::with_key_groups(groups(4));
    map.extend((0..100).map(|k| (k, k)));
    let frozen = map.clone();
    assert!((0..4).all(|g| Arc::ptr_eq(&map.groups[g], &frozen.groups[g])));
    let written = groups(4).group_of(&7u64) as usize;
    *map.get_mut(&7).expect("present") += 1;
    for g in 0..4 {
        assert_eq!(
            Arc::ptr_eq(&map.groups[g], &frozen.groups[g]),
            g != written,
            "group {g}"
        );
    }
    assert_eq!(frozen.get(&7), Some(&7));
    assert_eq!(map.get(&7), Some(&8));
    // A lookup that finds nothing copies nothing.
    let frozen = map.clone();
    assert_eq!(map.get_mut(&1_000_000), None);
    assert_eq!(map.remove(&1_000_000), None);
    assert!((0..4).all(|g| Arc::ptr_eq(&map.groups[g], &frozen.groups[g])));
}

#[test]
fn large_maps_decode_on_several_threads_to_the_same_entries() {
    let mut map: KeyedMap<u64, u64> = KeyedMap::with_key_groups(groups(128));
    map.extend((0..300_000u64).map(|k| (crate::splitmix64(k), k)));
    let bytes = encoded(&map);
    assert!(bytes.len() > encode::PARALLEL_DECODE_BYTES, "{} bytes", bytes.len());
    let restored: KeyedMap<u64, u64> = decoded(&bytes).expect("decodes");
    assert_eq!(restored.len(), 300_000);
    assert_eq!(restored, map);
    assert_eq!(encoded(&restored), bytes);
}

#[test]
fn a_key_in_the_wrong_group_is_an_error() {
    // Two groups; the key 0 belongs to one of them. Written into the other
    // by hand, it must be refused, not looked up in the wrong place.
    let key = 0u64;
    let home = groups(2).group_of(&key);
    let mut bytes = vec![encode::INLINE_FOR_TESTS];
    crate::payload::encode(&2u32, &mut bytes).expect("encodes");
    for g in 0..2 {
        let mut entries = Vec::new();
        if g != home {
            crate::payload::encode(&key, &mut entries).expect("encodes");
            crate::payload::encode(&1u64, &mut entries).expect("encodes");
        }
        crate::payload::encode(&u64::from(g != home), &mut bytes).expect("encodes");
        crate::payload::encode(&(entries.len() as u64), &mut bytes).expect("encodes");
        bytes.extend(entries);
    }
    let err = decoded::<u64, u64>(&bytes).expect_err("misplaced key");
    assert!(err.to_string().contains("stored in group"), "{err}");
}

#[test]
fn keys_out_of_order_are_an_error() {
    let mut map: KeyedMap<u8, u8> = KeyedMap::with_key_groups(groups(1));
    map.insert(1, 1);
    map.insert(2, 2);
    let mut bytes = encoded(&map);
    // One group: tag, count, entries, length, then 1 1 2 2; swap the keys.
    let n = bytes.len();
    bytes.swap(n - 4, n - 2);
    let err = decoded::<u8, u8>(&bytes).expect_err("descending keys");
    assert!(err.to_string().contains("ascending"), "{err}");
}
