//! What a keyed map's bytes fix beyond its entries: its layout, its
//! key-group count, each key's group and the key order within a group. The
//! decoder checks them as the state's own decoding does; the encoder places
//! keys by them, so the job reads back what a tool wrote.

use super::super::Format;
use super::wire::{Reader, unzigzag};
use crate::stable_hash::splitmix64;

/// A keyed map's layout byte: the map never held a key.
pub(super) const UNSET: u8 = 0;
/// Every group follows inline.
pub(super) const INLINE: u8 = 1;
/// The groups are in chunks.
pub(super) const CHUNKED: u8 = 2;
/// `KeyGroups`' bounds.
pub(super) const MAX_KEY_GROUPS: u32 = 1 << 15;

/// A key as its type orders it: integers by value, strings and bytes by
/// their bytes, tuples element by element. Only keys of one format are
/// compared, so the order between variants does not matter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Unsigned(u128),
    Signed(i128),
    Bool(bool),
    Char(char),
    Bytes(Vec<u8>),
    Tuple(Vec<Key>),
}

/// Whether keys of `format` have an order this module knows.
pub(super) fn ordered(format: &Format) -> bool {
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
pub(super) fn hashable(format: &Format) -> bool {
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
pub(super) fn read_key(format: &Format, input: &mut Reader<'_>) -> Result<Key, String> {
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
pub(super) fn key_hash(format: &Format, key: &Key) -> Option<u64> {
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
pub(super) fn group_of(hash: u64, count: u32) -> u32 {
    let count = u64::from(count.max(1));
    let group = if count.is_power_of_two() {
        hash & (count - 1)
    } else {
        hash % count
    };
    // Below `count`, a `u32`.
    group as u32
}
