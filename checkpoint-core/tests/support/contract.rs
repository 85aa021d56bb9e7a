//! The storage agent contract: what every `StorageAgent` must do, shared
//! by the tests of each agent (`#[path]`-included; not a crate).
#![allow(dead_code, reason = "each including test uses what it needs")]

use checkpoint_core::{Chunk, ChunkId, Snapshot, SnapshotMeta, StorageAgent, StorageError, WindowId};

pub(crate) fn w(seq: u32) -> WindowId {
    WindowId::new(0x6553_f100, seq)
}

pub(crate) fn snap(operator: &str, window: WindowId, value: u64) -> Vec<u8> {
    Snapshot::encode(&value, SnapshotMeta::new(operator, window)).expect("encode")
}

pub(crate) fn value(agent: &dyn StorageAgent, operator: &str, window: WindowId) -> u64 {
    let bytes = agent.load(operator, window).expect("load");
    Snapshot::decode::<u64>(&bytes).expect("decode").1
}

/// What every agent must do.
pub(crate) fn contract(agent: &dyn StorageAgent) {
    assert_eq!(agent.operators().expect("operators"), Vec::<String>::new());
    assert_eq!(agent.windows("a").expect("windows"), []);
    assert_eq!(agent.load_manifest().expect("manifest"), None);

    for seq in [5, 1, 3] {
        agent
            .save("a", w(seq), &snap("a", w(seq), seq as u64 * 100))
            .expect("save");
    }
    agent.save("b#0", w(1), &snap("b#0", w(1), 7)).expect("save");
    assert_eq!(agent.windows("a").expect("windows"), [w(1), w(3), w(5)]);
    assert_eq!(agent.operators().expect("operators"), ["a", "b#0"]);
    assert_eq!(value(agent, "a", w(3)), 300);

    // Saving the same window again replaces it.
    agent.save("a", w(3), &snap("a", w(3), 301)).expect("save");
    assert_eq!(value(agent, "a", w(3)), 301);

    // Missing snapshots name operator and window.
    match agent.load("a", w(2)) {
        Err(StorageError::NotFound { operator, window }) => assert_eq!((operator.as_str(), window), ("a", w(2))),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let message = agent.load("a", w(2)).expect_err("missing").to_string();
    assert!(
        message.contains("\"a\"") && message.contains(&w(2).to_string()),
        "{message}"
    );

    // Delete, and delete again.
    agent.delete("a", w(1)).expect("delete");
    agent.delete("a", w(1)).expect("delete twice");
    agent.delete("never", w(1)).expect("delete of an unknown operator");
    assert_eq!(agent.windows("a").expect("windows"), [w(3), w(5)]);

    // A snapshot whose header names another operator or window is refused.
    assert!(matches!(
        agent.save("a", w(9), &snap("b#0", w(9), 1)),
        Err(StorageError::Misplaced { .. })
    ));
    assert!(matches!(
        agent.save("a", w(9), &snap("a", w(8), 1)),
        Err(StorageError::Misplaced { .. })
    ));
    assert!(matches!(
        agent.save("a", w(9), b"not a snapshot"),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(agent.windows("a").expect("windows"), [w(3), w(5)]);

    // Bad names are refused by every operation.
    for bad in ["", "../escape", "a/b", "a\\b", "..", "x\0y", ".manifest", "tab\there"] {
        let err = |r: Result<(), StorageError>| matches!(r, Err(StorageError::InvalidOperatorName { .. }));
        assert!(err(agent.save(bad, w(1), &snap(bad, w(1), 1))), "save {bad:?}");
        assert!(
            matches!(agent.load(bad, w(1)), Err(StorageError::InvalidOperatorName { .. })),
            "{bad:?}"
        );
        assert!(err(agent.delete(bad, w(1))), "delete {bad:?}");
        assert!(
            matches!(agent.windows(bad), Err(StorageError::InvalidOperatorName { .. })),
            "{bad:?}"
        );
    }

    // The manifest is independent of the snapshots.
    agent.save_manifest(b"v1").expect("manifest");
    agent.save_manifest(b"v2").expect("manifest");
    assert_eq!(agent.load_manifest().expect("manifest").as_deref(), Some(&b"v2"[..]));
    assert_eq!(agent.operators().expect("operators"), ["a", "b#0"]);
}

/// Conditional manifest writes (fencing): on a fresh agent.
pub(crate) fn manifest_contract(agent: &dyn StorageAgent) {
    use checkpoint_core::ManifestVersion;

    assert_eq!(agent.load_manifest_versioned().expect("manifest"), None);
    let first = agent.replace_manifest(b"generation 1", None).expect("first write");
    // Only one writer creates it.
    assert!(matches!(
        agent.replace_manifest(b"another job's generation 1", None),
        Err(StorageError::Superseded { .. })
    ));
    let (bytes, version) = agent.load_manifest_versioned().expect("manifest").expect("stored");
    assert_eq!((bytes.as_slice(), &version), (&b"generation 1"[..], &first));
    let second = agent
        .replace_manifest(b"generation 2", Some(&first))
        .expect("second write");
    assert_ne!(first, second);
    // A writer still holding the first version was superseded, and wrote
    // nothing.
    let stale = agent.replace_manifest(b"stale", Some(&first)).expect_err("superseded");
    assert!(matches!(stale, StorageError::Superseded { .. }), "{stale}");
    assert!(stale.to_string().contains("deletes nothing"), "{stale}");
    assert!(matches!(
        agent.replace_manifest(b"stale", Some(&ManifestVersion::new("made up"))),
        Err(StorageError::Superseded { .. })
    ));
    assert_eq!(
        agent.load_manifest().expect("manifest").as_deref(),
        Some(&b"generation 2"[..])
    );
    // An unconditional save moves the version on too.
    agent.save_manifest(b"by hand").expect("save");
    assert!(matches!(
        agent.replace_manifest(b"stale", Some(&second)),
        Err(StorageError::Superseded { .. })
    ));
    let (_, current) = agent.load_manifest_versioned().expect("manifest").expect("stored");
    agent
        .replace_manifest(b"generation 3", Some(&current))
        .expect("current version");
    assert_eq!(
        agent.load_manifest().expect("manifest").as_deref(),
        Some(&b"generation 3"[..])
    );
}

/// What every agent that keeps chunks must do with them.
pub(crate) fn chunk_contract(agent: &dyn StorageAgent) {
    assert!(agent.supports_chunks());
    let id = |seq: u32, group: u32| ChunkId {
        window: w(seq),
        map: 0,
        group,
    };
    let chunk =
        |operator: &str, id: ChunkId, payload: &[u8]| Chunk::encode(operator, id, 4, 1, payload).expect("chunk").0;
    assert_eq!(agent.chunks("c").expect("chunks"), []);
    agent
        .save_chunks(
            "c",
            &[
                (id(2, 1), chunk("c", id(2, 1), b"one")),
                (id(1, 3), chunk("c", id(1, 3), b"three")),
            ],
        )
        .expect("save chunks");
    assert_eq!(agent.chunks("c").expect("chunks"), [id(1, 3), id(2, 1)]);
    assert_eq!(
        agent.load_chunk("c", id(2, 1)).expect("load"),
        chunk("c", id(2, 1), b"one")
    );
    // Chunks are not snapshots: the operator's windows do not list them.
    assert_eq!(agent.windows("c").expect("windows"), []);
    match agent.load_chunk("c", id(9, 9)) {
        Err(StorageError::ChunkNotFound { operator, chunk }) => {
            assert_eq!(
                (operator.as_str(), chunk.as_str()),
                ("c", id(9, 9).to_string().as_str())
            );
        }
        other => panic!("expected ChunkNotFound, got {other:?}"),
    }
    // A chunk whose header names another operator or id is refused.
    assert!(
        agent
            .save_chunks("c", &[(id(3, 0), chunk("other", id(3, 0), b"x"))])
            .is_err()
    );
    assert!(
        agent
            .save_chunks("c", &[(id(3, 0), chunk("c", id(3, 1), b"x"))])
            .is_err()
    );
    assert!(agent.save_chunks("c", &[(id(3, 0), b"not a chunk".to_vec())]).is_err());
    agent.delete_chunk("c", id(2, 1)).expect("delete");
    agent.delete_chunk("c", id(2, 1)).expect("delete twice");
    assert_eq!(agent.chunks("c").expect("chunks"), [id(1, 3)]);
    assert!(matches!(
        agent.chunks("../x"),
        Err(StorageError::InvalidOperatorName { .. })
    ));
}
