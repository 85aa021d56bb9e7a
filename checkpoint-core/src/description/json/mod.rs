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

mod decode;
mod encode;
mod keyed;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Container, Format, StateDescription};

/// Deeper than any real type, shallow enough for any thread's stack: a
/// description is read from the snapshot, and a type of `types` may name
/// itself.
const MAX_DEPTH: usize = 128;

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
    ///
    /// # Examples
    ///
    /// A snapshot decoded without its type, a value changed, and the state
    /// encoded back (what `checkpoint dump` and `checkpoint edit` do):
    ///
    /// ```
    /// use std::collections::BTreeMap;
    ///
    /// use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, StateDescription, WindowId};
    ///
    /// #[derive(Checkpoint, Default)]
    /// struct Totals {
    ///     rides: u64,
    ///     zones: BTreeMap<u32, u64>,
    /// }
    ///
    /// let state = Totals { rides: 3, zones: BTreeMap::from([(7, 2), (9, 1)]) };
    /// let bytes = Snapshot::encode(&state, SnapshotMeta::new("totals", WindowId::new(1, 4)))?;
    /// let (header, payload) = Snapshot::payload(&bytes)?;
    /// let description = StateDescription::from_json(header.description.as_deref().expect("derived"))?;
    /// description.check_against(&header)?;
    ///
    /// let mut json = description.decode_payload(payload, &BTreeMap::new())?;
    /// assert_eq!(json, serde_json::json!({"rides": 3, "zones": {"7": 2, "9": 1}}));
    ///
    /// json["rides"] = serde_json::json!(4);
    /// let edited = description.encode_payload(&json, 128)?;
    /// let back = Totals::decode_state(&mut edited.as_slice())?;
    /// assert_eq!((back.rides, back.zones), (4, state.zones));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode_payload(
        &self,
        payload: &[u8],
        chunks: &BTreeMap<(u32, u32), (u64, Vec<u8>)>,
    ) -> Result<Value, JsonError> {
        decode::payload(self, payload, chunks)
    }

    /// Encodes JSON (as [`decode_payload`](Self::decode_payload) writes it)
    /// into a payload. Keyed maps with entries are written inline, in
    /// `key_groups` groups; empty ones as never having held a key.
    ///
    /// An error, at the offending value, if the JSON does not match the
    /// description.
    pub fn encode_payload(&self, value: &Value, key_groups: u32) -> Result<Vec<u8>, JsonError> {
        encode::payload(self, value, key_groups, None)
    }

    /// [`encode_payload`](Self::encode_payload) for one partition of a
    /// keyed operator, which owns the key groups `owned`: a keyed map's key
    /// of another group is an error.
    pub fn encode_partition_payload(
        &self,
        value: &Value,
        key_groups: u32,
        owned: std::ops::Range<u32>,
    ) -> Result<Vec<u8>, JsonError> {
        encode::payload(self, value, key_groups, Some(owned))
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

// The conventions below are shared by both directions, so the encoder takes
// back exactly what the decoder writes.

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
