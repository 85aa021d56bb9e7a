//! The tracer: a serde `Deserializer` that gives a type the values it asks
//! for and records what it asked for, which for postcard is the layout.
//! Each pass explores one more variant of every enum met.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::{Container, Format, NamedFormat, Variant, VariantContent};

/// The formats of the serde containers met so far, and which variants of
/// each enum are still to be explored.
#[derive(Debug, Default)]
pub(super) struct Tracer {
    containers: BTreeMap<String, Traced>,
    /// Containers being traced right now, innermost last: meeting one again
    /// is a recursive type.
    stack: Vec<&'static str>,
}

#[derive(Debug)]
enum Traced {
    Done(Container),
    Enum {
        /// The Rust type (`type_name`): serde names a type by its last path
        /// segment, without its generic arguments, so two enums may share a
        /// serde name; their variants must not be mixed.
        rust: &'static str,
        names: &'static [&'static str],
        /// The content of each variant explored so far.
        contents: Vec<Option<VariantContent>>,
        /// The variant to take next once every one was explored: taken in
        /// turn, so an enum met only inside a later variant is reached too.
        turn: usize,
    },
}

/// How many times one field type is deserialized at most: each pass
/// explores one more variant of every enum it meets.
const MAX_PASSES: usize = 4096;
/// How deep a type may nest.
const MAX_DEPTH: usize = 64;

impl Tracer {
    pub(super) fn trace<T: DeserializeOwned>(&mut self) -> Result<Format, String> {
        let mut format = None;
        for _ in 0..MAX_PASSES {
            let mut slot = None;
            T::deserialize(TraceDe {
                tracer: self,
                out: &mut slot,
                depth: 0,
            })
            .map_err(|e| e.0)?;
            format = slot;
            if !self.has_unexplored() {
                return format.ok_or_else(|| "the type asked for nothing".to_owned());
            }
        }
        let _ = format;
        Err(format!("more than {MAX_PASSES} enum variants to explore"))
    }

    fn has_unexplored(&self) -> bool {
        self.containers
            .values()
            .any(|c| matches!(c, Traced::Enum { contents, .. } if contents.iter().any(Option::is_none)))
    }

    pub(super) fn finish(self) -> Result<BTreeMap<String, Container>, String> {
        self.containers
            .into_iter()
            .map(|(name, traced)| match traced {
                Traced::Done(container) => Ok((name, container)),
                Traced::Enum { names, contents, .. } => {
                    let variants = names
                        .iter()
                        .zip(contents)
                        .map(|(variant, content)| {
                            content
                                .map(|content| Variant {
                                    name: (*variant).to_owned(),
                                    content,
                                })
                                .ok_or_else(|| format!("variant {name}::{variant} was never reached"))
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    Ok((name, Container::Enum(variants)))
                }
            })
            .collect()
    }

    fn record(&mut self, name: &'static str, container: Container) -> Result<(), TraceError> {
        match self.containers.get(name) {
            Some(Traced::Done(existing)) if *existing != container => Err(TraceError(format!(
                "two different types are named `{name}` (serde names a type by its last path segment only)"
            ))),
            Some(Traced::Enum { .. }) => Err(TraceError(format!("`{name}` is both a struct and an enum"))),
            _ => {
                self.containers.insert(name.to_owned(), Traced::Done(container));
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
struct TraceError(String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TraceError(format!("the type refused the tracer's value: {msg}"))
    }
}

/// Deserializes one value, writing what was asked for into `out`.
struct TraceDe<'t, 'o> {
    tracer: &'t mut Tracer,
    out: &'o mut Option<Format>,
    depth: usize,
}

impl<'t> TraceDe<'t, '_> {
    fn put(self, format: Format) {
        *self.out = Some(format);
    }

    /// Traces one more value (an element, a field) as a child.
    fn child<'de, S: DeserializeSeed<'de>>(
        tracer: &mut Tracer,
        depth: usize,
        seed: S,
    ) -> Result<(S::Value, Format), TraceError> {
        if depth >= MAX_DEPTH {
            return Err(TraceError(format!("types nest more than {MAX_DEPTH} deep")));
        }
        let mut slot = None;
        let value = seed.deserialize(TraceDe {
            tracer,
            out: &mut slot,
            depth: depth + 1,
        })?;
        let format = slot.ok_or_else(|| TraceError("a value asked for nothing".to_owned()))?;
        Ok((value, format))
    }

    fn enter(&mut self, name: &'static str) -> Result<(), TraceError> {
        if self.tracer.stack.contains(&name) {
            return Err(TraceError(format!(
                "`{name}` contains itself: recursive types cannot be described"
            )));
        }
        self.tracer.stack.push(name);
        Ok(())
    }
}

macro_rules! primitive {
    ($($method:ident => $format:ident, $visit:ident($value:expr);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            self.put(Format::$format);
            visitor.$visit($value)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for TraceDe<'_, '_> {
    type Error = TraceError;

    fn is_human_readable(&self) -> bool {
        false
    }

    primitive! {
        deserialize_bool => Bool, visit_bool(false);
        // 1, not 0: a type that refuses zero (`NonZeroU64`) still traces.
        deserialize_i8 => I8, visit_i8(1);
        deserialize_i16 => I16, visit_i16(1);
        deserialize_i32 => I32, visit_i32(1);
        deserialize_i64 => I64, visit_i64(1);
        deserialize_i128 => I128, visit_i128(1);
        deserialize_u8 => U8, visit_u8(1);
        deserialize_u16 => U16, visit_u16(1);
        deserialize_u32 => U32, visit_u32(1);
        deserialize_u64 => U64, visit_u64(1);
        deserialize_u128 => U128, visit_u128(1);
        deserialize_f32 => F32, visit_f32(1.0);
        deserialize_f64 => F64, visit_f64(1.0);
        deserialize_char => Char, visit_char('a');
        deserialize_str => Str, visit_str("");
        deserialize_string => Str, visit_string(String::new());
        deserialize_bytes => Bytes, visit_bytes(&[]);
        deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.put(Format::Unit);
        visitor.visit_unit()
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(TraceError(
            "the type reads itself by looking at the data (`#[serde(untagged)]`, `flatten` or a hand-written \
             `deserialize_any`), which postcard cannot store"
                .to_owned(),
        ))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut inner = None;
        let value = visitor.visit_some(TraceDe {
            tracer: self.tracer,
            out: &mut inner,
            depth: self.depth + 1,
        })?;
        let inner = inner.ok_or_else(|| TraceError("an option's value asked for nothing".to_owned()))?;
        *self.out = Some(Format::Option(Box::new(inner)));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        self.tracer.record(name, Container::UnitStruct)?;
        self.put(Format::Named(name.to_owned()));
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.enter(name)?;
        let mut inner = None;
        let value = visitor.visit_newtype_struct(TraceDe {
            tracer: self.tracer,
            out: &mut inner,
            depth: self.depth + 1,
        });
        self.tracer.stack.pop();
        let value = value?;
        let inner = inner.ok_or_else(|| TraceError(format!("`{name}` asked for nothing")))?;
        self.tracer.record(name, Container::Newtype(inner))?;
        self.put(Format::Named(name.to_owned()));
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        // One element: enough to learn the element's format.
        let mut access = Elements::new(self.tracer, self.depth, 1);
        let value = visitor.visit_seq(&mut access)?;
        let element = access.single()?;
        *self.out = Some(Format::Seq(Box::new(element)));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut access = Elements::new(self.tracer, self.depth, len);
        let value = visitor.visit_seq(&mut access)?;
        let formats = access.all(len)?;
        // Serde's tuples stop at 16 elements, so a longer "tuple" is an
        // array `[T; N]`: described once, not N times (a 16 KiB register
        // array would otherwise describe itself in 80 KB per snapshot).
        *self.out = Some(match formats.split_first() {
            Some((first, rest)) if len > 16 && rest.iter().all(|f| f == first) => Format::Array {
                content: Box::new(first.clone()),
                size: len,
            },
            _ => Format::Tuple(formats),
        });
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.enter(name)?;
        let mut access = Elements::new(self.tracer, self.depth, len);
        let value = visitor.visit_seq(&mut access);
        let formats = access.all(len);
        self.tracer.stack.pop();
        let (value, formats) = (value?, formats?);
        self.tracer.record(name, Container::TupleStruct(formats))?;
        self.put(Format::Named(name.to_owned()));
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut access = Entry {
            tracer: self.tracer,
            depth: self.depth,
            left: true,
            key: None,
            value: None,
        };
        let value = visitor.visit_map(&mut access)?;
        let (Some(key), Some(entry)) = (access.key, access.value) else {
            return Err(TraceError("a map asked for no entry".to_owned()));
        };
        *self.out = Some(Format::Map {
            key: Box::new(key),
            value: Box::new(entry),
        });
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.enter(name)?;
        let mut access = Elements::new(self.tracer, self.depth, fields.len());
        let value = visitor.visit_seq(&mut access);
        let formats = access.all(fields.len());
        self.tracer.stack.pop();
        let (value, formats) = (value?, formats?);
        let named = fields
            .iter()
            .zip(formats)
            .map(|(field, format)| NamedFormat {
                name: (*field).to_owned(),
                format,
            })
            .collect();
        self.tracer.record(name, Container::Struct(named))?;
        self.put(Format::Named(name.to_owned()));
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(TraceError(format!("`{name}` has no variants")));
        }
        let rust = std::any::type_name::<V::Value>();
        let entry = self.tracer.containers.entry(name.to_owned()).or_insert(Traced::Enum {
            rust,
            names: variants,
            contents: vec![None; variants.len()],
            turn: 0,
        });
        let Traced::Enum {
            rust: known,
            contents,
            turn,
            ..
        } = entry
        else {
            return Err(TraceError(format!("`{name}` is both a struct and an enum")));
        };
        if *known != rust {
            return Err(TraceError(format!(
                "two different types are named `{name}` ({known} and {rust}): serde names a type by its last \
                 path segment only"
            )));
        }
        let index = match contents.iter().position(Option::is_none) {
            Some(unexplored) => unexplored,
            None => {
                *turn = (*turn + 1) % contents.len();
                *turn
            }
        };
        self.enter(name)?;
        let mut content = None;
        let value = visitor.visit_enum(EnumTrace {
            tracer: self.tracer,
            depth: self.depth,
            index: index as u32,
            content: &mut content,
        });
        self.tracer.stack.pop();
        let value = value?;
        let content = content.ok_or_else(|| TraceError(format!("variant {index} of `{name}` asked for nothing")))?;
        if let Some(Traced::Enum { contents, .. }) = self.tracer.containers.get_mut(name) {
            match &contents[index] {
                Some(known) if *known != content => {
                    return Err(TraceError(format!("variant {index} of `{name}` changed its layout")));
                }
                _ => contents[index] = Some(content),
            }
        }
        self.put(Format::Named(name.to_owned()));
        Ok(value)
    }
}

/// The elements of a sequence, tuple or struct: `len` of them.
struct Elements<'t> {
    tracer: &'t mut Tracer,
    depth: usize,
    left: usize,
    formats: Vec<Format>,
}

impl<'t> Elements<'t> {
    fn new(tracer: &'t mut Tracer, depth: usize, len: usize) -> Self {
        Elements {
            tracer,
            depth,
            left: len,
            formats: Vec::with_capacity(len.min(64)),
        }
    }

    fn single(self) -> Result<Format, TraceError> {
        self.formats
            .into_iter()
            .next()
            .ok_or_else(|| TraceError("a sequence asked for no element".to_owned()))
    }

    fn all(self, len: usize) -> Result<Vec<Format>, TraceError> {
        if self.formats.len() != len {
            return Err(TraceError(format!(
                "{len} elements expected, {} asked for",
                self.formats.len()
            )));
        }
        Ok(self.formats)
    }
}

impl<'de> de::SeqAccess<'de> for &mut Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let (value, format) = TraceDe::child(self.tracer, self.depth, seed)?;
        self.formats.push(format);
        Ok(Some(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// One map entry.
struct Entry<'t> {
    tracer: &'t mut Tracer,
    depth: usize,
    left: bool,
    key: Option<Format>,
    value: Option<Format>,
}

impl<'de> de::MapAccess<'de> for &mut Entry<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        if !self.left {
            return Ok(None);
        }
        self.left = false;
        let (key, format) = TraceDe::child(self.tracer, self.depth, seed)?;
        self.key = Some(format);
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        let (value, format) = TraceDe::child(self.tracer, self.depth, seed)?;
        self.value = Some(format);
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.left))
    }
}

/// The variant chosen for an enum, and its content.
struct EnumTrace<'t, 'c> {
    tracer: &'t mut Tracer,
    depth: usize,
    index: u32,
    content: &'c mut Option<VariantContent>,
}

impl<'de, 't, 'c> de::EnumAccess<'de> for EnumTrace<'t, 'c> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), TraceError> {
        let index: de::value::U32Deserializer<TraceError> = self.index.into_deserializer();
        let value = seed.deserialize(index)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumTrace<'_, '_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.content = Some(VariantContent::Unit);
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        let (value, format) = TraceDe::child(self.tracer, self.depth, seed)?;
        *self.content = Some(VariantContent::Newtype(format));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut access = Elements::new(self.tracer, self.depth, len);
        let value = visitor.visit_seq(&mut access)?;
        *self.content = Some(VariantContent::Tuple(access.all(len)?));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut access = Elements::new(self.tracer, self.depth, fields.len());
        let value = visitor.visit_seq(&mut access)?;
        let formats = access.all(fields.len())?;
        *self.content = Some(VariantContent::Struct(
            fields
                .iter()
                .zip(formats)
                .map(|(field, format)| NamedFormat {
                    name: (*field).to_owned(),
                    format,
                })
                .collect(),
        ));
        Ok(value)
    }
}
