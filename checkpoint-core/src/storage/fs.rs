use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{StorageAgent, StorageLock, check_chunk_placement, check_placement, validate_operator_name};
use crate::chunk::ChunkId;
use crate::durable::create_dir_all_durable;
use crate::error::StorageError;
use crate::window::WindowId;

const MANIFEST_FILE: &str = ".manifest";
const MANIFEST_TEMP: &str = ".manifest.tmp";
const TEMP_SUFFIX: &str = ".tmp";
const LOCK_FILE: &str = ".lock";
/// Suffix of a snapshot set aside as corrupt: `.<16 hex>.corrupt`.
pub(crate) const CORRUPT_SUFFIX: &str = ".corrupt";

/// A step of [`FsStorageAgent::save`], reported to a hook installed with
/// [`FsStorageAgent::on_save_phase`] so crash tests can stop a process at an
/// exact point of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SavePhase {
    /// The bytes are written to the temp file, not yet fsync'd.
    AfterWrite,
    /// The temp file is fsync'd.
    AfterFsync,
    /// The temp file is closed; the rename comes next.
    BeforeRename,
    /// The temp file is renamed to its final name; the directory is not yet
    /// fsync'd.
    AfterRename,
    /// The directory is fsync'd: the snapshot is durable.
    AfterDirFsync,
    /// [`save_chunks`](StorageAgent::save_chunks): every chunk of the batch
    /// is written to its temp file and fsync'd; none is renamed yet.
    ChunksWritten,
    /// `save_chunks`: every chunk is renamed into place and the chunk
    /// directory fsync'd: the batch is durable.
    ChunksDurable,
}

impl SavePhase {
    /// Every phase of a snapshot's save, in protocol order.
    pub const ALL: [SavePhase; 5] = [
        SavePhase::AfterWrite,
        SavePhase::AfterFsync,
        SavePhase::BeforeRename,
        SavePhase::AfterRename,
        SavePhase::AfterDirFsync,
    ];
}

type SaveHook = Arc<dyn Fn(&str, WindowId, SavePhase) + Send + Sync>;

/// The embedded default storage agent: one file per snapshot under a root
/// directory, `<root>/<operator>/<16 hex digits of the window id>`.
///
/// A save writes a temp file (`.<window>.tmp` in the operator's directory),
/// fsyncs it, renames it over the final name and fsyncs the directory, so a
/// crash at any instant leaves either the previous set of snapshots or the
/// new snapshot complete. A failed write (a full disk, say) removes its temp
/// file and leaves every earlier snapshot intact. The job manifest is the file
/// `<root>/.manifest`, written the same way; operator names cannot start with
/// `.`, so nothing collides with it.
///
/// One job (one process) uses a root at a time; reading it from another
/// process (the `checkpoint` tool) is fine.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{FsStorageAgent, Snapshot, SnapshotMeta, StorageAgent, WindowId};
///
/// let dir = tempfile::tempdir()?;
/// let agent = FsStorageAgent::new(dir.path())?;
/// let w = WindowId::new(1_700_000_000, 59);
/// agent.save("count", w, &Snapshot::encode(&42u64, SnapshotMeta::new("count", w))?)?;
/// assert!(dir.path().join("count").join("6553f1000000003b").is_file());
///
/// // A new agent on the same directory (after a restart, say) sees it.
/// let agent = FsStorageAgent::new(dir.path())?;
/// assert_eq!(agent.windows("count")?, [w]);
/// let (_, value) = Snapshot::decode::<u64>(&agent.load("count", w)?)?;
/// assert_eq!(value, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct FsStorageAgent {
    root: PathBuf,
    hook: Option<SaveHook>,
}

impl fmt::Debug for FsStorageAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsStorageAgent")
            .field("root", &self.root)
            .field("hook", &self.hook.as_ref().map(|_| "installed"))
            .finish()
    }
}

impl FsStorageAgent {
    /// An agent storing under `root`, which is created if missing, durably
    /// ([`create_dir_all_durable`](crate::create_dir_all_durable)).
    pub fn new(root: impl AsRef<Path>) -> Result<Self, StorageError> {
        let root = root.as_ref().to_path_buf();
        crate::create_dir_all_durable(&root).map_err(|source| io_error("creating directory", &root, source))?;
        // An operator directory that a process created and died before
        // making durable would be taken as durable by `save`: make every
        // entry of the root durable before anything in it is relied on.
        sync_dir(&root)?;
        Ok(FsStorageAgent { root, hook: None })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Installs a hook called at each [`SavePhase`] of every save, on the
    /// saving thread. Meant for fault-injection tests: a hook that aborts the
    /// process at a chosen phase simulates a crash at that instant.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use checkpoint_core::{FsStorageAgent, SavePhase, Snapshot, SnapshotMeta, StorageAgent, WindowId};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let agent = FsStorageAgent::new(dir.path())?
    ///     .on_save_phase(move |_op, _w, phase| log.lock().unwrap().push(phase));
    /// let w = WindowId::new(1, 0);
    /// agent.save("op", w, &Snapshot::encode(&1u8, SnapshotMeta::new("op", w))?)?;
    /// assert_eq!(*seen.lock().unwrap(), SavePhase::ALL);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_save_phase(mut self, hook: impl Fn(&str, WindowId, SavePhase) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Removes temp files left by saves that a crash interrupted, returning
    /// how many were removed. Call it before a job starts: it takes the
    /// directory's lock for the sweep, so with a job running on the same
    /// root it fails with [`StorageError::Locked`] and removes nothing.
    pub fn remove_stale_temp_files(&self) -> Result<usize, StorageError> {
        let _lock = self.lock()?;
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        for operator in self.operators()? {
            dirs.push(self.root.join(&operator).join(CHUNK_DIR));
            dirs.push(self.root.join(operator));
        }
        for dir in dirs {
            for name in list_files(&dir)? {
                if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                    let path = dir.join(&name);
                    remove_if_exists(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn operator_dir(&self, operator: &str) -> Result<PathBuf, StorageError> {
        validate_operator_name(operator)?;
        Ok(self.root.join(operator))
    }

    fn phase(&self, operator: &str, window: WindowId, phase: SavePhase) {
        if let Some(hook) = &self.hook {
            hook(operator, window, phase);
        }
    }

    /// The atomic write protocol shared by snapshots and the manifest.
    fn write_atomically(
        &self,
        dir: &Path,
        temp: &Path,
        target: &Path,
        bytes: &[u8],
        report: impl Fn(SavePhase),
    ) -> Result<(), StorageError> {
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(temp)
                .map_err(|e| io_error("creating", temp, e))?;
            file.write_all(bytes).map_err(|e| io_error("writing", temp, e))?;
            report(SavePhase::AfterWrite);
            file.sync_all().map_err(|e| io_error("syncing", temp, e))?;
            report(SavePhase::AfterFsync);
            drop(file);
            report(SavePhase::BeforeRename);
            fs::rename(temp, target).map_err(|e| io_error("renaming into place", target, e))
        })();
        if let Err(e) = result {
            // Best effort: the error being returned matters more than a
            // failure to clean up, and a leftover temp file is never listed.
            let _ = fs::remove_file(temp);
            return Err(e);
        }
        report(SavePhase::AfterRename);
        sync_dir(dir)?;
        report(SavePhase::AfterDirFsync);
        Ok(())
    }
}

impl StorageAgent for FsStorageAgent {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        let dir = self.operator_dir(operator)?;
        check_placement(operator, window, snapshot)?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| io_error("creating directory", &dir, e))?;
            // The new directory's entry must be durable before a snapshot in it
            // can be.
            sync_dir(&self.root)?;
        }
        let name = window_file_name(window);
        let temp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
        let target = dir.join(&name);
        self.write_atomically(&dir, &temp, &target, snapshot, |phase| {
            self.phase(operator, window, phase)
        })
    }

    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        let path = self.operator_dir(operator)?.join(window_file_name(window));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound {
                    operator: operator.to_owned(),
                    window,
                });
            }
            Err(e) => return Err(io_error("reading", &path, e)),
        };
        check_placement(operator, window, &bytes)?;
        Ok(bytes)
    }

    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        let dir = self.operator_dir(operator)?;
        let name = window_file_name(window);
        remove_if_exists(&dir.join(&name))?;
        remove_if_exists(&dir.join(format!(".{name}{TEMP_SUFFIX}")))?;
        Ok(())
    }

    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        let dir = self.operator_dir(operator)?;
        let mut windows: Vec<WindowId> = list_files(&dir)?
            .iter()
            .filter_map(|name| parse_window_file_name(name))
            .collect();
        windows.sort_unstable();
        Ok(windows)
    }

    fn operators(&self) -> Result<Vec<String>, StorageError> {
        let entries = fs::read_dir(&self.root).map_err(|e| io_error("listing", &self.root, e))?;
        let mut operators = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", &self.root, e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| io_error("listing", &entry.path(), e))?
                .is_dir();
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str())
                && validate_operator_name(name).is_ok()
            {
                operators.push(name.to_owned());
            }
        }
        operators.sort_unstable();
        Ok(operators)
    }

    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        let temp = self.root.join(MANIFEST_TEMP);
        let target = self.root.join(MANIFEST_FILE);
        self.write_atomically(&self.root, &temp, &target, manifest, |_| {})
    }

    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.root.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    /// Locks `<root>/.lock` (`flock`, released by the kernel when the
    /// process dies, so a killed job never leaves a stale lock).
    fn lock(&self) -> Result<StorageLock, StorageError> {
        lock_directory(&self.root, &format!("checkpoint directory {}", self.root.display()))
    }

    fn supports_chunks(&self) -> bool {
        true
    }

    /// Writes each chunk to `<root>/<operator>/chunks/.<id>.tmp` and
    /// fsyncs it, then renames them all into place (`<id>`) and fsyncs the
    /// chunk directory once: one directory sync per batch. A crash leaves
    /// some chunks or none; a chunk no snapshot refers to is harmless, and
    /// the runtime's retention removes it.
    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        let dir = self.operator_dir(operator)?.join(CHUNK_DIR);
        for (id, bytes) in chunks {
            check_chunk_placement(operator, *id, bytes)?;
        }
        let Some((first, _)) = chunks.first() else {
            return Ok(());
        };
        create_dir_all_durable(&dir).map_err(|e| io_error("creating directory", &dir, e))?;
        let temp = |id: &ChunkId| dir.join(format!(".{id}{TEMP_SUFFIX}"));
        let written = (|| {
            for (id, bytes) in chunks {
                let path = temp(id);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| io_error("creating", &path, e))?;
                file.write_all(bytes).map_err(|e| io_error("writing", &path, e))?;
                file.sync_all().map_err(|e| io_error("syncing", &path, e))?;
            }
            self.phase(operator, first.window, SavePhase::ChunksWritten);
            for (id, _) in chunks {
                let target = dir.join(id.to_string());
                fs::rename(temp(id), &target).map_err(|e| io_error("renaming into place", &target, e))?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            for (id, _) in chunks {
                let _ = fs::remove_file(temp(id));
            }
            return Err(e);
        }
        sync_dir(&dir)?;
        self.phase(operator, first.window, SavePhase::ChunksDurable);
        Ok(())
    }

    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        let path = self.operator_dir(operator)?.join(CHUNK_DIR).join(id.to_string());
        match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StorageError::ChunkNotFound {
                operator: operator.to_owned(),
                chunk: id.to_string(),
            }),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        let dir = self.operator_dir(operator)?.join(CHUNK_DIR);
        remove_if_exists(&dir.join(id.to_string()))?;
        remove_if_exists(&dir.join(format!(".{id}{TEMP_SUFFIX}")))
    }

    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        let dir = self.operator_dir(operator)?.join(CHUNK_DIR);
        let mut chunks: Vec<ChunkId> = list_files(&dir)?.iter().filter_map(|name| name.parse().ok()).collect();
        chunks.sort_unstable();
        Ok(chunks)
    }

    /// Renames the snapshot to `.<16 hex digits>.corrupt` in its directory.
    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        let dir = self.operator_dir(operator)?;
        let name = window_file_name(window);
        let from = dir.join(&name);
        let to = dir.join(format!(".{name}{CORRUPT_SUFFIX}"));
        match fs::rename(&from, &to) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("setting aside", &from, e)),
        }
    }
}

/// Takes an exclusive lock on `dir` for as long as the returned
/// [`StorageLock`] lives: an advisory `flock` on the file `dir/.lock`,
/// which the kernel releases when the process exits or is killed.
/// [`StorageError::Locked`] names `what` if another holder has it, in this
/// process or another.
///
/// [`FsStorageAgent::lock`](StorageAgent::lock) and the runtime's
/// exactly-once file sink both use it.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{StorageError, lock_directory};
///
/// let dir = tempfile::tempdir()?;
/// let lock = lock_directory(dir.path(), "output directory")?;
/// let second = lock_directory(dir.path(), "output directory");
/// assert!(matches!(second, Err(StorageError::Locked { .. })));
/// drop(lock);
/// lock_directory(dir.path(), "output directory")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn lock_directory(dir: &Path, what: &str) -> Result<StorageLock, StorageError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("opening the lock file", &path, e))?;
    // A lock can look held for an instant after its holder let go: a child
    // process forked by any thread of the holder's process shares the open
    // lock file until it execs. Another job's lock is still there after
    // this grace.
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(StorageLock::holding(file)),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    what: what.to_owned(),
                    path,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error("locking", &path, e)),
        }
    }
}

/// How long [`lock_directory`] keeps trying a lock that is held.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The subdirectory of an operator's directory that holds its chunks.
const CHUNK_DIR: &str = "chunks";

fn window_file_name(window: WindowId) -> String {
    format!("{:016x}", window.as_u64())
}

fn parse_window_file_name(name: &str) -> Option<WindowId> {
    if name.len() != 16 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(name, 16).ok().map(WindowId::from_u64)
}

/// The UTF-8 names of the regular files in `dir` (symbolic links followed):
/// a directory or a FIFO named like a snapshot is not one, and reading a
/// FIFO would hang.
fn list_files(dir: &Path) -> Result<Vec<String>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing", dir, e))?;
        let file_type = entry.file_type().map_err(|e| io_error("listing", &entry.path(), e))?;
        let is_file = if file_type.is_symlink() {
            fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        } else {
            file_type.is_file()
        };
        if let (true, Ok(name)) = (is_file, entry.file_name().into_string()) {
            names.push(name);
        }
    }
    Ok(names)
}

fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing", path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing directory", dir, e))
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_file_names_round_trip_and_reject_others() {
        let w = WindowId::new(0x65a1_b2c3, 7);
        assert_eq!(window_file_name(w), "65a1b2c300000007");
        assert_eq!(parse_window_file_name("65a1b2c300000007"), Some(w));
        for other in [
            ".65a1b2c300000007.tmp",
            "65A1B2C300000007",
            "65a1b2c30000000",
            "65a1b2c3000000070",
            "x",
        ] {
            assert_eq!(parse_window_file_name(other), None, "{other}");
        }
    }
}
