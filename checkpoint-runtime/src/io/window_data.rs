//! Per-window records of what an input read (Apex's `WindowDataManager`).

use std::sync::Arc;

use checkpoint_core::{
    Checkpoint, PayloadError, Snapshot, SnapshotError, SnapshotMeta, StorageAgent, StorageError, WindowId, payload,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One window's record as stored: the snapshot envelope (magic, names,
/// window, CRC-32C) around the postcard bytes of the caller's value.
#[derive(Checkpoint)]
struct WindowRecord {
    data: Vec<u8>,
}

/// Why a [`WindowDataManager`] operation failed. Every variant names the
/// storage name of the records, and the window where there is one.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use checkpoint_core::{MemoryStorageAgent, WindowId};
/// use checkpoint_runtime::io::{WindowDataError, WindowDataManager};
///
/// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
/// let w = WindowId::new(1, 1);
/// data.save(w, &"not a number")?;
/// let err = data.load::<u64>(w).unwrap_err();
/// assert!(matches!(err, WindowDataError::Record { .. }));
/// assert!(err.to_string().contains("cannot be read as u64"));
/// # Ok::<(), WindowDataError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WindowDataError {
    /// The storage agent failed (I/O, an invalid name, a misplaced record).
    #[error("window data {name:?}: {source}")]
    Storage {
        /// The storage name of the records.
        name: String,
        /// The storage agent's error.
        #[source]
        source: StorageError,
    },
    /// A stored record is not a readable envelope (truncated, a bad
    /// checksum, not a record at all).
    #[error("window data {name:?} at window {window} is corrupt: {source}")]
    Corrupt {
        /// The storage name of the records.
        name: String,
        /// The window.
        window: WindowId,
        /// What is wrong with the bytes.
        #[source]
        source: SnapshotError,
    },
    /// A value could not be encoded, or a stored record could not be
    /// decoded as the type asked for.
    #[error("window data {name:?} at window {window}: the record cannot be {action} {type_name}: {source}")]
    Record {
        /// The storage name of the records.
        name: String,
        /// The window.
        window: WindowId,
        /// "written from" or "read as".
        action: &'static str,
        /// The type of the value.
        type_name: &'static str,
        /// The serde (postcard) error.
        #[source]
        source: PayloadError,
    },
}

/// Records, durably and per window, what an input read, so that a window
/// replayed after a failure or a restart emits exactly the same tuples
/// (Apache Apex's `WindowDataManager`).
///
/// An input saves a record at the end of every window (file offsets, a
/// message queue's sequence numbers: whatever identifies the window's
/// tuples) *before* the window's end goes downstream. After a restore it
/// asks, at the start of each window, whether a record exists: if so, the
/// window is a replay and it re-emits exactly what the record says. Records
/// of committed windows are never needed again and are purged with
/// [`committed`](WindowDataManager::committed).
///
/// Records go through the job's [`StorageAgent`], one per window, under the
/// storage name `<operator>#window-data` ([`storage_name`]). That name can
/// never be an operator's: the DAG reserves `#` for partition numbers
/// (`count#2`), and `window-data` is not a number. Each record is a snapshot
/// envelope (the agents check its header names the storage name and the
/// window; its CRC-32C catches corruption) holding the postcard encoding of
/// the value saved.
///
/// The recovery code must leave these names alone: they are not operators
/// of the DAG, have no checkpoints to compute recovery points from, and are
/// purged by their input, not by checkpoint retention.
///
/// [`storage_name`]: WindowDataManager::storage_name
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use checkpoint_core::{FsStorageAgent, StorageAgent, WindowId};
/// use checkpoint_runtime::io::WindowDataManager;
///
/// let dir = tempfile::tempdir()?;
/// let storage: Arc<dyn StorageAgent> = Arc::new(FsStorageAgent::new(dir.path())?);
/// let data = WindowDataManager::new(Arc::clone(&storage), "lines");
/// for seq in 1..=4u32 {
///     // The byte range the input read in this window.
///     data.save(WindowId::new(7, seq), &(u64::from(seq) * 100, u64::from(seq + 1) * 100))?;
/// }
/// assert_eq!(data.largest_recorded()?, Some(WindowId::new(7, 4)));
///
/// // After a restart, a replayed window finds its record.
/// let data = WindowDataManager::new(storage, "lines");
/// assert_eq!(data.load::<(u64, u64)>(WindowId::new(7, 3))?, Some((300, 400)));
/// assert_eq!(data.load::<(u64, u64)>(WindowId::new(7, 5))?, None);
///
/// // Window 2 is committed: records up to it are purged.
/// data.committed(WindowId::new(7, 2))?;
/// assert_eq!(data.windows()?, [WindowId::new(7, 3), WindowId::new(7, 4)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct WindowDataManager {
    storage: Arc<dyn StorageAgent>,
    name: String,
}

impl WindowDataManager {
    /// What [`storage_name`](WindowDataManager::storage_name) appends to an
    /// operator's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// assert_eq!(WindowDataManager::NAME_SUFFIX, "#window-data");
    /// ```
    pub const NAME_SUFFIX: &'static str = "#window-data";

    /// A manager for the records of `operator` (its physical name,
    /// [`OperatorContext::name`](crate::OperatorContext::name)), stored
    /// through `storage`.
    ///
    /// Nothing is checked or read yet: a name the storage agent refuses
    /// (a physical name of more than 243 bytes, say) is reported by the
    /// first operation.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::MemoryStorageAgent;
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
    /// assert_eq!(data.name(), "lines#window-data");
    /// ```
    pub fn new(storage: Arc<dyn StorageAgent>, operator: &str) -> Self {
        WindowDataManager {
            storage,
            name: Self::storage_name(operator),
        }
    }

    /// The storage name `operator`'s records are kept under:
    /// `<operator>#window-data`.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// assert_eq!(WindowDataManager::storage_name("lines"), "lines#window-data");
    /// assert_eq!(WindowDataManager::storage_name("count#2"), "count#2#window-data");
    /// ```
    pub fn storage_name(operator: &str) -> String {
        format!("{operator}{}", Self::NAME_SUFFIX)
    }

    /// Whether `name` (from [`StorageAgent::operators`], say) holds window
    /// data rather than an operator's checkpoints.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// assert!(WindowDataManager::is_storage_name("lines#window-data"));
    /// assert!(!WindowDataManager::is_storage_name("lines"));
    /// assert!(!WindowDataManager::is_storage_name("count#2"));
    /// ```
    pub fn is_storage_name(name: &str) -> bool {
        name.len() > Self::NAME_SUFFIX.len() && name.ends_with(Self::NAME_SUFFIX)
    }

    /// The storage name the records are kept under.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::MemoryStorageAgent;
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "words");
    /// assert_eq!(data.name(), "words#window-data");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    fn storage_error(&self, source: StorageError) -> WindowDataError {
        WindowDataError::Storage {
            name: self.name.clone(),
            source,
        }
    }

    /// Records `value` for `window`, durably (the storage agent's save is
    /// atomic and durable when it returns), replacing any record of that
    /// window.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::{MemoryStorageAgent, WindowId};
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
    /// data.save(WindowId::new(1, 1), &vec!["a".to_string(), "b".to_string()])?;
    /// assert_eq!(data.load::<Vec<String>>(WindowId::new(1, 1))?.map(|v| v.len()), Some(2));
    /// # Ok::<(), checkpoint_runtime::io::WindowDataError>(())
    /// ```
    pub fn save<T: Serialize + ?Sized>(&self, window: WindowId, value: &T) -> Result<(), WindowDataError> {
        let record_error = |source| WindowDataError::Record {
            name: self.name.clone(),
            window,
            action: "written from",
            type_name: std::any::type_name::<T>(),
            source,
        };
        let mut data = Vec::new();
        payload::encode(value, &mut data).map_err(record_error)?;
        // A name the agent would refuse is reported as the agent's error,
        // before the envelope (which caps names too) is built.
        checkpoint_core::validate_operator_name(&self.name).map_err(|e| self.storage_error(e))?;
        let bytes = Snapshot::encode(&WindowRecord { data }, SnapshotMeta::new(&self.name, window))
            .map_err(|e| record_error(PayloadError::custom(e)))?;
        self.storage
            .save(&self.name, window, &bytes)
            .map_err(|e| self.storage_error(e))
    }

    /// The record of `window`, or `None` if there is none (the window was
    /// never recorded, or its record was purged).
    ///
    /// A record that is not a readable envelope is
    /// [`WindowDataError::Corrupt`]; one that does not decode as `T` is
    /// [`WindowDataError::Record`]. Neither panics, whatever the bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::{MemoryStorageAgent, WindowId};
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
    /// assert_eq!(data.load::<u64>(WindowId::new(1, 9))?, None);
    /// # Ok::<(), checkpoint_runtime::io::WindowDataError>(())
    /// ```
    pub fn load<T: DeserializeOwned>(&self, window: WindowId) -> Result<Option<T>, WindowDataError> {
        let bytes = match self.storage.load(&self.name, window) {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(StorageError::Corrupt { source, .. }) => {
                return Err(WindowDataError::Corrupt {
                    name: self.name.clone(),
                    window,
                    source,
                });
            }
            Err(e) => return Err(self.storage_error(e)),
        };
        let corrupt = |source| WindowDataError::Corrupt {
            name: self.name.clone(),
            window,
            source,
        };
        let (_, record) = Snapshot::decode::<WindowRecord>(&bytes).map_err(corrupt)?;
        let record_error = |source| WindowDataError::Record {
            name: self.name.clone(),
            window,
            action: "read as",
            type_name: std::any::type_name::<T>(),
            source,
        };
        let mut input = &record.data[..];
        let value = payload::decode::<T>(&mut input).map_err(record_error)?;
        if !input.is_empty() {
            return Err(record_error(PayloadError::TrailingBytes(input.len())));
        }
        Ok(Some(value))
    }

    /// The windows that have records, ascending.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::{MemoryStorageAgent, WindowId};
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
    /// data.save(WindowId::new(1, 5), &())?;
    /// data.save(WindowId::new(1, 2), &())?;
    /// assert_eq!(data.windows()?, [WindowId::new(1, 2), WindowId::new(1, 5)]);
    /// # Ok::<(), checkpoint_runtime::io::WindowDataError>(())
    /// ```
    pub fn windows(&self) -> Result<Vec<WindowId>, WindowDataError> {
        self.storage.windows(&self.name).map_err(|e| self.storage_error(e))
    }

    /// The newest window that has a record (Apex's
    /// `getLargestCompletedWindow`): windows up to it are replays.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::{MemoryStorageAgent, WindowId};
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
    /// assert_eq!(data.largest_recorded()?, None);
    /// data.save(WindowId::new(1, 3), &17u32)?;
    /// assert_eq!(data.largest_recorded()?, Some(WindowId::new(1, 3)));
    /// # Ok::<(), checkpoint_runtime::io::WindowDataError>(())
    /// ```
    pub fn largest_recorded(&self) -> Result<Option<WindowId>, WindowDataError> {
        Ok(self.windows()?.last().copied())
    }

    /// Deletes the records of every window up to and including `window`
    /// (Apex's `committed` / `deleteUpTo`). Deleting is idempotent: calling
    /// it again, or for an older window, does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use checkpoint_core::{MemoryStorageAgent, WindowId};
    /// use checkpoint_runtime::io::WindowDataManager;
    ///
    /// let data = WindowDataManager::new(Arc::new(MemoryStorageAgent::new()), "lines");
    /// for seq in 1..=3 {
    ///     data.save(WindowId::new(1, seq), &seq)?;
    /// }
    /// data.committed(WindowId::new(1, 2))?;
    /// data.committed(WindowId::new(1, 2))?;
    /// assert_eq!(data.windows()?, [WindowId::new(1, 3)]);
    /// # Ok::<(), checkpoint_runtime::io::WindowDataError>(())
    /// ```
    pub fn committed(&self, window: WindowId) -> Result<(), WindowDataError> {
        for recorded in self.windows()? {
            if recorded > window {
                break;
            }
            self.storage
                .delete(&self.name, recorded)
                .map_err(|e| self.storage_error(e))?;
        }
        Ok(())
    }
}
