//! Layout descriptions: what the derive records, that snapshots carry it,
//! and that a description which does not fit its snapshot is refused.

use std::collections::HashMap;

use checkpoint_core::{
    Checkpoint, Container, DescriptionError, FieldKind, Format, KeyedMap, NamedFormat, Shape, Snapshot, SnapshotMeta,
    StateDescription, Variant, VariantContent, WindowId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    Idle,
    Running(u32),
    Paused { since: i64, reason: String },
    Pair(u8, bool),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Zone {
    name: String,
    phases: Vec<Phase>,
}

#[derive(Debug, Clone, PartialEq, Default, Checkpoint)]
struct Inner {
    hits: u64,
}

#[derive(Debug, Default, Checkpoint)]
struct Everything {
    count: u64,
    zones: HashMap<u32, Zone>,
    last: Option<Phase>,
    raw: Vec<u8>,
    #[checkpoint(nested)]
    inner: Inner,
    #[checkpoint(keyed)]
    per_key: KeyedMap<String, (u64, i32)>,
    #[checkpoint(transient)]
    scratch: Vec<String>,
    pair: (u16, [u8; 3]),
}

#[derive(Debug, PartialEq, Checkpoint)]
enum Mode {
    Off,
    On {
        level: u8,
        #[checkpoint(transient)]
        cache: Vec<u8>,
    },
}

fn plain(field: &checkpoint_core::StateField) -> (&str, &Format) {
    match &field.kind {
        FieldKind::Plain { type_text, format } => (type_text.as_str(), format),
        other => panic!("{} is not plain: {other:?}", field.name),
    }
}

#[test]
fn the_derive_describes_every_persisted_field_in_order() {
    let description = StateDescription::of::<Everything>().expect("described");
    assert_eq!(description.type_name, "Everything");
    assert_eq!(description.fingerprint, Everything::FINGERPRINT);
    description.check().expect("consistent");
    let Shape::Struct { fields } = &description.shape else {
        panic!("a struct: {:?}", description.shape)
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["count", "zones", "last", "raw", "inner", "per_key", "pair"]);
    assert_eq!(plain(&fields[0]), ("u64", &Format::U64));
    assert_eq!(
        plain(&fields[1]),
        (
            "HashMap<u32,Zone>",
            &Format::Map {
                key: Box::new(Format::U32),
                value: Box::new(Format::Named("Zone".into()))
            }
        )
    );
    assert_eq!(
        plain(&fields[2]).1,
        &Format::Option(Box::new(Format::Named("Phase".into())))
    );
    assert_eq!(plain(&fields[3]), ("Vec<u8>", &Format::Bytes));
    match &fields[4].kind {
        FieldKind::Nested { state } => {
            assert_eq!(state.fingerprint, Inner::FINGERPRINT);
            assert_eq!(
                state.shape,
                Shape::Struct {
                    fields: vec![checkpoint_core::StateField {
                        name: "hits".into(),
                        kind: FieldKind::Plain {
                            type_text: "u64".into(),
                            format: Format::U64
                        },
                    }]
                }
            );
        }
        other => panic!("nested: {other:?}"),
    }
    match &fields[5].kind {
        FieldKind::Keyed { type_text, key, value } => {
            assert_eq!(type_text, "KeyedMap<String,(u64,i32)>");
            assert_eq!(key, &Format::Str);
            assert_eq!(value, &Format::Tuple(vec![Format::U64, Format::I32]));
        }
        other => panic!("keyed: {other:?}"),
    }
    assert_eq!(
        plain(&fields[6]).1,
        &Format::Tuple(vec![Format::U16, Format::Tuple(vec![Format::U8; 3])])
    );
    // Every variant of an enum met only inside a sequence inside a map.
    assert_eq!(
        description.types.get("Phase"),
        Some(&Container::Enum(vec![
            Variant {
                name: "Idle".into(),
                content: VariantContent::Unit
            },
            Variant {
                name: "Running".into(),
                content: VariantContent::Newtype(Format::U32)
            },
            Variant {
                name: "Paused".into(),
                content: VariantContent::Struct(vec![
                    NamedFormat {
                        name: "since".into(),
                        format: Format::I64
                    },
                    NamedFormat {
                        name: "reason".into(),
                        format: Format::Str
                    },
                ])
            },
            Variant {
                name: "Pair".into(),
                content: VariantContent::Tuple(vec![Format::U8, Format::Bool])
            },
        ]))
    );
    assert_eq!(
        description.types.get("Zone"),
        Some(&Container::Struct(vec![
            NamedFormat {
                name: "name".into(),
                format: Format::Str
            },
            NamedFormat {
                name: "phases".into(),
                format: Format::Seq(Box::new(Format::Named("Phase".into())))
            },
        ]))
    );
}

#[test]
fn enum_states_are_described_by_variant() {
    let description = StateDescription::of::<Mode>().expect("described");
    description.check().expect("consistent");
    let Shape::Enum { variants } = &description.shape else {
        panic!("an enum")
    };
    assert_eq!(variants.len(), 2);
    assert_eq!(variants[1].name, "On");
    assert_eq!(variants[1].fields.len(), 1, "the transient field is not described");
}

#[test]
fn a_snapshot_carries_its_description_and_a_hand_written_state_none() {
    let mut state = Everything {
        count: 3,
        ..Everything::default()
    };
    state.zones.insert(
        7,
        Zone {
            name: "z".into(),
            phases: vec![Phase::Idle],
        },
    );
    let window = WindowId::new(1, 2);
    let bytes = Snapshot::encode(&state, SnapshotMeta::new("op", window)).expect("encodes");
    let header = Snapshot::verify(&bytes).expect("valid");
    let description = StateDescription::from_json(header.description.as_deref().expect("carried")).expect("parses");
    description.check_against(&header).expect("fits its snapshot");
    assert_eq!(header.total_len(), bytes.len() as u64);
    let (_, back) = Snapshot::decode::<Everything>(&bytes).expect("decodes");
    assert_eq!(back.zones, state.zones);
    assert!(back.scratch.is_empty());

    // `u64` implements `Checkpoint` by hand, without `describe`.
    let bytes = Snapshot::encode(&5u64, SnapshotMeta::new("op", window)).expect("encodes");
    assert_eq!(Snapshot::verify(&bytes).expect("valid").description, None);
}

#[test]
fn a_description_that_does_not_give_its_fingerprint_is_refused() {
    let good = StateDescription::of::<Everything>().expect("described");
    let header = |d: &StateDescription| {
        let bytes =
            Snapshot::encode(&Everything::default(), SnapshotMeta::new("op", WindowId::new(1, 1))).expect("encodes");
        let mut header = Snapshot::verify(&bytes).expect("valid");
        header.description = Some(d.to_json());
        header
    };

    // Two fields swapped.
    let mut swapped = good.clone();
    if let Shape::Struct { fields } = &mut swapped.shape {
        fields.swap(0, 1);
    }
    assert!(matches!(
        swapped.check_against(&header(&swapped)),
        Err(DescriptionError::FingerprintMismatch { .. })
    ));

    // A type text changed.
    let mut retyped = good.clone();
    if let Shape::Struct { fields } = &mut retyped.shape
        && let FieldKind::Plain { type_text, .. } = &mut fields[0].kind
    {
        *type_text = "i64".into();
    }
    assert!(matches!(
        retyped.check(),
        Err(DescriptionError::FingerprintMismatch { .. } | DescriptionError::Contradiction { .. })
    ));

    // A format that contradicts its type text, fingerprint intact.
    let mut reformatted = good.clone();
    if let Shape::Struct { fields } = &mut reformatted.shape
        && let FieldKind::Plain { format, .. } = &mut fields[0].kind
    {
        *format = Format::I64;
    }
    assert!(matches!(
        reformatted.check(),
        Err(DescriptionError::Contradiction { .. })
    ));

    // The description of another type.
    let other = StateDescription::of::<Inner>().expect("described");
    assert!(matches!(
        other.check_against(&header(&good)),
        Err(DescriptionError::FingerprintMismatch { .. })
    ));

    assert!(matches!(
        StateDescription::from_json("{\"type_name\": 3}"),
        Err(DescriptionError::Malformed(_))
    ));
    good.check_against(&header(&good)).expect("the real one fits");
}

#[test]
fn a_damaged_description_length_is_an_error_not_a_panic() {
    let bytes =
        Snapshot::encode(&Everything::default(), SnapshotMeta::new("op", WindowId::new(1, 1))).expect("encodes");
    for cut in 0..bytes.len() {
        assert!(Snapshot::verify(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let header = Snapshot::read_header(&bytes).expect("valid");
    let len_at = bytes.len() - 4 - header.description.as_ref().expect("carried").len() - 4;
    for len in [
        0u32,
        1,
        u32::MAX,
        (header.description.as_ref().expect("carried").len() + 1) as u32,
    ] {
        let mut damaged = bytes.clone();
        damaged[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        assert!(Snapshot::read_header(&damaged).is_err(), "length {len}");
    }
    // A payload length near the top of `u64`, with the description flag
    // set: every length sum is checked, none overflows.
    for back in [0u64, 1, 4, 8, 44, 48, 52, 100, 1 << 20] {
        let mut damaged = bytes.clone();
        damaged[36..44].copy_from_slice(&(u64::MAX - back).to_le_bytes());
        assert!(
            Snapshot::read_header(&damaged).is_err(),
            "payload length u64::MAX - {back}"
        );
        assert!(Snapshot::verify(&damaged).is_err(), "payload length u64::MAX - {back}");
    }
}

#[test]
fn untraceable_types_leave_the_snapshot_without_a_description() {
    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    struct Node {
        next: Option<Box<Node>>,
    }
    #[derive(Debug, Default, Checkpoint)]
    struct Recursive {
        head: Node,
    }
    assert!(matches!(
        StateDescription::of::<Recursive>(),
        Err(DescriptionError::Untraceable { .. })
    ));
    let bytes = Snapshot::encode(&Recursive::default(), SnapshotMeta::new("op", WindowId::new(1, 1))).expect("encodes");
    assert_eq!(Snapshot::verify(&bytes).expect("valid").description, None);
}

/// The library's own operators describe themselves, so `checkpoint dump`
/// decodes every job that uses them.
#[test]
fn the_library_operators_are_described() {
    use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput, SortWindow};
    for description in [
        StateDescription::of::<LineInput>(),
        StateDescription::of::<ExactlyOnceFileSink<String>>(),
    ] {
        let description = description.expect("described");
        description.check().expect("consistent");
        assert!(
            matches!(&description.shape, Shape::Struct { fields } if !fields.is_empty()),
            "{description:?}"
        );
    }
    // It keeps nothing across windows.
    let sort = StateDescription::of::<SortWindow<String>>().expect("described");
    assert_eq!(sort.shape, Shape::Stateless);
    sort.check().expect("consistent");
}

mod first {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub(crate) enum Side {
        Buy,
        Sell,
    }
}

mod second {
    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    pub(crate) enum Side {
        Sell,
        Buy,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Leaf {
    X,
    Y(u8),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Outer {
    A,
    B(Leaf),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Slot<T> {
    Empty,
    Full(T),
}

/// Enums are where a tracer can go wrong: one met only inside a later
/// variant of another, one generic enum with two type arguments, two enums
/// with one serde name. Each is described exactly, or not at all.
#[test]
fn enums_are_described_exactly_or_not_at_all() {
    #[derive(Debug, Default, Checkpoint)]
    struct Nested {
        outer: Option<Outer>,
        registers: Option<[u8; 32]>,
    }
    let description = StateDescription::of::<Nested>().expect("described");
    assert_eq!(
        description.types.get("Leaf"),
        Some(&Container::Enum(vec![
            Variant {
                name: "X".into(),
                content: VariantContent::Unit
            },
            Variant {
                name: "Y".into(),
                content: VariantContent::Newtype(Format::U8)
            },
        ]))
    );
    let Shape::Struct { fields } = &description.shape else {
        panic!("a struct")
    };
    assert_eq!(
        plain(&fields[1]).1,
        &Format::Option(Box::new(Format::Array {
            content: Box::new(Format::U8),
            size: 32
        })),
        "an array is described once, not 32 times"
    );

    #[derive(Debug, Default, Checkpoint)]
    struct TwoSlots {
        small: Option<Slot<u8>>,
        signed: Option<Slot<i8>>,
    }
    assert!(matches!(
        StateDescription::of::<TwoSlots>(),
        Err(DescriptionError::Untraceable { reason, .. }) if reason.contains("two different types are named `Slot`")
    ));

    #[derive(Debug, Default, Checkpoint)]
    struct Book {
        mine: Option<first::Side>,
        theirs: Option<second::Side>,
    }
    assert!(matches!(
        StateDescription::of::<Book>(),
        Err(DescriptionError::Untraceable { reason, .. }) if reason.contains("two different types are named `Side`")
    ));
}

/// Two types with one `type_name` (declared in two blocks of one function)
/// get their own descriptions.
#[test]
fn types_with_one_name_get_their_own_descriptions() {
    let a = {
        #[derive(Default, Checkpoint)]
        struct Alarm {
            level: u8,
        }
        (
            std::any::type_name::<Alarm>(),
            checkpoint_core::description_json_of::<Alarm>(),
        )
    };
    let b = {
        #[derive(Default, Checkpoint)]
        struct Alarm {
            level: String,
        }
        (
            std::any::type_name::<Alarm>(),
            checkpoint_core::description_json_of::<Alarm>(),
        )
    };
    assert_eq!(a.0, b.0, "the premise: one name");
    assert_ne!(a.1, b.1);
    assert!(b.1.expect("described").contains("\"str\""));
}

/// A partition's keyed state takes only keys of the groups it owns.
#[test]
fn an_edited_partition_keeps_only_its_own_keys() {
    use checkpoint_core::{KeyGroups, StableHash};
    #[derive(Debug, Default, Checkpoint)]
    struct Counts {
        #[checkpoint(keyed)]
        per_key: KeyedMap<u64, u64>,
    }
    let groups = KeyGroups::new(8).expect("groups");
    let owned = groups.range_of_partition(0, 2);
    let mine = (0..100u64)
        .find(|k| owned.contains(&groups.group_of(k)))
        .expect("a key of partition 0");
    let theirs = (0..100u64)
        .find(|k| !owned.contains(&groups.group_of(k)))
        .expect("a key of partition 1");
    assert_ne!(
        groups.group_of_hash(mine.stable_hash()),
        groups.group_of_hash(theirs.stable_hash())
    );
    let description = StateDescription::of::<Counts>().expect("described");
    let json = |key: u64| serde_json::json!({ "per_key": { key.to_string(): 1 } });
    let payload = description
        .encode_partition_payload(&json(mine), 8, owned.clone())
        .expect("its own key");
    let mut input = payload.as_slice();
    let back = Counts::decode_state(&mut input).expect("the job reads it");
    assert_eq!(back.per_key.get(&mine), Some(&1));
    let err = description
        .encode_partition_payload(&json(theirs), 8, owned)
        .expect_err("another partition's key");
    assert!(err.to_string().contains("does not own"), "{err}");
    description
        .encode_payload(&json(theirs), 8)
        .expect("an unpartitioned map takes any key");
}

/// The description's JSON, pinned: a change here is a change of the
/// snapshot format (`docs/FORMAT.md`), which older tools would misread.
#[test]
fn the_description_json_is_pinned() {
    #[derive(Default, Checkpoint)]
    struct Pinned {
        count: u64,
        names: Vec<String>,
        last: Option<(i32, bool)>,
        #[checkpoint(keyed)]
        per_key: KeyedMap<String, f64>,
        #[checkpoint(transient)]
        _cache: Vec<u8>,
    }
    let json = StateDescription::of::<Pinned>().expect("described").to_json();
    assert_eq!(json, PINNED, "{json}");
}

const PINNED: &str = concat!(
    r#"{"type_name":"Pinned","version":1,"fingerprint":11339603459262039009,"shape":{"struct":{"fields":["#,
    r#"{"name":"count","kind":{"plain":{"type_text":"u64","format":"u64"}}},"#,
    r#"{"name":"names","kind":{"plain":{"type_text":"Vec<String>","format":{"seq":"str"}}}},"#,
    r#"{"name":"last","kind":{"plain":{"type_text":"Option<(i32,bool)>","format":{"option":{"tuple":["i32","bool"]}}}}},"#,
    r#"{"name":"per_key","kind":{"keyed":{"type_text":"KeyedMap<String,f64>","key":"str","value":"f64"}}}]}}}"#,
);
