//! JSON into a payload: the decoder's inverse. JSON that does not fit the
//! description is an error at its place, never a payload the job would
//! refuse.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::{Map, Value};

use super::super::{Container, FieldKind, Format, NamedFormat, Shape, StateDescription, StateField, VariantContent};
use super::keyed::{INLINE, Key, MAX_KEY_GROUPS, UNSET, group_of, hashable, key_hash, read_key};
use super::wire::{Reader, write_len, write_varint, zigzag};
use super::{JsonError, MAX_DEPTH, Path, i128_json, nullable, text_keys, u128_json};

/// [`StateDescription::encode_payload`].
pub(super) fn payload(
    description: &StateDescription,
    value: &Value,
    key_groups: u32,
    owned: Option<Range<u32>>,
) -> Result<Vec<u8>, JsonError> {
    let mut encoder = Encoder {
        types: &description.types,
        out: Vec::new(),
        key_groups,
        owned,
        depth: 0,
        path: Path::default(),
    };
    encoder.state(&description.shape, value)?;
    Ok(encoder.out)
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
    /// The key groups the state's partition owns, if not all: a key of
    /// another group would be restored where routing never sends its tuples.
    owned: Option<Range<u32>>,
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
            let home = group_of(hash, count);
            if let Some(owned) = self.owned.clone()
                && !owned.contains(&home)
            {
                return self.at(&entry.key_path, |e| {
                    e.error(format!(
                        "the key belongs to key group {home}, which this partition does not own (it owns groups {} \
                         to {}): it is another partition's key",
                        owned.start,
                        owned.end.saturating_sub(1)
                    ))
                });
            }
            let Some(group) = groups.get_mut(home as usize) else {
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
