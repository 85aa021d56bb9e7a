//! An exactly-once file sink: per-window pending files, durable with every
//! checkpoint, published by atomic rename once committed.

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use checkpoint_core::{Checkpoint, StorageLock, WindowId, lock_directory};

use super::FileOperatorError;
use crate::operator::{Operator, OperatorContext, OperatorResult, Output, Tuple};

/// The directory, inside the output directory, of windows not yet published.
const PENDING_DIR: &str = ".pending";

/// A window's file name: the window id's 16 lower-case hex digits.
fn window_file_name(window: WindowId) -> String {
    format!("{:016x}", window.as_u64())
}

fn parse_window_file_name(name: &str) -> Option<WindowId> {
    if name.len() != 16 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(name, 16).ok().map(WindowId::from_u64)
}

/// The window files in `dir`, ascending; a missing directory has none.
fn window_files(dir: &Path) -> io::Result<Vec<(WindowId, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(window) = entry.file_name().to_str().and_then(parse_window_file_name) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            files.push((window, entry.path()));
        }
    }
    files.sort_unstable();
    Ok(files)
}

/// The windows an [`ExactlyOnceFileSink`] has published in `dir`, ascending.
///
/// # Examples
///
/// ```
/// use checkpoint_core::WindowId;
/// use checkpoint_runtime::io::published_windows;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("0000000100000002"), "b\n")?;
/// std::fs::write(dir.path().join("0000000100000001"), "a\n")?;
/// std::fs::write(dir.path().join("notes.txt"), "not a window")?;
/// assert_eq!(published_windows(dir.path())?, [WindowId::new(1, 1), WindowId::new(1, 2)]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn published_windows(dir: impl AsRef<Path>) -> io::Result<Vec<WindowId>> {
    Ok(window_files(dir.as_ref())?.into_iter().map(|(w, _)| w).collect())
}

/// Everything an [`ExactlyOnceFileSink`] published in `dir`: the published
/// window files, concatenated in window order. Pending (unpublished) windows
/// and files that are not window files are left out, so two runs of a job
/// can be compared byte for byte.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::io::read_output;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("0000000100000002"), "b\n")?;
/// std::fs::write(dir.path().join("0000000100000001"), "a\n")?;
/// std::fs::create_dir(dir.path().join(".pending"))?;
/// std::fs::write(dir.path().join(".pending").join("0000000100000003"), "c\n")?;
/// assert_eq!(read_output(dir.path())?, b"a\nb\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_output(dir: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let mut output = Vec::new();
    for (_, path) in window_files(dir.as_ref())? {
        output.extend_from_slice(&fs::read(path)?);
    }
    Ok(output)
}

/// The window being written.
struct Writing {
    window: WindowId,
    /// `None`: the window was already published, nothing is written.
    file: Option<BufWriter<File>>,
}

/// A sink whose output, after any number of failures and restarts, is the
/// failure-free output byte for byte (with an idempotent input upstream,
/// such as [`LineInput`](super::LineInput), and deterministic operators
/// between).
///
/// Each tuple is written as one line (`Display`, then `\n`). The output of
/// window W goes to `<dir>/.pending/<W>` while the window runs (`<W>` is the
/// window id's 16 lower-case hex digits), and then:
///
/// - `before_checkpoint(C)`: every pending window <= C not yet made durable
///   is fsync'd (and the pending directory with it), so the windows the
///   checkpoint covers survive a crash with it.
/// - `committed(C)`: every pending window <= C is published: fsync'd, renamed
///   atomically to `<dir>/<W>`, and the directory fsync'd. A window whose
///   published file already exists is skipped, so publishing is
///   idempotent.
/// - `setup` makes `<dir>` and `<dir>/.pending` durable in their parents
///   (creating them if missing) before anything in them is relied on. It
///   also runs after every restore from checkpoint A
///   ([`OperatorContext::activation_window`]): pending windows > A are
///   deleted (they will be replayed and written again); pending windows
///   <= A are part of the restored state and are published by the next
///   commit.
/// - A replayed window that is already published (a restore from an older
///   checkpoint than the newest, say) is not written again.
///
/// Its state is the last window it published. The directory is
/// configuration (`#[checkpoint(config)]`): not saved, and after every
/// restore it is the one of the value handed to the DAG in this run, so a
/// job resumed from a copied checkpoint directory with a new output
/// directory writes only there (it publishes there the windows after its
/// checkpoint; what the original job published or left pending stays in
/// the original directory). Without
/// checkpointing (no storage agent) nothing is replayed and each window is
/// published at its `end_window`.
///
/// [`read_output`] concatenates the published windows in window order.
///
/// The output is byte-identical across failures only if the tuples of each
/// window arrive in the same order every time: an upstream that emits keyed
/// results must emit them in a deterministic order, sorted by key (a
/// `HashMap`'s iteration order differs between processes), and with one
/// upstream only (the interleaving of several upstreams' batches is not
/// deterministic). A tuple whose `Display` contains a newline spans several
/// lines. One sink owns its directory: give each sink, and each partition
/// of a partitioned sink, a directory of its own, and start a new job with
/// an empty one.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, MemoryStorageAgent};
/// use checkpoint_runtime::io::{ExactlyOnceFileSink, read_output};
/// use checkpoint_runtime::{Config, Dag, Emit, InputOperator, OperatorResult, Output, Runtime, WindowMode};
///
/// #[derive(Checkpoint)]
/// struct Numbers {
///     next: u64,
///     end: u64,
/// }
///
/// impl InputOperator for Numbers {
///     type Output = u64;
///     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
///         out.emit(self.next);
///         self.next += 1;
///         Ok(if self.next == self.end { Emit::Done } else { Emit::Continue })
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let mut dag = Dag::new();
/// let numbers = dag.input("numbers", Numbers { next: 0, end: 5 });
/// let sink = dag.operator("sink", ExactlyOnceFileSink::<u64>::new(dir.path()));
/// dag.connect(&numbers, &sink);
/// Runtime::new(
///     Config::default()
///         .storage(MemoryStorageAgent::new())
///         .window_mode(WindowMode::Tuples(2)),
/// )
/// .run(dag)?;
/// assert_eq!(read_output(dir.path())?, b"0\n1\n2\n3\n4\n");
/// assert_eq!(checkpoint_runtime::io::published_windows(dir.path())?.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Checkpoint)]
#[checkpoint(version = 2, previous = FileSinkV1)]
pub struct ExactlyOnceFileSink<T> {
    #[checkpoint(config)]
    dir: PathBuf,
    last_published: Option<WindowId>,
    /// Pending windows not yet published; `true` once fsync'd.
    #[checkpoint(transient)]
    pending: BTreeMap<WindowId, bool>,
    #[checkpoint(transient)]
    current: Option<Writing>,
    /// No checkpointing: publish at `end_window`.
    #[checkpoint(transient)]
    direct: bool,
    #[checkpoint(transient)]
    set_up: bool,
    /// One job per output directory, from `setup` to `teardown`.
    #[checkpoint(transient)]
    lock: Option<StorageLock>,
    #[checkpoint(transient)]
    _tuples: PhantomData<fn(T)>,
}

/// The layout of version 1, which saved the directory as state. Its
/// snapshots restore as version 2 with this run's directory: the saved one
/// is dropped.
#[derive(Checkpoint)]
#[checkpoint(version = 1)]
struct FileSinkV1 {
    #[allow(
        dead_code,
        reason = "read from old snapshots only to be replaced by this run's directory"
    )]
    dir: PathBuf,
    last_published: Option<WindowId>,
}

impl<T> From<FileSinkV1> for ExactlyOnceFileSink<T> {
    fn from(old: FileSinkV1) -> Self {
        // The runtime sets the directory after the upgrade; the old one
        // must not receive a resumed job's output.
        ExactlyOnceFileSink {
            last_published: old.last_published,
            ..ExactlyOnceFileSink::new(PathBuf::new())
        }
    }
}

impl<T> fmt::Debug for ExactlyOnceFileSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExactlyOnceFileSink")
            .field("dir", &self.dir)
            .field("last_published", &self.last_published)
            .field("pending", &self.pending.keys().collect::<Vec<_>>())
            .field("current", &self.current.as_ref().map(|w| w.window))
            .finish()
    }
}

impl<T> ExactlyOnceFileSink<T> {
    /// A sink publishing into `dir` (created in `setup` if missing, durably:
    /// see [`create_dir_all_durable`](checkpoint_core::create_dir_all_durable)).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::ExactlyOnceFileSink;
    ///
    /// let sink = ExactlyOnceFileSink::<String>::new("out/word-counts");
    /// assert_eq!(sink.dir(), std::path::Path::new("out/word-counts"));
    /// assert_eq!(sink.last_published(), None);
    /// ```
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ExactlyOnceFileSink {
            dir: dir.into(),
            last_published: None,
            pending: BTreeMap::new(),
            current: None,
            direct: false,
            set_up: false,
            lock: None,
            _tuples: PhantomData,
        }
    }

    /// The output directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::ExactlyOnceFileSink;
    ///
    /// assert_eq!(ExactlyOnceFileSink::<u64>::new("out").dir().to_str(), Some("out"));
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest window this sink published (part of its state).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::ExactlyOnceFileSink;
    ///
    /// assert_eq!(ExactlyOnceFileSink::<u64>::new("out").last_published(), None);
    /// ```
    pub fn last_published(&self) -> Option<WindowId> {
        self.last_published
    }

    /// The windows written but not yet published, ascending.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::ExactlyOnceFileSink;
    ///
    /// assert!(ExactlyOnceFileSink::<u64>::new("out").pending_windows().is_empty());
    /// ```
    pub fn pending_windows(&self) -> Vec<WindowId> {
        self.pending.keys().copied().collect()
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join(PENDING_DIR)
    }

    fn pending_path(&self, window: WindowId) -> PathBuf {
        self.pending_dir().join(window_file_name(window))
    }

    fn published_path(&self, window: WindowId) -> PathBuf {
        self.dir.join(window_file_name(window))
    }

    fn is_published(&self, window: WindowId) -> Result<bool, FileOperatorError> {
        if self.last_published.is_some_and(|last| window <= last) {
            return Ok(true);
        }
        let path = self.published_path(window);
        path.try_exists()
            .map_err(|e| FileOperatorError::io("checking for published window file", path, e))
    }

    fn check_set_up(&self) -> Result<(), FileOperatorError> {
        if self.set_up {
            Ok(())
        } else {
            Err(FileOperatorError::Lifecycle {
                operator: "ExactlyOnceFileSink",
                what: "used before `setup`",
            })
        }
    }

    /// Publishes every pending window <= `through`, then fsyncs the output
    /// directory once.
    fn publish_through(&mut self, through: WindowId) -> Result<(), FileOperatorError> {
        let windows: Vec<(WindowId, bool)> = self.pending.range(..=through).map(|(w, s)| (*w, *s)).collect();
        if windows.is_empty() {
            return Ok(());
        }
        for (window, synced) in windows {
            self.publish(window, synced)?;
            self.pending.remove(&window);
            if self.last_published.is_none_or(|last| window > last) {
                self.last_published = Some(window);
            }
        }
        sync_dir(&self.dir)
    }

    /// Publishes one window: fsync, atomic rename. Skips a window already
    /// published; the caller fsyncs the directory.
    fn publish(&self, window: WindowId, synced: bool) -> Result<(), FileOperatorError> {
        let pending = self.pending_path(window);
        let published = self.published_path(window);
        let exists = published
            .try_exists()
            .map_err(|e| FileOperatorError::io("checking for published window file", &published, e))?;
        if exists {
            // Published by an earlier attempt: the pending copy is stale.
            return remove_if_exists(&pending);
        }
        if !synced {
            match File::open(&pending).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(FileOperatorError::MissingPending { path: pending, window });
                }
                Err(e) => return Err(FileOperatorError::io("syncing pending window file", pending, e)),
            }
        }
        match fs::rename(&pending, &published) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(FileOperatorError::MissingPending { path: pending, window })
            }
            Err(e) => Err(FileOperatorError::io(
                format!("publishing window {window} as"),
                published,
                e,
            )),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), FileOperatorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileOperatorError::io("syncing directory", dir, e))
}

fn remove_if_exists(path: &Path) -> Result<(), FileOperatorError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileOperatorError::io("removing", path, e)),
    }
}

impl<T: Tuple + Display> Operator for ExactlyOnceFileSink<T> {
    type Input = T;
    type Output = ();

    /// Creates the directories, durably; after a restore from checkpoint A,
    /// deletes the pending windows > A and keeps the older ones for the next
    /// commit.
    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        if self.dir.to_str().is_none() {
            return Err(FileOperatorError::PathNotUtf8 { path: self.dir.clone() }.into());
        }
        // Both directories must be durable before a pending window in them is
        // counted on by a checkpoint, or a published one by a commit: a power
        // cut would otherwise drop them with everything they hold.
        checkpoint_core::create_dir_all_durable(&self.dir)
            .map_err(|e| FileOperatorError::io("creating the output directory", &self.dir, e))?;
        let pending_dir = self.pending_dir();
        checkpoint_core::create_dir_all_durable(&pending_dir)
            .map_err(|e| FileOperatorError::io("creating the pending directory", &pending_dir, e))?;
        // Before a pending file is touched: a second job publishing into
        // this directory would truncate the first one's pending windows.
        self.lock = None;
        self.lock = Some(lock_directory(
            &self.dir,
            &format!("output directory {}", self.dir.display()),
        )?);
        self.direct = ctx.storage().is_none();
        self.current = None;
        self.pending.clear();
        let activation = ctx.activation_window();
        let files = window_files(&pending_dir)
            .map_err(|e| FileOperatorError::io("listing pending windows in", &pending_dir, e))?;
        for (window, path) in files {
            if window > activation || self.direct || self.is_published(window)? {
                remove_if_exists(&path)?;
            } else {
                self.pending.insert(window, false);
            }
        }
        self.set_up = true;
        Ok(())
    }

    /// Opens the window's pending file, unless the window is already
    /// published.
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.check_set_up()?;
        if self.is_published(window)? {
            self.current = Some(Writing { window, file: None });
            return Ok(());
        }
        let path = self.pending_path(window);
        let file = File::create(&path).map_err(|e| FileOperatorError::io("creating pending window file", &path, e))?;
        self.pending.insert(window, false);
        self.current = Some(Writing {
            window,
            file: Some(BufWriter::new(file)),
        });
        Ok(())
    }

    fn process(&mut self, tuple: T, _out: Output<'_, ()>) -> OperatorResult {
        let Some(writing) = self.current.as_mut() else {
            return Err(FileOperatorError::Lifecycle {
                operator: "ExactlyOnceFileSink",
                what: "a tuple arrived outside a window",
            }
            .into());
        };
        let window = writing.window;
        if let Some(file) = writing.file.as_mut()
            && let Err(e) = writeln!(file, "{tuple}")
        {
            let path = self.pending_path(window);
            return Err(FileOperatorError::io("writing pending window file", path, e).into());
        }
        Ok(())
    }

    /// Closes the window's pending file (publishing it at once without
    /// checkpointing).
    fn end_window(&mut self, _out: Output<'_, ()>) -> OperatorResult {
        let Some(Writing { window, file }) = self.current.take() else {
            return Ok(());
        };
        if let Some(file) = file {
            file.into_inner().map_err(|e| {
                FileOperatorError::io("writing pending window file", self.pending_path(window), e.into_error())
            })?;
            if self.direct {
                self.publish_through(window)?;
            }
        }
        Ok(())
    }

    /// Makes the pending windows <= `window` durable.
    fn before_checkpoint(&mut self, window: WindowId) -> OperatorResult {
        let mut synced_any = false;
        let unsynced: Vec<WindowId> = self
            .pending
            .range(..=window)
            .filter(|(_, synced)| !**synced)
            .map(|(w, _)| *w)
            .collect();
        for w in unsynced {
            let path = self.pending_path(w);
            match File::open(&path).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(FileOperatorError::MissingPending { path, window: w }.into());
                }
                Err(e) => return Err(FileOperatorError::io("syncing pending window file", path, e).into()),
            }
            self.pending.insert(w, true);
            synced_any = true;
        }
        if synced_any {
            sync_dir(&self.pending_dir())?;
        }
        Ok(())
    }

    /// Publishes the pending windows <= `window`.
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.check_set_up()?;
        self.publish_through(window)?;
        Ok(())
    }

    fn teardown(&mut self) {
        // An unfinished window's file is closed; `setup` deletes it after a
        // restore.
        self.current = None;
        self.lock = None;
    }
}
