//! Fencing (DESIGN.md, "Fencing"): once a job holds its storage, every
//! write and delete it makes checks that it still does, and every manifest
//! write is conditional on the version of its own previous one.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use checkpoint_core::{ChunkId, ManifestVersion, StorageAgent, StorageError, StorageLock, WindowId};

/// The job's storage as the job uses it once it holds the lock: writes and
/// deletes go through only while [`StorageLock::check`] passes, and the
/// manifest is replaced only if nobody else wrote it since this job did.
/// Reads pass straight through.
pub(crate) struct Fenced {
    inner: Arc<dyn StorageAgent>,
    lock: StorageLock,
    /// The version of the manifest this job last read or wrote (`None`: there
    /// was none), and the bytes of a write whose answer was an error (it may
    /// have landed all the same).
    version: Mutex<(Option<ManifestVersion>, Option<Vec<u8>>)>,
}

impl Fenced {
    /// Locks `storage` and reads its manifest: the job's storage, and the
    /// manifest it found (which the job's first manifest write replaces, or
    /// fails if someone else replaced it first).
    pub(crate) fn lock(storage: Arc<dyn StorageAgent>) -> Result<(Arc<Fenced>, Option<Vec<u8>>), StorageError> {
        // Before anything is read: a second job on the same storage stops
        // here, having touched nothing.
        let lock = storage.lock()?;
        let (manifest, version) = match storage.load_manifest_versioned()? {
            Some((bytes, version)) => (Some(bytes), Some(version)),
            None => (None, None),
        };
        let fenced = Fenced {
            inner: storage,
            lock,
            version: Mutex::new((version, None)),
        };
        Ok((Arc::new(fenced), manifest))
    }

    /// `Ok` while this job surely holds its storage.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        self.lock.check()
    }
}

impl fmt::Debug for Fenced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl StorageAgent for Fenced {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        self.check()?;
        self.inner.save(operator, window, snapshot)
    }

    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        self.inner.load(operator, window)
    }

    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        self.check()?;
        self.inner.delete(operator, window)
    }

    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        self.inner.windows(operator)
    }

    fn operators(&self) -> Result<Vec<String>, StorageError> {
        self.inner.operators()
    }

    /// Replaces the manifest on the condition that it is still the one
    /// this job last wrote (or found at its start).
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        self.check()?;
        let mut state = self.version.lock().unwrap_or_else(PoisonError::into_inner);
        let (version, uncertain) = &mut *state;
        let error = match self.inner.replace_manifest(manifest, version.as_ref()) {
            Ok(new) => {
                *version = Some(new);
                *uncertain = None;
                return Ok(());
            }
            Err(e) => e,
        };
        // A write whose answer was lost may have landed: the stored
        // manifest is then this job's own (this write's, or an earlier
        // one's that failed the same way), not another job's.
        if let Ok(Some((stored, stored_version))) = self.inner.load_manifest_versioned() {
            if stored == manifest {
                *version = Some(stored_version);
                *uncertain = None;
                return Ok(());
            }
            if uncertain.as_deref() == Some(stored.as_slice()) {
                *version = Some(stored_version);
                *uncertain = None;
                let new = self.inner.replace_manifest(manifest, version.as_ref())?;
                *version = Some(new);
                return Ok(());
            }
        }
        if !matches!(error, StorageError::Superseded { .. }) {
            *uncertain = Some(manifest.to_vec());
        }
        Err(error)
    }

    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.load_manifest()
    }

    fn load_manifest_versioned(&self) -> Result<Option<(Vec<u8>, ManifestVersion)>, StorageError> {
        self.inner.load_manifest_versioned()
    }

    fn replace_manifest(
        &self,
        manifest: &[u8],
        expected: Option<&ManifestVersion>,
    ) -> Result<ManifestVersion, StorageError> {
        self.check()?;
        self.inner.replace_manifest(manifest, expected)
    }

    /// The job already holds the lock; a second claim from inside it is a
    /// bug, refused as another job's would be.
    fn lock(&self) -> Result<StorageLock, StorageError> {
        self.inner.lock()
    }

    fn supports_chunks(&self) -> bool {
        self.inner.supports_chunks()
    }

    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        self.check()?;
        self.inner.save_chunks(operator, chunks)
    }

    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        self.inner.load_chunk(operator, id)
    }

    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        self.check()?;
        self.inner.delete_chunk(operator, id)
    }

    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        self.inner.chunks(operator)
    }

    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        self.check()?;
        self.inner.set_aside(operator, window)
    }
}
