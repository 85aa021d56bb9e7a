//! A snapshot payload as JSON and back, by its [`StateDescription`], so
//! `checkpoint dump` and `checkpoint edit` need no job code.
//!
//! # JSON conventions
//!
//! The state:
//! - a stateless state is `null`; a struct state is an object of its
//!   persisted fields by name; an enum state is `{"Variant": {fields}}`
//!   (`{"Variant": {}}` for a variant without persisted fields);
//! - a nested state is its own state's JSON, as above;
//! - a keyed map is the JSON of a plain map with the same key format
//!   (below), its entries in key-group order, then key order. How it was
//!   saved (never held a key, inline or in chunks) and its key-group count
//!   are not part of the JSON: an empty map is written back as "never held
//!   a key", any other inline with the key-group count the encoder is given.
//!
//! Plain values, by their serde format:
//! - `bool`: `true` / `false`; unit `()`: `null`;
//! - integers: numbers; a `u128` above `u64::MAX` or an `i128` outside
//!   `i64`'s range is a string of its decimal digits (the encoder takes
//!   either form for `u128` / `i128`, numbers only for narrower ones);
//! - `f32` / `f64`: numbers; NaN, infinity and minus infinity are the
//!   strings `"NaN"`, `"inf"` and `"-inf"` (a NaN is written back as the
//!   standard quiet NaN, whatever its bits were);
//! - `char` and strings: strings; bytes (`serde_bytes`): an array of numbers
//!   0 to 255 (as is a `Vec<u8>` without `serde_bytes`, a sequence of `u8`);
//! - `Option<T>`: `null` for `None`, `T`'s JSON for `Some`; but when `T`'s
//!   JSON can itself be `null` (`T` is unit, an option, a unit struct or a
//!   newtype struct of such), `Some(x)` is `{"Some": x}`;
//! - sequences, tuples and arrays: arrays;
//! - maps: an object when the key is a string, a `char`, an integer or a
//!   `bool` (the key as text: the string itself, the decimal number,
//!   `"true"` / `"false"`); otherwise an array of `[key, value]` pairs.
//!   Entries are written back in the JSON's order;
//! - unit structs: `null`; newtype structs: the inner value; tuple structs:
//!   arrays; structs: objects;
//! - enums: a unit variant is the string `"Variant"`; any other is
//!   `{"Variant": content}`, the content being the inner value (newtype
//!   variant), an array (tuple variant) or an object (struct variant).
//!
//! Decoding checks what the state's own decoding checks: a keyed map's
//! key-group count (1 to 32768), each key's group (for keys whose
//! `StableHash` this module knows: integers up to 64 bits, `bool`, `char`,
//! strings, bytes, and pairs and triples of those), keys strictly ascending
//! in each group (for those keys, 128-bit integers and tuples of any of
//! them), and a chunked map's
//! index. A map written as an object must not hold a key twice.
//!
//! The encoder is the decoder's inverse: the JSON of a payload encodes back
//! to the same bytes, apart from what the JSON does not keep: what is noted
//! above, a varint written longer than it needs (postcard reads it; it is
//! written back short), and a map's entry order when `serde_json` sorts
//! object keys (without its `preserve_order` feature, as here). JSON that
//! does not fit the description (a wrong type, an integer out of range, a
//! missing or unknown field or variant, an array of the wrong length) is a
//! [`JsonError`] at the JSON pointer of the offending value.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::{Container, FieldKind, Format, NamedFormat, Shape, StateDescription, StateField, VariantContent};
use crate::stable_hash::splitmix64;

/// Deeper than any real type, shallow enough for any thread's stack: a
/// description is read from the snapshot, and a type of `types` may name
/// itself.
const MAX_DEPTH: usize = 128;

/// How many values of no bytes (units, empty structs) one payload may hold.
/// They cost no input, so without a bound a damaged length, or types of
/// `types` that each hold two of the next, could make billions of them.
const ZERO_SIZED_VALUES: u64 = 1 << 20;

/// A keyed map's layout byte: the map never held a key.
const UNSET: u8 = 0;
/// Every group follows inline.
const INLINE: u8 = 1;
/// The groups are in chunks.
const CHUNKED: u8 = 2;
/// `KeyGroups`' bounds.
const MAX_KEY_GROUPS: u32 = 1 << 15;

/// A payload that does not match its description, or JSON that does not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JsonError {
    /// Where, as a JSON pointer into the state's JSON (`/counts/apex`;
    /// `/` for the state itself).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl StateDescription {
    /// Decodes a snapshot payload into JSON (conventions in this module's
    /// documentation).
    ///
    /// `chunks` holds, for keyed maps saved in chunks, the entry count and
    /// entries bytes of each (map index, key group) that has a chunk; a
    /// group without one is empty.
    ///
    /// An error if the payload does not match the description: short,
    /// with bytes left over, or with an invalid value anywhere.
    pub fn decode_payload(
        &self,
        payload: &[u8],
        chunks: &BTreeMap<(u32, u32), (u64, Vec<u8>)>,
    ) -> Result<Value, JsonError> {
        let mut decoder = Decoder {
            input: Reader { bytes: payload },
            types: &self.types,
            chunks,
            next_map: 0,
            depth: 0,
            zero_sized: ZERO_SIZED_VALUES,
            path: Path::default(),
        };
        let value = decoder.state(&self.shape)?;
        let left = decoder.input.bytes.len();
        if left > 0 {
            return Err(decoder.path.error(format!("{left} byte(s) follow the state")));
        }
        Ok(value)
    }

    /// Encodes JSON (as [`decode_payload`](Self::decode_payload) writes it)
    /// into a payload. Keyed maps with entries are written inline, in
    /// `key_groups` groups; empty ones as never having held a key.
    ///
    /// An error, at the offending value, if the JSON does not match the
    /// description.
    pub fn encode_payload(&self, value: &Value, key_groups: u32) -> Result<Vec<u8>, JsonError> {
        let mut encoder = Encoder {
            types: &self.types,
            out: Vec::new(),
            key_groups,
            depth: 0,
            path: Path::default(),
        };
        encoder.state(&self.shape, value)?;
        Ok(encoder.out)
    }
}

/// Where the decoder or encoder is in the state's JSON.
#[derive(Debug, Default)]
struct Path(Vec<String>);

impl Path {
    fn push(&mut self, segment: impl Into<String>) {
        self.0.push(segment.into());
    }

    fn pop(&mut self) {
        self.0.pop();
    }

    fn pointer(&self) -> String {
        if self.0.is_empty() {
            return "/".to_owned();
        }
        let mut pointer = String::new();
        for segment in &self.0 {
            pointer.push('/');
            pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        }
        pointer
    }

    fn error(&self, message: impl Into<String>) -> JsonError {
        JsonError {
            path: self.pointer(),
            message: message.into(),
        }
    }
}

/// Postcard's primitives, from the front of `bytes`.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&byte, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| "the bytes end early".to_owned())?;
        self.bytes = rest;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("{n} byte(s) are wanted; {} are left", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A LEB128 varint of a `bits`-bit unsigned integer, refused as postcard
    /// refuses it: longer than the type's bytes, or with bits past the type.
    fn varint(&mut self, bits: u32) -> Result<u128, String> {
        let max = bits.div_ceil(7);
        let mut value: u128 = 0;
        for i in 0..max {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max - 1 && u32::from(byte) >> (bits - 7 * i) != 0 {
                    return Err(format!("a varint overflows a {bits}-bit integer"));
                }
                return Ok(value);
            }
        }
        Err(format!("a varint of a {bits}-bit integer is longer than {max} bytes"))
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint(32)?).map_err(|e| e.to_string())
    }

    fn u64(&mut self) -> Result<u64, String> {
        u64::try_from(self.varint(64)?).map_err(|e| e.to_string())
    }

    /// A length prefix (postcard's `usize`, a 64-bit varint).
    fn len(&mut self) -> Result<usize, String> {
        let len = self.u64()?;
        usize::try_from(len).map_err(|_| format!("a length of {len} does not fit this machine"))
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    fn char(&mut self) -> Result<char, String> {
        let text = self.str()?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(format!("a char holds {} characters, not one", text.chars().count())),
        }
    }
}

fn unzigzag(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

fn zigzag(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

fn write_varint(out: &mut Vec<u8>, mut n: u128) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    write_varint(out, len as u128);
}

fn u128_json(n: u128) -> Value {
    match u64::try_from(n) {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(n.to_string()),
    }
}

fn i128_json(n: i128) -> Value {
    match i64::try_from(n) {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(n.to_string()),
    }
}

fn float_json(f: f64) -> Value {
    if f.is_nan() {
        Value::from("NaN")
    } else if f == f64::INFINITY {
        Value::from("inf")
    } else if f == f64::NEG_INFINITY {
        Value::from("-inf")
    } else {
        // Only non-finite numbers have no `Number`, and they are handled.
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn single(name: impl Into<String>, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(name.into(), value);
    Value::Object(map)
}

/// Whether a map with keys of `format` is a JSON object (its keys as text)
/// rather than an array of pairs.
fn text_keys(format: &Format) -> bool {
    matches!(
        format,
        Format::Str
            | Format::Char
            | Format::Bool
            | Format::U8
            | Format::U16
            | Format::U32
            | Format::U64
            | Format::U128
            | Format::I8
            | Format::I16
            | Format::I32
            | Format::I64
            | Format::I128
    )
}

/// A decoded key as text, for a map that is a JSON object.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Whether `format`'s JSON can be `null`, so an option of it needs
/// `{"Some": x}` to tell `Some(x)` from `None`.
fn nullable(types: &BTreeMap<String, Container>, format: &Format, depth: usize) -> bool {
    match format {
        Format::Unit | Format::Option(_) => true,
        Format::Named(name) => match types.get(name) {
            Some(Container::UnitStruct) => true,
            Some(Container::Newtype(inner)) => depth < MAX_DEPTH && nullable(types, inner, depth + 1),
            _ => false,
        },
        _ => false,
    }
}

/// A key as its type orders it: integers by value, strings and bytes by
/// their bytes, tuples element by element. Only keys of one format are
/// compared, so the order between variants does not matter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Unsigned(u128),
    Signed(i128),
    Bool(bool),
    Char(char),
    Bytes(Vec<u8>),
    Tuple(Vec<Key>),
}

/// Whether keys of `format` have an order this module knows.
fn ordered(format: &Format) -> bool {
    match format {
        Format::U8
        | Format::U16
        | Format::U32
        | Format::U64
        | Format::U128
        | Format::I8
        | Format::I16
        | Format::I32
        | Format::I64
        | Format::I128
        | Format::Bool
        | Format::Char
        | Format::Str
        | Format::Bytes => true,
        Format::Seq(element) => **element == Format::U8,
        Format::Tuple(elements) => elements.iter().all(ordered),
        _ => false,
    }
}

/// Whether keys of `format` have a `StableHash` this module knows.
fn hashable(format: &Format) -> bool {
    match format {
        Format::U8
        | Format::U16
        | Format::U32
        | Format::U64
        | Format::I8
        | Format::I16
        | Format::I32
        | Format::I64
        | Format::Bool
        | Format::Char
        | Format::Str
        | Format::Bytes => true,
        Format::Seq(element) => **element == Format::U8,
        Format::Tuple(elements) => matches!(elements.len(), 2 | 3) && elements.iter().all(hashable),
        _ => false,
    }
}

/// Reads a key of an [`ordered`] format from its postcard bytes.
fn read_key(format: &Format, input: &mut Reader<'_>) -> Result<Key, String> {
    Ok(match format {
        Format::U8 => Key::Unsigned(input.byte()?.into()),
        Format::U16 => Key::Unsigned(input.varint(16)?),
        Format::U32 => Key::Unsigned(input.varint(32)?),
        Format::U64 => Key::Unsigned(input.varint(64)?),
        Format::U128 => Key::Unsigned(input.varint(128)?),
        Format::I8 => Key::Signed((input.byte()? as i8).into()),
        Format::I16 => Key::Signed(unzigzag(input.varint(16)?)),
        Format::I32 => Key::Signed(unzigzag(input.varint(32)?)),
        Format::I64 => Key::Signed(unzigzag(input.varint(64)?)),
        Format::I128 => Key::Signed(unzigzag(input.varint(128)?)),
        Format::Bool => Key::Bool(input.byte()? == 1),
        Format::Char => Key::Char(input.char()?),
        Format::Str | Format::Bytes => {
            let len = input.len()?;
            Key::Bytes(input.take(len)?.to_vec())
        }
        Format::Seq(element) if **element == Format::U8 => {
            let len = input.len()?;
            Key::Bytes(input.take(len)?.to_vec())
        }
        Format::Tuple(elements) => Key::Tuple(
            elements
                .iter()
                .map(|element| read_key(element, input))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("keys of format {other:?} have no known order")),
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The key's `StableHash` (`stable_hash.rs` fixes it forever), or `None`
/// for a format without a known one.
fn key_hash(format: &Format, key: &Key) -> Option<u64> {
    match (format, key) {
        (Format::U8 | Format::U16 | Format::U32 | Format::U64, Key::Unsigned(n)) => {
            Some(splitmix64(u64::try_from(*n).ok()?))
        }
        (Format::I8 | Format::I16 | Format::I32 | Format::I64, Key::Signed(n)) => {
            Some(splitmix64(i64::try_from(*n).ok()? as u64))
        }
        (Format::Bool, Key::Bool(b)) => Some(splitmix64(u64::from(*b))),
        (Format::Char, Key::Char(c)) => Some(splitmix64(u64::from(*c))),
        (Format::Str | Format::Bytes, Key::Bytes(bytes)) => Some(splitmix64(fnv1a(bytes))),
        (Format::Seq(element), Key::Bytes(bytes)) if **element == Format::U8 => Some(splitmix64(fnv1a(bytes))),
        (Format::Tuple(formats), Key::Tuple(keys)) => match (formats.as_slice(), keys.as_slice()) {
            ([fa, fb], [a, b]) => Some(splitmix64(splitmix64(key_hash(fa, a)?) ^ key_hash(fb, b)?)),
            ([fa, fb, fc], [a, b, c]) => Some(splitmix64(
                splitmix64(splitmix64(key_hash(fa, a)?) ^ key_hash(fb, b)?) ^ key_hash(fc, c)?,
            )),
            _ => None,
        },
        _ => None,
    }
}

/// `KeyGroups::group_of_hash`.
fn group_of(hash: u64, count: u32) -> u32 {
    let count = u64::from(count.max(1));
    let group = if count.is_power_of_two() {
        hash & (count - 1)
    } else {
        hash % count
    };
    // Below `count`, a `u32`.
    group as u32
}

/// A map's entries as JSON: an object or an array of pairs.
enum Entries {
    Object(Map<String, Value>),
    Pairs(Vec<Value>),
}

impl Entries {
    fn new(key: &Format, capacity: usize) -> Self {
        if text_keys(key) {
            Entries::Object(Map::new())
        } else {
            Entries::Pairs(Vec::with_capacity(capacity))
        }
    }

    fn len(&self) -> usize {
        match self {
            Entries::Object(map) => map.len(),
            Entries::Pairs(pairs) => pairs.len(),
        }
    }

    /// `false` if an object already has the key.
    fn insert(&mut self, key: Value, value: Value) -> bool {
        match self {
            Entries::Object(map) => map.insert(key_text(&key), value).is_none(),
            Entries::Pairs(pairs) => {
                pairs.push(Value::Array(vec![key, value]));
                true
            }
        }
    }

    fn into_value(self) -> Value {
        match self {
            Entries::Object(map) => Value::Object(map),
            Entries::Pairs(pairs) => Value::Array(pairs),
        }
    }
}

/// What a keyed map's group checks of each key.
struct GroupCheck {
    count: u32,
    group: u32,
    previous: Option<Key>,
}

struct Decoder<'a> {
    input: Reader<'a>,
    types: &'a BTreeMap<String, Container>,
    chunks: &'a BTreeMap<(u32, u32), (u64, Vec<u8>)>,
    /// The index the next keyed map of the payload has.
    next_map: u32,
    depth: usize,
    /// How many more values of no bytes may be read.
    zero_sized: u64,
    path: Path,
}

impl<'a> Decoder<'a> {
    fn at<T>(&self, result: Result<T, String>) -> Result<T, JsonError> {
        result.map_err(|message| self.path.error(message))
    }

    fn byte(&mut self) -> Result<u8, JsonError> {
        let byte = self.input.byte();
        self.at(byte)
    }

    fn u32(&mut self) -> Result<u32, JsonError> {
        let n = self.input.u32();
        self.at(n)
    }

    fn varint(&mut self, bits: u32) -> Result<u128, JsonError> {
        let n = self.input.varint(bits);
        self.at(n)
    }

    fn len(&mut self) -> Result<usize, JsonError> {
        let len = self.input.len();
        self.at(len)
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self
                .path
                .error(format!("the description nests deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        Ok(())
    }

    fn state(&mut self, shape: &'a Shape) -> Result<Value, JsonError> {
        self.enter()?;
        let value = match shape {
            Shape::Stateless => Ok(Value::Null),
            Shape::Struct { fields } => self.state_fields(fields).map(Value::Object),
            Shape::Enum { variants } => {
                let index = self.u32()?;
                let variant = variants.get(index as usize).ok_or_else(|| {
                    self.path
                        .error(format!("variant {index} of a state with {} variants", variants.len()))
                })?;
                self.path.push(variant.name.clone());
                let fields = self.state_fields(&variant.fields)?;
                self.path.pop();
                Ok(single(variant.name.clone(), Value::Object(fields)))
            }
        };
        self.depth -= 1;
        value
    }

    fn state_fields(&mut self, fields: &'a [StateField]) -> Result<Map<String, Value>, JsonError> {
        let mut object = Map::new();
        for field in fields {
            self.path.push(field.name.clone());
            let value = match &field.kind {
                FieldKind::Plain { format, .. } => self.value(format)?,
                // Named formats resolve through the outermost `types`,
                // which `self` keeps.
                FieldKind::Nested { state } => self.state(&state.shape)?,
                FieldKind::Keyed { key, value, .. } => self.keyed(key, value)?,
            };
            if object.insert(field.name.clone(), value).is_some() {
                return Err(self.path.error("the description has two fields of this name"));
            }
            self.path.pop();
        }
        Ok(object)
    }

    fn value(&mut self, format: &'a Format) -> Result<Value, JsonError> {
        self.enter()?;
        let before = self.input.bytes.len();
        let value = self.value_inner(format);
        self.depth -= 1;
        let value = value?;
        if self.input.bytes.len() == before {
            self.zero_sized = self.zero_sized.checked_sub(1).ok_or_else(|| {
                self.path.error(format!(
                    "more than {ZERO_SIZED_VALUES} values of no bytes: the payload or its description is damaged"
                ))
            })?;
        }
        Ok(value)
    }

    fn value_inner(&mut self, format: &'a Format) -> Result<Value, JsonError> {
        Ok(match format {
            Format::Unit => Value::Null,
            Format::Bool => match self.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(self.path.error(format!("a bool is the byte {other}, not 0 or 1"))),
            },
            Format::I8 => Value::from(self.byte()? as i8),
            Format::U8 => Value::from(self.byte()?),
            Format::U16 => u128_json(self.varint(16)?),
            Format::U32 => u128_json(self.varint(32)?),
            Format::U64 => u128_json(self.varint(64)?),
            Format::U128 => u128_json(self.varint(128)?),
            Format::I16 => i128_json(unzigzag(self.varint(16)?)),
            Format::I32 => i128_json(unzigzag(self.varint(32)?)),
            Format::I64 => i128_json(unzigzag(self.varint(64)?)),
            Format::I128 => i128_json(unzigzag(self.varint(128)?)),
            Format::F32 => {
                let bytes = self.input.array::<4>();
                float_json(f32::from_le_bytes(self.at(bytes)?).into())
            }
            Format::F64 => {
                let bytes = self.input.array::<8>();
                float_json(f64::from_le_bytes(self.at(bytes)?))
            }
            Format::Char => {
                let c = self.input.char();
                Value::String(self.at(c)?.to_string())
            }
            Format::Str => {
                let text = self.input.str();
                Value::String(self.at(text)?.to_owned())
            }
            Format::Bytes => {
                let len = self.len()?;
                let bytes = self.input.take(len);
                Value::Array(self.at(bytes)?.iter().map(|&b| Value::from(b)).collect())
            }
            Format::Option(inner) => match self.byte()? {
                0 => Value::Null,
                1 => {
                    let value = self.value(inner)?;
                    if nullable(self.types, inner, 0) {
                        single("Some", value)
                    } else {
                        value
                    }
                }
                other => return Err(self.path.error(format!("an option's tag is {other}, not 0 or 1"))),
            },
            Format::Seq(element) => {
                let len = self.len()?;
                self.elements(element, len)?
            }
            Format::Map { key, value } => {
                let len = self.len()?;
                let mut entries = Entries::new(key, len.min(self.input.bytes.len()));
                for i in 0..len {
                    self.entry(key, value, i, &mut entries, None)?;
                }
                entries.into_value()
            }
            Format::Tuple(elements) => self.tuple(elements)?,
            Format::Array { content, size } => self.elements(content, *size)?,
            Format::Named(name) => self.named(name)?,
        })
    }

    fn elements(&mut self, element: &'a Format, len: usize) -> Result<Value, JsonError> {
        // A damaged length must not reserve memory the bytes cannot fill.
        let mut values = Vec::with_capacity(len.min(self.input.bytes.len()));
        for i in 0..len {
            self.path.push(i.to_string());
            values.push(self.value(element)?);
            self.path.pop();
        }
        Ok(Value::Array(values))
    }

    fn tuple(&mut self, elements: &'a [Format]) -> Result<Value, JsonError> {
        let mut values = Vec::with_capacity(elements.len());
        for (i, element) in elements.iter().enumerate() {
            self.path.push(i.to_string());
            values.push(self.value(element)?);
            self.path.pop();
        }
        Ok(Value::Array(values))
    }

    fn named_fields(&mut self, fields: &'a [NamedFormat]) -> Result<Value, JsonError> {
        let mut object = Map::new();
        for field in fields {
            self.path.push(field.name.clone());
            let value = self.value(&field.format)?;
            if object.insert(field.name.clone(), value).is_some() {
                return Err(self.path.error("the type has two fields of this name"));
            }
            self.path.pop();
        }
        Ok(Value::Object(object))
    }

    fn named(&mut self, name: &str) -> Result<Value, JsonError> {
        let types = self.types;
        let container = types
            .get(name)
            .ok_or_else(|| self.path.error(format!("the description has no type `{name}`")))?;
        Ok(match container {
            Container::UnitStruct => Value::Null,
            Container::Newtype(inner) => self.value(inner)?,
            Container::TupleStruct(elements) => self.tuple(elements)?,
            Container::Struct(fields) => self.named_fields(fields)?,
            Container::Enum(variants) => {
                let index = self.u32()?;
                let variant = variants.get(index as usize).ok_or_else(|| {
                    self.path.error(format!(
                        "variant {index} of `{name}`, which has {} variants",
                        variants.len()
                    ))
                })?;
                self.path.push(variant.name.clone());
                let content = match &variant.content {
                    VariantContent::Unit => None,
                    VariantContent::Newtype(inner) => Some(self.value(inner)?),
                    VariantContent::Tuple(elements) => Some(self.tuple(elements)?),
                    VariantContent::Struct(fields) => Some(self.named_fields(fields)?),
                };
                self.path.pop();
                match content {
                    None => Value::String(variant.name.clone()),
                    Some(content) => single(variant.name.clone(), content),
                }
            }
        })
    }

    /// Reads one key and its value into `entries`, checking the key's group
    /// and order when `check` is given.
    fn entry(
        &mut self,
        key: &'a Format,
        value: &'a Format,
        index: usize,
        entries: &mut Entries,
        check: Option<&mut GroupCheck>,
    ) -> Result<(), JsonError> {
        let pairs = matches!(entries, Entries::Pairs(_));
        let start = self.input.bytes;
        self.path.push(index.to_string());
        if pairs {
            self.path.push("0");
        }
        let k = self.value(key)?;
        let key_bytes = start.get(..start.len() - self.input.bytes.len()).unwrap_or_default();
        self.path.pop();
        if !pairs {
            self.path.push(key_text(&k));
        }
        if let Some(check) = check
            && ordered(key)
        {
            let read = read_key(key, &mut Reader { bytes: key_bytes });
            let decoded = self.at(read)?;
            if let Some(hash) = key_hash(key, &decoded) {
                let home = group_of(hash, check.count);
                if home != check.group {
                    return Err(self.path.error(format!(
                        "a key of key group {home} is stored in group {}: the snapshot was written with another \
                         key hash or is damaged",
                        check.group
                    )));
                }
            }
            if check.previous.as_ref().is_some_and(|previous| *previous >= decoded) {
                return Err(self.path.error(format!(
                    "the keys of key group {} are not in ascending order: the snapshot is damaged",
                    check.group
                )));
            }
            check.previous = Some(decoded);
        }
        if pairs {
            self.path.push("1");
        }
        let v = self.value(value)?;
        if pairs {
            self.path.pop();
        }
        if !entries.insert(k, v) {
            return Err(self.path.error("the map has this key twice"));
        }
        self.path.pop();
        Ok(())
    }

    fn key_group_count(&mut self) -> Result<u32, JsonError> {
        let count = self.u32()?;
        if !(1..=MAX_KEY_GROUPS).contains(&count) {
            return Err(self.path.error(format!(
                "a keyed map has {count} key groups; from 1 to {MAX_KEY_GROUPS} are possible"
            )));
        }
        Ok(count)
    }

    fn keyed(&mut self, key: &'a Format, value: &'a Format) -> Result<Value, JsonError> {
        // Every keyed map takes an index, empty or not, as when saved.
        let index = self.next_map;
        self.next_map = index
            .checked_add(1)
            .ok_or_else(|| self.path.error("more keyed maps than a u32 numbers"))?;
        let mut entries = Entries::new(key, 0);
        match self.byte()? {
            UNSET => {}
            INLINE => {
                let count = self.key_group_count()?;
                for group in 0..count {
                    let n = self.input.u64();
                    let n = self.at(n)?;
                    let len = self.len()?;
                    let bytes = self.input.take(len);
                    let bytes = self.at(bytes)?;
                    self.group(key, value, count, group, n, bytes, &mut entries)?;
                }
            }
            CHUNKED => {
                let count = self.key_group_count()?;
                let map = self.u32()?;
                if map != index {
                    return Err(self.path.error(format!(
                        "the payload says this is keyed map {map}; it is the state's map {index}: the snapshot is \
                         damaged"
                    )));
                }
                let chunks = self.chunks;
                for (&(_, group), (n, bytes)) in chunks.range((map, 0)..=(map, u32::MAX)) {
                    if group >= count {
                        return Err(self.path.error(format!(
                            "a chunk of keyed map {map} is for key group {group}, past the map's {count}"
                        )));
                    }
                    self.group(key, value, count, group, *n, bytes, &mut entries)?;
                }
            }
            other => {
                return Err(self
                    .path
                    .error(format!("a keyed map's layout is {other}, not 0, 1 or 2")));
            }
        }
        Ok(entries.into_value())
    }

    /// Reads the `n` entries of key group `group` from exactly `bytes`.
    #[allow(clippy::too_many_arguments, reason = "one call per layout, each with its own source")]
    fn group(
        &mut self,
        key: &'a Format,
        value: &'a Format,
        count: u32,
        group: u32,
        n: u64,
        bytes: &'a [u8],
        entries: &mut Entries,
    ) -> Result<(), JsonError> {
        let outer = std::mem::replace(&mut self.input, Reader { bytes });
        let mut check = GroupCheck {
            count,
            group,
            previous: None,
        };
        let mut result = Ok(());
        // Bounded by the bytes: each entry takes at least one, or is one
        // of the few values of no bytes allowed.
        for _ in 0..n {
            let index = entries.len();
            result = self.entry(key, value, index, entries, Some(&mut check));
            if result.is_err() {
                break;
            }
        }
        let inner = std::mem::replace(&mut self.input, outer);
        result?;
        if !inner.bytes.is_empty() {
            return Err(self.path.error(format!(
                "key group {group} has {} byte(s) after its {n} entries",
                inner.bytes.len()
            )));
        }
        Ok(())
    }
}

/// A keyed map's entry, encoded, in its group.
struct Placed {
    key: Key,
    /// The key's bytes, then the value's.
    bytes: Vec<u8>,
    /// The key's place in the JSON.
    path: Vec<String>,
}

struct Encoder<'a> {
    types: &'a BTreeMap<String, Container>,
    out: Vec<u8>,
    key_groups: u32,
    depth: usize,
    path: Path,
}

/// A map entry of the JSON: its key (as the JSON of the key format), its
/// value, and their places in the JSON.
struct JsonEntry<'v> {
    key: Value,
    key_path: Vec<String>,
    value: &'v Value,
    value_path: Vec<String>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Encoder<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, JsonError> {
        Err(self.path.error(message))
    }

    fn expected<T>(&self, what: &str, value: &Value) -> Result<T, JsonError> {
        self.error(format!("expected {what}, found {}", kind(value)))
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        if self.depth >= MAX_DEPTH {
            return self.error(format!("the description nests deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        Ok(())
    }

    fn object<'v>(&self, value: &'v Value) -> Result<&'v Map<String, Value>, JsonError> {
        match value {
            Value::Object(object) => Ok(object),
            other => self.expected("an object", other),
        }
    }

    fn array<'v>(&self, value: &'v Value, len: Option<usize>) -> Result<&'v [Value], JsonError> {
        match (value, len) {
            (Value::Array(values), Some(len)) if values.len() != len => {
                self.error(format!("expected an array of {len} elements, found {}", values.len()))
            }
            (Value::Array(values), _) => Ok(values),
            (other, _) => self.expected("an array", other),
        }
    }

    /// The one `{"name": content}` of an enum's JSON.
    fn single<'v>(&self, value: &'v Value) -> Result<(&'v String, &'v Value), JsonError> {
        match value {
            Value::Object(object) if object.len() == 1 => match object.iter().next() {
                Some(entry) => Ok(entry),
                None => self.error("expected an object of one variant"),
            },
            Value::Object(object) => self.error(format!(
                "expected an object of one variant, found {} entries",
                object.len()
            )),
            other => self.expected("an object of one variant", other),
        }
    }

    /// Errs on any entry of `object` not among `names`.
    fn no_unknown<'n>(
        &mut self,
        object: &Map<String, Value>,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> Result<(), JsonError> {
        for key in object.keys() {
            if !names.clone().any(|name| name == key) {
                self.path.push(key.clone());
                return self.error("no field of this name is in the description");
            }
        }
        Ok(())
    }

    fn state(&mut self, shape: &Shape, value: &Value) -> Result<(), JsonError> {
        self.enter()?;
        match shape {
            Shape::Stateless => {
                if !value.is_null() {
                    return self.expected("null (a stateless state)", value);
                }
            }
            Shape::Struct { fields } => {
                let object = self.object(value)?;
                self.state_fields(fields, object)?;
            }
            Shape::Enum { variants } => {
                let (name, content) = self.single(value)?;
                let Some((index, variant)) = variants.iter().enumerate().find(|(_, v)| v.name == *name) else {
                    self.path.push(name.clone());
                    return self.error("the state has no variant of this name");
                };
                write_len(&mut self.out, index);
                self.path.push(name.clone());
                let object = self.object(content)?;
                self.state_fields(&variant.fields, object)?;
                self.path.pop();
            }
        }
        self.depth -= 1;
        Ok(())
    }

    fn state_fields(&mut self, fields: &[StateField], object: &Map<String, Value>) -> Result<(), JsonError> {
        self.no_unknown(object, fields.iter().map(|f| f.name.as_str()))?;
        for field in fields {
            self.path.push(field.name.clone());
            let Some(value) = object.get(&field.name) else {
                return self.error("the field is missing");
            };
            match &field.kind {
                FieldKind::Plain { format, .. } => self.value(format, value)?,
                FieldKind::Nested { state } => self.state(&state.shape, value)?,
                FieldKind::Keyed { key, value: format, .. } => self.keyed(key, format, value)?,
            }
            self.path.pop();
        }
        Ok(())
    }

    fn unsigned(&self, value: &Value, max: u128, text: bool) -> Result<u128, JsonError> {
        let n = match value {
            Value::Number(n) => match n.as_u64() {
                Some(n) => u128::from(n),
                None if n.as_i64().is_some() => return self.error(format!("{n} is negative; expected at least 0")),
                None => return self.error(format!("expected an integer, found {n}")),
            },
            Value::String(digits) if text => match digits.parse::<u128>() {
                Ok(n) => n,
                Err(_) => return self.error(format!("expected an integer, found the string {digits:?}")),
            },
            other => return self.expected("an integer", other),
        };
        if n > max {
            return self.error(format!("{n} is out of range: at most {max}"));
        }
        Ok(n)
    }

    fn signed(&self, value: &Value, min: i128, max: i128, text: bool) -> Result<i128, JsonError> {
        let n = match value {
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(n), _) => i128::from(n),
                (None, Some(n)) => i128::from(n),
                (None, None) => return self.error(format!("expected an integer, found {n}")),
            },
            Value::String(digits) if text => match digits.parse::<i128>() {
                Ok(n) => n,
                Err(_) => return self.error(format!("expected an integer, found the string {digits:?}")),
            },
            other => return self.expected("an integer", other),
        };
        if n < min || n > max {
            return self.error(format!("{n} is out of range: from {min} to {max}"));
        }
        Ok(n)
    }

    fn float(&self, value: &Value) -> Result<f64, JsonError> {
        match value {
            Value::Number(n) => match n.as_f64() {
                Some(f) => Ok(f),
                None => self.error(format!("{n} is not a float")),
            },
            Value::String(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => self.error(format!(
                    "expected a number or \"NaN\", \"inf\", \"-inf\"; found the string {text:?}"
                )),
            },
            other => self.expected("a number", other),
        }
    }

    fn str<'v>(&self, value: &'v Value) -> Result<&'v str, JsonError> {
        match value {
            Value::String(text) => Ok(text),
            other => self.expected("a string", other),
        }
    }

    fn write_str(&mut self, text: &str) {
        write_len(&mut self.out, text.len());
        self.out.extend_from_slice(text.as_bytes());
    }

    fn value(&mut self, format: &Format, value: &Value) -> Result<(), JsonError> {
        self.enter()?;
        self.value_inner(format, value)?;
        self.depth -= 1;
        Ok(())
    }

    fn value_inner(&mut self, format: &Format, value: &Value) -> Result<(), JsonError> {
        match format {
            Format::Unit => {
                if !value.is_null() {
                    return self.expected("null", value);
                }
            }
            Format::Bool => match value {
                Value::Bool(b) => self.out.push(u8::from(*b)),
                other => return self.expected("a bool", other),
            },
            Format::I8 => {
                let n = self.signed(value, i8::MIN.into(), i8::MAX.into(), false)?;
                self.out.push(n as i8 as u8);
            }
            Format::U8 => {
                let n = self.unsigned(value, u8::MAX.into(), false)?;
                self.out.push(n as u8);
            }
            Format::U16 => {
                let n = self.unsigned(value, u16::MAX.into(), false)?;
                write_varint(&mut self.out, n);
            }
            Format::U32 => {
                let n = self.unsigned(value, u32::MAX.into(), false)?;
                write_varint(&mut self.out, n);
            }
            Format::U64 => {
                let n = self.unsigned(value, u64::MAX.into(), false)?;
                write_varint(&mut self.out, n);
            }
            Format::U128 => {
                let n = self.unsigned(value, u128::MAX, true)?;
                write_varint(&mut self.out, n);
            }
            Format::I16 => {
                let n = self.signed(value, i16::MIN.into(), i16::MAX.into(), false)?;
                write_varint(&mut self.out, zigzag(n));
            }
            Format::I32 => {
                let n = self.signed(value, i32::MIN.into(), i32::MAX.into(), false)?;
                write_varint(&mut self.out, zigzag(n));
            }
            Format::I64 => {
                let n = self.signed(value, i64::MIN.into(), i64::MAX.into(), false)?;
                write_varint(&mut self.out, zigzag(n));
            }
            Format::I128 => {
                let n = self.signed(value, i128::MIN, i128::MAX, true)?;
                write_varint(&mut self.out, zigzag(n));
            }
            Format::F32 => {
                let f = self.float(value)?;
                let narrow = f as f32;
                if f.is_finite() && !narrow.is_finite() {
                    return self.error(format!("{f} is out of range for an f32"));
                }
                self.out.extend_from_slice(&narrow.to_le_bytes());
            }
            Format::F64 => {
                let f = self.float(value)?;
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            Format::Char => {
                let text = self.str(value)?;
                if text.chars().count() != 1 {
                    return self.error(format!("expected one character, found {text:?}"));
                }
                self.write_str(text);
            }
            Format::Str => {
                let text = self.str(value)?;
                self.write_str(text);
            }
            Format::Bytes => {
                let values = self.array(value, None)?;
                let mut bytes = Vec::with_capacity(values.len());
                for (i, element) in values.iter().enumerate() {
                    self.path.push(i.to_string());
                    bytes.push(self.unsigned(element, u8::MAX.into(), false)? as u8);
                    self.path.pop();
                }
                write_len(&mut self.out, bytes.len());
                self.out.extend_from_slice(&bytes);
            }
            Format::Option(inner) => {
                if value.is_null() {
                    self.out.push(0);
                } else if nullable(self.types, inner, 0) {
                    match value {
                        Value::Object(object) if object.len() == 1 && object.contains_key("Some") => {
                            self.out.push(1);
                            self.path.push("Some");
                            self.value(inner, object.get("Some").unwrap_or(&Value::Null))?;
                            self.path.pop();
                        }
                        other => return self.expected("null or {\"Some\": value}", other),
                    }
                } else {
                    self.out.push(1);
                    self.value(inner, value)?;
                }
            }
            Format::Seq(element) => {
                let values = self.array(value, None)?;
                write_len(&mut self.out, values.len());
                self.elements(element, values)?;
            }
            Format::Map { key, value: format } => {
                let entries = self.entries(key, value)?;
                write_len(&mut self.out, entries.len());
                for entry in entries {
                    self.at(&entry.key_path, |e| e.value(key, &entry.key))?;
                    self.at(&entry.value_path, |e| e.value(format, entry.value))?;
                }
            }
            Format::Tuple(elements) => self.tuple(elements, value)?,
            Format::Array { content, size } => {
                let values = self.array(value, Some(*size))?;
                self.elements(content, values)?;
            }
            Format::Named(name) => self.named(name, value)?,
        }
        Ok(())
    }

    fn tuple(&mut self, elements: &[Format], value: &Value) -> Result<(), JsonError> {
        let values = self.array(value, Some(elements.len()))?;
        for (i, (element, value)) in elements.iter().zip(values).enumerate() {
            self.path.push(i.to_string());
            self.value(element, value)?;
            self.path.pop();
        }
        Ok(())
    }

    fn elements(&mut self, element: &Format, values: &[Value]) -> Result<(), JsonError> {
        for (i, value) in values.iter().enumerate() {
            self.path.push(i.to_string());
            self.value(element, value)?;
            self.path.pop();
        }
        Ok(())
    }

    fn named_fields(&mut self, fields: &[NamedFormat], value: &Value) -> Result<(), JsonError> {
        let object = self.object(value)?;
        self.no_unknown(object, fields.iter().map(|f| f.name.as_str()))?;
        for field in fields {
            self.path.push(field.name.clone());
            let Some(value) = object.get(&field.name) else {
                return self.error("the field is missing");
            };
            self.value(&field.format, value)?;
            self.path.pop();
        }
        Ok(())
    }

    fn named(&mut self, name: &str, value: &Value) -> Result<(), JsonError> {
        let types = self.types;
        let Some(container) = types.get(name) else {
            return self.error(format!("the description has no type `{name}`"));
        };
        match container {
            Container::UnitStruct => {
                if !value.is_null() {
                    return self.expected("null (a unit struct)", value);
                }
            }
            Container::Newtype(inner) => self.value(inner, value)?,
            Container::TupleStruct(elements) => self.tuple(elements, value)?,
            Container::Struct(fields) => self.named_fields(fields, value)?,
            Container::Enum(variants) => {
                let (variant_name, content) = match value {
                    Value::String(variant_name) => (variant_name, None),
                    other => {
                        let (variant_name, content) = self.single(other)?;
                        (variant_name, Some(content))
                    }
                };
                self.path.push(variant_name.clone());
                let Some((index, variant)) = variants.iter().enumerate().find(|(_, v)| v.name == *variant_name) else {
                    return self.error(format!("`{name}` has no variant of this name"));
                };
                write_len(&mut self.out, index);
                match (&variant.content, content) {
                    (VariantContent::Unit, None) => {}
                    (VariantContent::Unit, Some(_)) => {
                        return self.error("a unit variant is written as its name alone, a string");
                    }
                    (_, None) => return self.error("the variant has content: write {\"Variant\": content}"),
                    (VariantContent::Newtype(inner), Some(content)) => self.value(inner, content)?,
                    (VariantContent::Tuple(elements), Some(content)) => self.tuple(elements, content)?,
                    (VariantContent::Struct(fields), Some(content)) => self.named_fields(fields, content)?,
                }
                self.path.pop();
            }
        }
        Ok(())
    }

    /// Runs `encode` with `segments` added to the path.
    fn at(
        &mut self,
        segments: &[String],
        encode: impl FnOnce(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        for segment in segments {
            self.path.push(segment.clone());
        }
        encode(self)?;
        for _ in segments {
            self.path.pop();
        }
        Ok(())
    }

    /// The entries of a map's JSON, its keys as the key format's JSON.
    fn entries<'v>(&mut self, key: &Format, value: &'v Value) -> Result<Vec<JsonEntry<'v>>, JsonError> {
        if text_keys(key) {
            let object = self.object(value)?;
            let mut entries = Vec::with_capacity(object.len());
            for (text, value) in object {
                self.path.push(text.clone());
                let key = self.key_from_text(key, text)?;
                self.path.pop();
                entries.push(JsonEntry {
                    key,
                    key_path: vec![text.clone()],
                    value,
                    value_path: vec![text.clone()],
                });
            }
            Ok(entries)
        } else {
            let pairs = self.array(value, None)?;
            let mut entries = Vec::with_capacity(pairs.len());
            for (i, pair) in pairs.iter().enumerate() {
                self.path.push(i.to_string());
                let [key, value] = self.array(pair, Some(2))? else {
                    return self.error("expected a [key, value] pair");
                };
                self.path.pop();
                entries.push(JsonEntry {
                    key: key.clone(),
                    key_path: vec![i.to_string(), "0".to_owned()],
                    value,
                    value_path: vec![i.to_string(), "1".to_owned()],
                });
            }
            Ok(entries)
        }
    }

    /// An object's key as the JSON of the key format, which then checks it.
    fn key_from_text(&self, format: &Format, text: &str) -> Result<Value, JsonError> {
        match format {
            Format::Bool => match text {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => self.error(format!("expected the key \"true\" or \"false\", found {text:?}")),
            },
            Format::U8 | Format::U16 | Format::U32 | Format::U64 | Format::U128 => match text.parse::<u128>() {
                Ok(n) => Ok(u128_json(n)),
                Err(_) => self.error(format!("expected an unsigned integer key, found {text:?}")),
            },
            Format::I8 | Format::I16 | Format::I32 | Format::I64 | Format::I128 => match text.parse::<i128>() {
                Ok(n) => Ok(i128_json(n)),
                Err(_) => self.error(format!("expected an integer key, found {text:?}")),
            },
            _ => Ok(Value::String(text.to_owned())),
        }
    }

    /// Encodes into a buffer of its own.
    fn encode_apart(&mut self, segments: &[String], format: &Format, value: &Value) -> Result<Vec<u8>, JsonError> {
        let outer = std::mem::take(&mut self.out);
        let result = self.at(segments, |e| e.value(format, value));
        let bytes = std::mem::replace(&mut self.out, outer);
        result.map(|()| bytes)
    }

    fn keyed(&mut self, key: &Format, value_format: &Format, value: &Value) -> Result<(), JsonError> {
        let entries = self.entries(key, value)?;
        if entries.is_empty() {
            self.out.push(UNSET);
            return Ok(());
        }
        if !hashable(key) {
            return self.error(format!(
                "keys of format {key:?} cannot be placed in key groups by this tool"
            ));
        }
        let count = self.key_groups;
        if !(1..=MAX_KEY_GROUPS).contains(&count) {
            return self.error(format!(
                "{count} key groups were asked for; from 1 to {MAX_KEY_GROUPS} are possible"
            ));
        }
        let mut groups: Vec<Vec<Placed>> = (0..count).map(|_| Vec::new()).collect();
        for entry in &entries {
            let mut bytes = self.encode_apart(&entry.key_path, key, &entry.key)?;
            let read = read_key(key, &mut Reader { bytes: &bytes });
            let placed = read.ok().and_then(|k| Some((key_hash(key, &k)?, k)));
            let Some((hash, decoded)) = placed else {
                return self.at(&entry.key_path, |e| e.error("the key cannot be hashed"));
            };
            bytes.extend(self.encode_apart(&entry.value_path, value_format, entry.value)?);
            let Some(group) = groups.get_mut(group_of(hash, count) as usize) else {
                return self.error("a key's group is past the count");
            };
            group.push(Placed {
                key: decoded,
                bytes,
                path: entry.key_path.clone(),
            });
        }
        self.out.push(INLINE);
        write_varint(&mut self.out, count.into());
        for group in &mut groups {
            group.sort_by(|a, b| a.key.cmp(&b.key));
            for pair in group.windows(2) {
                if let [a, b] = pair
                    && a.key == b.key
                {
                    return self.at(&b.path, |e| e.error("the map has this key twice"));
                }
            }
            write_varint(&mut self.out, group.len() as u128);
            write_len(&mut self.out, group.iter().map(|p| p.bytes.len()).sum());
            for placed in group.iter() {
                self.out.extend_from_slice(&placed.bytes);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        use super::{Key, key_hash};
        let check = |format: Format, payload: Vec<u8>, expected: u64| {
            let key = super::read_key(&format, &mut super::Reader { bytes: &payload }).expect("a key");
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
}
