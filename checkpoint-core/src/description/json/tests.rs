use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::{
    Container, FieldKind, Format, NamedFormat, Shape, StateDescription, StateField, StateVariant, Variant,
    VariantContent,
};
use super::JsonError;
use crate::{Checkpoint, KeyGroups, KeyedMap, StableHash};

type Chunks = BTreeMap<(u32, u32), (u64, Vec<u8>)>;

fn plain(name: &str, format: Format) -> StateField {
    StateField {
        name: name.to_owned(),
        kind: FieldKind::Plain {
            type_text: String::new(),
            format,
        },
    }
}

fn keyed(name: &str, key: Format, value: Format) -> StateField {
    StateField {
        name: name.to_owned(),
        kind: FieldKind::Keyed {
            type_text: String::new(),
            key,
            value,
        },
    }
}

fn nested(name: &str, shape: Shape) -> StateField {
    StateField {
        name: name.to_owned(),
        kind: FieldKind::Nested {
            state: Box::new(StateDescription {
                type_name: "Inner".to_owned(),
                version: 1,
                fingerprint: 0,
                shape,
                types: BTreeMap::new(),
            }),
        },
    }
}

fn types(list: Vec<(&str, Container)>) -> BTreeMap<String, Container> {
    list.into_iter().map(|(name, c)| (name.to_owned(), c)).collect()
}

fn described(shape: Shape, list: Vec<(&str, Container)>) -> StateDescription {
    StateDescription {
        type_name: "Test".to_owned(),
        version: 1,
        fingerprint: 0,
        shape,
        types: types(list),
    }
}

fn fields(fields: Vec<StateField>, list: Vec<(&str, Container)>) -> StateDescription {
    described(Shape::Struct { fields }, list)
}

fn named(name: &str, format: Format) -> NamedFormat {
    NamedFormat {
        name: name.to_owned(),
        format,
    }
}

fn boxed(format: Format) -> Box<Format> {
    Box::new(format)
}

fn decode(d: &StateDescription, payload: &[u8]) -> Result<Value, JsonError> {
    d.decode_payload(payload, &Chunks::new())
}

/// `value`'s postcard bytes, as the only field of a state, decode to
/// `expected` and encode back to the same bytes.
fn agrees_with<T: Serialize>(value: &T, format: Format, list: Vec<(&str, Container)>, expected: Value) {
    let payload = postcard::to_stdvec(value).expect("postcard encodes");
    let d = fields(vec![plain("v", format)], list);
    let decoded = decode(&d, &payload).expect("decodes");
    assert_eq!(decoded, json!({ "v": expected }), "payload {payload:?}");
    assert_eq!(d.encode_payload(&decoded, 4).expect("encodes"), payload, "{decoded}");
}

fn agrees<T: Serialize>(value: &T, format: Format, expected: Value) {
    agrees_with(value, format, vec![], expected);
}

#[test]
fn integers_at_their_edges() {
    agrees(&0u8, Format::U8, json!(0));
    agrees(&u8::MAX, Format::U8, json!(255));
    agrees(&0i8, Format::I8, json!(0));
    agrees(&-1i8, Format::I8, json!(-1));
    agrees(&i8::MIN, Format::I8, json!(-128));
    agrees(&i8::MAX, Format::I8, json!(127));
    agrees(&0u16, Format::U16, json!(0));
    agrees(&u16::MAX, Format::U16, json!(65535));
    agrees(&-1i16, Format::I16, json!(-1));
    agrees(&i16::MIN, Format::I16, json!(-32768));
    agrees(&i16::MAX, Format::I16, json!(32767));
    agrees(&u32::MAX, Format::U32, json!(4_294_967_295u32));
    agrees(&-1i32, Format::I32, json!(-1));
    agrees(&i32::MIN, Format::I32, json!(-2_147_483_648i32));
    agrees(&i32::MAX, Format::I32, json!(2_147_483_647));
    agrees(&0u64, Format::U64, json!(0));
    agrees(&u64::MAX, Format::U64, json!(18_446_744_073_709_551_615u64));
    agrees(&-1i64, Format::I64, json!(-1));
    agrees(&i64::MIN, Format::I64, json!(-9_223_372_036_854_775_808i64));
    agrees(&i64::MAX, Format::I64, json!(9_223_372_036_854_775_807i64));
    agrees(&0u128, Format::U128, json!(0));
    agrees(
        &u128::from(u64::MAX),
        Format::U128,
        json!(18_446_744_073_709_551_615u64),
    );
    agrees(&(u128::from(u64::MAX) + 1), Format::U128, json!("18446744073709551616"));
    agrees(
        &u128::MAX,
        Format::U128,
        json!("340282366920938463463374607431768211455"),
    );
    agrees(&0i128, Format::I128, json!(0));
    agrees(&-1i128, Format::I128, json!(-1));
    agrees(
        &i128::from(i64::MIN),
        Format::I128,
        json!(-9_223_372_036_854_775_808i64),
    );
    agrees(&(i128::from(i64::MAX) + 1), Format::I128, json!("9223372036854775808"));
    agrees(
        &i128::MIN,
        Format::I128,
        json!("-170141183460469231731687303715884105728"),
    );
    agrees(
        &i128::MAX,
        Format::I128,
        json!("170141183460469231731687303715884105727"),
    );
}

#[test]
fn wide_integers_are_taken_as_numbers_or_strings() {
    let d = fields(vec![plain("a", Format::U128), plain("b", Format::I128)], vec![]);
    let expected = postcard::to_stdvec(&(7u128, i128::from(u64::MAX))).expect("postcard encodes");
    for value in [
        json!({"a": 7, "b": u64::MAX}),
        json!({"a": "7", "b": "18446744073709551615"}),
    ] {
        assert_eq!(d.encode_payload(&value, 1).expect("encodes"), expected);
    }
}

#[test]
fn floats_including_non_finite_ones() {
    agrees(&0.0f32, Format::F32, json!(0.0));
    agrees(&1.5f32, Format::F32, json!(1.5));
    agrees(&-0.0f64, Format::F64, json!(-0.0));
    agrees(&0.1f64, Format::F64, json!(0.1));
    agrees(&f64::MAX, Format::F64, json!(f64::MAX));
    agrees(&f64::MIN_POSITIVE, Format::F64, json!(f64::MIN_POSITIVE));
    agrees(&f32::MAX, Format::F32, json!(3.4028234663852886e38));
    agrees(&f64::NAN, Format::F64, json!("NaN"));
    agrees(&f32::NAN, Format::F32, json!("NaN"));
    agrees(&f64::INFINITY, Format::F64, json!("inf"));
    agrees(&f32::NEG_INFINITY, Format::F32, json!("-inf"));
    // A whole number is a float too.
    let d = fields(vec![plain("v", Format::F32)], vec![]);
    assert_eq!(
        d.encode_payload(&json!({"v": 3}), 1).expect("encodes"),
        3.0f32.to_le_bytes()
    );
}

#[test]
fn strings_chars_units_and_bools() {
    agrees(&"", Format::Str, json!(""));
    agrees(&"héllo wörld ✓ 🦀", Format::Str, json!("héllo wörld ✓ 🦀"));
    agrees(&'a', Format::Char, json!("a"));
    agrees(&'é', Format::Char, json!("é"));
    agrees(&'🦀', Format::Char, json!("🦀"));
    agrees(&(), Format::Unit, json!(null));
    agrees(&true, Format::Bool, json!(true));
    agrees(&false, Format::Bool, json!(false));
}

#[test]
fn options_mark_some_only_when_the_inner_value_can_be_null() {
    let inner = || Format::Option(boxed(Format::Option(boxed(Format::U8))));
    agrees(&None::<Option<u8>>, inner(), json!(null));
    agrees(&Some(None::<u8>), inner(), json!({"Some": null}));
    agrees(&Some(Some(3u8)), inner(), json!({"Some": 3}));
    agrees(&Some(3u8), Format::Option(boxed(Format::U8)), json!(3));
    agrees(&None::<u8>, Format::Option(boxed(Format::U8)), json!(null));
    agrees(&Some(()), Format::Option(boxed(Format::Unit)), json!({"Some": null}));
    agrees(&Some("x"), Format::Option(boxed(Format::Str)), json!("x"));

    #[derive(Serialize)]
    struct Marker;
    #[derive(Serialize)]
    struct Wrapped(Marker);
    let list = || {
        vec![
            ("Marker", Container::UnitStruct),
            ("Wrapped", Container::Newtype(Format::Named("Marker".to_owned()))),
        ]
    };
    let option = |name: &str| Format::Option(boxed(Format::Named(name.to_owned())));
    agrees_with(&Some(Marker), option("Marker"), list(), json!({"Some": null}));
    agrees_with(&None::<Marker>, option("Marker"), list(), json!(null));
    agrees_with(&Some(Wrapped(Marker)), option("Wrapped"), list(), json!({"Some": null}));
}

#[test]
fn sequences_tuples_and_arrays() {
    let pairs = Format::Seq(boxed(Format::Tuple(vec![Format::U32, Format::Str])));
    agrees(
        &vec![(1u32, "one".to_owned()), (300, "trois cent".to_owned())],
        pairs.clone(),
        json!([[1, "one"], [300, "trois cent"]]),
    );
    agrees(&Vec::<(u32, String)>::new(), pairs, json!([]));
    let array = Format::Array {
        content: boxed(Format::U16),
        size: 3,
    };
    agrees(&[1u16, 300, u16::MAX], array, json!([1, 300, 65535]));
    agrees(
        &(1u8, -2i64, 'c'),
        Format::Tuple(vec![Format::U8, Format::I64, Format::Char]),
        json!([1, -2, "c"]),
    );
}

#[test]
fn bytes_with_and_without_serde_bytes() {
    #[derive(Serialize)]
    struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);
    let list = || vec![("Blob", Container::Newtype(Format::Bytes))];
    agrees_with(
        &Blob(vec![0, 1, 255]),
        Format::Named("Blob".to_owned()),
        list(),
        json!([0, 1, 255]),
    );
    agrees_with(&Blob(vec![]), Format::Named("Blob".to_owned()), list(), json!([]));
    agrees(&vec![0u8, 1, 255], Format::Seq(boxed(Format::U8)), json!([0, 1, 255]));
}

#[test]
fn maps_with_text_keys_are_objects() {
    let format = || Format::Map {
        key: boxed(Format::U32),
        value: boxed(Format::Seq(boxed(Format::Str))),
    };
    let one: HashMap<u32, Vec<String>> = [(7, vec!["a".to_owned(), "bé".to_owned()])].into();
    agrees(&one, format(), json!({"7": ["a", "bé"]}));
    agrees(&HashMap::<u32, Vec<String>>::new(), format(), json!({}));

    // Several entries: `serde_json` here keeps object keys sorted as
    // text, so only the entries (not the hash map's order) come back.
    let many: HashMap<u32, Vec<String>> = [
        (10, vec![]),
        (9, vec!["nine".to_owned()]),
        (4_000_000_000, vec!["x".to_owned()]),
    ]
    .into();
    let payload = postcard::to_stdvec(&many).expect("postcard encodes");
    let d = fields(vec![plain("v", format())], vec![]);
    let decoded = decode(&d, &payload).expect("decodes");
    assert_eq!(decoded, json!({"v": {"10": [], "9": ["nine"], "4000000000": ["x"]}}));
    let encoded = d.encode_payload(&decoded, 1).expect("encodes");
    let back: HashMap<u32, Vec<String>> = postcard::from_bytes(&encoded).expect("postcard decodes");
    assert_eq!(back, many);

    let sorted: BTreeMap<i64, bool> = [(-5, true), (1, false), (7, true)].into();
    let format = Format::Map {
        key: boxed(Format::I64),
        value: boxed(Format::Bool),
    };
    let payload = postcard::to_stdvec(&sorted).expect("postcard encodes");
    let d = fields(vec![plain("v", format)], vec![]);
    let decoded = decode(&d, &payload).expect("decodes");
    assert_eq!(decoded, json!({"v": {"-5": true, "1": false, "7": true}}));
    let back: BTreeMap<i64, bool> =
        postcard::from_bytes(&d.encode_payload(&decoded, 1).expect("encodes")).expect("postcard decodes");
    assert_eq!(back, sorted);

    let flags: BTreeMap<bool, char> = [(false, 'n'), (true, 'y')].into();
    agrees(
        &flags,
        Format::Map {
            key: boxed(Format::Bool),
            value: boxed(Format::Char),
        },
        json!({"false": "n", "true": "y"}),
    );
    let names: BTreeMap<String, u8> = [("apex".to_owned(), 1), ("base".to_owned(), 2)].into();
    agrees(
        &names,
        Format::Map {
            key: boxed(Format::Str),
            value: boxed(Format::U8),
        },
        json!({"apex": 1, "base": 2}),
    );
}

#[test]
fn maps_with_other_keys_are_arrays_of_pairs() {
    let map: BTreeMap<(u8, u8), bool> = [((1, 2), true), ((3, 4), false)].into();
    agrees(
        &map,
        Format::Map {
            key: boxed(Format::Tuple(vec![Format::U8, Format::U8])),
            value: boxed(Format::Bool),
        },
        json!([[[1, 2], true], [[3, 4], false]]),
    );
}

#[derive(Serialize, Deserialize)]
struct Point {
    x: i32,
    label: Option<String>,
    weights: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
enum Event {
    Tick,
    Moved(u16),
    Pair(u8, String),
    Renamed { from: String, to: char },
}

#[derive(Serialize, Deserialize)]
struct Meters(f64);

#[derive(Serialize, Deserialize)]
struct Span(u8, i8);

fn serde_types() -> Vec<(&'static str, Container)> {
    vec![
        (
            "Point",
            Container::Struct(vec![
                named("x", Format::I32),
                named("label", Format::Option(boxed(Format::Str))),
                named("weights", Format::Seq(boxed(Format::F32))),
            ]),
        ),
        (
            "Event",
            Container::Enum(vec![
                Variant {
                    name: "Tick".to_owned(),
                    content: VariantContent::Unit,
                },
                Variant {
                    name: "Moved".to_owned(),
                    content: VariantContent::Newtype(Format::U16),
                },
                Variant {
                    name: "Pair".to_owned(),
                    content: VariantContent::Tuple(vec![Format::U8, Format::Str]),
                },
                Variant {
                    name: "Renamed".to_owned(),
                    content: VariantContent::Struct(vec![named("from", Format::Str), named("to", Format::Char)]),
                },
            ]),
        ),
        ("Meters", Container::Newtype(Format::F64)),
        ("Span", Container::TupleStruct(vec![Format::U8, Format::I8])),
    ]
}

fn name(name: &str) -> Format {
    Format::Named(name.to_owned())
}

#[test]
fn serde_structs_enums_and_newtypes() {
    agrees_with(
        &Point {
            x: -3,
            label: Some("peak".to_owned()),
            weights: vec![0.5, -1.0],
        },
        name("Point"),
        serde_types(),
        json!({"x": -3, "label": "peak", "weights": [0.5, -1.0]}),
    );
    agrees_with(&Event::Tick, name("Event"), serde_types(), json!("Tick"));
    agrees_with(&Event::Moved(300), name("Event"), serde_types(), json!({"Moved": 300}));
    agrees_with(
        &Event::Pair(1, "ü".to_owned()),
        name("Event"),
        serde_types(),
        json!({"Pair": [1, "ü"]}),
    );
    agrees_with(
        &Event::Renamed {
            from: "a".to_owned(),
            to: 'b',
        },
        name("Event"),
        serde_types(),
        json!({"Renamed": {"from": "a", "to": "b"}}),
    );
    agrees_with(&Meters(2.5), name("Meters"), serde_types(), json!(2.5));
    agrees_with(&Span(7, -7), name("Span"), serde_types(), json!([7, -7]));
    agrees_with(
        &vec![Event::Tick, Event::Moved(1)],
        Format::Seq(boxed(name("Event"))),
        serde_types(),
        json!(["Tick", {"Moved": 1}]),
    );
}

#[test]
fn an_enum_state_and_a_nested_state() {
    let d = described(
        Shape::Enum {
            variants: vec![
                StateVariant {
                    name: "Idle".to_owned(),
                    fields: vec![],
                },
                StateVariant {
                    name: "Open".to_owned(),
                    fields: vec![
                        plain("user", Format::Str),
                        nested(
                            "inner",
                            Shape::Struct {
                                fields: vec![plain("at", name("Point")), plain("count", Format::U64)],
                            },
                        ),
                        nested("nothing", Shape::Stateless),
                    ],
                },
            ],
        },
        serde_types(),
    );
    let point = Point {
        x: 1,
        label: None,
        weights: vec![],
    };
    let payload = postcard::to_stdvec(&(1u32, "ada", &point, 99u64)).expect("postcard encodes");
    let decoded = decode(&d, &payload).expect("decodes");
    let expected = json!({"Open": {
        "user": "ada",
        "inner": {"at": {"x": 1, "label": null, "weights": []}, "count": 99},
        "nothing": null,
    }});
    assert_eq!(decoded, expected);
    assert_eq!(d.encode_payload(&decoded, 1).expect("encodes"), payload);

    assert_eq!(decode(&d, &[0]).expect("decodes"), json!({"Idle": {}}));
    assert_eq!(d.encode_payload(&json!({"Idle": {}}), 1).expect("encodes"), [0]);
    assert!(decode(&d, &[2]).is_err(), "no variant 2");

    let stateless = described(Shape::Stateless, vec![]);
    assert_eq!(decode(&stateless, &[]).expect("decodes"), json!(null));
    assert_eq!(
        stateless.encode_payload(&json!(null), 1).expect("encodes"),
        Vec::<u8>::new()
    );
}

/// Postcard bytes of `value`, appended to `out`.
fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    out.extend(postcard::to_stdvec(value).expect("postcard encodes"));
}

/// The entries of each of `count` groups of `data`, placed by
/// `StableHash` and in key order: (entries, bytes).
fn groups(data: &BTreeMap<u64, u64>, count: u32) -> Vec<(u64, Vec<u8>)> {
    let key_groups = KeyGroups::new(count).expect("a valid count");
    let mut groups = vec![(0, Vec::new()); count as usize];
    for (key, value) in data {
        let (entries, bytes) = &mut groups[key_groups.group_of(key) as usize];
        *entries += 1;
        put(bytes, key);
        put(bytes, value);
    }
    groups
}

fn inline(groups: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut payload = vec![1];
    put(&mut payload, &(groups.len() as u32));
    for (entries, bytes) in groups {
        put(&mut payload, entries);
        put(&mut payload, &(bytes.len() as u64));
        payload.extend(bytes);
    }
    payload
}

fn counts() -> BTreeMap<u64, u64> {
    (0..40u64).map(|k| (k * 7919, k * 10)).collect()
}

fn counts_json() -> Value {
    Value::Object(counts().iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

fn keyed_u64() -> StateDescription {
    fields(vec![keyed("counts", Format::U64, Format::U64)], vec![])
}

#[test]
fn a_keyed_map_inline() {
    let four = groups(&counts(), 4);
    assert!(four.iter().all(|(entries, _)| *entries > 1), "every group has entries");
    let payload = inline(&four);
    let d = keyed_u64();
    let decoded = decode(&d, &payload).expect("decodes");
    assert_eq!(decoded, json!({ "counts": counts_json() }));
    assert_eq!(d.encode_payload(&decoded, 4).expect("encodes"), payload);

    // The map itself writes the same bytes.
    let mut map: KeyedMap<u64, u64> = KeyedMap::with_key_groups(KeyGroups::new(4).expect("a valid count"));
    for (k, v) in counts() {
        map.insert(k, v);
    }
    let mut saved = Vec::new();
    map.encode_state(&mut saved).expect("saves");
    assert_eq!(saved, payload);

    // With 3 groups (not a power of two) the keys land elsewhere.
    let payload = inline(&groups(&counts(), 3));
    assert_eq!(
        decode(&d, &payload).expect("decodes"),
        json!({ "counts": counts_json() })
    );
    assert_eq!(d.encode_payload(&decoded, 3).expect("encodes"), payload);
}

#[test]
fn an_empty_keyed_map() {
    let d = fields(
        vec![
            keyed("counts", Format::U64, Format::U64),
            keyed("pairs", Format::Tuple(vec![Format::U8, Format::U8]), Format::Bool),
        ],
        vec![],
    );
    let decoded = decode(&d, &[0, 0]).expect("decodes");
    assert_eq!(decoded, json!({"counts": {}, "pairs": []}));
    assert_eq!(d.encode_payload(&decoded, 4).expect("encodes"), [0, 0]);
    // A map that once held keys has groups, all empty: the same JSON.
    assert_eq!(decode(&d, &[1, 2, 0, 0, 0, 0, 0]).expect("decodes"), decoded);
}

#[test]
fn a_keyed_map_in_chunks() {
    let groups = groups(&counts(), 4);
    let d = fields(
        vec![
            keyed("empty", Format::Str, Format::U8),
            plain("between", Format::U8),
            keyed("counts", Format::U64, Format::U64),
        ],
        vec![],
    );
    let mut chunks = Chunks::new();
    for (g, group) in groups.iter().enumerate() {
        // A group without a chunk is empty.
        if g != 2 {
            chunks.insert((1, g as u32), group.clone());
        }
    }
    // Another map's chunks are not this one's.
    chunks.insert((5, 0), (1, vec![1, 1]));
    let mut payload = vec![0, 9, 2];
    put(&mut payload, &4u32);
    put(&mut payload, &1u32);
    let decoded = d.decode_payload(&payload, &chunks).expect("decodes");
    let mut expected = counts();
    let key_groups = KeyGroups::new(4).expect("a valid count");
    expected.retain(|k, _| key_groups.group_of(k) != 2);
    let expected = Value::Object(expected.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
    assert_eq!(decoded, json!({"empty": {}, "between": 9, "counts": expected}));

    // Written back inline.
    let mut inline_groups = groups.clone();
    inline_groups[2] = (0, Vec::new());
    let mut inline_payload = vec![0, 9];
    inline_payload.extend(inline(&inline_groups));
    assert_eq!(d.encode_payload(&decoded, 4).expect("encodes"), inline_payload);

    // The map is the state's second: index 0 is the first's.
    let mut wrong = vec![0, 9, 2];
    put(&mut wrong, &4u32);
    put(&mut wrong, &0u32);
    let error = d.decode_payload(&wrong, &chunks).expect_err("a wrong map index");
    assert_eq!(error.path, "/counts");

    // A chunk past the map's groups.
    let mut past = chunks.clone();
    past.insert((1, 4), (0, Vec::new()));
    assert!(d.decode_payload(&payload, &past).is_err());

    // A chunk with bytes after its entries.
    let mut long = chunks.clone();
    long.entry((1, 0)).and_modify(|(_, bytes)| bytes.push(0));
    assert!(d.decode_payload(&payload, &long).is_err());
}

#[test]
fn keys_in_the_wrong_group_or_order_are_errors() {
    let d = keyed_u64();
    let mut moved = groups(&counts(), 4);
    // The first entry of group 0 goes to the end of group 1.
    let (k, rest): (u64, &[u8]) = postcard::take_from_bytes(&moved[0].1).expect("a key");
    let (_, rest): (u64, &[u8]) = postcard::take_from_bytes(rest).expect("a value");
    let first = moved[0].1[..moved[0].1.len() - rest.len()].to_vec();
    moved[0] = (moved[0].0 - 1, rest.to_vec());
    moved[1].0 += 1;
    moved[1].1.extend(first);
    let error = decode(&d, &inline(&moved)).expect_err("a key in the wrong group");
    assert!(error.message.contains("key group 0 is stored in group 1"), "{error}");
    assert_eq!(error.path, format!("/counts/{k}"));

    // Two keys of a group swapped.
    let mut swapped = groups(&counts(), 4);
    let bytes = &swapped[3].1;
    let (k1, rest): (u64, &[u8]) = postcard::take_from_bytes(bytes).expect("a key");
    let (v1, rest): (u64, &[u8]) = postcard::take_from_bytes(rest).expect("a value");
    let (k2, rest): (u64, &[u8]) = postcard::take_from_bytes(rest).expect("a key");
    let (v2, rest): (u64, &[u8]) = postcard::take_from_bytes(rest).expect("a value");
    let mut reordered = Vec::new();
    for n in [k2, v2, k1, v1] {
        put(&mut reordered, &n);
    }
    reordered.extend(rest);
    swapped[3].1 = reordered;
    let error = decode(&d, &inline(&swapped)).expect_err("keys out of order");
    assert!(error.message.contains("not in ascending order"), "{error}");
    assert_eq!(error.path, format!("/counts/{k1}"));

    // The same key twice is out of order too.
    let mut twice = groups(&counts(), 4);
    let copy = twice[2].1.clone();
    twice[2].0 *= 2;
    twice[2].1.extend(copy);
    assert!(decode(&d, &inline(&twice)).is_err());

    // A group count out of range.
    assert!(decode(&d, &[1, 0]).is_err());
    assert!(decode(&d, &[1, 0x81, 0x80, 0x02]).is_err());
    // An unknown layout.
    assert!(decode(&d, &[3]).is_err());
}

#[test]
fn stable_hashes_agree_with_the_trait() {
    use super::keyed::{Key, key_hash, read_key};
    use super::wire::Reader;
    let check = |format: Format, payload: Vec<u8>, expected: u64| {
        let key = read_key(&format, &mut Reader { bytes: &payload }).expect("a key");
        assert_eq!(key_hash(&format, &key), Some(expected), "{format:?}");
    };
    fn bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        postcard::to_stdvec(value).expect("postcard encodes")
    }
    for n in [0u64, 1, 255, 65_535, u64::MAX] {
        check(Format::U64, bytes(&n), n.stable_hash());
    }
    check(Format::U8, bytes(&200u8), 200u8.stable_hash());
    check(Format::U16, bytes(&60_000u16), 60_000u16.stable_hash());
    check(Format::U32, bytes(&u32::MAX), u32::MAX.stable_hash());
    for n in [0i64, -1, i64::MIN, i64::MAX] {
        check(Format::I64, bytes(&n), n.stable_hash());
    }
    check(Format::I8, bytes(&-100i8), (-100i8).stable_hash());
    check(Format::I16, bytes(&-300i16), (-300i16).stable_hash());
    check(Format::I32, bytes(&i32::MIN), i32::MIN.stable_hash());
    check(Format::Bool, bytes(&true), true.stable_hash());
    check(Format::Char, bytes(&'🦀'), '🦀'.stable_hash());
    check(Format::Str, bytes(&"zone-7"), "zone-7".stable_hash());
    check(Format::Str, bytes(&""), "".stable_hash());
    let blob = vec![1u8, 2, 3];
    check(Format::Seq(boxed(Format::U8)), bytes(&blob), blob.stable_hash());
    check(
        Format::Bytes,
        bytes(&serde_bytes::Bytes::new(&blob)),
        blob.stable_hash(),
    );
    let pair = (7u32, "seven".to_owned());
    check(
        Format::Tuple(vec![Format::U32, Format::Str]),
        bytes(&pair),
        pair.stable_hash(),
    );
    let triple = (1u8, -2i16, false);
    check(
        Format::Tuple(vec![Format::U8, Format::I16, Format::Bool]),
        bytes(&triple),
        triple.stable_hash(),
    );
    // No StableHash: no group check.
    let key = Key::Unsigned(1);
    assert_eq!(key_hash(&Format::U128, &key), None);
}

#[derive(Checkpoint, Default)]
struct Sessions {
    users: Vec<String>,
    #[checkpoint(keyed)]
    by_name: KeyedMap<String, u64>,
    #[checkpoint(nested)]
    inner: Totals,
    #[checkpoint(keyed)]
    by_pair: KeyedMap<(u32, String), Vec<u8>>,
}

#[derive(Checkpoint, Default)]
struct Totals {
    total: i64,
    #[checkpoint(keyed)]
    none: KeyedMap<u8, bool>,
}

#[test]
fn a_derived_state_with_keyed_maps() {
    let key_groups = KeyGroups::new(5).expect("a valid count");
    let mut state = Sessions {
        users: vec!["ada".to_owned(), "grace".to_owned()],
        by_name: KeyedMap::with_key_groups(key_groups),
        inner: Totals {
            total: -42,
            none: KeyedMap::new(),
        },
        by_pair: KeyedMap::with_key_groups(key_groups),
    };
    for (i, name) in ["apex", "base", "crest", "dune", "edge", "fjord", "gorge"]
        .iter()
        .enumerate()
    {
        state.by_name.insert((*name).to_owned(), i as u64);
        state
            .by_pair
            .insert((i as u32 % 3, (*name).to_owned()), vec![i as u8; i]);
    }
    let mut payload = Vec::new();
    state.encode_state(&mut payload).expect("saves");
    let d = fields(
        vec![
            plain("users", Format::Seq(boxed(Format::Str))),
            keyed("by_name", Format::Str, Format::U64),
            nested(
                "inner",
                Shape::Struct {
                    fields: vec![plain("total", Format::I64), keyed("none", Format::U8, Format::Bool)],
                },
            ),
            keyed(
                "by_pair",
                Format::Tuple(vec![Format::U32, Format::Str]),
                Format::Seq(boxed(Format::U8)),
            ),
        ],
        vec![],
    );
    let decoded = decode(&d, &payload).expect("decodes");
    assert_eq!(decoded["users"], json!(["ada", "grace"]));
    assert_eq!(decoded["by_name"]["crest"], json!(2));
    assert_eq!(decoded["by_name"].as_object().map(|o| o.len()), Some(7));
    assert_eq!(decoded["inner"], json!({"total": -42, "none": {}}));
    let pairs = decoded["by_pair"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 7);
    assert!(pairs.contains(&json!([[1, "base"], [1]])));
    assert_eq!(d.encode_payload(&decoded, 5).expect("encodes"), payload);

    // An edit the state reads back.
    let mut edited = decoded.clone();
    edited["by_name"]["zenith"] = json!(1000);
    edited["inner"]["none"] = json!({"3": true});
    let bytes = d.encode_payload(&edited, 5).expect("encodes");
    let back = Sessions::decode_state(&mut &bytes[..]).expect("the state reads it");
    assert_eq!(back.by_name.get("zenith"), Some(&1000));
    assert_eq!(back.inner.none.get(&3), Some(&true));
    assert_eq!(back.by_pair.len(), 7);
}

#[test]
fn keys_without_a_known_hash_are_refused_on_encode() {
    let d = fields(vec![keyed("m", Format::U128, Format::U8)], vec![]);
    let error = d.encode_payload(&json!({"m": {"1": 2}}), 4).expect_err("no hash");
    assert!(
        error.message.contains("cannot be placed in key groups by this tool"),
        "{error}"
    );
    assert_eq!(error.path, "/m");
    // Empty, it needs no placing.
    assert_eq!(d.encode_payload(&json!({"m": {}}), 4).expect("encodes"), [0]);
    // Decoded without the group check.
    let payload = [1, 1, 1, 2, 5, 6];
    assert_eq!(decode(&d, &payload).expect("decodes"), json!({"m": {"5": 6}}));

    let d = keyed_u64();
    assert!(d.encode_payload(&json!({"counts": {"1": 2}}), 0).is_err());
    assert!(d.encode_payload(&json!({"counts": {"1": 2}}), 40_000).is_err());
    let error = d
        .encode_payload(&json!({"counts": {"1": 2, "01": 3}}), 4)
        .expect_err("a key twice");
    assert!(error.message.contains("twice"), "{error}");
}

#[test]
fn json_that_does_not_fit_is_an_error_at_its_place() {
    let d = fields(
        vec![
            plain("n", Format::U8),
            plain("at", name("Point")),
            plain("event", name("Event")),
            plain("pair", Format::Tuple(vec![Format::U8, Format::U8])),
            plain(
                "three",
                Format::Array {
                    content: boxed(Format::I8),
                    size: 3,
                },
            ),
            plain(
                "map",
                Format::Map {
                    key: boxed(Format::U16),
                    value: boxed(Format::Char),
                },
            ),
        ],
        serde_types(),
    );
    let good = json!({
        "n": 1,
        "at": {"x": 1, "label": null, "weights": [1.0]},
        "event": {"Moved": 3},
        "pair": [1, 2],
        "three": [-1, 0, 1],
        "map": {"10": "x"},
    });
    let bytes = d.encode_payload(&good, 1).expect("encodes");
    assert_eq!(decode(&d, &bytes).expect("decodes"), good);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/n", json!("1"), "n"),
        ("/n", json!(256), "n"),
        ("/n", json!(-1), "n"),
        ("/n", json!(1.5), "n"),
        ("/at/x", json!({"x": "one", "label": null, "weights": []}), "at"),
        (
            "/at/x",
            json!({"x": 2_147_483_648u64, "label": null, "weights": []}),
            "at",
        ),
        ("/at/label", json!({"x": 1, "weights": []}), "at"),
        (
            "/at/extra",
            json!({"x": 1, "label": null, "weights": [], "extra": 0}),
            "at",
        ),
        (
            "/at/weights/1",
            json!({"x": 1, "label": null, "weights": [1.0, "x"]}),
            "at",
        ),
        (
            "/at/weights/0",
            json!({"x": 1, "label": null, "weights": [1e300]}),
            "at",
        ),
        ("/event/Flew", json!({"Flew": 1}), "event"),
        ("/event/Tick", json!({"Tick": null}), "event"),
        ("/event/Moved", json!("Moved"), "event"),
        ("/event", json!({"Moved": 1, "Tick": null}), "event"),
        (
            "/event/Renamed/to",
            json!({"Renamed": {"from": "a", "to": "bc"}}),
            "event",
        ),
        ("/pair", json!([1]), "pair"),
        ("/pair/1", json!([1, null]), "pair"),
        ("/three", json!([1, 2]), "three"),
        ("/three/2", json!([1, 2, 128]), "three"),
        ("/map/x", json!({"x": "y"}), "map"),
        ("/map/70000", json!({"70000": "y"}), "map"),
        ("/map/1", json!({"1": ""}), "map"),
        ("/", json!([]), ""),
        ("/n", json!({"n": 1}), "missing"),
    ];
    for (path, value, field) in cases {
        let mut bad = good.clone();
        match field {
            "" => bad = value,
            "missing" => {
                bad.as_object_mut().expect("an object").remove("n");
            }
            field => bad[field] = value,
        }
        let error = d.encode_payload(&bad, 1).expect_err("bad JSON");
        assert_eq!(error.path, path, "{bad}: {error}");
    }
}

/// A description of most formats, and a payload of it.
fn rich() -> (StateDescription, Vec<u8>) {
    let mut list = serde_types();
    list.push(("Loop", Container::Newtype(name("Loop"))));
    let d = fields(
        vec![
            plain("flag", Format::Bool),
            plain("small", Format::I8),
            plain("wide", Format::U128),
            plain("signed", Format::I32),
            plain("real", Format::F64),
            plain("letter", Format::Char),
            plain("text", Format::Str),
            plain("blob", Format::Bytes),
            plain("maybe", Format::Option(boxed(Format::Option(boxed(Format::U8))))),
            plain("points", Format::Seq(boxed(name("Point")))),
            plain(
                "by_pair",
                Format::Map {
                    key: boxed(Format::Tuple(vec![Format::U8, Format::U8])),
                    value: boxed(name("Event")),
                },
            ),
            plain("span", name("Span")),
            keyed("counts", Format::U64, Format::U64),
            nested(
                "inner",
                Shape::Enum {
                    variants: vec![
                        StateVariant {
                            name: "A".to_owned(),
                            fields: vec![],
                        },
                        StateVariant {
                            name: "B".to_owned(),
                            fields: vec![plain("meters", name("Meters"))],
                        },
                    ],
                },
            ),
            plain(
                "three",
                Format::Array {
                    content: boxed(Format::U16),
                    size: 3,
                },
            ),
        ],
        list,
    );
    let mut payload = Vec::new();
    put(&mut payload, &true);
    put(&mut payload, &-5i8);
    put(&mut payload, &u128::MAX);
    put(&mut payload, &-70_000i32);
    put(&mut payload, &f64::NAN);
    put(&mut payload, &'ß');
    put(&mut payload, "tëxt");
    put(&mut payload, serde_bytes::Bytes::new(&[9, 8]));
    put(&mut payload, &Some(Some(4u8)));
    put(
        &mut payload,
        &vec![Point {
            x: 5,
            label: Some("p".to_owned()),
            weights: vec![1.0],
        }],
    );
    let by_pair: BTreeMap<(u8, u8), Event> = [((1, 2), Event::Moved(9)), ((2, 1), Event::Tick)].into();
    put(&mut payload, &by_pair);
    put(&mut payload, &Span(1, 2));
    payload.extend(inline(&groups(&counts(), 4)));
    put(&mut payload, &1u32);
    put(&mut payload, &Meters(-1.25));
    put(&mut payload, &[1u16, 2, 3]);
    (d, payload)
}

#[test]
fn a_rich_payload_round_trips() {
    let (d, payload) = rich();
    let decoded = decode(&d, &payload).expect("decodes");
    assert_eq!(decoded["maybe"], json!({"Some": 4}));
    assert_eq!(decoded["real"], json!("NaN"));
    assert_eq!(decoded["by_pair"], json!([[[1, 2], {"Moved": 9}], [[2, 1], "Tick"]]));
    assert_eq!(decoded["inner"], json!({"B": {"meters": -1.25}}));
    assert_eq!(d.encode_payload(&decoded, 4).expect("encodes"), payload);
}

#[test]
fn damaged_payloads_are_errors() {
    let (d, payload) = rich();
    for len in 0..payload.len() {
        assert!(decode(&d, &payload[..len]).is_err(), "a payload cut to {len} bytes");
    }
    let mut long = payload.clone();
    long.push(0);
    let error = decode(&d, &long).expect_err("a byte after the state");
    assert_eq!(error.path, "/");

    let one = |format: Format, bytes: &[u8]| decode(&fields(vec![plain("v", format)], serde_types()), bytes);
    assert!(one(Format::Bool, &[2]).is_err());
    assert!(one(Format::Option(boxed(Format::U8)), &[2, 0]).is_err());
    assert!(one(name("Event"), &[4]).is_err());
    assert!(one(name("Nowhere"), &[]).is_err());
    assert!(one(Format::Str, &[2, 0xc3, 0x28]).is_err());
    assert!(one(Format::Char, &[2, b'a', b'b']).is_err());
    assert!(one(Format::Char, &[0]).is_err());
    // u16: at most 3 bytes, the last below 4.
    assert_eq!(
        one(Format::U16, &[0xff, 0xff, 0x03]).expect("u16::MAX"),
        json!({"v": 65535})
    );
    assert!(one(Format::U16, &[0xff, 0xff, 0x04]).is_err());
    assert!(one(Format::U16, &[0x80, 0x80, 0x80, 0x00]).is_err());
    assert!(one(Format::U64, &[0xff; 10]).is_err());
    assert!(
        one(
            Format::U64,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]
        )
        .is_err()
    );
    assert!(one(Format::U32, &[0xff, 0xff, 0xff, 0xff, 0x10]).is_err());
    assert!(one(Format::U128, &[0xff; 19]).is_err());
    // A length far past the bytes.
    assert!(one(Format::Seq(boxed(Format::U8)), &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    assert!(one(Format::Bytes, &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

#[test]
fn descriptions_that_never_end_are_errors() {
    let list = || {
        let mut list = vec![("Loop", Container::Newtype(name("Loop")))];
        // Each type holds two of the next: 2^60 units without a byte.
        for i in 0..60 {
            let next = name(&format!("T{}", i + 1));
            list.push((
                Box::leak(format!("T{i}").into_boxed_str()),
                Container::TupleStruct(vec![next.clone(), next]),
            ));
        }
        list.push(("T60", Container::UnitStruct));
        list
    };
    let d = fields(vec![plain("v", name("Loop"))], list());
    assert!(decode(&d, &[]).is_err());
    assert!(d.encode_payload(&json!({"v": 1}), 1).is_err());
    let d = fields(vec![plain("v", Format::Option(boxed(name("Loop"))))], list());
    assert!(decode(&d, &[1]).is_err());
    let d = fields(vec![plain("v", name("T0"))], list());
    assert!(decode(&d, &[]).is_err());
    // Billions of units from a few bytes.
    let d = fields(
        vec![plain("v", Format::Seq(boxed(Format::Seq(boxed(Format::Unit)))))],
        vec![],
    );
    assert!(decode(&d, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    // Deep nesting of states.
    let mut shape = Shape::Stateless;
    for _ in 0..200 {
        shape = Shape::Struct {
            fields: vec![nested("n", shape)],
        };
    }
    let d = described(shape, vec![]);
    assert!(decode(&d, &[]).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (d, _) = rich();
        let _ = decode(&d, &bytes);
    }

    #[test]
    fn damaged_payloads_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let (d, mut payload) = rich();
        let i = at.index(payload.len());
        payload[i] = byte;
        let _ = decode(&d, &payload);
        payload.truncate(cut.index(payload.len()));
        let _ = decode(&d, &payload);
        // Whatever decodes is JSON the encoder takes, and means the same
        // again (bytes may differ: a NaN's bits, a varint's length).
        if let Ok(value) = decode(&d, &payload) {
            let again = d.encode_payload(&value, 4).expect("decoded JSON encodes");
            prop_assert_eq!(decode(&d, &again).expect("re-encoded bytes decode"), value);
        }
    }

    #[test]
    fn random_chunks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), entries in 0u64..64) {
        let d = keyed_u64();
        let chunks: Chunks = [((0, 1), (entries, bytes))].into();
        let _ = d.decode_payload(&[2, 4, 0], &chunks);
    }
}
