//! Incremental snapshots of keyed state: frozen states stay as they were
//! while the map keeps changing, only changed groups are written, chunks
//! are checked when read, and a partition can restore just its groups.

use std::collections::BTreeMap;

use checkpoint_core::{
    Checkpoint, ChunkRef, FsStorageAgent, KeyGroups, KeyedMap, MemoryStorageAgent, Snapshot, SnapshotError,
    SnapshotMeta, StorageAgent, WindowId,
};
use proptest::prelude::*;

#[derive(Checkpoint, Default)]
struct State {
    total: u64,
    #[checkpoint(keyed)]
    counts: KeyedMap<u32, u64>,
    #[checkpoint(keyed)]
    names: KeyedMap<String, String>,
}

fn groups(n: u32) -> KeyGroups {
    KeyGroups::new(n).expect("valid")
}

fn w(seq: u32) -> WindowId {
    WindowId::new(7, seq)
}

fn state(n: u32) -> State {
    State {
        total: 0,
        counts: KeyedMap::with_key_groups(groups(n)),
        names: KeyedMap::with_key_groups(groups(n)),
    }
}

/// Everything a `State` holds, comparable.
type Content = (u64, BTreeMap<u32, u64>, BTreeMap<String, String>);

fn content(s: &State) -> Content {
    (
        s.total,
        s.counts.iter().map(|(k, v)| (*k, *v)).collect(),
        s.names.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    )
}

/// Saves one incremental snapshot of `s` at `window` to `storage`.
fn save(
    storage: &dyn StorageAgent,
    s: &State,
    window: WindowId,
    previous: &[ChunkRef],
) -> checkpoint_core::FinishedSnapshot {
    let frozen = Snapshot::freeze(s, SnapshotMeta::new("op", window), Vec::new(), previous).expect("freeze");
    let finished = frozen
        .finish(|chunks| storage.save_chunks("op", chunks))
        .expect("finish");
    storage.save("op", window, &finished.bytes).expect("save");
    finished
}

fn restore(storage: &dyn StorageAgent, window: WindowId) -> Result<State, SnapshotError> {
    let bytes = storage.load("op", window).expect("load");
    Snapshot::decode_with_chunks::<State>(&bytes, "op", None, |op, id| storage.load_chunk(op, id)).map(|(_, s)| s)
}

#[derive(Debug, Clone)]
enum Op {
    Add(u32, u64),
    Remove(u32),
    Name(u16),
    /// Freeze now; finish after the next few operations.
    Freeze,
    Finish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..200u32, 1..5u64).prop_map(|(k, v)| Op::Add(k, v)),
        1 => (0..200u32).prop_map(Op::Remove),
        2 => any::<u16>().prop_map(Op::Name),
        1 => Just(Op::Freeze),
        1 => Just(Op::Finish),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A snapshot holds the state as it was when frozen, however the state
    /// changed before the snapshot was finished and saved; each restores
    /// exactly; and a restored state's next snapshot is incremental too.
    #[test]
    fn a_snapshot_is_the_state_at_its_freeze(ops in proptest::collection::vec(op(), 1..120)) {
        let storage = MemoryStorageAgent::new();
        let mut s = state(8);
        let mut seq = 0;
        let mut previous: Vec<ChunkRef> = Vec::new();
        let mut in_flight = None;
        let mut saved: Vec<(WindowId, Content)> = Vec::new();
        let finish = |frozen: checkpoint_core::FrozenSnapshot, previous: &mut Vec<ChunkRef>| {
            let window = frozen.window();
            let finished = frozen.finish(|chunks| storage.save_chunks("op", chunks)).expect("finish");
            storage.save("op", window, &finished.bytes).expect("save");
            *previous = finished.chunks;
        };
        for op in ops {
            match op {
                Op::Add(k, v) => {
                    *s.counts.entry(k).or_insert(0) += v;
                    s.total += v;
                }
                Op::Remove(k) => {
                    s.counts.remove(&k);
                }
                Op::Name(n) => {
                    s.names.insert(format!("k{}", n % 50), format!("v{n}"));
                }
                Op::Freeze => {
                    // One save in flight at a time, as the runtime does.
                    if let Some(frozen) = in_flight.take() {
                        finish(frozen, &mut previous);
                    }
                    seq += 1;
                    saved.push((w(seq), content(&s)));
                    in_flight = Some(Snapshot::freeze(&s, SnapshotMeta::new("op", w(seq)), Vec::new(), &previous).expect("freeze"));
                }
                Op::Finish => {
                    if let Some(frozen) = in_flight.take() {
                        finish(frozen, &mut previous);
                    }
                }
            }
        }
        if let Some(frozen) = in_flight.take() {
            finish(frozen, &mut previous);
        }
        for (window, expected) in &saved {
            let restored = restore(&storage, *window).expect("restore");
            prop_assert_eq!(&content(&restored), expected);
        }
        if let Some((window, expected)) = saved.last() {
            // From the restored state, an unchanged state writes nothing new.
            let restored = restore(&storage, *window).expect("restore");
            let header = Snapshot::read_header(&storage.load("op", *window).expect("load")).expect("header");
            let again = save(&storage, &restored, w(seq + 1), &header.chunks);
            prop_assert_eq!(again.written_chunks, 0);
            prop_assert_eq!(&content(&restore(&storage, w(seq + 1)).expect("restore")), expected);
        }
    }
}

#[test]
fn only_changed_groups_are_written_and_unchanged_ones_are_referred_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FsStorageAgent::new(dir.path()).expect("storage");
    let mut s = state(16);
    for k in 0..1_000u32 {
        s.counts.insert(k, u64::from(k));
    }
    let first = save(&storage, &s, w(1), &[]);
    assert_eq!(
        first.written_chunks, 16,
        "every non-empty group of `counts`; `names` is empty"
    );
    // Skewed: a few hot keys all in one group change.
    let hot_group = groups(16).group_of(&3u32);
    let hot: Vec<u32> = (0..1_000u32)
        .filter(|k| groups(16).group_of(k) == hot_group)
        .take(5)
        .collect();
    for k in &hot {
        *s.counts.get_mut(k).expect("present") += 1;
    }
    let second = save(&storage, &s, w(2), &first.chunks);
    assert_eq!(second.written_chunks, 1);
    assert!(
        second.written_bytes * 10 < first.written_bytes,
        "{} vs {}",
        second.written_bytes,
        first.written_bytes
    );
    // What storage holds says the same: 16 chunks from w1, 1 from w2.
    let chunks = storage.chunks("op").expect("chunks");
    assert_eq!(chunks.iter().filter(|c| c.window == w(1)).count(), 16);
    assert_eq!(chunks.iter().filter(|c| c.window == w(2)).count(), 1);
    let header = Snapshot::read_header(&storage.load("op", w(2)).expect("load")).expect("header");
    assert_eq!(header.chunks.iter().filter(|c| c.id.window == w(1)).count(), 15);
    let restored = restore(&storage, w(2)).expect("restore");
    assert_eq!(content(&restored), content(&s));
    // The older snapshot still restores to its own state.
    let old = restore(&storage, w(1)).expect("restore");
    assert_eq!(old.counts.get(&hot[0]), Some(&u64::from(hot[0])));
}

#[test]
fn a_damaged_or_missing_chunk_is_an_error_never_a_wrong_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FsStorageAgent::new(dir.path()).expect("storage");
    let mut s = state(4);
    s.counts.extend((0..100u32).map(|k| (k, u64::from(k))));
    let finished = save(&storage, &s, w(1), &[]);
    let victim = finished.chunks[1];
    let path = dir.path().join("op").join("chunks").join(victim.id.to_string());
    let good = std::fs::read(&path).expect("the chunk's file");
    assert_eq!(good, storage.load_chunk("op", victim.id).expect("chunk"));
    for i in 0..good.len() {
        for bit in [0, 3, 7] {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            std::fs::write(&path, &bad).expect("damage");
            let outcome = restore(&storage, w(1));
            assert!(outcome.is_err(), "byte {i} bit {bit} went unnoticed");
        }
    }
    std::fs::write(&path, &good[..good.len() - 1]).expect("truncate");
    assert!(restore(&storage, w(1)).is_err(), "a truncated chunk");
    std::fs::write(&path, &good).expect("repair");
    assert!(restore(&storage, w(1)).is_ok());
    storage.delete_chunk("op", victim.id).expect("delete");
    let err = restore(&storage, w(1)).err().expect("a missing chunk");
    assert!(err.to_string().contains(&victim.id.to_string()), "{err}");
    // Decoding without chunks says what to do.
    let err = Snapshot::decode::<State>(&storage.load("op", w(1)).expect("load"))
        .err()
        .expect("needs chunks");
    assert!(matches!(err, SnapshotError::ChunksNeeded { .. }), "{err}");
}

#[test]
fn a_partition_restores_only_the_groups_it_owns() {
    let storage = MemoryStorageAgent::new();
    let mut s = state(8);
    s.counts.extend((0..500u32).map(|k| (k, 1)));
    save(&storage, &s, w(1), &[]);
    let owned = groups(8).range_of_partition(1, 3);
    let loaded = std::sync::Mutex::new(Vec::new());
    let bytes = storage.load("op", w(1)).expect("load");
    let (_, part) = Snapshot::decode_with_chunks::<State>(&bytes, "op#1", Some(owned.clone()), |op, id| {
        loaded.lock().expect("lock").push(id.group);
        storage.load_chunk(op, id)
    })
    .expect("decode");
    assert!(loaded.lock().expect("lock").iter().all(|g| owned.contains(g)));
    let expected: Vec<u32> = (0..500u32).filter(|k| owned.contains(&groups(8).group_of(k))).collect();
    let mut got: Vec<u32> = part.counts.keys().copied().collect();
    got.sort_unstable();
    assert_eq!(got, expected);
    // Another operator's chunks are never referred to: its first
    // snapshot writes every group it holds again, under its own name.
    let frozen = Snapshot::freeze(&part, SnapshotMeta::new("op#1", w(2)), Vec::new(), &[]).expect("freeze");
    assert_eq!(frozen.changed_groups(), owned.len());
}
