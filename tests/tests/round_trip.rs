//! Every shape the derive supports survives `Snapshot::encode` /
//! `Snapshot::decode`: persisted fields come back equal, transient fields
//! come back reset (to `Default::default()` or their `default = "fn"`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, WindowId};
use serde::{Deserialize, Serialize};

fn round_trip<T: Checkpoint>(state: &T) -> T {
    let window = WindowId::new(1_700_000_000, 41);
    let bytes = Snapshot::encode(state, SnapshotMeta::new("op", window)).expect("encode");
    let (header, restored) = Snapshot::decode::<T>(&bytes).expect("decode");
    assert_eq!(header.window, window);
    assert_eq!(header.type_name, T::TYPE_NAME);
    assert_eq!(header.state_version, T::VERSION);
    assert_eq!(header.fingerprint, T::FINGERPRINT);
    restored
}

/// Checks the encoding through `encode_state` alone too: decoding consumes
/// exactly the bytes written.
fn payload_round_trip<T: Checkpoint + Debug + PartialEq>(state: &T, expected: &T) {
    let mut buf = Vec::new();
    state.encode_state(&mut buf).expect("encode_state");
    let mut input = &buf[..];
    let back = T::decode_state(&mut input).expect("decode_state");
    assert!(input.is_empty(), "{} byte(s) left", input.len());
    assert_eq!(&back, expected);
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
struct ZoneTotals {
    rides: u64,
    cents: u64,
}

#[derive(Debug, PartialEq)]
struct LogHandle(&'static str);

fn open_log() -> LogHandle {
    LogHandle("reopened")
}

/// The example, more or less.
#[derive(Debug, PartialEq, Checkpoint)]
struct RideStats {
    per_zone: HashMap<u32, ZoneTotals>,
    last_window: Option<WindowId>,
    #[checkpoint(transient)]
    scratch: Vec<u8>,
    #[checkpoint(transient, default = "open_log")]
    log: LogHandle,
}

#[test]
fn named_struct_with_transient_fields() {
    let state = RideStats {
        per_zone: HashMap::from([(7, ZoneTotals { rides: 3, cents: 1250 }), (9, ZoneTotals::default())]),
        last_window: Some(WindowId::new(1_700_000_000, 40)),
        scratch: vec![1, 2, 3],
        log: LogHandle("live"),
    };
    let restored = round_trip(&state);
    assert_eq!(restored.per_zone, state.per_zone);
    assert_eq!(restored.last_window, state.last_window);
    assert_eq!(restored.scratch, Vec::<u8>::new());
    assert_eq!(restored.log, LogHandle("reopened"));
    const { assert!(!RideStats::STATELESS) };
    assert_eq!(RideStats::VERSION, 1);
    assert_eq!(RideStats::TYPE_NAME, "RideStats");
}

#[derive(Debug, PartialEq, Checkpoint)]
struct Pair(u32, #[checkpoint(transient)] Vec<String>, String);

#[test]
fn tuple_struct() {
    let state = Pair(5, vec!["gone".into()], "kept".into());
    let restored = round_trip(&state);
    assert_eq!(restored, Pair(5, Vec::new(), "kept".into()));
    payload_round_trip(&state, &Pair(5, Vec::new(), "kept".into()));
}

#[derive(Debug, PartialEq, Checkpoint)]
struct Marker;

#[derive(Debug, PartialEq, Checkpoint)]
struct Empty {}

#[test]
fn unit_and_empty_structs() {
    assert_eq!(round_trip(&Marker), Marker);
    assert_eq!(round_trip(&Empty {}), Empty {});
    let mut buf = Vec::new();
    Marker.encode_state(&mut buf).expect("encode_state");
    assert!(buf.is_empty());
}

fn ready() -> u8 {
    42
}

/// A state machine is state.
#[derive(Debug, PartialEq, Checkpoint)]
enum Session {
    Idle,
    Open {
        user: String,
        #[checkpoint(transient)]
        socket: Option<u32>,
        started: WindowId,
    },
    Closing(u64, #[checkpoint(transient, default = "ready")] u8),
    Done(),
}

#[test]
fn enum_with_transient_fields_in_variants() {
    assert_eq!(round_trip(&Session::Idle), Session::Idle);
    assert_eq!(round_trip(&Session::Done()), Session::Done());
    let open = Session::Open {
        user: "ada".into(),
        socket: Some(7),
        started: WindowId::new(1, 2),
    };
    assert_eq!(
        round_trip(&open),
        Session::Open {
            user: "ada".into(),
            socket: None,
            started: WindowId::new(1, 2)
        }
    );
    assert_eq!(round_trip(&Session::Closing(9, 0)), Session::Closing(9, 42));
}

#[test]
fn enum_index_out_of_range_is_an_error() {
    let mut buf = Vec::new();
    checkpoint_core::payload::encode(&9u32, &mut buf).expect("encode");
    let err = Session::decode_state(&mut &buf[..]).expect_err("no variant 9");
    assert_eq!(
        err.to_string(),
        "Session has no variant with index 9 (it has 4 variants)"
    );
}

#[derive(Debug, PartialEq, Checkpoint)]
enum Never {}

#[test]
fn empty_enum_decodes_to_an_error() {
    let mut buf = Vec::new();
    checkpoint_core::payload::encode(&0u32, &mut buf).expect("encode");
    assert!(Never::decode_state(&mut &buf[..]).is_err());
}

/// Generic: bounds only for the fields that use a type parameter.
#[derive(Debug, PartialEq, Checkpoint)]
struct Window<K: Ord, V, C> {
    per_key: BTreeMap<K, V>,
    count: u64,
    #[checkpoint(transient)]
    cache: Vec<V>,
    #[checkpoint(nested)]
    inner: C,
}

#[test]
fn generic_struct() {
    let state = Window {
        per_key: BTreeMap::from([("a".to_string(), 1.5f64), ("b".to_string(), -2.0)]),
        count: 2,
        cache: vec![9.0],
        inner: 77u64,
    };
    let restored = round_trip(&state);
    assert_eq!(restored.per_key, state.per_key);
    assert_eq!(restored.count, 2);
    assert!(restored.cache.is_empty());
    assert_eq!(restored.inner, 77);
}

/// A type parameter that is only transient needs no serde bound, only
/// `Default`.
#[derive(Debug, PartialEq, Checkpoint)]
struct WithTransientParam<H> {
    total: u64,
    #[checkpoint(transient)]
    handle: H,
}

/// Not serializable at all: fine, since it is never saved.
#[derive(Debug, Default, PartialEq)]
struct Connection(u8);

#[test]
fn transient_type_parameter_needs_no_serde() {
    let state = WithTransientParam {
        total: 10,
        handle: Connection(3),
    };
    assert_eq!(
        round_trip(&state),
        WithTransientParam {
            total: 10,
            handle: Connection(0)
        }
    );
}

/// `bound = "..."` replaces the inferred bounds.
#[derive(Debug, PartialEq, Checkpoint)]
#[checkpoint(bound = "T: serde::Serialize + serde::de::DeserializeOwned")]
struct Bounded<T> {
    items: Vec<T>,
}

#[test]
fn explicit_bound() {
    let state = Bounded {
        items: vec![1u16, 2, 3],
    };
    assert_eq!(round_trip(&state), state);
}

/// Nested states keep their own transient fields and fingerprint.
#[derive(Debug, PartialEq, Checkpoint)]
struct Inner {
    seen: u64,
    #[checkpoint(transient)]
    buffer: Vec<u64>,
}

#[derive(Debug, PartialEq, Checkpoint)]
struct Outer {
    name: String,
    #[checkpoint(nested)]
    first: Inner,
    #[checkpoint(nested)]
    second: Inner,
    #[checkpoint(nested)]
    count: u64,
    plain: Vec<ZoneTotals>,
}

#[test]
fn nested_fields() {
    let state = Outer {
        name: "outer".into(),
        first: Inner {
            seen: 1,
            buffer: vec![1, 2],
        },
        second: Inner {
            seen: 2,
            buffer: vec![3],
        },
        count: 3,
        plain: vec![ZoneTotals { rides: 1, cents: 2 }],
    };
    let restored = round_trip(&state);
    assert_eq!(restored.name, "outer");
    assert_eq!(
        restored.first,
        Inner {
            seen: 1,
            buffer: vec![]
        }
    );
    assert_eq!(
        restored.second,
        Inner {
            seen: 2,
            buffer: vec![]
        }
    );
    assert_eq!(restored.count, 3);
    assert_eq!(restored.plain, state.plain);
}

/// Byte buffers take serde's bytes path: one slice, not byte by byte.
#[derive(Debug, PartialEq, Checkpoint)]
struct Blobs {
    vec: Vec<u8>,
    boxed: Box<[u8]>,
    full: ::std::vec::Vec<u8>,
    array: [u8; 4],
    words: Vec<u16>,
}

#[test]
fn byte_buffers() {
    let state = Blobs {
        vec: (0..=255).collect(),
        boxed: vec![9; 300].into_boxed_slice(),
        full: Vec::new(),
        array: [1, 2, 3, 4],
        words: vec![1, 2],
    };
    assert_eq!(round_trip(&state), state);

    // postcard writes a byte buffer as a varint length then the bytes.
    let mut buf = Vec::new();
    Blobs {
        vec: vec![0xAA, 0xBB],
        boxed: Box::new([]),
        full: vec![0xCC],
        array: [0; 4],
        words: vec![],
    }
    .encode_state(&mut buf)
    .expect("encode_state");
    assert_eq!(buf, [2, 0xAA, 0xBB, 0, 1, 0xCC, 0, 0, 0, 0, 0]);
}

/// Stateless: nothing saved, restored from transient defaults.
#[derive(Debug, PartialEq, Checkpoint)]
#[checkpoint(stateless)]
struct Splitter {
    separator: char,
    #[checkpoint(default = "ready")]
    width: u8,
    #[checkpoint(transient)]
    seen: u64,
}

#[test]
fn stateless_struct() {
    const { assert!(Splitter::STATELESS) };
    let mut buf = Vec::new();
    Splitter {
        separator: ',',
        width: 3,
        seen: 5,
    }
    .encode_state(&mut buf)
    .expect("encode_state");
    assert!(buf.is_empty());
    assert_eq!(
        round_trip(&Splitter {
            separator: ',',
            width: 3,
            seen: 5
        }),
        Splitter {
            separator: '\0',
            width: 42,
            seen: 0
        }
    );
}

/// Raw identifiers and `Self` paths in `default`.
#[derive(Debug, PartialEq, Checkpoint)]
struct Raw {
    r#type: u8,
    #[checkpoint(transient, default = "Self::fresh")]
    r#loop: Vec<u8>,
}

impl Raw {
    fn fresh() -> Vec<u8> {
        vec![1]
    }
}

#[test]
fn raw_identifiers_and_self_default() {
    assert_eq!(
        round_trip(&Raw {
            r#type: 4,
            r#loop: vec![]
        }),
        Raw {
            r#type: 4,
            r#loop: vec![1]
        }
    );
}

/// Lifetimes are fine on transient fields.
#[derive(Debug, PartialEq, Checkpoint)]
struct Borrowing<'a> {
    count: u32,
    #[checkpoint(transient)]
    label: &'a str,
}

#[test]
fn lifetime_on_transient_field() {
    let name = String::from("label");
    let state = Borrowing { count: 1, label: &name };
    assert_eq!(round_trip(&state), Borrowing { count: 1, label: "" });
}

/// A generic upgrade chain: the bounds for `previous` are inferred too.
#[derive(Debug, PartialEq, Checkpoint)]
struct SeriesV1<T> {
    points: Vec<T>,
}

#[derive(Debug, PartialEq, Checkpoint)]
#[checkpoint(version = 2, previous = SeriesV1<T>)]
struct Series<T> {
    points: Vec<T>,
    dropped: u64,
}

impl<T> From<SeriesV1<T>> for Series<T> {
    fn from(old: SeriesV1<T>) -> Self {
        Series {
            points: old.points,
            dropped: 0,
        }
    }
}

#[test]
fn generic_upgrade_chain() {
    let meta = SnapshotMeta::new("series", WindowId::new(1, 1));
    let old = Snapshot::encode(
        &SeriesV1 {
            points: vec![1.5f32, 2.5],
        },
        meta,
    )
    .expect("encode");
    let (_, series) = Snapshot::decode::<Series<f32>>(&old).expect("upgrade");
    assert_eq!(
        series,
        Series {
            points: vec![1.5, 2.5],
            dropped: 0
        }
    );
    let current = Series {
        points: vec![3u8],
        dropped: 4,
    };
    assert_eq!(round_trip(&current), current);
}
