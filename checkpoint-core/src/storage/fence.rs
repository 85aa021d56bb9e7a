//! Fencing: one job per storage root or prefix. A lock says "another job
//! runs here" to a job that starts; the manifest's version makes a job that
//! lost its hold unable to write as if it still had it.

use std::fmt;

use crate::error::StorageError;

/// The version of the stored job manifest, as the storage reports it: an
/// object store's ETag, or a digest of the bytes for agents whose
/// [`lock`](crate::StorageAgent::lock) already keeps other jobs out.
///
/// A job reads it with
/// [`load_manifest_versioned`](crate::StorageAgent::load_manifest_versioned)
/// and hands it back to
/// [`replace_manifest`](crate::StorageAgent::replace_manifest), which
/// writes only if nobody else wrote in between.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{ManifestVersion, MemoryStorageAgent, StorageAgent, StorageError};
///
/// let agent = MemoryStorageAgent::new();
/// let first = agent.replace_manifest(b"generation 1", None)?;
/// let second = agent.replace_manifest(b"generation 2", Some(&first))?;
/// // A writer still holding the first version has been superseded.
/// let stale = agent.replace_manifest(b"generation 2 again", Some(&first));
/// assert!(matches!(stale, Err(StorageError::Superseded { .. })));
/// assert_eq!(agent.load_manifest_versioned()?, Some((b"generation 2".to_vec(), second)));
/// # Ok::<(), StorageError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ManifestVersion(String);

impl ManifestVersion {
    /// A version as the storage names it (an ETag, say).
    pub fn new(version: impl Into<String>) -> Self {
        ManifestVersion(version.into())
    }

    /// The version of a manifest that is `bytes`, for agents without
    /// versions of their own: a digest with its length.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::ManifestVersion;
    ///
    /// assert_eq!(ManifestVersion::of_bytes(b"a"), ManifestVersion::of_bytes(b"a"));
    /// assert_ne!(ManifestVersion::of_bytes(b"a"), ManifestVersion::of_bytes(b"b"));
    /// ```
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ManifestVersion(format!("{:08x}-{}", crc32c::crc32c(bytes), bytes.len()))
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ManifestVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestVersion({})", self.0)
    }
}

impl fmt::Display for ManifestVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a [`StorageLock`] can say about itself while it is held.
type HeldCheck = Box<dyn Fn() -> Result<(), StorageError> + Send + Sync>;

/// Proof that one job holds a storage root: released when dropped.
///
/// Returned by [`StorageAgent::lock`](crate::StorageAgent::lock); the
/// runtime holds it for the life of a job so a second job on the same
/// storage fails at once instead of overwriting the first one's
/// checkpoints. A lock that can be lost while held (an object store's
/// lease, which a job that stops renewing loses) says so through
/// [`check`](StorageLock::check), which the runtime calls before it deletes
/// anything.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{MemoryStorageAgent, StorageAgent};
///
/// let agent = MemoryStorageAgent::new();
/// let lock = agent.lock()?;
/// assert!(agent.lock().is_err(), "a second job is refused");
/// lock.check()?;
/// drop(lock);
/// assert!(agent.lock().is_ok(), "and admitted once the first one is gone");
/// # Ok::<(), checkpoint_core::StorageError>(())
/// ```
#[must_use = "the storage is unlocked as soon as the lock is dropped"]
pub struct StorageLock {
    _held: Option<Box<dyn Send + Sync>>,
    check: Option<HeldCheck>,
}

impl StorageLock {
    /// A lock that holds nothing, for agents that cannot lock (the default
    /// of [`StorageAgent::lock`](crate::StorageAgent::lock)).
    pub fn unsupported() -> Self {
        StorageLock {
            _held: None,
            check: None,
        }
    }

    /// A lock that holds `guard` (a locked file, say) until dropped.
    pub fn holding(guard: impl Send + Sync + 'static) -> Self {
        StorageLock {
            _held: Some(Box::new(guard)),
            check: None,
        }
    }

    /// A lock that holds `guard` until dropped and can be lost before:
    /// `check` says whether it is still held ([`StorageError::Superseded`]
    /// or [`StorageError::LeaseUncertain`] if not).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// use checkpoint_core::{StorageError, StorageLock};
    ///
    /// let lost = Arc::new(AtomicBool::new(false));
    /// let flag = Arc::clone(&lost);
    /// let lock = StorageLock::holding_checked((), move || match flag.load(Ordering::SeqCst) {
    ///     false => Ok(()),
    ///     true => Err(StorageError::Superseded { what: "s3://b/job".into(), detail: "a newer job".into() }),
    /// });
    /// assert!(lock.check().is_ok());
    /// lost.store(true, Ordering::SeqCst);
    /// assert!(lock.check().is_err());
    /// ```
    pub fn holding_checked(
        guard: impl Send + Sync + 'static,
        check: impl Fn() -> Result<(), StorageError> + Send + Sync + 'static,
    ) -> Self {
        StorageLock {
            _held: Some(Box::new(guard)),
            check: Some(Box::new(check)),
        }
    }

    /// `Ok` while the lock is surely held; an error once it was lost (a
    /// newer job took the storage) or cannot be vouched for (its renewals
    /// failed for too long). A job deletes nothing while this is an error.
    pub fn check(&self) -> Result<(), StorageError> {
        match &self.check {
            Some(check) => check(),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for StorageLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageLock")
            .field("held", &self._held.is_some())
            .field("checked", &self.check.is_some())
            .finish()
    }
}
