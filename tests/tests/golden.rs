//! Golden snapshots: files written by older versions of a state type are
//! committed under `tests/data/`, and today's code must restore them, through
//! the `previous` upgrade chain, to exactly the values below. A change to the
//! derive (encoding, fingerprint recipe, version handling) or to the envelope
//! that would make old checkpoints unreadable fails here.
//!
//! The files are written once, by the versions of `RideStats` in `v1`, `v2`
//! and `v3` below, which must never change. To write them again (only ever
//! for a deliberate format break, with a note in the changelog):
//!
//! ```text
//! CHECKPOINT_WRITE_GOLDEN=1 cargo test -p checkpoint-tests --test golden -- --ignored write_golden_snapshots
//! ```
//!
//! The default test run only reads them.
//!
//! `line-input-v1.snap` and `exactly-once-file-sink-v1.snap` are snapshots
//! of the library's io operators as a real job wrote them before their
//! settings became configuration (see the section at the end); they were
//! written once and are never rewritten.

use std::collections::BTreeMap;
use std::path::PathBuf;

use checkpoint_core::{
    Checkpoint, LayoutHasher, PayloadError, Snapshot, SnapshotError, SnapshotMeta, WindowId, payload,
};
use serde::{Deserialize, Serialize};

/// Per-zone totals, a plain serde type shared by v2 and v3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneTotals {
    rides: u64,
    cents: u64,
}

/// Version 1: rides per zone.
mod v1 {
    use super::*;

    #[derive(Debug, PartialEq, Checkpoint)]
    pub(crate) struct RideStats {
        pub(crate) rides: u64,
        pub(crate) per_zone: BTreeMap<u32, u64>,
        #[checkpoint(transient)]
        pub(crate) scratch: Vec<u8>,
    }

    pub(crate) fn sample() -> RideStats {
        RideStats {
            rides: 7,
            per_zone: BTreeMap::from([(1, 4), (2, 3)]),
            scratch: vec![9, 9],
        }
    }
}

/// Version 2: money per zone, the last window seen, a nested session state.
mod v2 {
    use super::*;

    #[derive(Debug, PartialEq, Checkpoint)]
    pub(crate) enum Session {
        Idle,
        Open {
            user: String,
            #[checkpoint(transient)]
            socket: Option<u32>,
        },
    }

    #[derive(Debug, PartialEq, Checkpoint)]
    #[checkpoint(version = 2, previous = super::v1::RideStats)]
    pub(crate) struct RideStats {
        pub(crate) rides: u64,
        pub(crate) per_zone: BTreeMap<u32, ZoneTotals>,
        pub(crate) last_window: Option<WindowId>,
        #[checkpoint(nested)]
        pub(crate) session: Session,
    }

    impl From<v1::RideStats> for RideStats {
        fn from(old: v1::RideStats) -> Self {
            RideStats {
                rides: old.rides,
                per_zone: old
                    .per_zone
                    .into_iter()
                    .map(|(zone, rides)| (zone, ZoneTotals { rides, cents: 0 }))
                    .collect(),
                last_window: None,
                session: Session::Idle,
            }
        }
    }

    pub(crate) fn sample() -> RideStats {
        RideStats {
            rides: 12,
            per_zone: BTreeMap::from([
                (1, ZoneTotals { rides: 5, cents: 2_150 }),
                (3, ZoneTotals { rides: 7, cents: 4_000 }),
            ]),
            last_window: Some(WindowId::new(1_700_000_000, 59)),
            session: Session::Open {
                user: "ada".into(),
                socket: Some(3),
            },
        }
    }
}

/// Version 3, the current one: the ride count is gone (it is the sum of the
/// zones), a raw log tail is kept as bytes, and a name labels the operator.
mod v3 {
    use super::*;

    #[derive(Debug, PartialEq, Checkpoint)]
    #[checkpoint(version = 3, previous = super::v2::RideStats)]
    pub(crate) struct RideStats {
        pub(crate) per_zone: BTreeMap<u32, ZoneTotals>,
        pub(crate) last_window: Option<WindowId>,
        #[checkpoint(nested)]
        pub(crate) session: v2::Session,
        pub(crate) log_tail: Vec<u8>,
        pub(crate) label: String,
        #[checkpoint(transient, default = "fresh_cache")]
        pub(crate) cache: Vec<u32>,
    }

    pub(crate) fn fresh_cache() -> Vec<u32> {
        vec![0; 2]
    }

    impl From<v2::RideStats> for RideStats {
        fn from(old: v2::RideStats) -> Self {
            RideStats {
                per_zone: old.per_zone,
                last_window: old.last_window,
                session: old.session,
                log_tail: Vec::new(),
                label: format!("{} rides", old.rides),
                cache: fresh_cache(),
            }
        }
    }

    pub(crate) fn sample() -> RideStats {
        RideStats {
            per_zone: BTreeMap::from([(9, ZoneTotals { rides: 1, cents: 999 })]),
            last_window: Some(WindowId::new(1_700_000_000, 119)),
            session: v2::Session::Idle,
            log_tail: vec![0x00, 0xff, 0x10, 0x80],
            label: "night shift".into(),
            cache: vec![1, 2, 3],
        }
    }
}

use v3::RideStats;

const WINDOW: WindowId = WindowId::new(1_700_000_000, 59);

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// `bytes` without the layout description today's snapshots carry: the
/// golden files were written before descriptions existed, and everything
/// else must stay byte for byte what they hold.
fn without_description(bytes: &[u8]) -> Vec<u8> {
    let header = Snapshot::verify(bytes).expect("a valid snapshot");
    let Some(description) = header.description else {
        return bytes.to_vec();
    };
    let end = bytes.len() - 4 - description.len() - 4;
    let mut out = bytes[..end].to_vec();
    let flags = u16::from_le_bytes([out[10], out[11]]) & !checkpoint_core::FLAG_DESCRIPTION;
    out[10..12].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn read(name: &str) -> Vec<u8> {
    let path = data(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading golden snapshot {}: {e}", path.display()))
}

/// Writes the golden files. Ignored, and a no-op without
/// `CHECKPOINT_WRITE_GOLDEN=1`: see the module documentation.
#[test]
#[ignore = "writes tests/data/; run only to deliberately replace the golden snapshots"]
fn write_golden_snapshots() {
    if std::env::var_os("CHECKPOINT_WRITE_GOLDEN").is_none_or(|v| v != "1") {
        eprintln!("set CHECKPOINT_WRITE_GOLDEN=1 to write the golden snapshots");
        return;
    }
    let meta = SnapshotMeta::new("ride-stats", WINDOW);
    let files = [
        ("ride-stats-v1.snap", Snapshot::encode(&v1::sample(), meta)),
        ("ride-stats-v2.snap", Snapshot::encode(&v2::sample(), meta)),
        ("ride-stats-v3.snap", Snapshot::encode(&v3::sample(), meta)),
    ];
    for (name, bytes) in files {
        std::fs::write(data(name), bytes.expect("encode")).expect("write golden snapshot");
    }
}

/// The fingerprints the golden files record. If one of these changes, the
/// matching file no longer restores.
#[test]
fn golden_headers() {
    for (name, version, fingerprint) in [
        ("ride-stats-v1.snap", 1, v1::RideStats::FINGERPRINT),
        ("ride-stats-v2.snap", 2, v2::RideStats::FINGERPRINT),
        ("ride-stats-v3.snap", 3, v3::RideStats::FINGERPRINT),
    ] {
        let header = Snapshot::verify(&read(name)).expect("valid snapshot");
        assert_eq!(header.operator, "ride-stats", "{name}");
        assert_eq!(header.window, WINDOW, "{name}");
        assert_eq!(header.type_name, "RideStats", "{name}");
        assert_eq!(header.state_version, version, "{name}");
        assert_eq!(
            header.fingerprint, fingerprint,
            "{name}: the type's fingerprint changed"
        );
    }
}

#[test]
fn v1_snapshot_restores_through_the_chain() {
    let bytes = read("ride-stats-v1.snap");

    let (_, as_v1) = Snapshot::decode::<v1::RideStats>(&bytes).expect("v1 reads v1");
    assert_eq!(
        as_v1,
        v1::RideStats {
            rides: 7,
            per_zone: BTreeMap::from([(1, 4), (2, 3)]),
            scratch: Vec::new(),
        }
    );

    let (header, current) = Snapshot::decode::<RideStats>(&bytes).expect("v3 reads v1");
    assert_eq!(header.state_version, 1);
    assert_eq!(
        current,
        RideStats {
            per_zone: BTreeMap::from([
                (1, ZoneTotals { rides: 4, cents: 0 }),
                (2, ZoneTotals { rides: 3, cents: 0 }),
            ]),
            last_window: None,
            session: v2::Session::Idle,
            log_tail: Vec::new(),
            label: "7 rides".into(),
            cache: vec![0, 0],
        }
    );
}

#[test]
fn v2_snapshot_restores_through_the_chain() {
    let bytes = read("ride-stats-v2.snap");

    let (_, as_v2) = Snapshot::decode::<v2::RideStats>(&bytes).expect("v2 reads v2");
    let mut expected_v2 = v2::sample();
    expected_v2.session = v2::Session::Open {
        user: "ada".into(),
        socket: None,
    };
    assert_eq!(as_v2, expected_v2);

    let (header, current) = Snapshot::decode::<RideStats>(&bytes).expect("v3 reads v2");
    assert_eq!(header.state_version, 2);
    assert_eq!(
        current,
        RideStats {
            per_zone: BTreeMap::from([
                (1, ZoneTotals { rides: 5, cents: 2_150 }),
                (3, ZoneTotals { rides: 7, cents: 4_000 }),
            ]),
            last_window: Some(WindowId::new(1_700_000_000, 59)),
            session: v2::Session::Open {
                user: "ada".into(),
                socket: None
            },
            log_tail: Vec::new(),
            label: "12 rides".into(),
            cache: vec![0, 0],
        }
    );
}

#[test]
fn v3_snapshot_restores_exactly() {
    let bytes = read("ride-stats-v3.snap");
    let (header, current) = Snapshot::decode::<RideStats>(&bytes).expect("v3 reads v3");
    assert_eq!(header.state_version, 3);
    let mut expected = v3::sample();
    expected.cache = vec![0, 0];
    assert_eq!(current, expected);
    // Today's encoder writes the same bytes as the committed file.
    assert_eq!(
        without_description(&Snapshot::encode(&v3::sample(), SnapshotMeta::new("ride-stats", WINDOW)).expect("encode")),
        bytes
    );
}

/// Same name and version as the current type, other fields: a struct
/// changed without a version bump.
mod changed {
    use super::*;

    #[derive(Debug, Checkpoint)]
    #[checkpoint(version = 3)]
    pub(crate) struct RideStats {
        pub(crate) per_zone: BTreeMap<u32, ZoneTotals>,
        pub(crate) last_window: Option<WindowId>,
        pub(crate) label: String,
    }
}

#[test]
fn same_version_other_layout_is_a_layout_mismatch() {
    let bytes = read("ride-stats-v3.snap");
    let err = Snapshot::decode::<changed::RideStats>(&bytes).expect_err("layouts differ");
    let expected_fingerprint = changed::RideStats::FINGERPRINT;
    let found_fingerprint = v3::RideStats::FINGERPRINT;
    assert_ne!(expected_fingerprint, found_fingerprint);
    match &err {
        SnapshotError::LayoutMismatch {
            expected_type,
            version,
            expected_fingerprint: expected,
            found_type,
            found_fingerprint: found,
        } => {
            assert_eq!(*expected_type, "RideStats");
            assert_eq!(*version, 3);
            assert_eq!(*expected, expected_fingerprint);
            assert_eq!(found_type, "RideStats");
            assert_eq!(*found, found_fingerprint);
        }
        other => panic!("expected LayoutMismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("RideStats version 3"), "{message}");
    assert!(message.contains(&format!("{expected_fingerprint:#018x}")), "{message}");
    assert!(message.contains(&format!("{found_fingerprint:#018x}")), "{message}");
}

#[test]
fn newer_version_is_unknown() {
    let bytes = read("ride-stats-v3.snap");
    let err = Snapshot::decode::<v2::RideStats>(&bytes).expect_err("v2 cannot read v3");
    match &err {
        SnapshotError::UnknownStateVersion {
            expected_type,
            expected_version,
            found_type,
            found_version,
            found_fingerprint,
        } => {
            assert_eq!(*expected_type, "RideStats");
            assert_eq!(*expected_version, 2);
            assert_eq!(found_type, "RideStats");
            assert_eq!(*found_version, 3);
            assert_eq!(*found_fingerprint, v3::RideStats::FINGERPRINT);
        }
        other => panic!("expected UnknownStateVersion, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("RideStats is version 2"), "{message}");
    assert!(message.contains("version 3"), "{message}");
    assert!(
        message.contains(&format!("{:#018x}", v3::RideStats::FINGERPRINT)),
        "{message}"
    );
}

/// A state written as version 0 by a hand-written impl: older than the
/// whole chain.
struct Ancient;

impl Checkpoint for Ancient {
    const TYPE_NAME: &'static str = "Ancient";
    const VERSION: u32 = 0;
    const FINGERPRINT: u64 = LayoutHasher::new().write_str("Ancient").finish();

    fn encode_state<W: std::io::Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        payload::encode(&0u8, out)
    }

    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
        payload::decode::<u8>(input).map(|_| Ancient)
    }
}

#[test]
fn version_older_than_the_chain_is_unknown_and_names_the_newest_type() {
    let bytes = Snapshot::encode(&Ancient, SnapshotMeta::new("ride-stats", WINDOW)).expect("encode");
    let err = Snapshot::decode::<RideStats>(&bytes).expect_err("no step reads version 0");
    match &err {
        SnapshotError::UnknownStateVersion {
            expected_type,
            expected_version,
            found_type,
            found_version,
            ..
        } => {
            assert_eq!(*expected_type, "RideStats");
            assert_eq!(*expected_version, 3);
            assert_eq!(found_type, "Ancient");
            assert_eq!(*found_version, 0);
        }
        other => panic!("expected UnknownStateVersion, got {other:?}"),
    }
}

/// The chain checks each step's fingerprint: a v1 snapshot whose layout
/// does not match v1's is refused, not decoded into garbage.
mod changed_v1 {
    use super::*;

    #[derive(Debug, Checkpoint)]
    pub(crate) struct RideStats {
        pub(crate) per_zone: BTreeMap<u32, u64>,
        pub(crate) rides: u64,
    }
}

#[test]
fn older_step_with_other_layout_is_a_layout_mismatch() {
    let bytes = Snapshot::encode(
        &changed_v1::RideStats {
            per_zone: BTreeMap::new(),
            rides: 1,
        },
        SnapshotMeta::new("ride-stats", WINDOW),
    )
    .expect("encode");
    let err = Snapshot::decode::<RideStats>(&bytes).expect_err("v1 layout differs");
    assert!(
        matches!(err, SnapshotError::LayoutMismatch { version: 1, .. }),
        "expected a version 1 LayoutMismatch, got {err:?}"
    );
}

// ---------------------------------------------------------------------------
// The library's io operators. `line-input-v1.snap` and
// `exactly-once-file-sink-v1.snap` were written by a real job (input
// `/tmp/checkpoint-golden/input.txt`, 5 lines of 31 bytes, output directory
// `/tmp/checkpoint-golden/out`) with the version 1 layouts, which saved the
// input's path and `lines_per_call` and the sink's directory. Version 2
// makes those configuration: the saved values are read and dropped, and
// the runtime sets this run's.

/// Fingerprints of the version 1 layouts, as the golden files record them.
const LINE_INPUT_V1_FINGERPRINT: u64 = 0x2f89_d6e7_e0e1_0ad6;
const FILE_SINK_V1_FINGERPRINT: u64 = 0x11a7_ba14_642f_4360;

/// What the runtime does after decoding: this run's configuration.
fn with_config_of<T: Checkpoint>(mut restored: T, this_run: &T) -> T {
    let config = this_run.capture_config().expect("the type has config fields");
    restored.restore_config(&*config);
    restored
}

#[test]
fn io_golden_headers() {
    use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput};

    for (name, operator, type_name, fingerprint) in [
        ("line-input-v1.snap", "lines", "LineInput", LINE_INPUT_V1_FINGERPRINT),
        (
            "exactly-once-file-sink-v1.snap",
            "sink",
            "ExactlyOnceFileSink",
            FILE_SINK_V1_FINGERPRINT,
        ),
    ] {
        let header = Snapshot::verify(&read(name)).expect("valid snapshot");
        assert_eq!(header.operator, operator, "{name}");
        assert_eq!(header.type_name, type_name, "{name}");
        assert_eq!(header.state_version, 1, "{name}");
        assert_eq!(header.fingerprint, fingerprint, "{name}");
    }
    // Version 2 leaves the configuration out of the layout.
    assert_eq!(LineInput::VERSION, 2);
    assert_eq!(<ExactlyOnceFileSink<String>>::VERSION, 2);
    assert_ne!(LineInput::FINGERPRINT, LINE_INPUT_V1_FINGERPRINT);
    assert_ne!(<ExactlyOnceFileSink<String>>::FINGERPRINT, FILE_SINK_V1_FINGERPRINT);
}

#[test]
fn line_input_v1_snapshot_restores_with_this_runs_path() {
    use checkpoint_runtime::io::LineInput;

    let (header, restored) = Snapshot::decode::<LineInput>(&read("line-input-v1.snap")).expect("v1 restores");
    assert_eq!(header.state_version, 1);
    assert_eq!(restored.offset(), 31, "the state survives the upgrade");
    assert_eq!(restored.path(), std::path::Path::new(""), "the saved path is dropped");
    let restored = with_config_of(restored, &LineInput::new("/jobs/new/input.txt").lines_per_call(3));
    assert_eq!(restored.path(), std::path::Path::new("/jobs/new/input.txt"));
    assert_eq!(restored.offset(), 31);
}

#[test]
fn file_sink_v1_snapshot_restores_with_this_runs_directory() {
    use checkpoint_runtime::io::ExactlyOnceFileSink;

    let bytes = read("exactly-once-file-sink-v1.snap");
    let (header, restored) = Snapshot::decode::<ExactlyOnceFileSink<String>>(&bytes).expect("v1 restores");
    assert_eq!(header.state_version, 1);
    assert_eq!(restored.last_published(), None);
    assert_eq!(
        restored.dir(),
        std::path::Path::new(""),
        "the saved directory is dropped"
    );
    let restored = with_config_of(restored, &ExactlyOnceFileSink::<String>::new("/jobs/new/out"));
    assert_eq!(restored.dir(), std::path::Path::new("/jobs/new/out"));
}

// ---------------------------------------------------------------------------
// Keyed state. `keyed-inline-v1.snap` is a state with a `KeyedMap` written
// by `Snapshot::encode`: the map's groups inline in the payload (layout
// byte 1, `docs/FORMAT.md`, "Keyed state"). `keyed-incremental-v1.snap` is
// the second incremental snapshot (`Snapshot::freeze` + `finish`) of the
// same kind of state: its header has the chunk table (flag bit 0), and its
// chunks are `keyed-incremental-v1.chunk-<chunk id>`, some written by the
// first checkpoint and referred to again, one written by the second. They
// are written by `write_keyed_golden_snapshots` (same convention as above:
// ignored, and a no-op without `CHECKPOINT_WRITE_GOLDEN=1`):
//
// ```text
// CHECKPOINT_WRITE_GOLDEN=1 cargo test -p checkpoint-tests --test golden -- --ignored write_keyed_golden_snapshots
// ```

mod keyed {
    use super::*;
    use checkpoint_core::{ChunkId, KeyGroups, KeyedMap, MemoryStorageAgent, StorageAgent, StorageError};

    /// A keyed state as an operator would hold it: word counts and a label.
    #[derive(Debug, PartialEq, Checkpoint)]
    pub(crate) struct WordCounts {
        #[checkpoint(keyed)]
        pub(crate) counts: KeyedMap<String, u64>,
        pub(crate) label: String,
    }

    pub(crate) const OPERATOR: &str = "words";
    pub(crate) const INLINE: &str = "keyed-inline-v1.snap";
    pub(crate) const INCREMENTAL: &str = "keyed-incremental-v1.snap";
    pub(crate) const FIRST: WindowId = WindowId::new(1_700_000_000, 60);
    pub(crate) const SECOND: WindowId = WindowId::new(1_700_000_000, 63);

    pub(crate) fn key_groups() -> KeyGroups {
        KeyGroups::new(4).expect("valid")
    }

    pub(crate) const WORDS: [(&str, u64); 7] = [
        ("apex", 3),
        ("flink", 5),
        ("kafka", 1),
        ("spark", 8),
        ("storm", 2),
        ("beam", 13),
        ("samza", 21),
    ];

    /// The state of the inline file, and of the first incremental checkpoint.
    pub(crate) fn sample() -> WordCounts {
        let mut counts = KeyedMap::with_key_groups(key_groups());
        counts.extend(WORDS.iter().map(|(w, n)| ((*w).to_owned(), *n)));
        WordCounts {
            counts,
            label: "word counts".into(),
        }
    }

    /// The change between the two incremental checkpoints: one key.
    pub(crate) fn change(state: &mut WordCounts) {
        *state.counts.get_mut("flink").expect("present") += 100;
        state.label = "word counts, later".into();
    }

    /// The expected state of the incremental file.
    pub(crate) fn changed_sample() -> WordCounts {
        let mut state = sample();
        change(&mut state);
        state
    }

    pub(crate) fn chunk_file(id: ChunkId) -> String {
        format!("keyed-incremental-v1.chunk-{id}")
    }

    /// What today's code writes for the incremental file: two checkpoints
    /// into a memory store; the second snapshot and the chunks it refers to.
    pub(crate) fn incremental_today() -> (Vec<u8>, Vec<(ChunkId, Vec<u8>)>) {
        let storage = MemoryStorageAgent::new();
        let mut state = sample();
        let frozen = Snapshot::freeze(&state, SnapshotMeta::new(OPERATOR, FIRST), Vec::new(), &[]).expect("freeze");
        let first = frozen
            .finish(|chunks| storage.save_chunks(OPERATOR, chunks))
            .expect("finish");
        storage.save(OPERATOR, FIRST, &first.bytes).expect("save");
        change(&mut state);
        let frozen = Snapshot::freeze(
            &state,
            SnapshotMeta::new(OPERATOR, SECOND),
            first.payload_buffer,
            &first.chunks,
        )
        .expect("freeze");
        let second = frozen
            .finish(|chunks| storage.save_chunks(OPERATOR, chunks))
            .expect("finish");
        assert_eq!(second.written_chunks, 1, "one group changed");
        let chunks = second
            .chunks
            .iter()
            .map(|c| (c.id, storage.load_chunk(OPERATOR, c.id).expect("chunk")))
            .collect();
        (second.bytes, chunks)
    }

    /// Loads a chunk from its golden file.
    pub(crate) fn load_golden_chunk(operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        std::fs::read(data(&chunk_file(id))).map_err(|_| StorageError::ChunkNotFound {
            operator: operator.to_owned(),
            chunk: id.to_string(),
        })
    }
}

/// Writes the keyed golden files. Ignored, and a no-op without
/// `CHECKPOINT_WRITE_GOLDEN=1`: see the section above.
#[test]
#[ignore = "writes tests/data/; run only to deliberately replace the keyed golden snapshots"]
fn write_keyed_golden_snapshots() {
    if std::env::var_os("CHECKPOINT_WRITE_GOLDEN").is_none_or(|v| v != "1") {
        eprintln!("set CHECKPOINT_WRITE_GOLDEN=1 to write the golden snapshots");
        return;
    }
    // Old chunk files would be left behind by a changed chunk table.
    for entry in std::fs::read_dir(data("")).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("keyed-incremental-v1.chunk-") {
            std::fs::remove_file(&path).expect("remove old chunk file");
        }
    }
    let inline = Snapshot::encode(&keyed::sample(), SnapshotMeta::new(keyed::OPERATOR, keyed::FIRST)).expect("encode");
    std::fs::write(data(keyed::INLINE), inline).expect("write golden snapshot");
    let (snapshot, chunks) = keyed::incremental_today();
    std::fs::write(data(keyed::INCREMENTAL), snapshot).expect("write golden snapshot");
    for (id, bytes) in chunks {
        std::fs::write(data(&keyed::chunk_file(id)), bytes).expect("write golden chunk");
    }
}

#[test]
fn keyed_inline_snapshot_is_stable_and_restores() {
    let bytes = read(keyed::INLINE);
    let header = Snapshot::verify(&bytes).expect("valid snapshot");
    assert_eq!(header.operator, keyed::OPERATOR);
    assert_eq!(header.window, keyed::FIRST);
    assert_eq!(header.type_name, "WordCounts");
    assert_eq!(header.state_version, 1);
    assert_eq!(header.fingerprint, keyed::WordCounts::FINGERPRINT);
    assert!(header.chunks.is_empty(), "inline: no chunk table");
    // The payload starts with the map: layout byte 1 (inline), then the
    // key-group count 4 as a varint.
    let payload = &bytes[bytes.len() - 4 - header.payload_len as usize..bytes.len() - 4];
    assert_eq!(&payload[..2], &[1, 4], "inline layout, 4 key groups");

    let (_, restored) = Snapshot::decode::<keyed::WordCounts>(&bytes).expect("decode");
    assert_eq!(restored, keyed::sample());
    assert_eq!(restored.counts.key_groups(), Some(keyed::key_groups()));
    assert_eq!(restored.counts.len(), keyed::WORDS.len());
    for (word, count) in keyed::WORDS {
        assert_eq!(restored.counts.get(word), Some(&count), "{word}");
    }
    assert_eq!(restored.label, "word counts");
    // Through the chunk-aware decoder too (no chunks to load).
    let (_, restored) = Snapshot::decode_with_chunks::<keyed::WordCounts>(&bytes, keyed::OPERATOR, None, |_, id| {
        panic!("an inline snapshot loads no chunk ({id})")
    })
    .expect("decode_with_chunks");
    assert_eq!(restored, keyed::sample());

    // Today's encoder writes the same bytes as the committed file.
    assert_eq!(
        without_description(
            &Snapshot::encode(&keyed::sample(), SnapshotMeta::new(keyed::OPERATOR, keyed::FIRST)).expect("encode")
        ),
        bytes
    );
}

#[test]
fn keyed_incremental_snapshot_is_stable_and_restores() {
    let bytes = read(keyed::INCREMENTAL);
    let header = Snapshot::verify(&bytes).expect("valid snapshot");
    assert_eq!(header.operator, keyed::OPERATOR);
    assert_eq!(header.window, keyed::SECOND);
    assert_eq!(header.type_name, "WordCounts");
    assert_eq!(header.fingerprint, keyed::WordCounts::FINGERPRINT);
    // The header's flags (after the 8 magic bytes and the format version)
    // have bit 0 set: a chunk table follows.
    let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
    assert_eq!(flags, checkpoint_core::FLAG_CHUNKS, "flags");
    // Every non-empty group is a chunk; the changed one ("flink"'s) was
    // written by the second checkpoint, the others by the first.
    let groups: std::collections::BTreeSet<u32> = keyed::WORDS
        .iter()
        .map(|(w, _)| keyed::key_groups().group_of(&(*w).to_owned()))
        .collect();
    assert_eq!(
        header.chunks.iter().map(|c| c.id.group).collect::<Vec<_>>(),
        groups.iter().copied().collect::<Vec<_>>()
    );
    let flink = keyed::key_groups().group_of(&"flink".to_owned());
    for chunk in &header.chunks {
        assert_eq!(chunk.id.map, 0);
        let expected_window = if chunk.id.group == flink {
            keyed::SECOND
        } else {
            keyed::FIRST
        };
        assert_eq!(chunk.id.window, expected_window, "{}", chunk.id);
    }
    assert!(header.chunks.len() >= 2, "some chunks are referred to again");
    // The chunk files are exactly the table's, and each is the chunk the
    // table describes.
    let mut files: Vec<String> = std::fs::read_dir(data(""))
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("keyed-incremental-v1.chunk-"))
        .collect();
    files.sort();
    let mut expected_files: Vec<String> = header.chunks.iter().map(|c| keyed::chunk_file(c.id)).collect();
    expected_files.sort();
    assert_eq!(files, expected_files);
    for chunk in &header.chunks {
        let chunk_bytes = read(&keyed::chunk_file(chunk.id));
        assert_eq!(&chunk_bytes[..8], b"CKPTCHNK", "{}", chunk.id);
        assert_eq!(chunk_bytes.len() as u64, chunk.len, "{}", chunk.id);
        let (chunk_header, _) = checkpoint_core::Chunk::decode(&chunk_bytes).expect("valid chunk");
        assert_eq!(chunk_header.operator, keyed::OPERATOR);
        assert_eq!(chunk_header.id, chunk.id);
        assert_eq!(chunk_header.key_groups, 4);
        assert_eq!(chunk_header.entries, chunk.entries);
    }

    let (_, restored) =
        Snapshot::decode_with_chunks::<keyed::WordCounts>(&bytes, keyed::OPERATOR, None, keyed::load_golden_chunk)
            .expect("decode_with_chunks");
    let expected = keyed::changed_sample();
    assert_eq!(restored, expected);
    assert_eq!(restored.counts.get("flink"), Some(&105));
    assert_eq!(restored.counts.get("samza"), Some(&21));
    assert_eq!(restored.label, "word counts, later");
    assert_eq!(restored.counts.key_groups(), Some(keyed::key_groups()));

    // Today's code writes the same snapshot and the same chunks.
    let (snapshot, chunks) = keyed::incremental_today();
    assert_eq!(without_description(&snapshot), bytes, "snapshot bytes");
    assert_eq!(chunks.len(), header.chunks.len());
    for (id, chunk_bytes) in chunks {
        assert_eq!(chunk_bytes, read(&keyed::chunk_file(id)), "chunk {id}");
    }
}
