//! Window-aligned checkpointing of operator state, the Apache Apex way.
//!
//! This crate holds what every part of a job agrees on:
//! - [`WindowId`]: streaming window ids (base seconds + sequence number).
//! - [`Checkpoint`]: how a state type is saved by reference and restored,
//!   with a layout version and fingerprint so a changed struct is caught
//!   instead of decoded into garbage.
//! - [`derive@Checkpoint`] (feature `derive`, on by default): derives
//!   `Checkpoint` for a state struct or enum, with transient and
//!   configuration fields (its docs describe the three kinds of fields in
//!   one place), nested states, versions and upgrades from previous
//!   versions.
//! - [`Snapshot`]: the self-describing, checksummed envelope one checkpoint is
//!   stored as (byte layout in `docs/FORMAT.md`).
//! - [`StateDescription`]: the layout description every snapshot of a
//!   derived state carries, so a tool decodes (and edits) any job's state
//!   as JSON without the job's code.
//! - [`KeyedMap`]: keyed state, a map split into the job's [`KeyGroups`]
//!   by the [`StableHash`] of its keys, saved and restored group by group.
//! - [`StorageAgent`]: where snapshots live; [`FsStorageAgent`] writes them
//!   atomically and durably to a local directory, [`MemoryStorageAgent`]
//!   keeps them in memory for tests.
//!
//! # Examples
//!
//! Save a state at a window and restore it after a restart:
//!
//! ```
//! use checkpoint_core::{FsStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
//!
//! let dir = tempfile::tempdir()?;
//! let window = WindowId::new(1_700_000_000, 119);
//! {
//!     let storage = FsStorageAgent::new(dir.path())?;
//!     let total: u64 = 12_345;
//!     storage.save("sum", window, &Snapshot::encode(&total, SnapshotMeta::new("sum", window))?)?;
//! }
//! // ... the process restarts ...
//! let storage = FsStorageAgent::new(dir.path())?;
//! let newest = *storage.windows("sum")?.last().expect("a checkpoint");
//! let (header, total) = Snapshot::decode::<u64>(&storage.load("sum", newest)?)?;
//! assert_eq!((header.window, total), (window, 12_345));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(clippy::unwrap_used)]

#[allow(
    unused_extern_crates,
    reason = "lets derived code name `::checkpoint_core` inside this crate"
)]
extern crate self as checkpoint_core;

mod checkpoint;
mod chunk;
mod derive_support;
mod description;
mod durable;
mod error;
mod incremental;
mod key_group;
mod keyed;
mod snapshot;
mod stable_hash;
mod storage;
mod window;

pub use checkpoint::{Checkpoint, LayoutHasher, StateLayout, payload};
#[cfg(feature = "derive")]
pub use checkpoint_derive::Checkpoint;
pub use chunk::{
    CHUNK_FORMAT_VERSION, CHUNK_HEADER_LEN, CHUNK_MAGIC, Chunk, ChunkHeader, ChunkId, ChunkRef, ParseChunkIdError,
};
pub use description::{
    Container, Describer, DescriptionError, FieldKind, Format, JsonError, NamedFormat, Shape, StateDescription,
    StateField, StateVariant, Variant, VariantContent, description_json_of, description_of,
};
pub use durable::create_dir_all_durable;
pub use error::{PayloadError, SnapshotError, StorageError};
pub use incremental::{FinishedSnapshot, FrozenSnapshot};
pub use key_group::{DEFAULT_KEY_GROUPS, InvalidKeyGroups, KeyGroups, KeyGroupsGuard, MAX_KEY_GROUPS};
pub use keyed::{KeyedMap, StateKey, StateValue};
pub use snapshot::{
    CHUNK_ENTRY_LEN, FIXED_HEADER_LEN, FLAG_CHUNKS, FLAG_DESCRIPTION, FORMAT_VERSION, MAGIC, MAX_DESCRIPTION_LEN,
    MAX_OPERATOR_NAME_LEN, MAX_TYPE_NAME_LEN, Snapshot, SnapshotHeader, SnapshotMeta, TRAILER_LEN,
};
pub use stable_hash::{StableHash, splitmix64};
pub use storage::{
    Deadline, FsStorageAgent, ManifestVersion, MemoryStorageAgent, SavePhase, StorageAgent, StorageLock,
    check_chunk_placement, check_placement, lock_directory, validate_operator_name,
};
pub use window::{ParseWindowIdError, WindowId};

/// Items the derive's generated code uses; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use postcard;
    pub use serde;
    pub use serde_bytes;

    pub use crate::derive_support::{
        ConfigField, ConfigPlaceholder, KeyedField, NestedField, PreviousState, RestoreField, SaveField,
        TransientField, UpgradeFrom,
    };
}
