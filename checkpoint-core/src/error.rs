//! Errors of the snapshot envelope, of state payloads and of storage agents.

use std::io;
use std::path::PathBuf;

use crate::WindowId;

/// An error while encoding or decoding the payload of one state type.
///
/// This is what a [`Checkpoint`](crate::Checkpoint) implementation returns;
/// [`Snapshot`](crate::Snapshot) wraps it in [`SnapshotError::Payload`] with
/// the name of the type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The serde data format (postcard) rejected a value or the bytes.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// The writer the payload streams into failed.
    #[error("writing the payload: {0}")]
    Io(#[from] io::Error),
    /// Bytes were left over after the state was decoded.
    #[error("{0} byte(s) left over after the state was decoded")]
    TrailingBytes(usize),
    /// A hand-written implementation's own message.
    #[error("{0}")]
    Custom(String),
}

impl PayloadError {
    /// An error with a message of the implementation's choosing.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::PayloadError;
    ///
    /// let err = PayloadError::custom("negative count");
    /// assert_eq!(err.to_string(), "negative count");
    /// ```
    pub fn custom(message: impl std::fmt::Display) -> Self {
        PayloadError::Custom(message.to_string())
    }
}

/// An error while encoding or decoding a snapshot envelope.
///
/// Every variant says what was expected and what was found, so a message in a
/// log is enough to tell a truncated file from a schema change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic.
    #[error("not a snapshot: expected magic {expected:02x?}, found {found:02x?}")]
    BadMagic {
        /// The magic every snapshot starts with.
        expected: [u8; 8],
        /// The first bytes found (fewer than 8 if the input is shorter).
        found: Vec<u8>,
    },
    /// The envelope was written in a format version this build cannot read.
    #[error("unsupported snapshot format version {found} (this build reads version {supported})")]
    UnsupportedFormat {
        /// The format version this build reads and writes.
        supported: u16,
        /// The format version in the snapshot.
        found: u16,
    },
    /// The input ends before the envelope does.
    #[error("truncated snapshot: the header says {expected} bytes, found {found}")]
    Truncated {
        /// The length the envelope needs (or, if the fixed header itself is
        /// cut, the fixed header's length).
        expected: u64,
        /// The number of bytes present.
        found: u64,
    },
    /// The input is longer than the envelope its header describes.
    #[error("snapshot length mismatch: the header says {expected} bytes, found {found}")]
    TrailingBytes {
        /// The length the header describes.
        expected: u64,
        /// The number of bytes present.
        found: u64,
    },
    /// The CRC-32C trailer does not match the bytes.
    #[error("snapshot checksum mismatch: stored CRC-32C {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC-32C in the trailer.
        stored: u32,
        /// The CRC-32C of the bytes present.
        computed: u32,
    },
    /// A header field is out of range (a name too long or not UTF-8, reserved
    /// bits set).
    #[error("invalid snapshot header: {0}")]
    InvalidHeader(String),
    /// The snapshot's layout fingerprint differs from the type's, at the same
    /// version: the struct changed without a version bump.
    #[error(
        "layout mismatch for {expected_type} version {version}: expected fingerprint {expected_fingerprint:#018x}, \
         found {found_fingerprint:#018x} (written by {found_type}); bump the version and declare `previous` \
         to read old snapshots"
    )]
    LayoutMismatch {
        /// The state type being decoded.
        expected_type: &'static str,
        /// The state version (the same on both sides).
        version: u32,
        /// The fingerprint of the type being decoded.
        expected_fingerprint: u64,
        /// The type name recorded in the snapshot.
        found_type: String,
        /// The fingerprint recorded in the snapshot.
        found_fingerprint: u64,
    },
    /// The snapshot's state version is neither the type's version nor one
    /// reachable through its chain of previous versions.
    #[error(
        "unknown state version: {expected_type} is version {expected_version} and cannot read version \
         {found_version} (written by {found_type}, fingerprint {found_fingerprint:#018x})"
    )]
    UnknownStateVersion {
        /// The type that was asked to decode (the newest one of its chain).
        expected_type: &'static str,
        /// Its version.
        expected_version: u32,
        /// The type name recorded in the snapshot.
        found_type: String,
        /// The version recorded in the snapshot.
        found_version: u32,
        /// The fingerprint recorded in the snapshot.
        found_fingerprint: u64,
    },
    /// The payload could not be encoded or decoded as the state type.
    #[error("payload of {type_name}: {source}")]
    Payload {
        /// The state type.
        type_name: &'static str,
        /// What went wrong.
        #[source]
        source: PayloadError,
    },
    /// The writer a snapshot was written into failed.
    #[error("writing the snapshot: {0}")]
    Io(#[from] io::Error),
    /// A chunk the snapshot refers to (`operator/chunk`) is damaged, or is
    /// not the chunk the snapshot was saved with.
    #[error("chunk {chunk}: {detail}")]
    BadChunk {
        /// `operator/<chunk id>`.
        chunk: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A chunk the snapshot refers to could not be read, or a new one
    /// could not be saved.
    #[error("chunk {chunk}: {source}")]
    ChunkStorage {
        /// `operator/<chunk id>`.
        chunk: String,
        /// What the storage said.
        #[source]
        source: Box<StorageError>,
    },
    /// A state with fields besides keyed maps cannot be split across
    /// partitions.
    #[error("{type_name} cannot be split or merged across partitions: {reason}")]
    NotRescalable {
        /// The state type.
        type_name: &'static str,
        /// Why not, and what to do.
        reason: String,
    },
    /// A snapshot whose keyed state is in chunks was decoded without a way
    /// to load them.
    #[error(
        "the snapshot keeps its keyed state in {chunks} chunk(s): decode it with \
         `Snapshot::decode_with_chunks`, which loads them"
    )]
    ChunksNeeded {
        /// How many chunks it refers to.
        chunks: usize,
    },
}

/// An error of a [`StorageAgent`](crate::StorageAgent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The operator name cannot name a storage location.
    #[error("invalid operator name {name:?}: {reason}")]
    InvalidOperatorName {
        /// The name given (cut to 200 characters).
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// No snapshot is stored for this operator and window.
    #[error("no checkpoint of operator {operator:?} at window {window}")]
    NotFound {
        /// The operator.
        operator: String,
        /// The window.
        window: WindowId,
    },
    /// The stored bytes are not a readable snapshot header.
    #[error("checkpoint of operator {operator:?} at window {window} is unreadable: {source}")]
    Corrupt {
        /// The operator.
        operator: String,
        /// The window.
        window: WindowId,
        /// What is wrong with the bytes.
        #[source]
        source: SnapshotError,
    },
    /// The snapshot's header names another operator or window than the place
    /// it is stored at (a file copied or renamed by hand, say).
    #[error(
        "checkpoint stored as operator {operator:?} window {window} names operator {found_operator:?} \
         window {found_window} in its header"
    )]
    Misplaced {
        /// The operator it is stored under.
        operator: String,
        /// The window it is stored under.
        window: WindowId,
        /// The operator its header names.
        found_operator: String,
        /// The window its header names.
        found_window: WindowId,
    },
    /// Another job holds the storage (see
    /// [`StorageAgent::lock`](crate::StorageAgent::lock)); nothing was
    /// touched.
    #[error(
        "{what} is in use by another job (it holds the lock {path}); stop that job first, or use another \
         directory or prefix"
    )]
    Locked {
        /// What is locked ("checkpoint directory /data/ckpt", say).
        what: String,
        /// The lock file.
        path: PathBuf,
    },
    /// Another job took the storage over: it wrote the job manifest since
    /// this job last did, or took the lease this job held. This job must
    /// stop, and must delete nothing: the storage is the other job's now.
    #[error("{what} was taken over by another job: {detail}; this job stops and deletes nothing")]
    Superseded {
        /// The storage ("s3://bucket/job", say).
        what: String,
        /// What showed it.
        detail: String,
    },
    /// This job's lease on the storage could not be renewed for long enough
    /// that another job may have taken it over; until a renewal succeeds it
    /// deletes nothing.
    #[error("the lease on {what} cannot be vouched for: {detail}")]
    LeaseUncertain {
        /// The storage.
        what: String,
        /// Why.
        detail: String,
    },
    /// No chunk `chunk` of `operator` is stored.
    #[error("no chunk {chunk} of operator {operator:?}")]
    ChunkNotFound {
        /// The operator.
        operator: String,
        /// The chunk id.
        chunk: String,
    },
    /// The storage agent keeps no chunks.
    #[error("this storage agent does not store chunks")]
    ChunksUnsupported,
    /// An I/O operation failed; earlier snapshots are untouched.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("writing", "renaming", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// Whether the same operation may succeed if tried again later: an
    /// I/O failure (a connection reset, a full disk, a timeout) or a lease
    /// that could not be renewed for a while. A snapshot that does not
    /// belong where it is saved, a bad name or storage another job took
    /// over stays as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::StorageError;
    ///
    /// let reset = StorageError::Io {
    ///     action: "writing",
    ///     path: "count/0000000100000002".into(),
    ///     source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
    /// };
    /// assert!(reset.is_transient());
    /// let taken = StorageError::Superseded { what: "s3://b/job".into(), detail: "a newer job".into() };
    /// assert!(!taken.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Io { .. } | StorageError::LeaseUncertain { .. })
    }
}
