//! How the object store's failures become the agent's: which may pass if
//! tried again, and the errors of the agent's own deadlines.

use checkpoint_core::StorageError;
use object_store::path::Path;

/// Whether a failed call may succeed if made again: not when the store
/// answered definitely (missing, present, changed, refused) or the
/// caller's deadline passed.
pub(crate) fn may_pass(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    match error {
        E::NotFound { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotSupported { .. }
        | E::NotImplemented
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::UnknownConfigurationKey { .. } => false,
        E::Generic { store, .. } => *store != "checkpoint",
        _ => true,
    }
}

/// The lease this agent holds lapsed while a write was in flight.
pub(crate) struct LeaseLapsed;

fn lease_lapsed() -> std::io::Error {
    std::io::Error::other("the prefix's lease could not be renewed in time; the write was cancelled")
}

impl From<LeaseLapsed> for object_store::Error {
    fn from(_: LeaseLapsed) -> Self {
        object_store::Error::Generic {
            store: "checkpoint",
            source: Box::new(lease_lapsed()),
        }
    }
}

impl From<LeaseLapsed> for StorageError {
    fn from(_: LeaseLapsed) -> Self {
        io_error("writing to", "the object store", lease_lapsed())
    }
}

/// The calling thread's [`Deadline`] passed before the store answered.
pub(crate) struct DeadlinePassed;

fn deadline_passed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer before the checkpoint's deadline (the save timeout); the request was cancelled",
    )
}

impl From<DeadlinePassed> for object_store::Error {
    fn from(_: DeadlinePassed) -> Self {
        object_store::Error::Generic {
            store: "checkpoint",
            source: Box::new(deadline_passed()),
        }
    }
}

impl From<DeadlinePassed> for StorageError {
    fn from(_: DeadlinePassed) -> Self {
        io_error("waiting for", "the object store", deadline_passed())
    }
}

pub(crate) fn io_error(action: &'static str, what: &str, source: std::io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: std::path::PathBuf::from(what),
        source,
    }
}

pub(crate) fn store_error(action: &'static str, path: &Path, error: object_store::Error) -> StorageError {
    io_error(action, path.as_ref(), std::io::Error::other(error))
}
