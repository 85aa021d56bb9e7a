//! Checking a description before trusting it: its names, kinds and type
//! texts must give the fingerprint it claims (the recipe of
//! `docs/FINGERPRINT.md`), and its formats must not contradict its type
//! texts.

use super::{FieldKind, Format, Shape, StateDescription, StateField};
use crate::checkpoint::LayoutHasher;
use crate::snapshot::SnapshotHeader;

/// A layout description that cannot be made, read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptionError {
    /// The type does not describe itself (a hand-written `Checkpoint`
    /// without `describe`).
    #[error("`{type_name}` does not describe its layout (a hand-written `Checkpoint` without `describe`)")]
    NotDescribed {
        /// The state type.
        type_name: String,
    },
    /// A field's type could not be traced.
    #[error("the layout of `{type_name}` cannot be described: {reason}")]
    Untraceable {
        /// The state type.
        type_name: String,
        /// Why.
        reason: String,
    },
    /// The snapshot carries no description.
    #[error(
        "the snapshot of `{type_name}` carries no layout description (it was written by a hand-written \
         `Checkpoint`, by a type whose fields could not be traced, or by an older version of the library)"
    )]
    Missing {
        /// The state type the header names.
        type_name: String,
    },
    /// The description is not a description.
    #[error("the layout description is damaged: {0}")]
    Malformed(String),
    /// The description's names and type texts do not give its fingerprint,
    /// or it is not the one of the snapshot that carries it.
    #[error(
        "the layout description of `{type_name}` gives fingerprint {computed:#018x} where {expected:#018x} is \
         recorded: it does not describe this state"
    )]
    FingerprintMismatch {
        /// The state type.
        type_name: String,
        /// What the description's fields give.
        computed: u64,
        /// What the snapshot (or the description itself) records.
        expected: u64,
    },
    /// A format contradicts its field's type text.
    #[error("the layout description of `{type_name}` says field `{field}` of type `{type_text}` is {format}")]
    Contradiction {
        /// The state type.
        type_name: String,
        /// The field.
        field: String,
        /// Its type text.
        type_text: String,
        /// The contradicting format.
        format: String,
    },
}

impl StateDescription {
    /// Checks that the description is consistent: its fields give its
    /// fingerprint (nested descriptions too) and no format contradicts
    /// its type text (`u64` must be a `u64`, `Vec<T>` a sequence, ...).
    pub fn check(&self) -> Result<(), DescriptionError> {
        let computed = self.computed_fingerprint()?;
        if computed != self.fingerprint {
            return Err(DescriptionError::FingerprintMismatch {
                type_name: self.type_name.clone(),
                computed,
                expected: self.fingerprint,
            });
        }
        Ok(())
    }

    /// [`check`](Self::check), and that the description is the one of the
    /// snapshot `header` belongs to: same type name, version and
    /// fingerprint.
    pub fn check_against(&self, header: &SnapshotHeader) -> Result<(), DescriptionError> {
        self.check()?;
        if self.fingerprint != header.fingerprint
            || self.version != header.state_version
            || self.type_name != header.type_name
        {
            return Err(DescriptionError::FingerprintMismatch {
                type_name: header.type_name.clone(),
                computed: self.fingerprint,
                expected: header.fingerprint,
            });
        }
        Ok(())
    }

    fn computed_fingerprint(&self) -> Result<u64, DescriptionError> {
        let mut h = LayoutHasher::new();
        match &self.shape {
            Shape::Stateless => h = h.write_str("stateless"),
            Shape::Struct { fields } => {
                h = h.write_str("struct");
                h = self.fields(h, fields)?;
            }
            Shape::Enum { variants } => {
                h = h.write_str("enum").write_u64(variants.len() as u64);
                for variant in variants {
                    h = h.write_str(&variant.name);
                    h = self.fields(h, &variant.fields)?;
                }
            }
        }
        Ok(h.write_u64(u64::from(self.version)).finish())
    }

    fn fields(&self, mut h: LayoutHasher, fields: &[StateField]) -> Result<LayoutHasher, DescriptionError> {
        h = h.write_u64(fields.len() as u64);
        for field in fields {
            h = h.write_str(&field.name);
            h = match &field.kind {
                FieldKind::Plain { type_text, format } => {
                    self.consistent(&field.name, type_text, type_text, format)?;
                    h.write_u64(0).write_str(type_text)
                }
                FieldKind::Nested { state } => {
                    state.check()?;
                    h.write_u64(1).write_u64(state.fingerprint)
                }
                FieldKind::Keyed { type_text, key, value } => {
                    if let Some(("KeyedMap", args)) = split_type(type_text)
                        && let [k, v] = args.as_slice()
                    {
                        self.consistent(&field.name, type_text, k, key)?;
                        self.consistent(&field.name, type_text, v, value)?;
                    }
                    h.write_u64(2).write_str(type_text)
                }
            };
        }
        Ok(h)
    }

    /// Whether `format` may be the format of the type written `text`.
    /// Types the check does not know (a user's own, a type parameter) may
    /// have any format.
    fn consistent(&self, field: &str, whole: &str, text: &str, format: &Format) -> Result<(), DescriptionError> {
        let contradiction = || DescriptionError::Contradiction {
            type_name: self.type_name.clone(),
            field: field.to_owned(),
            type_text: whole.to_owned(),
            format: format!("{format:?}"),
        };
        let primitive = match text {
            "bool" => Some(Format::Bool),
            "i8" => Some(Format::I8),
            "i16" => Some(Format::I16),
            "i32" => Some(Format::I32),
            "i64" | "isize" => Some(Format::I64),
            "i128" => Some(Format::I128),
            "u8" => Some(Format::U8),
            "u16" => Some(Format::U16),
            "u32" => Some(Format::U32),
            "u64" | "usize" => Some(Format::U64),
            "u128" => Some(Format::U128),
            "f32" => Some(Format::F32),
            "f64" => Some(Format::F64),
            "char" => Some(Format::Char),
            "String" | "str" => Some(Format::Str),
            "()" => Some(Format::Unit),
            _ => None,
        };
        if let Some(primitive) = primitive {
            return if *format == primitive {
                Ok(())
            } else {
                Err(contradiction())
            };
        }
        if (text == "Vec<u8>" || text == "Box<[u8]>") && *format == Format::Bytes {
            return Ok(());
        }
        let Some((name, args)) = split_type(text) else {
            return Ok(());
        };
        match (name, args.as_slice(), format) {
            (
                "Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "LinkedList" | "BinaryHeap",
                [element],
                Format::Seq(inner),
            ) => self.consistent(field, whole, element, inner),
            ("Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "LinkedList" | "BinaryHeap", [_], _) => Err(contradiction()),
            ("Option", [inner_text], Format::Option(inner)) => self.consistent(field, whole, inner_text, inner),
            ("Option", [_], _) => Err(contradiction()),
            ("HashMap" | "BTreeMap", [k, v, ..], Format::Map { key, value }) => {
                self.consistent(field, whole, k, key)?;
                self.consistent(field, whole, v, value)
            }
            ("HashMap" | "BTreeMap", [_, _, ..], _) => Err(contradiction()),
            ("Box" | "Arc" | "Rc", [inner], _) => self.consistent(field, whole, inner, format),
            ("()", elements, Format::Tuple(formats)) if elements.len() == formats.len() => {
                for (element, inner) in elements.iter().zip(formats) {
                    self.consistent(field, whole, element, inner)?;
                }
                Ok(())
            }
            ("()", _, _) => Err(contradiction()),
            _ => Ok(()),
        }
    }
}

/// `Name<A,B>` as `("Name", ["A", "B"])`, `(A,B)` as `("()", ["A", "B"])`;
/// `None` for anything else (a bare name, an array, a reference).
fn split_type(text: &str) -> Option<(&str, Vec<&str>)> {
    let (name, inner) = if let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        ("()", inner)
    } else {
        let open = text.find('<')?;
        let inner = text[open + 1..].strip_suffix('>')?;
        (&text[..open], inner)
    };
    let mut args = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                args.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        args.push(&inner[start..]);
    }
    Some((name, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_split_at_their_top_level_commas() {
        assert_eq!(
            split_type("HashMap<u32,Vec<(u8,u8)>>"),
            Some(("HashMap", vec!["u32", "Vec<(u8,u8)>"]))
        );
        assert_eq!(split_type("(u32,String)"), Some(("()", vec!["u32", "String"])));
        assert_eq!(split_type("(u8,)"), Some(("()", vec!["u8"])));
        assert_eq!(split_type("u64"), None);
        assert_eq!(split_type("[u8;4]"), None);
    }
}
