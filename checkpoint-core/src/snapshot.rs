//! The snapshot envelope: one operator's state at one window, self-describing
//! and checksummed. The byte layout is specified in `docs/FORMAT.md`.

use std::io::Write;

use crate::checkpoint::{Checkpoint, StateLayout};
use crate::chunk::{ChunkId, ChunkRef};
use crate::error::{PayloadError, SnapshotError};
use crate::window::WindowId;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"CKPTSNAP";

/// The envelope format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// The longest operator name a snapshot can hold, in bytes.
pub const MAX_OPERATOR_NAME_LEN: usize = 255;

/// The longest state type name a snapshot can hold, in bytes.
pub const MAX_TYPE_NAME_LEN: usize = 1024;

/// Bytes before the operator name: magic, format version, flags, window,
/// state version, fingerprint, the two name lengths and the payload length.
pub const FIXED_HEADER_LEN: usize = 44;

/// Bytes of the CRC-32C trailer.
pub const TRAILER_LEN: usize = 4;

/// The flag saying a chunk table follows the payload (`docs/FORMAT.md`):
/// the snapshot's keyed state is in chunks it refers to.
pub const FLAG_CHUNKS: u16 = 1;

/// The flags bit saying a layout description follows the chunk table (or
/// the payload): a `u32` length, then that many bytes of JSON
/// (`docs/FORMAT.md`, "Layout descriptions").
pub const FLAG_DESCRIPTION: u16 = 2;

/// The longest layout description a snapshot may carry.
pub const MAX_DESCRIPTION_LEN: usize = 16 << 20;

/// Bytes of one chunk table entry: window, map, group, entries, length,
/// CRC-32C.
pub const CHUNK_ENTRY_LEN: usize = 36;

const OFF_FORMAT: usize = 8;
const OFF_FLAGS: usize = 10;
const OFF_WINDOW: usize = 12;
const OFF_STATE_VERSION: usize = 20;
const OFF_FINGERPRINT: usize = 24;
const OFF_OPERATOR_LEN: usize = 32;
const OFF_TYPE_LEN: usize = 34;
const OFF_PAYLOAD_LEN: usize = 36;

/// What the caller says about a snapshot being written: whose state it is
/// and at which window.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{SnapshotMeta, WindowId};
///
/// let meta = SnapshotMeta::new("count#0", WindowId::new(1_700_000_000, 119));
/// assert_eq!(meta.operator, "count#0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta<'a> {
    /// The operator whose state this is.
    pub operator: &'a str,
    /// The window after whose `end_window` the state was taken.
    pub window: WindowId,
}

impl<'a> SnapshotMeta<'a> {
    /// Metadata for `operator`'s state at `window`.
    pub fn new(operator: &'a str, window: WindowId) -> Self {
        SnapshotMeta { operator, window }
    }
}

/// The header of a snapshot, readable without knowing the state type.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, WindowId};
///
/// let bytes = Snapshot::encode(&42u64, SnapshotMeta::new("sum", WindowId::new(7, 3)))?;
/// let header = Snapshot::read_header(&bytes)?;
/// assert_eq!(header.operator, "sum");
/// assert_eq!(header.window, WindowId::new(7, 3));
/// assert_eq!(header.type_name, "u64");
/// assert_eq!(header.state_version, 1);
/// assert_eq!(header.fingerprint, <u64 as Checkpoint>::FINGERPRINT);
/// assert_eq!(header.payload_len, 1); // postcard's varint for 42
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The operator whose state this is.
    pub operator: String,
    /// The window the state was taken at.
    pub window: WindowId,
    /// The name of the state type that wrote it (for messages only).
    pub type_name: String,
    /// The state type's version when it was written.
    pub state_version: u32,
    /// The state type's layout fingerprint when it was written.
    pub fingerprint: u64,
    /// The length of the payload, in bytes.
    pub payload_len: u64,
    /// The chunks holding the state's keyed groups, by map then group;
    /// empty when the whole state is in the payload.
    pub chunks: Vec<ChunkRef>,
    /// The state's layout description (JSON), if the snapshot carries one:
    /// see [`StateDescription`](crate::StateDescription).
    pub description: Option<String>,
}

impl SnapshotHeader {
    /// The state layout the snapshot records.
    pub fn layout(&self) -> StateLayout<'_> {
        StateLayout {
            type_name: &self.type_name,
            version: self.state_version,
            fingerprint: self.fingerprint,
        }
    }

    /// The length of the whole envelope this header describes.
    pub fn total_len(&self) -> u64 {
        let table = if self.chunks.is_empty() {
            0
        } else {
            4 + CHUNK_ENTRY_LEN * self.chunks.len()
        };
        let description = self.description.as_ref().map_or(0, |d| 4 + d.len());
        (FIXED_HEADER_LEN + self.operator.len() + self.type_name.len() + table + description + TRAILER_LEN) as u64
            + self.payload_len
    }
}

/// Encoding and decoding of snapshot envelopes.
///
/// A snapshot is magic, format version, operator name, window id, the state
/// type's name, version and layout fingerprint, the payload length, the
/// payload (the state's [`Checkpoint::encode_state`] output) and a CRC-32C of
/// all of it. Decoding checks every length against the bytes present before
/// allocating and never panics, whatever the input.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Snapshot, SnapshotMeta, WindowId};
///
/// // The runtime keeps one buffer per operator and reuses it for every checkpoint.
/// let mut buf = Vec::new();
/// for seq in 0..3u32 {
///     let state = format!("state at {seq}");
///     Snapshot::encode_into(&state, SnapshotMeta::new("op", WindowId::new(1, seq)), &mut buf)?;
///     let (header, back) = Snapshot::decode::<String>(&buf)?;
///     assert_eq!((header.window.sequence(), back), (seq, state));
/// }
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
#[derive(Debug)]
pub enum Snapshot {}

impl Snapshot {
    /// Encodes `state` into a new buffer.
    pub fn encode<T: Checkpoint>(state: &T, meta: SnapshotMeta<'_>) -> Result<Vec<u8>, SnapshotError> {
        let mut buf = Vec::new();
        Self::encode_into(state, meta, &mut buf)?;
        Ok(buf)
    }

    /// Encodes `state` into `buf`, replacing its contents and reusing its
    /// capacity. On error `buf` is left empty.
    pub fn encode_into<T: Checkpoint>(
        state: &T,
        meta: SnapshotMeta<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), SnapshotError> {
        buf.clear();
        let result = Self::encode_fill(state, meta, buf);
        if result.is_err() {
            buf.clear();
        }
        result
    }

    /// Encodes `state` through the reusable buffer `buf` and writes the
    /// envelope to `out`. The header records the payload length, so the
    /// payload is encoded into `buf` first.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{Snapshot, SnapshotMeta, WindowId};
    ///
    /// let mut buf = Vec::new();
    /// let mut file = Vec::new(); // any std::io::Write
    /// Snapshot::write_to(&1u32, SnapshotMeta::new("op", WindowId::new(1, 0)), &mut buf, &mut file)?;
    /// assert_eq!(file, buf);
    /// # Ok::<(), checkpoint_core::SnapshotError>(())
    /// ```
    pub fn write_to<T: Checkpoint, W: Write>(
        state: &T,
        meta: SnapshotMeta<'_>,
        buf: &mut Vec<u8>,
        out: &mut W,
    ) -> Result<(), SnapshotError> {
        Self::encode_into(state, meta, buf)?;
        out.write_all(buf)?;
        Ok(())
    }

    fn encode_fill<T: Checkpoint>(state: &T, meta: SnapshotMeta<'_>, buf: &mut Vec<u8>) -> Result<(), SnapshotError> {
        let operator = meta.operator.as_bytes();
        let type_name = T::TYPE_NAME.as_bytes();
        if operator.len() > MAX_OPERATOR_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(format!(
                "operator name is {} bytes, at most {MAX_OPERATOR_NAME_LEN} fit",
                operator.len()
            )));
        }
        if type_name.len() > MAX_TYPE_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(format!(
                "type name is {} bytes, at most {MAX_TYPE_NAME_LEN} fit",
                type_name.len()
            )));
        }
        let description = crate::description::description_json_of::<T>();
        let flags = if description.is_some() { FLAG_DESCRIPTION } else { 0 };
        write_header(buf, flags, meta.window, T::VERSION, T::FINGERPRINT, operator, type_name);
        let payload_start = buf.len();
        state.encode_state(buf).map_err(|source| SnapshotError::Payload {
            type_name: T::TYPE_NAME,
            source,
        })?;
        let payload_len = (buf.len() - payload_start) as u64;
        buf[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 8].copy_from_slice(&payload_len.to_le_bytes());
        if let Some(description) = description {
            write_description(buf, &description)?;
        }
        let crc = crc32c::crc32c(buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// A snapshot of an already encoded `payload`, with every keyed group
    /// inline, as the state `layout` names: what a tool that edits a
    /// stopped job's state writes (`checkpoint edit`). `description` is the
    /// layout description to carry (the JSON of a
    /// [`StateDescription`](crate::StateDescription)), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, StateLayout, WindowId};
    ///
    /// let meta = SnapshotMeta::new("sum", WindowId::new(1, 2));
    /// let bytes = Snapshot::from_payload(meta, StateLayout::of::<u64>(), &[42], None)?;
    /// assert_eq!(Snapshot::decode::<u64>(&bytes)?.1, 42);
    /// # Ok::<(), checkpoint_core::SnapshotError>(())
    /// ```
    pub fn from_payload(
        meta: SnapshotMeta<'_>,
        layout: StateLayout<'_>,
        payload: &[u8],
        description: Option<&str>,
    ) -> Result<Vec<u8>, SnapshotError> {
        Self::assemble(meta, layout, payload, &[], description)
    }

    /// Checks a snapshot as [`verify`](Self::verify) does and returns its
    /// header with its payload, undecoded.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{Snapshot, SnapshotMeta, WindowId};
    ///
    /// let bytes = Snapshot::encode(&300u64, SnapshotMeta::new("op", WindowId::new(1, 0)))?;
    /// let (header, payload) = Snapshot::payload(&bytes)?;
    /// assert_eq!(payload, [0xac, 0x02]); // postcard's varint for 300
    /// assert_eq!(header.payload_len, 2);
    /// # Ok::<(), checkpoint_core::SnapshotError>(())
    /// ```
    pub fn payload(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), SnapshotError> {
        Self::verified_parts(bytes)
    }

    /// A snapshot of an already encoded `payload` whose keyed groups are
    /// the chunks `chunks` (sorted by map then group, each once).
    pub(crate) fn assemble(
        meta: SnapshotMeta<'_>,
        layout: StateLayout<'_>,
        payload: &[u8],
        chunks: &[ChunkRef],
        description: Option<&str>,
    ) -> Result<Vec<u8>, SnapshotError> {
        let operator = meta.operator.as_bytes();
        let type_name = layout.type_name.as_bytes();
        if operator.len() > MAX_OPERATOR_NAME_LEN || type_name.len() > MAX_TYPE_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(
                "a name is too long for a snapshot".to_owned(),
            ));
        }
        if chunks
            .windows(2)
            .any(|w| (w[0].id.map, w[0].id.group) >= (w[1].id.map, w[1].id.group))
        {
            return Err(SnapshotError::InvalidHeader(
                "the chunk table is not sorted by map and group, each once".to_owned(),
            ));
        }
        let flags =
            if chunks.is_empty() { 0 } else { FLAG_CHUNKS } | if description.is_some() { FLAG_DESCRIPTION } else { 0 };
        let mut buf = Vec::with_capacity(
            FIXED_HEADER_LEN
                + operator.len()
                + type_name.len()
                + payload.len()
                + 4
                + CHUNK_ENTRY_LEN * chunks.len()
                + 4,
        );
        write_header(
            &mut buf,
            flags,
            meta.window,
            layout.version,
            layout.fingerprint,
            operator,
            type_name,
        );
        buf[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 8].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        buf.extend_from_slice(payload);
        if !chunks.is_empty() {
            let count = u32::try_from(chunks.len())
                .map_err(|_| SnapshotError::InvalidHeader("more than 2^32 chunks".to_owned()))?;
            buf.extend_from_slice(&count.to_le_bytes());
            for chunk in chunks {
                buf.extend_from_slice(&chunk.id.window.as_u64().to_le_bytes());
                buf.extend_from_slice(&chunk.id.map.to_le_bytes());
                buf.extend_from_slice(&chunk.id.group.to_le_bytes());
                buf.extend_from_slice(&chunk.entries.to_le_bytes());
                buf.extend_from_slice(&chunk.len.to_le_bytes());
                buf.extend_from_slice(&chunk.crc.to_le_bytes());
            }
        }
        if let Some(description) = description {
            write_description(&mut buf, description)?;
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        Ok(buf)
    }

    /// Decodes a snapshot of `T` (or of an older version `T` can upgrade
    /// from), after checking its structure and checksum.
    pub fn decode<T: Checkpoint>(bytes: &[u8]) -> Result<(SnapshotHeader, T), SnapshotError> {
        let (header, payload) = Self::verified_parts(bytes)?;
        if !header.chunks.is_empty() {
            return Err(SnapshotError::ChunksNeeded {
                chunks: header.chunks.len(),
            });
        }
        Self::decode_payload(header, payload)
    }

    /// Decodes a verified payload as `T`, checking it is consumed exactly.
    pub(crate) fn decode_payload<T: Checkpoint>(
        header: SnapshotHeader,
        mut payload: &[u8],
    ) -> Result<(SnapshotHeader, T), SnapshotError> {
        let value = T::decode_versioned(&header.layout(), &mut payload)?;
        if !payload.is_empty() {
            return Err(SnapshotError::Payload {
                type_name: T::TYPE_NAME,
                source: PayloadError::TrailingBytes(payload.len()),
            });
        }
        Ok((header, value))
    }

    /// Reads the header, checking that the lengths it states match the bytes
    /// present, but not the checksum (see [`Snapshot::verify`]).
    pub fn read_header(bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        Self::parts(bytes).map(|(header, _)| header)
    }

    /// Reads the header and checks the whole envelope, checksum included,
    /// without decoding the payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{Snapshot, SnapshotError, SnapshotMeta, WindowId};
    ///
    /// let mut bytes = Snapshot::encode(&7u64, SnapshotMeta::new("op", WindowId::new(1, 0)))?;
    /// assert!(Snapshot::verify(&bytes).is_ok());
    /// let last = bytes.len() - 5;
    /// bytes[last] ^= 0x10; // flip a payload bit
    /// assert!(matches!(Snapshot::verify(&bytes), Err(SnapshotError::ChecksumMismatch { .. })));
    /// # Ok::<(), SnapshotError>(())
    /// ```
    pub fn verify(bytes: &[u8]) -> Result<SnapshotHeader, SnapshotError> {
        Self::verified_parts(bytes).map(|(header, _)| header)
    }

    pub(crate) fn verified_parts(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), SnapshotError> {
        let (header, payload) = Self::parts(bytes)?;
        let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        Ok((header, payload))
    }

    /// Parses the structure; on success `bytes.len()` is exactly the length
    /// the header describes, so the trailer is present.
    fn parts(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), SnapshotError> {
        let min_len = (FIXED_HEADER_LEN + TRAILER_LEN) as u64;
        let found = bytes.len() as u64;
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(SnapshotError::BadMagic {
                expected: MAGIC,
                found: bytes[..magic_len].to_vec(),
            });
        }
        if bytes.len() < OFF_FLAGS {
            return Err(SnapshotError::Truncated {
                expected: min_len,
                found,
            });
        }
        let format = le_u16(bytes, OFF_FORMAT);
        if format != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormat {
                supported: FORMAT_VERSION,
                found: format,
            });
        }
        if bytes.len() < FIXED_HEADER_LEN + TRAILER_LEN {
            return Err(SnapshotError::Truncated {
                expected: min_len,
                found,
            });
        }
        let flags = le_u16(bytes, OFF_FLAGS);
        if flags & !(FLAG_CHUNKS | FLAG_DESCRIPTION) != 0 {
            return Err(SnapshotError::InvalidHeader(format!(
                "flags are {flags:#06x}: only bits 0 (a chunk table follows the payload) and 1 (a layout \
                 description follows) are defined"
            )));
        }
        let window = WindowId::from_u64(le_u64(bytes, OFF_WINDOW));
        let state_version = le_u32(bytes, OFF_STATE_VERSION);
        let fingerprint = le_u64(bytes, OFF_FINGERPRINT);
        let operator_len = le_u16(bytes, OFF_OPERATOR_LEN) as usize;
        let type_len = le_u16(bytes, OFF_TYPE_LEN) as usize;
        let payload_len = le_u64(bytes, OFF_PAYLOAD_LEN);
        if operator_len > MAX_OPERATOR_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(format!(
                "operator name length {operator_len} exceeds {MAX_OPERATOR_NAME_LEN}"
            )));
        }
        if type_len > MAX_TYPE_NAME_LEN {
            return Err(SnapshotError::InvalidHeader(format!(
                "type name length {type_len} exceeds {MAX_TYPE_NAME_LEN}"
            )));
        }
        let expected = (FIXED_HEADER_LEN + operator_len + type_len + TRAILER_LEN) as u64;
        let Some(mut expected) = expected.checked_add(payload_len) else {
            return Err(SnapshotError::InvalidHeader(format!(
                "payload length {payload_len} is not a possible length"
            )));
        };
        // The chunk table's count sits right after the payload.
        let mut table_count = 0usize;
        if flags & FLAG_CHUNKS != 0 {
            let at = expected - TRAILER_LEN as u64;
            let count_end = at.checked_add(4 + TRAILER_LEN as u64).ok_or_else(|| {
                SnapshotError::InvalidHeader(format!("payload length {payload_len} is not a possible length"))
            })?;
            if found < count_end {
                return Err(SnapshotError::Truncated {
                    expected: count_end,
                    found,
                });
            }
            table_count = le_u32(bytes, at as usize) as usize;
            expected = expected
                .checked_add(4 + (CHUNK_ENTRY_LEN as u64) * table_count as u64)
                .ok_or_else(|| SnapshotError::InvalidHeader("the chunk table's length is not possible".to_owned()))?;
        }
        // The description's length sits right after the chunk table.
        let mut description_at = None;
        if flags & FLAG_DESCRIPTION != 0 {
            let at = expected - TRAILER_LEN as u64;
            let len_end = at.checked_add(4 + TRAILER_LEN as u64).ok_or_else(|| {
                SnapshotError::InvalidHeader(format!("payload length {payload_len} is not a possible length"))
            })?;
            if found < len_end {
                return Err(SnapshotError::Truncated {
                    expected: len_end,
                    found,
                });
            }
            let len = le_u32(bytes, at as usize) as usize;
            if len > MAX_DESCRIPTION_LEN {
                return Err(SnapshotError::InvalidHeader(format!(
                    "the layout description says it has {len} bytes, at most {MAX_DESCRIPTION_LEN} are allowed"
                )));
            }
            description_at = Some((at as usize + 4, len));
            // Cannot overflow: `at + 8 <= found` and `len` is capped.
            expected = len_end + len as u64;
        }
        if found < expected {
            return Err(SnapshotError::Truncated { expected, found });
        }
        if found > expected {
            return Err(SnapshotError::TrailingBytes { expected, found });
        }
        let names_end = FIXED_HEADER_LEN + operator_len + type_len;
        let operator = utf8(
            &bytes[FIXED_HEADER_LEN..FIXED_HEADER_LEN + operator_len],
            "operator name",
        )?;
        let type_name = utf8(&bytes[FIXED_HEADER_LEN + operator_len..names_end], "type name")?;
        let payload_end = names_end + payload_len as usize;
        let payload = &bytes[names_end..payload_end];
        let mut chunks = Vec::with_capacity(table_count);
        for i in 0..table_count {
            let at = payload_end + 4 + i * CHUNK_ENTRY_LEN;
            chunks.push(ChunkRef {
                id: ChunkId {
                    window: WindowId::from_u64(le_u64(bytes, at)),
                    map: le_u32(bytes, at + 8),
                    group: le_u32(bytes, at + 12),
                },
                entries: le_u64(bytes, at + 16),
                len: le_u64(bytes, at + 24),
                crc: le_u32(bytes, at + 32),
            });
        }
        if flags & FLAG_CHUNKS != 0 && chunks.is_empty() {
            return Err(SnapshotError::InvalidHeader("the chunk table is empty".to_owned()));
        }
        if chunks
            .windows(2)
            .any(|w| (w[0].id.map, w[0].id.group) >= (w[1].id.map, w[1].id.group))
        {
            return Err(SnapshotError::InvalidHeader(
                "the chunk table is not sorted by map and group, each once".to_owned(),
            ));
        }
        let description = match description_at {
            Some((at, len)) => Some(utf8(&bytes[at..at + len], "layout description")?),
            None => None,
        };
        let header = SnapshotHeader {
            operator,
            window,
            type_name,
            state_version,
            fingerprint,
            payload_len,
            chunks,
            description,
        };
        Ok((header, payload))
    }
}

/// The description's length and bytes.
fn write_description(buf: &mut Vec<u8>, description: &str) -> Result<(), SnapshotError> {
    let len = u32::try_from(description.len())
        .ok()
        .filter(|len| *len as usize <= MAX_DESCRIPTION_LEN)
        .ok_or_else(|| {
            SnapshotError::InvalidHeader(format!(
                "the layout description has {} bytes, at most {MAX_DESCRIPTION_LEN} fit",
                description.len()
            ))
        })?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(description.as_bytes());
    Ok(())
}

/// The fixed header and the two names; the payload length is patched in by
/// the caller.
fn write_header(
    buf: &mut Vec<u8>,
    flags: u16,
    window: WindowId,
    version: u32,
    fingerprint: u64,
    operator: &[u8],
    type_name: &[u8],
) {
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&flags.to_le_bytes());
    buf.extend_from_slice(&window.as_u64().to_le_bytes());
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&fingerprint.to_le_bytes());
    buf.extend_from_slice(&(operator.len() as u16).to_le_bytes());
    buf.extend_from_slice(&(type_name.len() as u16).to_le_bytes());
    buf.extend_from_slice(&0u64.to_le_bytes());
    debug_assert_eq!(buf.len(), FIXED_HEADER_LEN);
    buf.extend_from_slice(operator);
    buf.extend_from_slice(type_name);
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, SnapshotError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| SnapshotError::InvalidHeader(format!("{what} is not UTF-8: {e}")))
}

// Callers have checked that `bytes` holds the fixed header.
fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        Snapshot::encode(&"hello".to_string(), SnapshotMeta::new("op", WindowId::new(1, 2))).expect("encode")
    }

    #[test]
    fn layout_matches_format_doc() {
        let bytes = sample();
        assert_eq!(&bytes[..8], b"CKPTSNAP");
        assert_eq!(le_u16(&bytes, OFF_FORMAT), 1);
        assert_eq!(le_u16(&bytes, OFF_FLAGS), 0);
        assert_eq!(le_u64(&bytes, OFF_WINDOW), WindowId::new(1, 2).as_u64());
        assert_eq!(le_u32(&bytes, OFF_STATE_VERSION), 1);
        assert_eq!(le_u64(&bytes, OFF_FINGERPRINT), <String as Checkpoint>::FINGERPRINT);
        assert_eq!(le_u16(&bytes, OFF_OPERATOR_LEN), 2);
        assert_eq!(le_u16(&bytes, OFF_TYPE_LEN), 6);
        assert_eq!(le_u64(&bytes, OFF_PAYLOAD_LEN), 6); // varint 5 + "hello"
        assert_eq!(&bytes[44..46], b"op");
        assert_eq!(&bytes[46..52], b"String");
        assert_eq!(&bytes[52..58], b"\x05hello");
        assert_eq!(bytes.len(), 62);
        let crc = u32::from_le_bytes([bytes[58], bytes[59], bytes[60], bytes[61]]);
        assert_eq!(crc, crc32c::crc32c(&bytes[..58]));
    }

    #[test]
    fn each_error_is_distinct() {
        let good = sample();

        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            Snapshot::decode::<String>(&bad),
            Err(SnapshotError::BadMagic { .. })
        ));

        let mut bad = good.clone();
        bad[OFF_FORMAT] = 9;
        assert!(matches!(
            Snapshot::decode::<String>(&bad),
            Err(SnapshotError::UnsupportedFormat { found: 9, supported: 1 })
        ));

        assert!(matches!(
            Snapshot::decode::<String>(&good[..good.len() - 1]),
            Err(SnapshotError::Truncated {
                expected: 62,
                found: 61
            })
        ));

        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Snapshot::decode::<String>(&long),
            Err(SnapshotError::TrailingBytes {
                expected: 62,
                found: 63
            })
        ));

        let mut bad = good.clone();
        bad[53] ^= 1;
        assert!(matches!(
            Snapshot::decode::<String>(&bad),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));

        match Snapshot::decode::<u64>(&good) {
            Err(SnapshotError::LayoutMismatch {
                expected_type,
                found_type,
                ..
            }) => {
                assert_eq!(expected_type, "u64");
                assert_eq!(found_type, "String");
            }
            other => panic!("expected a layout mismatch, got {other:?}"),
        }
    }

    #[test]
    fn huge_payload_length_is_rejected_before_allocating() {
        let mut bad = sample();
        bad[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Snapshot::read_header(&bad),
            Err(SnapshotError::InvalidHeader(_))
        ));
        bad[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            Snapshot::read_header(&bad),
            Err(SnapshotError::Truncated { .. })
        ));
    }

    #[test]
    fn encode_into_reuses_and_replaces() {
        let mut buf = vec![1, 2, 3];
        Snapshot::encode_into(&5u8, SnapshotMeta::new("a", WindowId::new(1, 1)), &mut buf).expect("encode");
        assert_eq!(
            buf,
            Snapshot::encode(&5u8, SnapshotMeta::new("a", WindowId::new(1, 1))).expect("encode")
        );
    }

    #[test]
    fn overlong_operator_name_is_an_encode_error() {
        let name = "x".repeat(MAX_OPERATOR_NAME_LEN + 1);
        let mut buf = Vec::new();
        let err = Snapshot::encode_into(&1u8, SnapshotMeta::new(&name, WindowId::new(1, 1)), &mut buf);
        assert!(matches!(err, Err(SnapshotError::InvalidHeader(_))));
        assert!(buf.is_empty());
    }
}
