//! `#[checkpoint(config)]` fields: not saved, `Default::default()` in a
//! decoded snapshot, and set from the carrier `capture_config` takes from
//! the value handed to the DAG (what the runtime does after every restore).
//! The layout fingerprint leaves them out, like transient fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

use checkpoint_core::{Checkpoint, PayloadError, Snapshot, SnapshotMeta, WindowId};

#[derive(Debug, PartialEq, Checkpoint)]
struct Reader {
    #[checkpoint(config)]
    path: PathBuf,
    offset: u64,
    #[checkpoint(config)]
    lines_per_window: usize,
    #[checkpoint(transient)]
    buffer: Vec<u8>,
}

/// `Reader` without its config fields: the same payload and fingerprint.
#[derive(Debug, PartialEq, Checkpoint)]
struct ReaderState {
    offset: u64,
}

/// `Reader` with its settings saved, as before `config` existed.
#[derive(Checkpoint)]
struct ReaderAllSaved {
    path: PathBuf,
    offset: u64,
    lines_per_window: usize,
}

fn old_run() -> Reader {
    Reader {
        path: "/jobs/old/input.txt".into(),
        offset: 1_234,
        lines_per_window: 10,
        buffer: vec![1, 2, 3],
    }
}

fn this_run() -> Reader {
    Reader {
        path: "/jobs/new/input.txt".into(),
        offset: 0,
        lines_per_window: 50,
        buffer: Vec::new(),
    }
}

fn snapshot<T: Checkpoint>(state: &T) -> Vec<u8> {
    Snapshot::encode(state, SnapshotMeta::new("reader", WindowId::new(1_700_000_000, 9))).expect("encode")
}

#[test]
fn config_fields_are_not_in_the_payload() {
    let mut with_config = Vec::new();
    old_run().encode_state(&mut with_config).expect("encode");
    let mut state_only = Vec::new();
    ReaderState { offset: 1_234 }
        .encode_state(&mut state_only)
        .expect("encode");
    assert_eq!(with_config, state_only);
    assert!(!with_config.windows(b"jobs".len()).any(|w| w == b"jobs"));
}

#[test]
fn a_decoded_snapshot_holds_defaults_until_the_config_is_restored() {
    let (_, mut restored) = Snapshot::decode::<Reader>(&snapshot(&old_run())).expect("decode");
    assert_eq!(
        restored,
        Reader {
            path: PathBuf::new(),
            offset: 1_234,
            lines_per_window: 0,
            buffer: Vec::new(),
        }
    );

    let config = this_run().capture_config().expect("Reader has config fields");
    restored.restore_config(&*config);
    assert_eq!(restored.path, PathBuf::from("/jobs/new/input.txt"));
    assert_eq!(restored.lines_per_window, 50);
    assert_eq!(restored.offset, 1_234, "state comes from the snapshot");

    // The carrier is kept and applied again at the next restore.
    let (_, mut again) = Snapshot::decode::<Reader>(&snapshot(&restored)).expect("decode");
    again.restore_config(&*config);
    assert_eq!(
        (again.path, again.lines_per_window),
        (PathBuf::from("/jobs/new/input.txt"), 50)
    );
}

#[test]
fn a_carrier_of_another_type_is_ignored() {
    let (_, mut restored) = Snapshot::decode::<Reader>(&snapshot(&old_run())).expect("decode");
    restored.restore_config(&String::from("not a Reader carrier"));
    assert_eq!(restored.path, PathBuf::new());
}

#[test]
fn types_without_config_carry_nothing() {
    const { assert!(Reader::HAS_CONFIG) };
    const { assert!(!ReaderState::HAS_CONFIG) };
    assert!(ReaderState { offset: 1 }.capture_config().is_none());
    assert!(7u64.capture_config().is_none(), "hand-written impls keep the default");
}

#[test]
fn config_fields_are_not_in_the_fingerprint() {
    assert_eq!(Reader::FINGERPRINT, ReaderState::FINGERPRINT);
    assert_ne!(Reader::FINGERPRINT, ReaderAllSaved::FINGERPRINT);
    let all_saved = snapshot(&ReaderAllSaved {
        path: "/jobs/old/input.txt".into(),
        offset: 5,
        lines_per_window: 10,
    });
    assert!(matches!(
        Snapshot::decode::<Reader>(&all_saved),
        Err(checkpoint_core::SnapshotError::LayoutMismatch { .. })
    ));
}

#[derive(Debug, PartialEq, Checkpoint)]
struct Sink {
    #[checkpoint(config)]
    dir: PathBuf,
    last: Option<u64>,
}

#[derive(Debug, PartialEq, Checkpoint)]
struct Pipeline {
    #[checkpoint(nested)]
    reader: Reader,
    #[checkpoint(nested)]
    counts: ReaderState,
    #[checkpoint(config)]
    name: String,
    #[checkpoint(nested)]
    sink: Sink,
}

#[test]
fn nested_config_fields_stay_config() {
    const { assert!(Pipeline::HAS_CONFIG) };
    let old = Pipeline {
        reader: old_run(),
        counts: ReaderState { offset: 3 },
        name: "old".into(),
        sink: Sink {
            dir: "/jobs/old/out".into(),
            last: Some(8),
        },
    };
    let fresh = Pipeline {
        reader: this_run(),
        counts: ReaderState { offset: 0 },
        name: "new".into(),
        sink: Sink {
            dir: "/jobs/new/out".into(),
            last: None,
        },
    };
    let (_, mut restored) = Snapshot::decode::<Pipeline>(&snapshot(&old)).expect("decode");
    restored.restore_config(&*fresh.capture_config().expect("config"));
    assert_eq!(
        restored,
        Pipeline {
            reader: Reader {
                offset: 1_234,
                ..this_run()
            },
            counts: ReaderState { offset: 3 },
            name: "new".into(),
            sink: Sink {
                dir: "/jobs/new/out".into(),
                last: Some(8),
            },
        }
    );
}

#[derive(Debug, PartialEq, Checkpoint)]
#[checkpoint(stateless)]
struct Splitter {
    #[checkpoint(config)]
    separator: char,
    seen: u64,
}

#[test]
fn a_stateless_type_keeps_its_config() {
    let mut bytes = Vec::new();
    Splitter {
        separator: ';',
        seen: 4,
    }
    .encode_state(&mut bytes)
    .expect("encode");
    assert!(bytes.is_empty());
    let mut restored = Splitter::decode_state(&mut &bytes[..]).expect("decode");
    restored.restore_config(
        &*Splitter {
            separator: ';',
            seen: 0,
        }
        .capture_config()
        .expect("config"),
    );
    assert_eq!(
        restored,
        Splitter {
            separator: ';',
            seen: 0
        }
    );
}

#[derive(Debug, PartialEq, Checkpoint)]
struct PerKey<K: Ord, S> {
    counts: BTreeMap<K, u64>,
    #[checkpoint(config)]
    settings: S,
}

#[test]
fn generic_config_fields() -> Result<(), PayloadError> {
    let old = PerKey {
        counts: BTreeMap::from([("a".to_string(), 2)]),
        settings: vec![1u8, 2],
    };
    let mut bytes = Vec::new();
    old.encode_state(&mut bytes)?;
    let mut restored = PerKey::<String, Vec<u8>>::decode_state(&mut &bytes[..])?;
    assert!(restored.settings.is_empty());
    let fresh = PerKey::<String, Vec<u8>> {
        counts: BTreeMap::new(),
        settings: vec![9],
    };
    restored.restore_config(&*fresh.capture_config().expect("config"));
    assert_eq!(restored.settings, [9]);
    assert_eq!(restored.counts["a"], 2);
    Ok(())
}

#[derive(Debug, PartialEq, Checkpoint)]
struct Tuple(#[checkpoint(config)] String, u32);

#[test]
fn tuple_struct_config_fields() {
    let (_, mut restored) = Snapshot::decode::<Tuple>(&snapshot(&Tuple("old".into(), 3))).expect("decode");
    assert_eq!(restored, Tuple(String::new(), 3));
    restored.restore_config(&*Tuple("new".into(), 0).capture_config().expect("config"));
    assert_eq!(restored, Tuple("new".into(), 3));
}
