//! Layout descriptions: what a snapshot's payload holds, written into the
//! snapshot itself, so a tool decodes any job's state without the job's
//! code (`checkpoint dump`, `checkpoint edit`).
//!
//! `#[derive(Checkpoint)]` describes each persisted field by name, kind and
//! type text (the same facts its fingerprint hashes) and traces the serde
//! format of every plain field's type (as `serde-reflection` does: by
//! deserializing the type from a tracer). A reader checks a description
//! against the snapshot's fingerprint before trusting it.

mod check;
mod json;
mod trace;
mod tracer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use check::DescriptionError;
pub use json::JsonError;
pub use trace::{Describer, description_json_of, description_of};

/// The persisted layout of one state type at one version: enough to
/// decode its payload without the type.
///
/// Written as JSON (`serde_json`) into every snapshot of a derived state
/// type (`docs/FORMAT.md`, "Layout descriptions").
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, KeyedMap, StateDescription};
///
/// #[derive(Checkpoint, Default)]
/// struct Counter {
///     total: u64,
///     #[checkpoint(keyed)]
///     per_key: KeyedMap<String, u64>,
/// }
///
/// let description = StateDescription::of::<Counter>()?;
/// assert_eq!(description.type_name, "Counter");
/// assert_eq!(description.fingerprint, Counter::FINGERPRINT);
/// description.check()?; // its names and type texts give its fingerprint
/// # Ok::<(), checkpoint_core::DescriptionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDescription {
    /// The state type's name, as in the snapshot header.
    pub type_name: String,
    /// The layout version.
    pub version: u32,
    /// The layout fingerprint this description must give.
    pub fingerprint: u64,
    /// The persisted fields.
    pub shape: Shape,
    /// The serde containers (structs and enums of plain fields) that
    /// [`Format::Named`] refers to, by name. Only the outermost description
    /// of a snapshot has them; nested ones share it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub types: BTreeMap<String, Container>,
}

/// The persisted fields of a state type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// `#[checkpoint(stateless)]`: nothing is saved.
    Stateless,
    /// A struct: its persisted fields, in order.
    Struct {
        /// The persisted fields, in declaration order.
        fields: Vec<StateField>,
    },
    /// An enum: the variant's index (a varint) then its persisted fields.
    Enum {
        /// Every variant, in declaration order (the index is the position).
        variants: Vec<StateVariant>,
    },
}

/// One variant of an enum state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateVariant {
    /// The variant's name.
    pub name: String,
    /// Its persisted fields, in declaration order.
    pub fields: Vec<StateField>,
}

/// One persisted field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateField {
    /// The field's name (a tuple field's index: `"0"`, `"1"`, ...).
    pub name: String,
    /// How it is saved.
    pub kind: FieldKind,
}

/// How one persisted field is saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldKind {
    /// With serde and postcard.
    Plain {
        /// The field's type as its fingerprint hashes it (`HashMap<u32,Zone>`).
        type_text: String,
        /// The postcard layout of the type.
        format: Format,
    },
    /// `#[checkpoint(nested)]`: another state, inline.
    Nested {
        /// The nested type's own description (without `types`).
        state: Box<StateDescription>,
    },
    /// `#[checkpoint(keyed)]`: a `KeyedMap`, group by group.
    Keyed {
        /// The field's type as its fingerprint hashes it (`KeyedMap<u64,u64>`).
        type_text: String,
        /// The keys' postcard layout.
        key: Format,
        /// The values' postcard layout.
        value: Format,
    },
}

/// The postcard layout of a serde type (serde's data model, as
/// `serde-reflection` records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Format {
    /// `()`: no bytes.
    Unit,
    /// One byte, 0 or 1.
    Bool,
    /// One byte, two's complement.
    I8,
    /// Zig-zag varint.
    I16,
    /// Zig-zag varint.
    I32,
    /// Zig-zag varint.
    I64,
    /// Zig-zag varint.
    I128,
    /// One byte.
    U8,
    /// Varint.
    U16,
    /// Varint.
    U32,
    /// Varint.
    U64,
    /// Varint.
    U128,
    /// 4 bytes, little-endian IEEE 754.
    F32,
    /// 8 bytes, little-endian IEEE 754.
    F64,
    /// As a string of the one character.
    Char,
    /// Varint length, then UTF-8.
    Str,
    /// Varint length, then the bytes.
    Bytes,
    /// A byte 0 (none) or 1 then the value.
    Option(Box<Format>),
    /// Varint length, then the elements.
    Seq(Box<Format>),
    /// Varint length, then each key and its value.
    Map {
        /// The keys' layout.
        key: Box<Format>,
        /// The values' layout.
        value: Box<Format>,
    },
    /// The elements, one after another.
    Tuple(Vec<Format>),
    /// `[T; N]`: `size` elements, no length.
    Array {
        /// The elements' layout.
        content: Box<Format>,
        /// How many.
        size: usize,
    },
    /// A struct or enum of [`StateDescription::types`].
    Named(String),
}

/// A serde struct or enum, named by [`Format::Named`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Container {
    /// `struct S;`: no bytes.
    UnitStruct,
    /// `struct S(T);`: the inner value.
    Newtype(Format),
    /// `struct S(A, B);`: the elements.
    TupleStruct(Vec<Format>),
    /// `struct S { a: A }`: the fields, in order.
    Struct(Vec<NamedFormat>),
    /// An enum: the variant's index (a varint), then its content.
    Enum(Vec<Variant>),
}

/// A named field of a serde struct or struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFormat {
    /// The field's serde name.
    pub name: String,
    /// Its layout.
    pub format: Format,
}

/// A variant of a serde enum; its index is its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The variant's serde name.
    pub name: String,
    /// Its content.
    pub content: VariantContent,
}

/// The content of a serde enum variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VariantContent {
    /// `V`: no bytes.
    Unit,
    /// `V(T)`: the inner value.
    Newtype(Format),
    /// `V(A, B)`: the elements.
    Tuple(Vec<Format>),
    /// `V { a: A }`: the fields.
    Struct(Vec<NamedFormat>),
}

impl StateDescription {
    /// The description of `T`'s persisted layout, traced now (see
    /// [`description_of`] for the cached one snapshots use).
    ///
    /// An error if `T` does not describe itself (a hand-written
    /// `Checkpoint` without [`Checkpoint::describe`](crate::Checkpoint::describe))
    /// or a field type cannot be traced.
    pub fn of<T: crate::Checkpoint>() -> Result<Self, DescriptionError> {
        trace::trace::<T>()
    }

    /// Parses a description from the JSON a snapshot carries.
    pub fn from_json(text: &str) -> Result<Self, DescriptionError> {
        serde_json::from_str(text).map_err(|e| DescriptionError::Malformed(e.to_string()))
    }

    /// The JSON a snapshot carries.
    pub fn to_json(&self) -> String {
        // A description is made of strings, numbers and enums only: it
        // always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}
