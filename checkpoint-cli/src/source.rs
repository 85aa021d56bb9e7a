//! Reading the checkpoints: a directory with `std::fs`, or an object store
//! prefix through its storage agent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint_core::{FsStorageAgent, StorageAgent, StorageError, WindowId};
use checkpoint_object_store::location::{CheckpointLocation, S3_ENVIRONMENT};

use crate::Failure;
use crate::format::{describe, plural};
use crate::inventory::SnapshotFile;

/// Where the checkpoints are, and how the tool reads them.
#[derive(Debug)]
pub(crate) enum Source {
    /// A directory, read with `std::fs`: everything in it, files that are
    /// not part of the layout included.
    Dir(PathBuf),
    /// An object store prefix, read through its storage agent, which lists
    /// only what the layout names.
    Store { url: String, agent: Arc<dyn StorageAgent> },
}

/// Why a snapshot's bytes could not be had.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// An I/O or network error: nothing is known about the snapshot.
    Unreadable(String),
    /// The storage agent refused the bytes it read: an unreadable header,
    /// or one naming another operator or window (a directory's snapshots
    /// are read as they are, so this is an object store's).
    Corrupt(String),
}

impl Source {
    pub(crate) fn open(location: CheckpointLocation) -> Result<Source, Failure> {
        match location {
            CheckpointLocation::Directory(dir) => Ok(Source::Dir(dir)),
            CheckpointLocation::Url(ref url) => {
                let agent = location.open()?;
                Ok(Source::Store {
                    url: url.trim_end_matches('/').to_owned(),
                    agent,
                })
            }
        }
    }

    /// The storage agent on the checkpoints (for a directory, one on an
    /// existing directory: the tool never creates one).
    pub(crate) fn agent(&self) -> Result<Arc<dyn StorageAgent>, Failure> {
        match self {
            Source::Dir(dir) => {
                open_dir(dir)?;
                Ok(Arc::new(FsStorageAgent::new(dir).map_err(|e| e.to_string())?))
            }
            Source::Store { agent, .. } => Ok(Arc::clone(agent)),
        }
    }

    pub(crate) fn is_store(&self) -> bool {
        matches!(self, Source::Store { .. })
    }

    /// Where the job manifest is, for messages.
    pub(crate) fn manifest_path(&self) -> String {
        match self {
            Source::Dir(dir) => dir.join(".manifest").display().to_string(),
            Source::Store { url, .. } => format!("{url}/.manifest"),
        }
    }

    /// Where `entry`'s snapshot at `window` is: a file's path, or an
    /// object's URL.
    pub(crate) fn snapshot_path(&self, entry: &str, window: WindowId) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(entry).join(format!("{:016x}", window.as_u64())),
            Source::Store { url, .. } => PathBuf::from(format!("{url}/{entry}/{:016x}", window.as_u64())),
        }
    }

    /// The bytes of a snapshot as stored.
    pub(crate) fn read(&self, entry: &str, file: &SnapshotFile) -> Result<Vec<u8>, ReadError> {
        match self {
            Source::Dir(_) => fs::read(&file.path).map_err(|e| ReadError::Unreadable(e.to_string())),
            Source::Store { agent, .. } => agent.load(entry, file.window).map_err(|e| match e {
                StorageError::Corrupt { source, .. } => ReadError::Corrupt(describe(&source)),
                StorageError::Misplaced {
                    found_operator,
                    found_window,
                    ..
                } => ReadError::Corrupt(format!(
                    "misplaced: its header names operator {found_operator:?} at window {found_window}, but it is \
                     stored as {entry:?} at {}",
                    file.window
                )),
                e => ReadError::Unreadable(format!("{e}{}", store_hint())),
            }),
        }
    }

    /// "3 directories", or for an object store "3 operator prefixes".
    pub(crate) fn groups(&self, n: usize) -> String {
        match self {
            Source::Dir(_) => plural(n, "directory", "directories"),
            Source::Store { .. } => plural(n, "operator prefix", "operator prefixes"),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dir(dir) => write!(f, "{}", dir.display()),
            Source::Store { url, .. } => f.write_str(url),
        }
    }
}

/// Where an object store's settings come from, for its error messages (a
/// wrong endpoint or missing credentials show up as failed requests).
pub(crate) fn store_hint() -> String {
    format!(" (S3 is configured from {S3_ENVIRONMENT}: check them)")
}

/// What an object store listing cannot show, printed by `ls` and `verify`.
pub(crate) const STORE_NOTE: &str = "an S3 prefix is read through its storage agent, which lists the operators, \
    snapshots, chunks and manifest of the layout only: stray objects under the prefix are not reported \
    (list them with an S3 client)";

pub(crate) fn io_failure(action: &str, path: &Path, e: &io::Error) -> Failure {
    format!("{action} {}: {e}", path.display())
}

/// Checks that `dir` is an existing directory.
pub(crate) fn open_dir(dir: &Path) -> Result<(), Failure> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{} is not a directory (a checkpoint directory holds a .manifest and one subdirectory per operator)",
            dir.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!("no such directory: {}", dir.display())),
        Err(e) => Err(io_failure("cannot read", dir, &e)),
    }
}

/// The bytes of the snapshot `show` or `dump` looks at.
pub(crate) fn read_one(source: &Source, operator: &str, file: &SnapshotFile) -> Result<Vec<u8>, Failure> {
    source.read(operator, file).map_err(|e| match e {
        ReadError::Unreadable(e) => format!("cannot read {}: {e}", file.path.display()),
        ReadError::Corrupt(problem) => format!("{} is corrupt: {problem}", file.path.display()),
    })
}
