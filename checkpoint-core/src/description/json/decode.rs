//! A payload into JSON. The decoder refuses what the state's own decoding
//! refuses, so JSON it gives is of a payload the job could load.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::super::{Container, FieldKind, Format, NamedFormat, Shape, StateDescription, StateField, VariantContent};
use super::keyed::{CHUNKED, INLINE, Key, MAX_KEY_GROUPS, UNSET, group_of, key_hash, ordered, read_key};
use super::wire::{Reader, unzigzag};
use super::{JsonError, MAX_DEPTH, Path, i128_json, nullable, text_keys, u128_json};

/// How many values of no bytes (units, empty structs) one payload may hold.
/// They cost no input, so without a bound a damaged length, or types of
/// `types` that each hold two of the next, could make billions of them.
const ZERO_SIZED_VALUES: u64 = 1 << 20;

/// [`StateDescription::decode_payload`].
pub(super) fn payload(
    description: &StateDescription,
    payload: &[u8],
    chunks: &BTreeMap<(u32, u32), (u64, Vec<u8>)>,
) -> Result<Value, JsonError> {
    let mut decoder = Decoder {
        input: Reader { bytes: payload },
        types: &description.types,
        chunks,
        next_map: 0,
        depth: 0,
        zero_sized: ZERO_SIZED_VALUES,
        path: Path::default(),
    };
    let value = decoder.state(&description.shape)?;
    let left = decoder.input.bytes.len();
    if left > 0 {
        return Err(decoder.path.error(format!("{left} byte(s) follow the state")));
    }
    Ok(value)
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

/// A decoded key as text, for a map that is a JSON object.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
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
