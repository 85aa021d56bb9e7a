//! The `Checkpoint` trait: how an operator's state is saved and restored.

use std::any::Any;
use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{PayloadError, SnapshotError};

/// State that can be saved in a snapshot and restored from one.
///
/// Usually derived with `#[derive(Checkpoint)]`; this page shows what the
/// derive generates, for types that need a hand-written implementation.
///
/// An implementation describes its *layout* with three constants (a type
/// name for messages, a `VERSION` that grows when the layout changes, and a
/// `FINGERPRINT` of the persisted fields) and encodes its persisted fields
/// into a writer by reference, so a checkpoint never clones the state.
/// Decoding is owned: it consumes its bytes from the front of a slice, which
/// lets one state's payload hold another's (a nested state) without a length
/// prefix. Configuration fields (the derive's `#[checkpoint(config)]`) are
/// not saved: the runtime sets them after decoding, from the operator value
/// handed to the DAG in the running job.
///
/// # Examples
///
/// A hand-written implementation whose `scratch` field is transient (not
/// saved, empty after a restore):
///
/// ```
/// use std::collections::BTreeMap;
/// use std::io::Write;
///
/// use checkpoint_core::{payload, Checkpoint, LayoutHasher, PayloadError, Snapshot, SnapshotMeta, WindowId};
///
/// #[derive(Debug, PartialEq, Default)]
/// struct WordCounts {
///     counts: BTreeMap<String, u64>,
///     scratch: Vec<String>, // transient
/// }
///
/// impl Checkpoint for WordCounts {
///     const TYPE_NAME: &'static str = "WordCounts";
///     const FINGERPRINT: u64 = LayoutHasher::new()
///         .write_str("WordCounts")
///         .write_str("counts")
///         .write_str("BTreeMap<String,u64>")
///         .write_u64(Self::VERSION as u64)
///         .finish();
///
///     fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
///         payload::encode(&self.counts, out)
///     }
///
///     fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
///         Ok(WordCounts { counts: payload::decode(input)?, scratch: Vec::new() })
///     }
/// }
///
/// let mut state = WordCounts::default();
/// state.counts.insert("apex".into(), 3);
/// state.scratch.push("not saved".into());
///
/// let window = WindowId::new(1_700_000_000, 59);
/// let bytes = Snapshot::encode(&state, SnapshotMeta::new("counter", window))?;
/// let (header, restored) = Snapshot::decode::<WordCounts>(&bytes)?;
/// assert_eq!(header.operator, "counter");
/// assert_eq!(header.window, window);
/// assert_eq!(restored.counts, state.counts);
/// assert!(restored.scratch.is_empty());
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement `Checkpoint`: add `#[derive(Checkpoint)]` to it",
    label = "`{Self}` has no `#[derive(Checkpoint)]`",
    note = "the runtime saves an operator's state through `Checkpoint`: write `#[derive(Checkpoint)]` (from `checkpoint_core`) on the type, and mark the fields that must not be saved `#[checkpoint(transient)]`"
)]
pub trait Checkpoint: Sized {
    /// The type's name, recorded in snapshots and used in error messages
    /// only: renaming a type does not make its snapshots unreadable.
    const TYPE_NAME: &'static str;

    /// The layout version, recorded in every snapshot. Starts at 1; a type
    /// whose layout changes gets a higher version and decodes older snapshots
    /// in [`decode_versioned`](Checkpoint::decode_versioned).
    const VERSION: u32 = 1;

    /// Whether the type has no state at all (Apex's `@Stateless`). The
    /// runtime never saves a stateless operator and counts it as checkpointed
    /// at every window it completed.
    const STATELESS: bool = false;

    /// Whether every persisted field is keyed state (`#[checkpoint(keyed)]`
    /// `KeyedMap`s, directly or in `nested` fields): then the state can be
    /// split by key group and merged, and its operator can be restarted
    /// with another partition count. Implemented by the derive; `false`
    /// for hand-written implementations unless they say otherwise.
    #[doc(hidden)]
    const KEYED_ONLY: bool = false;

    /// A stable 64-bit fingerprint of the persisted layout at
    /// [`VERSION`](Checkpoint::VERSION). It must be the same on every build
    /// and machine: compute it with [`LayoutHasher`] from names, never from
    /// `TypeId` or a randomly seeded hasher.
    const FINGERPRINT: u64;

    /// Describes the persisted fields for tools that decode snapshots
    /// without this type ([`StateDescription`](crate::StateDescription)):
    /// one [`Describer`](crate::Describer) call per persisted field, in
    /// encoding order. The derive implements it; the default describes
    /// nothing, and snapshots of the type then carry no description.
    fn describe(describer: &mut crate::Describer) -> Option<crate::Shape> {
        let _ = describer;
        None
    }

    /// Writes the persisted fields, borrowed, into `out`.
    fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError>;

    /// Reads a value of the current version from the front of `input`,
    /// advancing it past the bytes read. Transient fields get their defaults.
    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError>;

    /// Reads a value written with `layout` (the version and fingerprint a
    /// snapshot records) from the front of `input`.
    ///
    /// The default accepts only the current version and fingerprint. A type
    /// with older versions overrides it to decode those as the previous type
    /// and convert (the derive's `previous = OldType` does this).
    fn decode_versioned(layout: &StateLayout<'_>, input: &mut &[u8]) -> Result<Self, SnapshotError> {
        layout.check::<Self>()?;
        Self::decode_state(input).map_err(|source| SnapshotError::Payload {
            type_name: Self::TYPE_NAME,
            source,
        })
    }

    /// Whether the type has configuration fields (the derive's
    /// `#[checkpoint(config)]`, directly or in a `nested` field): fields
    /// that are not saved and that the runtime sets, after every restore,
    /// from the operator value handed to the DAG in this run.
    #[doc(hidden)]
    const HAS_CONFIG: bool = false;

    /// A copy of the configuration fields, taken once from the value handed
    /// to the DAG in this run, or `None` if the type has none. The runtime
    /// keeps it for the life of the run and gives it to
    /// [`restore_config`](Checkpoint::restore_config) after every decode.
    ///
    /// The carrier is opaque: only `restore_config` of the same type reads
    /// it. Implemented by the derive; a hand-written impl without
    /// configuration keeps the default.
    #[doc(hidden)]
    fn capture_config(&self) -> Option<Box<dyn Any + Send>> {
        None
    }

    /// Sets the configuration fields of a freshly decoded value from a
    /// carrier made by [`capture_config`](Checkpoint::capture_config). A
    /// carrier of another type is ignored.
    #[doc(hidden)]
    fn restore_config(&mut self, config: &(dyn Any + Send)) {
        let _ = config;
    }
}

/// The layout a snapshot records for its state: the writer's type name,
/// version and fingerprint.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, StateLayout};
///
/// let layout = StateLayout::of::<u64>();
/// assert_eq!(layout.version, 1);
/// assert!(layout.check::<u64>().is_ok());
/// assert!(layout.check::<String>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLayout<'a> {
    /// The type name recorded by the writer.
    pub type_name: &'a str,
    /// The state version recorded by the writer.
    pub version: u32,
    /// The layout fingerprint recorded by the writer.
    pub fingerprint: u64,
}

impl<'a> StateLayout<'a> {
    /// The layout `T` writes today.
    pub fn of<T: Checkpoint>() -> StateLayout<'static> {
        StateLayout {
            type_name: T::TYPE_NAME,
            version: T::VERSION,
            fingerprint: T::FINGERPRINT,
        }
    }

    /// Checks that this is exactly the layout `T` writes today: the same
    /// version ([`SnapshotError::UnknownStateVersion`] if not) and the same
    /// fingerprint ([`SnapshotError::LayoutMismatch`] if not).
    pub fn check<T: Checkpoint>(&self) -> Result<(), SnapshotError> {
        if self.version != T::VERSION {
            return Err(self.unknown_version::<T>());
        }
        if self.fingerprint != T::FINGERPRINT {
            return Err(SnapshotError::LayoutMismatch {
                expected_type: T::TYPE_NAME,
                version: T::VERSION,
                expected_fingerprint: T::FINGERPRINT,
                found_type: self.type_name.to_owned(),
                found_fingerprint: self.fingerprint,
            });
        }
        Ok(())
    }

    /// The error for a version `T` cannot read.
    pub fn unknown_version<T: Checkpoint>(&self) -> SnapshotError {
        SnapshotError::UnknownStateVersion {
            expected_type: T::TYPE_NAME,
            expected_version: T::VERSION,
            found_type: self.type_name.to_owned(),
            found_version: self.version,
            found_fingerprint: self.fingerprint,
        }
    }
}

/// A `const` hasher for layout fingerprints: FNV-1a over 64 bits, with each
/// string written as its length then its bytes (so `"ab","c"` and `"a","bc"`
/// differ), finished with the splitmix64 mixer.
///
/// The algorithm is fixed by `docs/FORMAT.md`; changing it would make every
/// existing snapshot unreadable.
///
/// # Examples
///
/// ```
/// use checkpoint_core::LayoutHasher;
///
/// const A: u64 = LayoutHasher::new().write_str("count").write_str("u64").finish();
/// const B: u64 = LayoutHasher::new().write_str("count").write_str("u32").finish();
/// assert_ne!(A, B);
/// assert_eq!(A, LayoutHasher::new().write_str("count").write_str("u64").finish());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LayoutHasher(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl LayoutHasher {
    /// A hasher in its initial state.
    pub const fn new() -> Self {
        LayoutHasher(FNV_OFFSET)
    }

    const fn byte(self, b: u8) -> Self {
        LayoutHasher((self.0 ^ b as u64).wrapping_mul(FNV_PRIME))
    }

    /// Feeds a `u64`, little-endian.
    pub const fn write_u64(self, v: u64) -> Self {
        let bytes = v.to_le_bytes();
        let mut h = self;
        let mut i = 0;
        while i < bytes.len() {
            h = h.byte(bytes[i]);
            i += 1;
        }
        h
    }

    /// Feeds a string: its byte length as a `u64`, then its UTF-8 bytes.
    pub const fn write_str(self, s: &str) -> Self {
        let bytes = s.as_bytes();
        let mut h = self.write_u64(bytes.len() as u64);
        let mut i = 0;
        while i < bytes.len() {
            h = h.byte(bytes[i]);
            i += 1;
        }
        h
    }

    /// The fingerprint.
    pub const fn finish(self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for LayoutHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Encoding and decoding of serde values inside a state payload (postcard),
/// for [`Checkpoint`] implementations.
pub mod payload {
    use super::*;

    /// Writes `value` with postcard into `out`, keeping any I/O error.
    ///
    /// Byte buffers should be wrapped in `serde_bytes` (the derive does this
    /// for `Vec<u8>`), which writes them as one slice instead of byte by
    /// byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::payload;
    ///
    /// let mut buf = Vec::new();
    /// payload::encode(&(7u32, "seven"), &mut buf)?;
    /// let mut input = &buf[..];
    /// let back: (u32, String) = payload::decode(&mut input)?;
    /// assert_eq!(back, (7, "seven".to_string()));
    /// assert!(input.is_empty());
    /// # Ok::<(), checkpoint_core::PayloadError>(())
    /// ```
    pub fn encode<T: Serialize + ?Sized, W: Write>(value: &T, out: &mut W) -> Result<(), PayloadError> {
        let mut io_error = None;
        let flavor = IoFlavor {
            out,
            error: &mut io_error,
        };
        match postcard::serialize_with_flavor(value, flavor) {
            Ok(()) => Ok(()),
            Err(e) => Err(match io_error.take() {
                Some(io) => PayloadError::Io(io),
                None => PayloadError::Postcard(e),
            }),
        }
    }

    /// Reads a postcard value from the front of `input`, advancing it.
    ///
    /// Never allocates more than the bytes present justify: serde caps the
    /// capacity it reserves for a sequence whatever length prefix it reads.
    pub fn decode<T: DeserializeOwned>(input: &mut &[u8]) -> Result<T, PayloadError> {
        let (value, rest) = postcard::take_from_bytes(input)?;
        *input = rest;
        Ok(value)
    }

    struct IoFlavor<'a, W: Write> {
        out: &'a mut W,
        error: &'a mut Option<std::io::Error>,
    }

    impl<W: Write> postcard::ser_flavors::Flavor for IoFlavor<'_, W> {
        type Output = ();

        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.try_extend(&[data])
        }

        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            self.out.write_all(data).map_err(|e| {
                *self.error = Some(e);
                postcard::Error::SerializeBufferFull
            })
        }

        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
}

/// Plain values are their own state, with a fingerprint of their type name.
///
/// Handy for operators whose whole state is one number or string, and in
/// tests.
macro_rules! plain_checkpoint {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl Checkpoint for $ty {
            const TYPE_NAME: &'static str = $name;
            const FINGERPRINT: u64 = LayoutHasher::new().write_str($name).write_u64(1).finish();

            fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
                payload::encode(self, out)
            }

            fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
                payload::decode(input)
            }
        }
    )*};
}

plain_checkpoint! {
    bool => "bool",
    u8 => "u8",
    u16 => "u16",
    u32 => "u32",
    u64 => "u64",
    u128 => "u128",
    i8 => "i8",
    i16 => "i16",
    i32 => "i32",
    i64 => "i64",
    i128 => "i128",
    f32 => "f32",
    f64 => "f64",
    String => "String",
}

/// The unit type is stateless.
impl Checkpoint for () {
    const TYPE_NAME: &'static str = "()";
    const STATELESS: bool = true;
    const KEYED_ONLY: bool = true;
    const FINGERPRINT: u64 = LayoutHasher::new().write_str("()").write_u64(1).finish();

    fn encode_state<W: Write>(&self, _out: &mut W) -> Result<(), PayloadError> {
        Ok(())
    }

    fn decode_state(_input: &mut &[u8]) -> Result<Self, PayloadError> {
        Ok(())
    }
}
