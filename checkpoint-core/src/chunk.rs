//! Chunks: one key group of one keyed map, saved on its own so a checkpoint
//! can refer to it instead of writing it again while the group does not
//! change (incremental checkpoints; layout in `docs/FORMAT.md`, "Chunks").

use std::fmt;
use std::str::FromStr;

use crate::error::SnapshotError;
use crate::snapshot::MAX_OPERATOR_NAME_LEN;
use crate::window::WindowId;

/// The magic bytes that start every chunk.
pub const CHUNK_MAGIC: [u8; 8] = *b"CKPTCHNK";

/// The chunk format this build writes and reads.
pub const CHUNK_FORMAT_VERSION: u16 = 1;

/// Bytes of a chunk's header before the operator name.
pub const CHUNK_HEADER_LEN: usize = 50;

/// Which chunk: written by the checkpoint at `window`, holding group
/// `group` of the `map`-th keyed map of the operator's state (in the order
/// the state encodes its fields). Unique per operator: a checkpoint writes
/// a group at most once.
///
/// Its text form, also its file name, is `<16 hex digits of the
/// window>-<map>-<group>`.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{ChunkId, WindowId};
///
/// let id = ChunkId { window: WindowId::new(1, 2), map: 0, group: 17 };
/// assert_eq!(id.to_string(), "0000000100000002-0-17");
/// assert_eq!("0000000100000002-0-17".parse::<ChunkId>(), Ok(id));
/// assert!("0000000100000002-0".parse::<ChunkId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId {
    /// The window of the checkpoint that wrote the chunk.
    pub window: WindowId,
    /// Which keyed map of the state, counted from 0 in encoding order.
    pub map: u32,
    /// The key group.
    pub group: u32,
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}-{}", self.window.as_u64(), self.map, self.group)
    }
}

/// Text that is not a [`ChunkId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseChunkIdError(pub String);

impl fmt::Display for ParseChunkIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a chunk name (`<16 hex digits>-<map>-<group>`)", self.0)
    }
}

impl std::error::Error for ParseChunkIdError {}

impl FromStr for ChunkId {
    type Err = ParseChunkIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseChunkIdError(s.chars().take(100).collect());
        let mut parts = s.split('-');
        let (Some(window), Some(map), Some(group), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let digits =
            |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && (t == "0" || !t.starts_with('0'));
        if window.len() != 16 || !window.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(bad());
        }
        if !digits(map) || !digits(group) {
            return Err(bad());
        }
        Ok(ChunkId {
            window: WindowId::from_u64(u64::from_str_radix(window, 16).map_err(|_| bad())?),
            map: map.parse().map_err(|_| bad())?,
            group: group.parse().map_err(|_| bad())?,
        })
    }
}

/// A snapshot's reference to a chunk: which one, and what it must be (its
/// entry count, its length in bytes and its CRC-32C trailer), so a reader
/// can tell a damaged or substituted chunk from the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// Which chunk.
    pub id: ChunkId,
    /// How many entries the group holds.
    pub entries: u64,
    /// The chunk's length in bytes, header and trailer included.
    pub len: u64,
    /// The chunk's CRC-32C trailer.
    pub crc: u32,
}

/// A chunk's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The operator whose state the chunk belongs to.
    pub operator: String,
    /// Which chunk.
    pub id: ChunkId,
    /// The key-group count of the map.
    pub key_groups: u32,
    /// How many entries.
    pub entries: u64,
    /// The payload's length.
    pub payload_len: u64,
}

/// Encoding and decoding chunks ([`ChunkHeader`] is what a decode reads,
/// [`ChunkRef`] what a snapshot's chunk table records).
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Chunk, ChunkId, WindowId};
///
/// let id = ChunkId { window: WindowId::new(1, 4), map: 0, group: 5 };
/// let (bytes, reference) = Chunk::encode("count#1", id, 128, 2, b"entries")?;
/// assert_eq!((reference.id, reference.entries, reference.len), (id, 2, bytes.len() as u64));
///
/// let (header, payload) = Chunk::decode_expected(&bytes, "count#1", &reference, 128)?;
/// assert_eq!((header.operator.as_str(), payload), ("count#1", &b"entries"[..]));
/// // Another operator's or another map's chunk is refused.
/// assert!(Chunk::decode_expected(&bytes, "count#0", &reference, 128).is_err());
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
#[derive(Debug)]
pub enum Chunk {}

impl Chunk {
    /// A chunk holding `payload`, the encoded entries of one group
    /// (`docs/FORMAT.md`); returns its bytes and its reference.
    pub fn encode(
        operator: &str,
        id: ChunkId,
        key_groups: u32,
        entries: u64,
        payload: &[u8],
    ) -> Result<(Vec<u8>, ChunkRef), SnapshotError> {
        if operator.len() > MAX_OPERATOR_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(format!(
                "operator name is {} bytes, at most {MAX_OPERATOR_NAME_LEN} fit",
                operator.len()
            )));
        }
        let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + operator.len() + payload.len() + 4);
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(&CHUNK_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&id.window.as_u64().to_le_bytes());
        out.extend_from_slice(&id.map.to_le_bytes());
        out.extend_from_slice(&id.group.to_le_bytes());
        out.extend_from_slice(&key_groups.to_le_bytes());
        out.extend_from_slice(&entries.to_le_bytes());
        out.extend_from_slice(&(operator.len() as u16).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        debug_assert_eq!(out.len(), CHUNK_HEADER_LEN);
        out.extend_from_slice(operator.as_bytes());
        out.extend_from_slice(payload);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let reference = ChunkRef {
            id,
            entries,
            len: out.len() as u64,
            crc,
        };
        Ok((out, reference))
    }

    /// Checks a chunk's bytes (magic, format, lengths, CRC-32C) and
    /// returns its header and payload.
    pub fn decode(bytes: &[u8]) -> Result<(ChunkHeader, &[u8]), SnapshotError> {
        let magic_len = bytes.len().min(CHUNK_MAGIC.len());
        if bytes[..magic_len] != CHUNK_MAGIC[..magic_len] {
            return Err(SnapshotError::BadMagic {
                expected: CHUNK_MAGIC,
                found: bytes[..magic_len].to_vec(),
            });
        }
        if bytes.len() < CHUNK_HEADER_LEN + 4 {
            return Err(SnapshotError::Truncated {
                expected: (CHUNK_HEADER_LEN + 4) as u64,
                found: bytes.len() as u64,
            });
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let format = u16_at(8);
        if format != CHUNK_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormat {
                supported: CHUNK_FORMAT_VERSION,
                found: format,
            });
        }
        if u16_at(10) != 0 {
            return Err(SnapshotError::InvalidHeader(format!(
                "chunk flags {:#06x}, expected 0",
                u16_at(10)
            )));
        }
        let name_len = usize::from(u16_at(40));
        let payload_len = u64_at(42);
        let Some(expected) = ((CHUNK_HEADER_LEN + name_len + 4) as u64).checked_add(payload_len) else {
            return Err(SnapshotError::InvalidHeader(format!(
                "chunk payload length {payload_len} is not a possible length"
            )));
        };
        let found = bytes.len() as u64;
        if found < expected {
            return Err(SnapshotError::Truncated { expected, found });
        }
        if found > expected {
            return Err(SnapshotError::TrailingBytes { expected, found });
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        let name = &body[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + name_len];
        let operator = std::str::from_utf8(name)
            .map_err(|_| SnapshotError::InvalidHeader("the chunk's operator name is not UTF-8".to_owned()))?
            .to_owned();
        let header = ChunkHeader {
            operator,
            id: ChunkId {
                window: WindowId::from_u64(u64_at(12)),
                map: u32_at(20),
                group: u32_at(24),
            },
            key_groups: u32_at(28),
            entries: u64_at(32),
            payload_len,
        };
        Ok((header, &body[CHUNK_HEADER_LEN + name_len..]))
    }

    /// Decodes `bytes` and checks they are the chunk `reference` names, of
    /// `operator`, for a map of `key_groups` groups.
    pub fn decode_expected<'a>(
        bytes: &'a [u8],
        operator: &str,
        reference: &ChunkRef,
        key_groups: u32,
    ) -> Result<(ChunkHeader, &'a [u8]), SnapshotError> {
        let bad = |detail: String| SnapshotError::BadChunk {
            chunk: format!("{operator}/{}", reference.id),
            detail,
        };
        if bytes.len() as u64 != reference.len {
            return Err(bad(format!(
                "it has {} bytes, the snapshot says {}",
                bytes.len(),
                reference.len
            )));
        }
        let (header, payload) = Chunk::decode(bytes).map_err(|e| bad(e.to_string()))?;
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap_or_default());
        if crc != reference.crc {
            return Err(bad(format!(
                "its CRC-32C is {crc:#010x}, the snapshot says {:#010x}: it is another chunk than the one saved",
                reference.crc
            )));
        }
        if header.operator != operator || header.id != reference.id {
            return Err(bad(format!("it says it is {}/{} instead", header.operator, header.id)));
        }
        if header.key_groups != key_groups || header.entries != reference.entries {
            return Err(bad(format!(
                "it holds {} entries of a map of {} key groups; the snapshot says {} of {key_groups}",
                header.entries, header.key_groups, reference.entries
            )));
        }
        Ok((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ChunkId {
        ChunkId {
            window: WindowId::new(7, 9),
            map: 1,
            group: 3,
        }
    }

    #[test]
    fn a_chunk_round_trips_and_checks_what_it_is() {
        let (bytes, reference) = Chunk::encode("count#1", id(), 16, 2, b"abcd").expect("encodes");
        assert_eq!(reference.len, bytes.len() as u64);
        let (header, payload) = Chunk::decode_expected(&bytes, "count#1", &reference, 16).expect("decodes");
        assert_eq!((header.id, header.entries, payload), (id(), 2, &b"abcd"[..]));
        let err = Chunk::decode_expected(&bytes, "count#2", &reference, 16).expect_err("another operator");
        assert!(err.to_string().contains("count#1"), "{err}");
        let err = Chunk::decode_expected(&bytes, "count#1", &reference, 32).expect_err("another group count");
        assert!(err.to_string().contains("key groups"), "{err}");
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_detected() {
        let (bytes, reference) = Chunk::encode("op", id(), 4, 1, b"payload").expect("encodes");
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(
                    Chunk::decode_expected(&damaged, "op", &reference, 4).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(Chunk::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn a_huge_payload_length_is_an_error_not_an_overflow() {
        let (mut bytes, _) = Chunk::encode("op", id(), 4, 1, b"x").expect("encodes");
        bytes[42..50].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Chunk::decode(&bytes), Err(SnapshotError::InvalidHeader(_))));
    }

    #[test]
    fn chunk_names_are_exact() {
        for bad in [
            "",
            "x",
            "0000000100000002-00-1",
            "0000000100000002-1-",
            "0000000100000002-a-1",
            "000000010000000G-1-1",
            "0000000100000002-1-1-1",
            "000000010000000A-1-1",
        ] {
            assert!(bad.parse::<ChunkId>().is_err(), "{bad:?}");
        }
        assert_eq!(id().to_string().parse::<ChunkId>(), Ok(id()));
    }
}
