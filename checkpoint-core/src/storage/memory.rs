use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    ManifestVersion, StorageAgent, StorageLock, check_chunk_placement, check_placement, validate_operator_name,
};
use crate::chunk::ChunkId;
use crate::error::StorageError;
use crate::window::WindowId;

/// A storage agent that keeps snapshots in memory, for tests.
///
/// It checks names and headers exactly as [`FsStorageAgent`](super::FsStorageAgent)
/// does. Clones share the same store, so a test can keep a handle to look at
/// what a job saved.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{MemoryStorageAgent, StorageAgent};
///
/// let agent = MemoryStorageAgent::new();
/// let view = agent.clone();
/// agent.save_manifest(b"job")?;
/// assert_eq!(view.load_manifest()?.as_deref(), Some(&b"job"[..]));
/// # Ok::<(), checkpoint_core::StorageError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStorageAgent {
    inner: Arc<Mutex<Store>>,
}

#[derive(Debug, Default)]
struct Store {
    snapshots: BTreeMap<String, BTreeMap<WindowId, Arc<[u8]>>>,
    /// Snapshots set aside as corrupt, kept for inspection.
    set_aside: BTreeMap<String, BTreeMap<WindowId, Arc<[u8]>>>,
    chunks: BTreeMap<String, BTreeMap<ChunkId, Arc<[u8]>>>,
    manifest: Option<Vec<u8>>,
    locked: bool,
}

/// Unlocks a [`MemoryStorageAgent`] when its job's lock is dropped.
struct MemoryLock(Arc<Mutex<Store>>);

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).locked = false;
    }
}

impl MemoryStorageAgent {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshots [`StorageAgent::set_aside`] moved away from `operator`,
    /// by window.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::{MemoryStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
    ///
    /// let agent = MemoryStorageAgent::new();
    /// let w = WindowId::new(1, 3);
    /// agent.save("op", w, &Snapshot::encode(&7u8, SnapshotMeta::new("op", w))?)?;
    /// agent.set_aside("op", w)?;
    /// assert!(agent.windows("op")?.is_empty());
    /// assert_eq!(agent.set_aside_windows("op"), [w]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_aside_windows(&self, operator: &str) -> Vec<WindowId> {
        self.store()
            .set_aside
            .get(operator)
            .map(|windows| windows.keys().copied().collect())
            .unwrap_or_default()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-made entry: every
        // mutation is a single map operation.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StorageAgent for MemoryStorageAgent {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        validate_operator_name(operator)?;
        check_placement(operator, window, snapshot)?;
        self.store()
            .snapshots
            .entry(operator.to_owned())
            .or_default()
            .insert(window, Arc::from(snapshot));
        Ok(())
    }

    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        validate_operator_name(operator)?;
        self.store()
            .snapshots
            .get(operator)
            .and_then(|windows| windows.get(&window))
            .map(|bytes| bytes.to_vec())
            .ok_or_else(|| StorageError::NotFound {
                operator: operator.to_owned(),
                window,
            })
    }

    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        validate_operator_name(operator)?;
        if let Some(windows) = self.store().snapshots.get_mut(operator) {
            windows.remove(&window);
        }
        Ok(())
    }

    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        validate_operator_name(operator)?;
        Ok(self
            .store()
            .snapshots
            .get(operator)
            .map(|windows| windows.keys().copied().collect())
            .unwrap_or_default())
    }

    fn operators(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.store().snapshots.keys().cloned().collect())
    }

    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        self.store().manifest = Some(manifest.to_vec());
        Ok(())
    }

    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.store().manifest.clone())
    }

    /// Compares and writes under one lock of the store, so it is atomic
    /// even against writers that did not [`lock`](StorageAgent::lock) it.
    fn replace_manifest(
        &self,
        manifest: &[u8],
        expected: Option<&ManifestVersion>,
    ) -> Result<ManifestVersion, StorageError> {
        let mut store = self.store();
        let current = store.manifest.as_deref().map(ManifestVersion::of_bytes);
        if current.as_ref() != expected {
            return Err(StorageError::Superseded {
                what: "the in-memory storage".to_owned(),
                detail: "its job manifest was rewritten by another job".to_owned(),
            });
        }
        store.manifest = Some(manifest.to_vec());
        Ok(ManifestVersion::of_bytes(manifest))
    }

    fn lock(&self) -> Result<StorageLock, StorageError> {
        let mut store = self.store();
        if store.locked {
            return Err(StorageError::Locked {
                what: "the in-memory storage".to_owned(),
                path: "<memory>".into(),
            });
        }
        store.locked = true;
        Ok(StorageLock::holding(MemoryLock(Arc::clone(&self.inner))))
    }

    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        validate_operator_name(operator)?;
        let mut store = self.store();
        if let Some(bytes) = store.snapshots.get_mut(operator).and_then(|w| w.remove(&window)) {
            store
                .set_aside
                .entry(operator.to_owned())
                .or_default()
                .insert(window, bytes);
        }
        Ok(())
    }

    fn supports_chunks(&self) -> bool {
        true
    }

    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        validate_operator_name(operator)?;
        for (id, bytes) in chunks {
            check_chunk_placement(operator, *id, bytes)?;
        }
        let mut store = self.store();
        let stored = store.chunks.entry(operator.to_owned()).or_default();
        for (id, bytes) in chunks {
            stored.insert(*id, Arc::from(&bytes[..]));
        }
        Ok(())
    }

    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        validate_operator_name(operator)?;
        self.store()
            .chunks
            .get(operator)
            .and_then(|c| c.get(&id))
            .map(|bytes| bytes.to_vec())
            .ok_or_else(|| StorageError::ChunkNotFound {
                operator: operator.to_owned(),
                chunk: id.to_string(),
            })
    }

    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        validate_operator_name(operator)?;
        if let Some(chunks) = self.store().chunks.get_mut(operator) {
            chunks.remove(&id);
        }
        Ok(())
    }

    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        validate_operator_name(operator)?;
        Ok(self
            .store()
            .chunks
            .get(operator)
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default())
    }
}
