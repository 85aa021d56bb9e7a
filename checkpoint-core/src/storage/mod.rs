//! Storage agents (Apex's `StorageAgent`): where snapshots live.

use std::fmt;
use std::sync::Arc;

use crate::chunk::{Chunk, ChunkId};
use crate::error::{SnapshotError, StorageError};
use crate::snapshot::{MAX_OPERATOR_NAME_LEN, Snapshot};
use crate::window::WindowId;

mod deadline;
mod fence;
mod fs;
mod memory;

pub use deadline::Deadline;
pub use fence::{ManifestVersion, StorageLock};
pub use fs::{FsStorageAgent, SavePhase, lock_directory};
pub use memory::MemoryStorageAgent;

/// Stores snapshots by operator and window, plus one small job-level record
/// (the job manifest the runtime writes).
///
/// Every implementation keeps these promises:
/// - `save` is atomic: after a crash at any instant, `load` returns either
///   nothing or the complete snapshot, and a failed `save` leaves every
///   earlier snapshot intact.
/// - `save` and `load` check that the snapshot's header names the operator
///   and window it is stored under ([`StorageError::Misplaced`] if not).
/// - Operator names are checked with [`validate_operator_name`].
/// - `windows` lists complete snapshots only, ascending.
/// - Deleting a snapshot that does not exist is not an error, so purges can
///   be retried.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
///
/// let agent = MemoryStorageAgent::new();
/// for seq in [3, 1, 2] {
///     let w = WindowId::new(1, seq);
///     agent.save("sum", w, &Snapshot::encode(&(seq as u64 * 10), SnapshotMeta::new("sum", w))?)?;
/// }
/// let windows = agent.windows("sum")?;
/// assert_eq!(windows.iter().map(|w| w.sequence()).collect::<Vec<_>>(), [1, 2, 3]);
/// let (_, value) = Snapshot::decode::<u64>(&agent.load("sum", windows[1])?)?;
/// assert_eq!(value, 20);
/// agent.delete("sum", windows[0])?;
/// assert_eq!(agent.windows("sum")?.len(), 2);
/// assert_eq!(agent.operators()?, ["sum"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait StorageAgent: Send + Sync + fmt::Debug {
    /// Stores `snapshot` as `operator`'s checkpoint at `window`, durably and
    /// atomically, replacing any snapshot already stored there.
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError>;

    /// The snapshot stored for `operator` at `window`
    /// ([`StorageError::NotFound`] if there is none).
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError>;

    /// Removes `operator`'s snapshot at `window`, if there is one.
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError>;

    /// The windows `operator` has complete snapshots at, ascending. An
    /// operator with none has an empty list.
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError>;

    /// The operators that have or had snapshots here, sorted.
    fn operators(&self) -> Result<Vec<String>, StorageError>;

    /// Replaces the job manifest, durably and atomically.
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError>;

    /// The job manifest, or `None` if none was saved.
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// The job manifest with its version, or `None` if none was saved. The
    /// default reads [`load_manifest`](StorageAgent::load_manifest) and
    /// versions it by its bytes ([`ManifestVersion::of_bytes`]).
    fn load_manifest_versioned(&self) -> Result<Option<(Vec<u8>, ManifestVersion)>, StorageError> {
        Ok(self.load_manifest()?.map(|bytes| {
            let version = ManifestVersion::of_bytes(&bytes);
            (bytes, version)
        }))
    }

    /// Replaces the job manifest, durably and atomically, only if the
    /// stored one is still at `expected` (`None`: only if there is none),
    /// and returns the new version; [`StorageError::Superseded`] if another
    /// writer got there first, with nothing written.
    ///
    /// This is how a job fences itself: every manifest write it makes is
    /// conditional on the version its previous write produced. The default
    /// compares, then writes: atomic only against writers that
    /// [`lock`](StorageAgent::lock) keeps out, which is every other job for
    /// an agent whose lock is exclusive (the filesystem's). An agent
    /// without such a lock overrides it with a conditional write.
    fn replace_manifest(
        &self,
        manifest: &[u8],
        expected: Option<&ManifestVersion>,
    ) -> Result<ManifestVersion, StorageError> {
        let current = self.load_manifest_versioned()?.map(|(_, version)| version);
        if current.as_ref() != expected {
            return Err(StorageError::Superseded {
                what: format!("{self:?}"),
                detail: match current {
                    Some(version) => format!(
                        "its job manifest was rewritten by another job (version {version}, expected {})",
                        expected.map_or_else(|| "none".to_owned(), ToString::to_string)
                    ),
                    None => "its job manifest was removed by someone else".to_owned(),
                },
            });
        }
        self.save_manifest(manifest)?;
        Ok(ManifestVersion::of_bytes(manifest))
    }

    /// Claims the storage for one job until the returned lock is dropped;
    /// [`StorageError::Locked`] if another job (in this process or another)
    /// holds it. Readers (the `checkpoint` tool's `ls`, `verify`) do not
    /// lock; anything that writes or deletes does. The default does not
    /// lock.
    fn lock(&self) -> Result<StorageLock, StorageError> {
        Ok(StorageLock::unsupported())
    }

    /// Whether this agent stores chunks (the keyed groups of incremental
    /// snapshots). The runtime saves whole snapshots to an agent that does
    /// not. The default is `false`.
    fn supports_chunks(&self) -> bool {
        false
    }

    /// Stores `chunks` of `operator`, durably: when it returns, every one
    /// of them survives a crash. A chunk already stored under the same id
    /// is replaced (only a crashed save can have left one). Each chunk's
    /// header must name `operator` and its id.
    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        let _ = (operator, chunks);
        Err(StorageError::ChunksUnsupported)
    }

    /// The chunk `id` of `operator` ([`StorageError::ChunkNotFound`] if
    /// there is none).
    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        let _ = (operator, id);
        Err(StorageError::ChunksUnsupported)
    }

    /// Removes the chunk `id` of `operator`, if there is one.
    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        let _ = (operator, id);
        Err(StorageError::ChunksUnsupported)
    }

    /// The chunks `operator` has, sorted.
    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        let _ = operator;
        Ok(Vec::new())
    }

    /// Moves a corrupt snapshot out of the way without deleting it: it is no
    /// longer listed by [`windows`](StorageAgent::windows), and a person (or
    /// `checkpoint purge`) can still look at it or remove it. The default
    /// leaves it in place.
    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        let _ = (operator, window);
        Ok(())
    }
}

impl<S: StorageAgent + ?Sized> StorageAgent for Arc<S> {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        (**self).save(operator, window, snapshot)
    }
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        (**self).load(operator, window)
    }
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        (**self).delete(operator, window)
    }
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        (**self).windows(operator)
    }
    fn operators(&self) -> Result<Vec<String>, StorageError> {
        (**self).operators()
    }
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        (**self).save_manifest(manifest)
    }
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).load_manifest()
    }
    fn lock(&self) -> Result<StorageLock, StorageError> {
        (**self).lock()
    }
    fn load_manifest_versioned(&self) -> Result<Option<(Vec<u8>, ManifestVersion)>, StorageError> {
        (**self).load_manifest_versioned()
    }
    fn replace_manifest(
        &self,
        manifest: &[u8],
        expected: Option<&ManifestVersion>,
    ) -> Result<ManifestVersion, StorageError> {
        (**self).replace_manifest(manifest, expected)
    }
    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        (**self).set_aside(operator, window)
    }
    fn supports_chunks(&self) -> bool {
        (**self).supports_chunks()
    }
    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        (**self).save_chunks(operator, chunks)
    }
    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        (**self).load_chunk(operator, id)
    }
    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        (**self).delete_chunk(operator, id)
    }
    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        (**self).chunks(operator)
    }
}

/// Checks that `bytes` is a chunk whose header names `operator` and `id`
/// ([`StorageError::Corrupt`] if not): what every [`StorageAgent`]'s
/// `save_chunks` checks before it stores a chunk.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Chunk, ChunkId, WindowId, check_chunk_placement};
///
/// let id = ChunkId { window: WindowId::new(1, 2), map: 0, group: 3 };
/// let (bytes, _) = Chunk::encode("count", id, 8, 1, b"entries")?;
/// assert!(check_chunk_placement("count", id, &bytes).is_ok());
/// assert!(check_chunk_placement("other", id, &bytes).is_err());
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
pub fn check_chunk_placement(operator: &str, id: ChunkId, bytes: &[u8]) -> Result<(), StorageError> {
    let corrupt = |source| StorageError::Corrupt {
        operator: operator.to_owned(),
        window: id.window,
        source,
    };
    let (header, _) = Chunk::decode(bytes).map_err(corrupt)?;
    if header.operator != operator || header.id != id {
        return Err(corrupt(SnapshotError::BadChunk {
            chunk: format!("{operator}/{id}"),
            detail: format!("its header says it is {}/{}", header.operator, header.id),
        }));
    }
    Ok(())
}

/// Checks that `name` can name an operator's storage: not empty, at most 255
/// bytes, no `/`, `\`, NUL or other control character, no `..`, and not
/// starting with `.` (names starting with a dot are reserved for the
/// agent's own files).
///
/// # Examples
///
/// ```
/// use checkpoint_core::validate_operator_name;
///
/// assert!(validate_operator_name("count#3").is_ok());
/// for bad in ["", "a/b", "..", "a..b", ".hidden", "nul\0"] {
///     assert!(validate_operator_name(bad).is_err(), "{bad:?}");
/// }
/// ```
pub fn validate_operator_name(name: &str) -> Result<(), StorageError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_OPERATOR_NAME_LEN {
        Some("it is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.contains('\0') {
        Some("it contains a NUL character")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.contains("..") {
        Some("it contains `..`")
    } else if name.starts_with('.') {
        Some("it starts with `.`, which is reserved for the storage agent's own files")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StorageError::InvalidOperatorName {
            name: name.chars().take(200).collect(),
            reason,
        }),
    }
}

/// Checks that `snapshot`'s header is readable and names `operator` and
/// `window` ([`StorageError::Corrupt`] or [`StorageError::Misplaced`] if
/// not): what every [`StorageAgent`]'s `save` and `load` check.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Snapshot, SnapshotMeta, StorageError, WindowId, check_placement};
///
/// let w = WindowId::new(1, 2);
/// let bytes = Snapshot::encode(&7u64, SnapshotMeta::new("count", w))?;
/// assert!(check_placement("count", w, &bytes).is_ok());
/// assert!(matches!(check_placement("count", WindowId::new(1, 3), &bytes), Err(StorageError::Misplaced { .. })));
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
pub fn check_placement(operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
    let header = Snapshot::read_header(snapshot).map_err(|source| StorageError::Corrupt {
        operator: operator.to_owned(),
        window,
        source,
    })?;
    if header.operator != operator || header.window != window {
        // A flipped bit in a name is corruption, not a misplaced file.
        if let Err(source) = Snapshot::verify(snapshot) {
            return Err(StorageError::Corrupt {
                operator: operator.to_owned(),
                window,
                source,
            });
        }
        return Err(StorageError::Misplaced {
            operator: operator.to_owned(),
            window,
            found_operator: header.operator,
            found_window: header.window,
        });
    }
    Ok(())
}
