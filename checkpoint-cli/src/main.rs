//! `checkpoint`: inspect, verify, decode and purge a job's checkpoints: a
//! checkpoint directory (the root of an `FsStorageAgent`, as a job writes
//! it) or an S3 prefix (`s3://bucket/prefix`, an `ObjectStoreAgent`'s).
//!
//! # Install
//!
//! From the workspace root:
//!
//! ```text
//! cargo install --path checkpoint-cli      # puts `checkpoint` in ~/.cargo/bin
//! cargo run -p checkpoint-cli -- --help    # or run it without installing
//! ```
//!
//! # Use
//!
//! ```text
//! checkpoint ls checkpoints                      # operators, windows, committed, recovery
//! checkpoint show checkpoints count#0            # the newest snapshot's header and checksum
//! checkpoint show checkpoints count#0 0x6553f1000000000f
//! checkpoint verify checkpoints                  # every snapshot; non-zero exit on corruption
//! checkpoint dump checkpoints ride-totals --json # a state the tool knows, as JSON
//! checkpoint purge checkpoints --keep 2 --dry-run
//! checkpoint ls s3://bucket/jobs/rides             # the same, in an S3 prefix
//! ```
//!
//! Every command has `--help`. Exit status: 0 on success, 1 when a command
//! fails or finds a problem (`verify`), 2 for bad arguments.
//!
//! The tool reads the checkpoints itself (never through a running job) and
//! only `purge` changes anything. The layout is `docs/FORMAT.md`'s: one
//! subdirectory per operator (its physical name) holding one file per
//! checkpoint named by the window id in 16 lower-case hex digits, and the job
//! manifest in `.manifest`; an object store mirrors it under the prefix.
//!
//! A directory is read with `std::fs`, so the tool also reports what is not
//! part of the layout (stray files, temp files of interrupted saves,
//! corrupt snapshots a restart set aside). An `s3://` prefix is read through
//! the storage agent, which lists only what the layout names: the same
//! operators, snapshots, chunks and manifest, but no stray objects (the
//! output says so). Its endpoint and credentials come from the environment:
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` (for plain `http://`),
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
//!
//! # Decoding states
//!
//! A snapshot does not record its state's field names, so `dump` decodes
//! only the state types compiled into the tool: the example jobs' (from the
//! `checkpoint-examples` library), listed in `src/dump.rs`. To decode your
//! own job's state, register its type there.
#![warn(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use checkpoint_core::{FsStorageAgent, Snapshot, SnapshotError, SnapshotHeader, StorageAgent, StorageError, WindowId};
use checkpoint_examples::location::{CheckpointLocation, S3_ENVIRONMENT};
use checkpoint_runtime::io::WindowDataManager;
use checkpoint_runtime::{JobManifest, RestorePoint, StoredPlan, plan_from_storage};
use clap::{Parser, Subcommand};

mod dump;

/// Inspect, verify, decode and purge a job's checkpoints.
#[derive(Debug, Parser)]
#[command(
    name = "checkpoint",
    version,
    about = "Inspect, verify, decode and purge a job's checkpoints (a directory or s3://BUCKET/PREFIX)",
    long_about = "Inspect, verify, decode and purge a job's checkpoints: a checkpoint directory (the root \
                  of an FsStorageAgent, with one subdirectory per operator, one file per checkpoint \
                  named by its window id, and the job manifest in .manifest; docs/FORMAT.md) or an S3 \
                  prefix s3://BUCKET/PREFIX holding the same layout (an ObjectStoreAgent's).\n\n\
                  Every command takes either: an argument that starts with s3:// is a URL, anything \
                  else a directory. A directory is read file by file, so stray files, temp files of \
                  interrupted saves and corrupt snapshots a restart set aside are reported too; an S3 \
                  prefix is read through the storage agent, which lists only the operators, snapshots, \
                  chunks and manifest of the layout, so stray objects are not reported. S3 is \
                  configured from the environment: AWS_ENDPOINT_URL (an S3-compatible server; unset \
                  for AWS), AWS_ALLOW_HTTP=true (for plain http://), AWS_REGION, AWS_ACCESS_KEY_ID, \
                  AWS_SECRET_ACCESS_KEY.\n\n\
                  Only `purge` changes anything; run it while the job is stopped.",
    after_long_help = "Examples:\n  \
        checkpoint ls checkpoints\n  \
        checkpoint show checkpoints count#0 0x6553f1000000000f\n  \
        checkpoint verify checkpoints\n  \
        checkpoint dump checkpoints stats --json\n  \
        checkpoint purge checkpoints --keep 2 --dry-run\n  \
        AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \\\n      \
        AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... checkpoint ls s3://bucket/rides"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List operators, their checkpoints and sizes, the committed window and
    /// each operator's recovery checkpoint.
    ///
    /// The recovery checkpoint is the one a restart (or a failure now) would
    /// restore the operator from, computed from the job manifest's DAG and
    /// the good checkpoints on disk exactly as the runtime computes it.
    /// Without a job manifest the checkpoints on disk are listed alone.
    Ls {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
    },
    /// Print one snapshot's header (operator, window, state type, version,
    /// layout fingerprint, sizes) and whether its CRC-32C checks.
    ///
    /// Exits non-zero if the snapshot is corrupt or misplaced.
    Show {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// The operator's physical name (`count`, or `count#0` for a partition).
        operator: String,
        /// The window: `0x` + hex (as `ls` prints it), 16 hex digits (the
        /// file name) or a sequence number; default: the newest.
        window: Option<String>,
    },
    /// Check every snapshot's header and CRC-32C, and that it sits at the
    /// path its header names.
    ///
    /// Prints each problem with the file it is in; exits non-zero on any.
    Verify {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// Also list the snapshots that are fine.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Decode a snapshot's state and print it as JSON, through the layout
    /// description the snapshot carries: any job's state, without its code.
    ///
    /// The description is checked against the snapshot's layout fingerprint
    /// first; keyed state kept in chunks is loaded and checked as a restore
    /// does. The JSON is described in docs/FORMAT.md ("State as JSON").
    Dump {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// The operator's physical name.
        operator: String,
        /// The window, as for `show`; default: the newest.
        window: Option<String>,
        /// Print only the JSON (no heading line), for other programs.
        #[arg(long)]
        json: bool,
    },
    /// Change values in a stopped job's state and write its checkpoint
    /// again, so the next run resumes from the edited state.
    ///
    /// The operator's checkpoint (default: the one a restart restores it
    /// from, as `ls` shows it) is decoded as `dump` prints it; each --set
    /// replaces the value at a JSON pointer into that JSON (as in
    /// /counts/apex, or /zones/7/name) with the JSON given; the result is
    /// encoded through the same description, read back, and replaces the
    /// checkpoint. The original is written to a backup file first. The
    /// storage is locked meanwhile: a running job keeps it locked, so stop
    /// the job first.
    Edit {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// The operator's physical name.
        operator: String,
        /// The window, as for `show`; default: the operator's recovery
        /// checkpoint (its newest without a job manifest).
        window: Option<String>,
        /// POINTER=JSON: the value to write at a JSON pointer, such as
        /// --set /total=42 or --set '/label="new"' (repeatable).
        #[arg(long = "set", value_name = "POINTER=JSON", required = true)]
        sets: Vec<String>,
        /// Where to write the original checkpoint (a new file); default:
        /// OPERATOR-WINDOW.snapshot in the current directory.
        #[arg(long, value_name = "FILE")]
        backup: Option<PathBuf>,
    },
    /// The job's newest durable checkpoints (up to 64, as of its last
    /// commit), oldest first: operator, window, bytes, the operator's pause
    /// to encode, and the time until durable.
    ///
    /// Read from the job manifest, where the runtime records them at every
    /// commit.
    History {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
    },
    /// Delete old checkpoints, keeping the N newest of each operator and
    /// every checkpoint recovery could still need.
    ///
    /// Never deleted: an operator's recovery checkpoint (as `ls` shows it)
    /// and anything newer, the committed window's checkpoint, corrupt files
    /// (see `verify`), and input window data. Needs the job manifest. Stop the
    /// job first: a running job may be saving checkpoints this does not see.
    /// The storage is locked meanwhile (a job cannot start): a directory's
    /// lock file, an S3 prefix's lease (a dead job's is taken over after
    /// one lease period).
    Purge {
        /// The checkpoint directory, or s3://BUCKET/PREFIX (its settings: see `checkpoint --help`).
        #[arg(value_name = "DIR|URL")]
        location: CheckpointLocation,
        /// Good checkpoints to keep per operator, newest first (protected
        /// ones are kept as well).
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A failure that stops a command: printed as `checkpoint: <message>`.
type Failure = String;

/// Appends a line to a command's output (writing to a `String` cannot fail).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

// After `say!`, which it uses.
mod edit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each command writes its report here; it is printed even when the
    // command fails part-way (a purge that deleted some files, say).
    let mut out = String::new();
    let result = match cli.command {
        Command::Ls { location } => Source::open(location).and_then(|source| ls(&source, &mut out)),
        Command::Show {
            location,
            operator,
            window,
        } => Source::open(location).and_then(|source| show(&source, &operator, window.as_deref(), &mut out)),
        Command::Verify { location, verbose } => {
            Source::open(location).and_then(|source| verify(&source, verbose, &mut out))
        }
        Command::Dump {
            location,
            operator,
            window,
            json,
        } => {
            Source::open(location).and_then(|source| dump_state(&source, &operator, window.as_deref(), json, &mut out))
        }
        Command::Purge {
            location,
            keep,
            dry_run,
        } => Source::open(location).and_then(|source| purge(&source, keep, dry_run, &mut out)),
        Command::History { location } => Source::open(location).and_then(|source| history(&source, &mut out)),
        Command::Edit {
            location,
            operator,
            window,
            sets,
            backup,
        } => Source::open(location).and_then(|source| {
            let request = edit::EditRequest {
                operator: &operator,
                window: window.as_deref(),
                sets: &sets,
                backup: backup.as_deref(),
            };
            edit::edit(&source, &request, &mut out)
        }),
    };
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("checkpoint: writing the output: {e}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("checkpoint: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Reading the checkpoints

/// Where the checkpoints are, and how the tool reads them.
#[derive(Debug)]
enum Source {
    /// A directory, read with `std::fs`: everything in it, files that are
    /// not part of the layout included.
    Dir(PathBuf),
    /// An object store prefix, read through its storage agent, which lists
    /// only what the layout names.
    Store { url: String, agent: Arc<dyn StorageAgent> },
}

/// Why a snapshot's bytes could not be had.
#[derive(Debug)]
enum ReadError {
    /// An I/O or network error: nothing is known about the snapshot.
    Unreadable(String),
    /// The storage agent refused the bytes it read: an unreadable header,
    /// or one naming another operator or window (a directory's snapshots
    /// are read as they are, so this is an object store's).
    Corrupt(String),
}

impl Source {
    fn open(location: CheckpointLocation) -> Result<Source, Failure> {
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
    fn agent(&self) -> Result<Arc<dyn StorageAgent>, Failure> {
        match self {
            Source::Dir(dir) => {
                open_dir(dir)?;
                Ok(Arc::new(FsStorageAgent::new(dir).map_err(|e| e.to_string())?))
            }
            Source::Store { agent, .. } => Ok(Arc::clone(agent)),
        }
    }

    fn is_store(&self) -> bool {
        matches!(self, Source::Store { .. })
    }

    /// Where the job manifest is, for messages.
    fn manifest_path(&self) -> String {
        match self {
            Source::Dir(dir) => dir.join(".manifest").display().to_string(),
            Source::Store { url, .. } => format!("{url}/.manifest"),
        }
    }

    /// Where `entry`'s snapshot at `window` is: a file's path, or an
    /// object's URL.
    fn snapshot_path(&self, entry: &str, window: WindowId) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(entry).join(format!("{:016x}", window.as_u64())),
            Source::Store { url, .. } => PathBuf::from(format!("{url}/{entry}/{:016x}", window.as_u64())),
        }
    }

    /// The bytes of a snapshot as stored.
    fn read(&self, entry: &str, file: &SnapshotFile) -> Result<Vec<u8>, ReadError> {
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
    fn groups(&self, n: usize) -> String {
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
fn store_hint() -> String {
    format!(" (S3 is configured from {S3_ENVIRONMENT}: check them)")
}

/// What an object store listing cannot show, printed by `ls` and `verify`.
const STORE_NOTE: &str = "an S3 prefix is read through its storage agent, which lists the operators, \
    snapshots, chunks and manifest of the layout only: stray objects under the prefix are not reported \
    (list them with an S3 client)";

/// One snapshot: `<root>/<storage name>/<16 hex digits>`.
#[derive(Debug, Clone)]
struct SnapshotFile {
    window: WindowId,
    /// A file's path, or an object's URL (printed, never opened).
    path: PathBuf,
    /// In bytes; for an object store, 0 unless the scan read the sizes.
    size: u64,
}

/// One subdirectory: an operator's checkpoints, or an input's window data.
#[derive(Debug)]
struct Entry {
    name: String,
    /// Ascending by window.
    files: Vec<SnapshotFile>,
    /// Files in its `chunks/` directory (keyed state saved by key group)
    /// and their bytes (not read from an object store: `None`).
    chunks: (usize, Option<u64>),
}

impl Entry {
    fn is_window_data(&self) -> bool {
        WindowDataManager::is_storage_name(&self.name)
    }
}

/// What a directory or prefix holds, read without interpreting any
/// snapshot.
#[derive(Debug)]
struct Inventory {
    /// The directory or URL, for messages.
    root: String,
    store: bool,
    /// Sorted by name.
    entries: Vec<Entry>,
    /// Files and directories that are not part of the layout, with why.
    strays: Vec<(PathBuf, &'static str)>,
    /// Temp files of interrupted saves.
    temps: Vec<PathBuf>,
    /// Corrupt snapshots a restart set aside (`.<16 hex digits>.corrupt`).
    set_aside: Vec<SnapshotFile>,
    manifest: ManifestState,
}

#[derive(Debug)]
enum ManifestState {
    Missing,
    /// A runtime job manifest.
    Job(Box<JobManifest>),
    /// JSON that is not a readable job manifest: a damaged one.
    Corrupt(String),
    /// Something else, such as `resume-demo`'s `window-base=...`.
    Other(String),
}

fn io_failure(action: &str, path: &Path, e: &io::Error) -> Failure {
    format!("{action} {}: {e}", path.display())
}

/// Checks that `dir` is an existing directory.
fn open_dir(dir: &Path) -> Result<(), Failure> {
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

fn parse_file_name(name: &str) -> Option<WindowId> {
    if name.len() != 16 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(name, 16).ok().map(WindowId::from_u64)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>, Failure> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_failure("cannot list", dir, &e))? {
        entries.push(entry.map_err(|e| io_failure("cannot list", dir, &e))?);
    }
    entries.sort_by_key(fs::DirEntry::file_name);
    Ok(entries)
}

/// What `source` holds. `sizes`: whether an object store's snapshot
/// sizes are needed (the agent lists names only, so each is read; a
/// directory's come with the listing).
fn scan(source: &Source, sizes: bool) -> Result<Inventory, Failure> {
    match source {
        Source::Dir(root) => scan_dir(root),
        Source::Store { url, agent } => scan_store(source, url, &**agent, sizes),
    }
}

fn scan_store(source: &Source, url: &str, agent: &dyn StorageAgent, sizes: bool) -> Result<Inventory, Failure> {
    let failed = |what: &str, e: StorageError| format!("cannot {what} in {url}: {e}{}", store_hint());
    let manifest = agent.load_manifest().map_err(|e| failed("read the job manifest", e))?;
    let mut inventory = Inventory {
        root: url.to_owned(),
        store: true,
        entries: Vec::new(),
        strays: Vec::new(),
        temps: Vec::new(),
        set_aside: Vec::new(),
        manifest: manifest_state(manifest),
    };
    for name in agent.operators().map_err(|e| failed("list the operators", e))? {
        let mut files = Vec::new();
        for window in agent.windows(&name).map_err(|e| failed("list the snapshots", e))? {
            let mut file = SnapshotFile {
                window,
                path: source.snapshot_path(&name, window),
                size: 0,
            };
            // One that cannot be read has no size; `verify` says why.
            if sizes && let Ok(bytes) = source.read(&name, &file) {
                file.size = bytes.len() as u64;
            }
            files.push(file);
        }
        let chunks = agent.chunks(&name).map_err(|e| failed("list the chunks", e))?.len();
        inventory.entries.push(Entry {
            name,
            files,
            chunks: (chunks, None),
        });
    }
    Ok(inventory)
}

fn scan_dir(root: &Path) -> Result<Inventory, Failure> {
    open_dir(root)?;
    let mut inventory = Inventory {
        root: root.display().to_string(),
        store: false,
        entries: Vec::new(),
        strays: Vec::new(),
        temps: Vec::new(),
        set_aside: Vec::new(),
        manifest: read_manifest(root)?,
    };
    for entry in read_dir_sorted(root)? {
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| io_failure("cannot read", &path, &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            inventory.strays.push((path, "a name that is not UTF-8"));
            continue;
        };
        if !file_type.is_dir() {
            // The job's lock file: present whether or not a job runs.
            if name == ".manifest" || name == ".lock" {
                continue;
            }
            if name == ".manifest.tmp" {
                inventory.temps.push(path);
            } else {
                inventory.strays.push((path, "not part of a checkpoint directory"));
            }
            continue;
        }
        if checkpoint_core::validate_operator_name(&name).is_err() {
            inventory
                .strays
                .push((path, "a directory whose name cannot be an operator's"));
            continue;
        }
        let mut files = Vec::new();
        let mut chunks = (0, 0);
        for file in read_dir_sorted(&path)? {
            let file_path = file.path();
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name == "chunks" && file_path.is_dir() {
                for chunk in read_dir_sorted(&file_path)? {
                    chunks.0 += 1;
                    chunks.1 += chunk.metadata().map_or(0, |m| m.len());
                }
                continue;
            }
            match parse_file_name(&file_name) {
                Some(window) => {
                    let meta = file.metadata().map_err(|e| io_failure("cannot read", &file_path, &e))?;
                    if meta.is_file() {
                        files.push(SnapshotFile {
                            window,
                            path: file_path,
                            size: meta.len(),
                        });
                    } else {
                        inventory.strays.push((file_path, "not a regular file"));
                    }
                }
                None if file_name.starts_with('.') && file_name.ends_with(".tmp") => inventory.temps.push(file_path),
                None if let Some(window) = file_name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".corrupt"))
                    .and_then(parse_file_name) =>
                {
                    let size = file.metadata().map_or(0, |m| m.len());
                    inventory.set_aside.push(SnapshotFile {
                        window,
                        path: file_path,
                        size,
                    });
                }
                None => inventory
                    .strays
                    .push((file_path, "not a snapshot name (16 lower-case hex digits)")),
            }
        }
        files.sort_by_key(|f| f.window);
        inventory.entries.push(Entry {
            name,
            files,
            chunks: (chunks.0, Some(chunks.1)),
        });
    }
    Ok(inventory)
}

/// `checkpoint history`: the manifest's checkpoint history as a table.
fn history(source: &Source, out: &mut String) -> Result<ExitCode, Failure> {
    let agent = source.agent()?;
    let bytes = agent
        .load_manifest()
        .map_err(|e| format!("cannot read the job manifest: {e}"))?;
    let manifest = match manifest_state(bytes) {
        ManifestState::Job(manifest) => manifest,
        ManifestState::Missing => {
            return Err("no job manifest: not a job's checkpoints (or the job never started)".to_owned());
        }
        ManifestState::Corrupt(e) => return Err(format!("the job manifest is damaged: {e}")),
        ManifestState::Other(first) => return Err(format!("no job manifest (.manifest holds {first:?})")),
    };
    if manifest.history.is_empty() {
        say!(
            out,
            "no checkpoint history: the job has not committed a window since it started recording one"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = manifest
        .history
        .iter()
        .map(|c| c.operator.len())
        .max()
        .unwrap_or(0)
        .max(8);
    say!(
        out,
        "{:<width$}  {:>8}  {:>12}  {:>10}  {:>10}",
        "operator",
        "window",
        "bytes",
        "encode",
        "durable"
    );
    for c in &manifest.history {
        say!(
            out,
            "{:<width$}  {:>8}  {:>12}  {:>10}  {:>10}",
            c.operator,
            c.window.sequence(),
            c.bytes,
            format!("{:.3} ms", c.encode_us as f64 / 1000.0),
            format!("{:.3} ms", c.durable_us as f64 / 1000.0),
        );
    }
    say!(
        out,
        "{} checkpoints; committed window {}",
        manifest.history.len(),
        manifest
            .committed
            .map_or_else(|| "none".to_owned(), |w| w.sequence().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

fn read_manifest(root: &Path) -> Result<ManifestState, Failure> {
    let path = root.join(".manifest");
    match fs::read(&path) {
        Ok(bytes) => Ok(manifest_state(Some(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(manifest_state(None)),
        Err(e) => Err(io_failure("cannot read", &path, &e)),
    }
}

fn manifest_state(bytes: Option<Vec<u8>>) -> ManifestState {
    let Some(bytes) = bytes else {
        return ManifestState::Missing;
    };
    match JobManifest::from_bytes(&bytes) {
        Ok(manifest) => ManifestState::Job(Box::new(manifest)),
        // The runtime writes JSON objects: one that does not parse is damaged.
        Err(e) if bytes.trim_ascii_start().first() == Some(&b'{') => ManifestState::Corrupt(e.to_string()),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes);
            let first = text.lines().next().unwrap_or_default();
            ManifestState::Other(first.chars().take(60).collect())
        }
    }
}

impl Inventory {
    fn entry(&self, name: &str) -> Result<&Entry, Failure> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            format!(
                "no operator {name:?} in {} (it has: {})",
                self.root,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })
    }

    fn snapshot_count(&self) -> usize {
        self.entries.iter().map(|e| e.files.len()).sum()
    }

    /// An error if the directory holds neither a manifest nor a snapshot.
    fn require_checkpoints(&self) -> Result<(), Failure> {
        if matches!(self.manifest, ManifestState::Missing) && self.snapshot_count() == 0 {
            if self.store {
                return Err(format!(
                    "{} holds no checkpoints: no .manifest and no snapshots under the prefix (check the URL; \
                     the endpoint comes from AWS_ENDPOINT_URL)",
                    self.root
                ));
            }
            return Err(format!(
                "{} is not a checkpoint directory: no .manifest and no snapshot files",
                self.root
            ));
        }
        Ok(())
    }
}

/// Every snapshot file's header, or what is wrong with it, by path.
type Health = HashMap<PathBuf, Result<SnapshotHeader, String>>;

/// Reads and checks every snapshot file once.
fn check_all(source: &Source, inventory: &Inventory) -> Health {
    let mut health = HashMap::new();
    for entry in &inventory.entries {
        for file in &entry.files {
            health.insert(file.path.clone(), check_file(source, &entry.name, file));
        }
    }
    health
}

/// What is wrong with a snapshot file, if anything.
fn check_file(source: &Source, entry_name: &str, file: &SnapshotFile) -> Result<SnapshotHeader, String> {
    match source.read(entry_name, file) {
        Ok(bytes) => check_bytes(entry_name, file.window, &bytes),
        Err(ReadError::Corrupt(problem)) => Err(problem),
        // Not corrupt, and not a reason to stop looking at the rest.
        Err(ReadError::Unreadable(e)) => Err(format!("cannot be read: {e}")),
    }
}

fn check_bytes(entry_name: &str, window: WindowId, bytes: &[u8]) -> Result<SnapshotHeader, String> {
    let header = Snapshot::verify(bytes).map_err(|e| describe(&e))?;
    placement(entry_name, window, &header)?;
    Ok(header)
}

fn placement(entry_name: &str, window: WindowId, header: &SnapshotHeader) -> Result<(), String> {
    if header.operator != entry_name || header.window != window {
        return Err(format!(
            "misplaced: its header names operator {:?} at window {}, but it is stored as {entry_name:?} at {window}",
            header.operator, header.window
        ));
    }
    Ok(())
}

fn describe(e: &SnapshotError) -> String {
    match e {
        SnapshotError::BadMagic { .. } => format!("not a checkpoint ({e})"),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The job: physical operators and their recovery checkpoints

/// A physical operator of the manifest's DAG and what is on disk for it.
#[derive(Debug)]
struct PhysicalOperator {
    logical: usize,
    name: String,
    stateless: bool,
    /// Good checkpoints, ascending.
    good: Vec<WindowId>,
    /// The checkpoint a restart would restore it from.
    recovery: Option<WindowId>,
    /// A restart starts it as new (it never saved a checkpoint).
    fresh: bool,
    /// An input whose stream ended at its recovery checkpoint.
    ended: bool,
}

#[derive(Debug)]
struct JobView {
    operators: Vec<PhysicalOperator>,
    /// The committed window the recovery checkpoints imply.
    planned_committed: Option<WindowId>,
    /// The runtime's own plan, which the view shows.
    plan: StoredPlan,
}

/// The runtime's recovery plan for the job in `source` (the same function a
/// restart calls), arranged for display.
fn job_view(source: &Source, manifest: &JobManifest) -> Result<JobView, Failure> {
    let storage = source.agent()?;
    let plan = plan_from_storage(&*storage, manifest).map_err(|e| {
        if source.is_store() {
            format!("{e}{}", store_hint())
        } else {
            e.to_string()
        }
    })?;
    let mut operators = Vec::new();
    for op in &plan.operators {
        let logical = manifest
            .operators
            .iter()
            .position(|o| o.name == op.operator)
            .ok_or_else(|| format!("internal error: operator {:?} is not in the manifest", op.operator))?;
        operators.push(PhysicalOperator {
            logical,
            name: op.name.clone(),
            stateless: op.stateless,
            good: op.good.clone(),
            recovery: match op.restore {
                Some(RestorePoint::Checkpoint(w)) => Some(w),
                _ => None,
            },
            fresh: matches!(op.restore, Some(RestorePoint::Fresh(_))),
            ended: op.ended,
        });
    }
    Ok(JobView {
        operators,
        planned_committed: plan.committed,
        plan,
    })
}

// ---------------------------------------------------------------------------
// Formatting

fn window_text(window: WindowId) -> String {
    format!("{window} (#{})", window.sequence())
}

fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes < 10 * KIB {
        format!("{bytes} B")
    } else if bytes < 10 * KIB * KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (KIB * KIB) as f64)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ---------------------------------------------------------------------------
// ls

fn ls(source: &Source, out: &mut String) -> Result<ExitCode, Failure> {
    let inventory = scan(source, true)?;
    inventory.require_checkpoints()?;
    let health = check_all(source, &inventory);
    match source {
        Source::Dir(dir) => say!(out, "checkpoint directory {}", dir.display()),
        Source::Store { url, .. } => say!(out, "checkpoint store {url}"),
    }
    let mut listed: BTreeSet<&str> = BTreeSet::new();
    match &inventory.manifest {
        ManifestState::Job(manifest) => {
            let view = job_view(source, manifest)?;
            ls_job(out, manifest, &view, &inventory, &health);
            listed.extend(
                manifest
                    .operators
                    .iter()
                    .flat_map(|o| o.physical.iter().map(String::as_str)),
            );
        }
        ManifestState::Missing => {
            say!(
                out,
                "no job manifest found ({} does not exist): listing what is on disk; \
                 the committed window and recovery checkpoints need the manifest",
                source.manifest_path()
            );
        }
        ManifestState::Other(first) => {
            say!(
                out,
                "no job manifest found (.manifest holds {first:?}, not a runtime job manifest): \
                 listing what is on disk; the committed window and recovery checkpoints need the manifest"
            );
        }
        ManifestState::Corrupt(e) => {
            say!(
                out,
                "the job manifest is damaged ({e}): listing what is on disk; \
                 the committed window and recovery checkpoints need the manifest"
            );
        }
    }
    let (data, others): (Vec<&Entry>, Vec<&Entry>) = inventory
        .entries
        .iter()
        .filter(|e| !listed.contains(e.name.as_str()))
        .partition(|e| e.is_window_data());
    if !others.is_empty() {
        if matches!(inventory.manifest, ManifestState::Job(_)) {
            say!(out, "\nnot in the job manifest:");
        } else {
            out.push('\n');
        }
        for entry in others {
            say!(out, "{}", entry.name);
            list_files(out, entry, &health, |_| Vec::new());
        }
    }
    if !data.is_empty() {
        say!(
            out,
            "\nwindow data (an idempotent input's per-window records, not operators):"
        );
        for entry in data {
            let bytes: u64 = entry.files.iter().map(|f| f.size).sum();
            let range = match (entry.files.first(), entry.files.last()) {
                (Some(first), Some(last)) => format!(
                    ", windows {} to {}",
                    window_text(first.window),
                    window_text(last.window)
                ),
                _ => String::new(),
            };
            say!(
                out,
                "  {}: {}{range}, {}",
                entry.name,
                plural(entry.files.len(), "record", "records"),
                size_text(bytes)
            );
        }
    }
    let total: u64 = inventory.entries.iter().flat_map(|e| &e.files).map(|f| f.size).sum();
    say!(
        out,
        "\ntotal: {} in {}, {}",
        plural(inventory.snapshot_count(), "snapshot", "snapshots"),
        source.groups(inventory.entries.len()),
        size_text(total)
    );
    if source.is_store() {
        say!(out, "note: {STORE_NOTE}");
    }
    if !inventory.temps.is_empty() {
        say!(
            out,
            "{} of interrupted saves (removed when the job starts)",
            plural(inventory.temps.len(), "temp file", "temp files")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ls_job(out: &mut String, manifest: &JobManifest, view: &JobView, inventory: &Inventory, health: &Health) {
    say!(
        out,
        "job manifest: {}, {}, window base {} ({:#010x})",
        plural(manifest.operators.len(), "operator", "operators"),
        plural(manifest.edges.len(), "edge", "edges"),
        manifest.window_base,
        manifest.window_base,
    );
    say!(
        out,
        "committed window: {}",
        manifest.committed.map_or_else(|| "none yet".to_owned(), window_text)
    );
    say!(
        out,
        "recovery: a restart restores each operator from its checkpoint marked `recovery`{}; \
         newer ones are deleted and taken again",
        match view.planned_committed {
            Some(w) if Some(w) != manifest.committed => format!(" (they imply committed window {})", window_text(w)),
            _ => String::new(),
        }
    );
    for (logical, op) in manifest.operators.iter().enumerate() {
        say!(
            out,
            "\n{} ({}, {}{}, {}, checkpoint every {})",
            op.name,
            op.kind,
            op.mode,
            if op.stateless { ", stateless" } else { "" },
            plural(op.partitions, "partition", "partitions"),
            plural(op.checkpoint_window_count as usize, "window", "windows"),
        );
        let keyed = manifest.edges.iter().any(|e| e.to == op.name && e.kind == "keyed");
        if let Some(rescale) = manifest.rescaling.get(&op.name) {
            say!(
                out,
                "  rescaled from {} at {}: until a later window is committed, a restart restores it from {}",
                plural(rescale.partitions, "partition", "partitions"),
                window_text(rescale.window),
                rescale.physical.join(", ")
            );
        }
        for (partition, physical) in view.operators.iter().filter(|p| p.logical == logical).enumerate() {
            let entry = inventory.entries.iter().find(|e| e.name == physical.name);
            if let (true, Some(count)) = (keyed, manifest.key_groups)
                && let Ok(groups) = checkpoint_core::KeyGroups::new(count)
            {
                let range = groups.range_of_partition(partition, op.partitions);
                say!(
                    out,
                    "  {}: key groups {}..{} of {count}",
                    physical.name,
                    range.start,
                    range.end
                );
            }
            if physical.stateless {
                say!(
                    out,
                    "  {}: stateless, never saved; restarts with its upstreams",
                    physical.name
                );
                continue;
            }
            say!(
                out,
                "  {}: recovery checkpoint {}{}",
                physical.name,
                match physical.recovery {
                    Some(w) => window_text(w),
                    None if physical.fresh => "none yet (a restart starts it as new)".to_owned(),
                    None => "none (a restart cannot restore it)".to_owned(),
                },
                if physical.ended {
                    "; its stream ended there, a restart opens no further window"
                } else {
                    ""
                }
            );
            match entry {
                Some(entry) if !entry.files.is_empty() => {
                    let marks = |w: WindowId| {
                        let mut marks = Vec::new();
                        if Some(w) == physical.recovery {
                            marks.push("recovery");
                        }
                        if Some(w) == manifest.committed {
                            marks.push("committed");
                        }
                        marks
                    };
                    list_files(out, entry, health, marks);
                    if entry.chunks.0 > 0 {
                        say!(
                            out,
                            "    {} of keyed state, {}",
                            plural(entry.chunks.0, "chunk", "chunks"),
                            // An object store's would take a request each.
                            entry
                                .chunks
                                .1
                                .map_or_else(|| "sizes not read from an object store".to_owned(), size_text)
                        );
                    }
                }
                _ => {
                    say!(out, "    (no checkpoints)");
                }
            }
        }
    }
    let edges: Vec<String> = manifest
        .edges
        .iter()
        .map(|e| format!("{} -> {} ({})", e.from, e.to, e.kind))
        .collect();
    if !edges.is_empty() {
        say!(out, "\nedges: {}", edges.join(", "));
    }
}

/// One line per snapshot file: window, sequence, size, marks, problems.
fn list_files(out: &mut String, entry: &Entry, health: &Health, marks: impl Fn(WindowId) -> Vec<&'static str>) {
    for file in &entry.files {
        let mut notes: Vec<String> = marks(file.window).into_iter().map(str::to_owned).collect();
        if let Some(Err(problem)) = health.get(&file.path) {
            notes.push(format!("CORRUPT: {problem}"));
        }
        say!(
            out,
            "{}",
            format!(
                "    {}  {:<7} {:>9}  {}",
                file.window,
                format!("#{}", file.window.sequence()),
                size_text(file.size),
                notes.join(", ")
            )
            .trim_end()
        );
    }
}

// ---------------------------------------------------------------------------
// show and dump

/// The snapshot `operator` has at `window` (default: its newest).
fn select<'a>(inventory: &'a Inventory, operator: &str, window: Option<&str>) -> Result<&'a SnapshotFile, Failure> {
    let entry = inventory.entry(operator)?;
    let Some(newest) = entry.files.last() else {
        return Err(format!("operator {operator:?} has no checkpoints"));
    };
    let Some(text) = window else {
        return Ok(newest);
    };
    let available = || {
        entry
            .files
            .iter()
            .map(|f| window_text(f.window))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = text.trim();
    let wanted: Vec<&SnapshotFile> = if text.starts_with("0x") || text.starts_with("0X") {
        let w: WindowId = text.parse().map_err(|e| format!("{e}"))?;
        entry.files.iter().filter(|f| f.window == w).collect()
    } else if let Some(w) = parse_file_name(text) {
        entry.files.iter().filter(|f| f.window == w).collect()
    } else {
        let digits = text.strip_prefix('#').unwrap_or(text);
        let sequence: u32 = digits.parse().map_err(|_| {
            format!(
                "invalid window {text:?}: expected 0x and hex digits (0x6553f1000000000f), \
                 the 16-digit file name, or a sequence number"
            )
        })?;
        entry.files.iter().filter(|f| f.window.sequence() == sequence).collect()
    };
    match wanted.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "operator {operator:?} has no checkpoint at window {text} (it has: {})",
            available()
        )),
        _ => Err(format!(
            "window {text} is ambiguous for operator {operator:?} (it has: {}); give the full window id",
            available()
        )),
    }
}

fn show(source: &Source, operator: &str, window: Option<&str>, out: &mut String) -> Result<ExitCode, Failure> {
    let inventory = scan(source, false)?;
    let file = select(&inventory, operator, window)?;
    let bytes = read_one(source, operator, file)?;
    let header = Snapshot::read_header(&bytes)
        .map_err(|e| format!("{} is not a readable checkpoint: {}", file.path.display(), describe(&e)))?;
    let mut problems = Vec::new();
    let checksum = match Snapshot::verify(&bytes) {
        Ok(_) => match bytes.last_chunk::<4>() {
            Some(crc) => format!("ok (CRC-32C {:#010x})", u32::from_le_bytes(*crc)),
            None => "ok".to_owned(),
        },
        Err(SnapshotError::ChecksumMismatch { stored, computed }) => {
            problems.push("checksum mismatch");
            format!("MISMATCH: stored CRC-32C {stored:#010x}, computed {computed:#010x}")
        }
        Err(e) => {
            problems.push("corrupt");
            format!("BAD: {e}")
        }
    };
    let placed = match placement(operator, file.window, &header) {
        Ok(()) => "ok".to_owned(),
        // A flipped bit in a name is corruption, not a misplaced file.
        Err(_) if !problems.is_empty() => format!(
            "does not match the path: the header names operator {:?} at window {} (damaged, see the checksum)",
            header.operator, header.window
        ),
        Err(e) => {
            problems.push("misplaced");
            e
        }
    };
    let decoder = match dump::description(&header) {
        Ok(_) => "described: `checkpoint dump` decodes it".to_owned(),
        Err(e) => format!("not decodable by this tool: {e}"),
    };
    let label = if source.is_store() { "object:" } else { "file:" };
    say!(out, "{label:<16}{}", file.path.display());
    say!(out, "operator:       {}", header.operator);
    say!(
        out,
        "window:         {} (sequence {}, window base {})",
        header.window,
        header.window.sequence(),
        header.window.base_seconds()
    );
    say!(out, "type:           {} ({decoder})", header.type_name);
    say!(out, "state version:  {}", header.state_version);
    say!(out, "fingerprint:    {:#018x}", header.fingerprint);
    say!(out, "payload length: {} bytes", header.payload_len);
    say!(out, "total size:     {} bytes", bytes.len());
    say!(out, "checksum:       {checksum}");
    say!(out, "placement:      {placed}");
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("{} is corrupt: {}", file.path.display(), problems.join(", ")))
    }
}

/// The bytes of the snapshot `show` or `dump` looks at.
fn read_one(source: &Source, operator: &str, file: &SnapshotFile) -> Result<Vec<u8>, Failure> {
    source.read(operator, file).map_err(|e| match e {
        ReadError::Unreadable(e) => format!("cannot read {}: {e}", file.path.display()),
        ReadError::Corrupt(problem) => format!("{} is corrupt: {problem}", file.path.display()),
    })
}

fn dump_state(
    source: &Source,
    operator: &str,
    window: Option<&str>,
    json_only: bool,
    out: &mut String,
) -> Result<ExitCode, Failure> {
    let inventory = scan(source, false)?;
    let file = select(&inventory, operator, window)?;
    let bytes = read_one(source, operator, file)?;
    let header =
        check_bytes(operator, file.window, &bytes).map_err(|e| format!("{} is corrupt: {e}", file.path.display()))?;
    let storage = source.agent()?;
    let decoded = dump::decode(&bytes, |op, id| storage.load_chunk(op, id))
        .map_err(|e| format!("{}: {e}", file.path.display()))?;
    let text = serde_json::to_string_pretty(&decoded.value).map_err(|e| format!("printing JSON: {e}"))?;
    if !json_only {
        say!(
            out,
            "# {} at window {}: {} version {}",
            header.operator,
            window_text(header.window),
            header.type_name,
            header.state_version
        );
    }
    say!(out, "{text}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// verify

fn verify(source: &Source, verbose: bool, out: &mut String) -> Result<ExitCode, Failure> {
    let inventory = scan(source, verbose)?;
    inventory.require_checkpoints()?;
    let mut bad_manifest = false;
    let mut bad = 0usize;
    let mut checked = 0usize;
    match &inventory.manifest {
        ManifestState::Job(manifest) => {
            if verbose {
                say!(
                    out,
                    "ok       {}: job manifest, {}",
                    source.manifest_path(),
                    plural(manifest.operators.len(), "operator", "operators")
                );
            }
            let known: BTreeSet<&str> = manifest
                .operators
                .iter()
                .flat_map(|o| o.physical.iter().map(String::as_str))
                .collect();
            for entry in &inventory.entries {
                let input_data = entry
                    .name
                    .strip_suffix(WindowDataManager::NAME_SUFFIX)
                    .is_some_and(|op| known.contains(op));
                if !known.contains(entry.name.as_str()) && !input_data {
                    say!(out, "note     {}: not an operator of the job manifest", entry.name);
                }
            }
        }
        ManifestState::Missing => say!(out, "note     no job manifest: checking the snapshots alone"),
        ManifestState::Other(first) => {
            say!(
                out,
                "note     .manifest holds {first:?}, not a runtime job manifest: checking the snapshots alone"
            );
        }
        ManifestState::Corrupt(e) => {
            bad_manifest = true;
            say!(
                out,
                "CORRUPT  {}: not a readable job manifest: {e}",
                source.manifest_path()
            );
        }
    }
    let mut unreadable = 0usize;
    for entry in &inventory.entries {
        for file in &entry.files {
            checked += 1;
            let checked_bytes = match source.read(&entry.name, file) {
                Ok(bytes) => check_bytes(&entry.name, file.window, &bytes),
                Err(ReadError::Corrupt(problem)) => Err(problem),
                Err(ReadError::Unreadable(e)) => {
                    unreadable += 1;
                    say!(out, "UNREADABLE {}: {e}", file.path.display());
                    continue;
                }
            };
            match checked_bytes {
                Ok(header) => {
                    if verbose {
                        say!(
                            out,
                            "ok       {}: {} version {}, {}",
                            file.path.display(),
                            header.type_name,
                            header.state_version,
                            size_text(file.size)
                        );
                    }
                }
                Err(problem) => {
                    bad += 1;
                    say!(out, "CORRUPT  {}: {problem}", file.path.display());
                }
            }
        }
    }
    for (path, why) in &inventory.strays {
        say!(out, "note     {}: ignored, {why}", path.display());
    }
    if source.is_store() {
        say!(out, "note     {STORE_NOTE}");
    }
    for file in &inventory.set_aside {
        say!(
            out,
            "note     {}: a corrupt checkpoint a restart set aside (`checkpoint purge` removes it)",
            file.path.display()
        );
    }
    // Whether a restart can resume, by the runtime's own plan.
    let mut cannot_resume = None;
    if let ManifestState::Job(manifest) = &inventory.manifest {
        let view = job_view(source, manifest)?;
        if let Some(problem) = view.plan.problem() {
            say!(out, "CANNOT RESUME: {problem}");
            cannot_resume = Some(problem);
        } else if verbose {
            say!(out, "ok       a restart can resume every operator");
        }
    }
    for path in &inventory.temps {
        say!(
            out,
            "note     {}: temp file of an interrupted save (the job removes it when it starts)",
            path.display()
        );
    }
    if let Some(problem) = cannot_resume {
        return Err(format!("a restart cannot resume from {source}: {problem}"));
    }
    if unreadable > 0 {
        return Err(format!(
            "{} in {source} cannot be read",
            plural(unreadable, "snapshot", "snapshots"),
        ));
    }
    if bad == 0 && !bad_manifest {
        say!(
            out,
            "verified {} in {}: all ok",
            plural(checked, "snapshot", "snapshots"),
            source.groups(inventory.entries.len())
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!(
            "{} in {source}: {bad} of {} corrupt{}",
            plural(bad + usize::from(bad_manifest), "problem", "problems"),
            plural(checked, "snapshot", "snapshots"),
            if bad_manifest {
                ", and the job manifest is damaged"
            } else {
                ""
            }
        ))
    }
}

// ---------------------------------------------------------------------------
// purge

fn purge(source: &Source, keep: usize, dry_run: bool, out: &mut String) -> Result<ExitCode, Failure> {
    // Locked before anything is read: the plan must not go stale under a
    // job that starts meanwhile.
    let storage = if dry_run {
        None
    } else {
        let storage = source.agent()?;
        let lock = storage.lock().map_err(|e| format!("nothing is purged: {e}"))?;
        Some((storage, lock))
    };
    let inventory = scan(source, true)?;
    inventory.require_checkpoints()?;
    let manifest = match &inventory.manifest {
        ManifestState::Job(manifest) => manifest,
        ManifestState::Missing => {
            return Err(format!(
                "{source} has no job manifest: without the job's DAG there is no telling which checkpoints \
                 recovery needs, so nothing is purged"
            ));
        }
        ManifestState::Other(first) => {
            return Err(format!(
                "{} holds {first:?}, not a runtime job manifest: without the job's DAG there is \
                 no telling which checkpoints recovery needs, so nothing is purged",
                source.manifest_path()
            ));
        }
        ManifestState::Corrupt(e) => {
            return Err(format!(
                "the job manifest in {source} is damaged ({e}); nothing is purged"
            ));
        }
    };
    let view = job_view(source, manifest)?;
    if let Some(problem) = view.plan.problem() {
        return Err(format!(
            "a restart cannot resume from {source} ({problem}), so nothing is purged"
        ));
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let (mut deleted, mut bytes) = (0usize, 0u64);
    for op in &view.operators {
        let Ok(entry) = inventory.entry(&op.name) else {
            continue;
        };
        let newest: BTreeSet<WindowId> = op.good.iter().rev().take(keep).copied().collect();
        let mut kept = 0usize;
        for file in &entry.files {
            let w = file.window;
            let protected = match op.recovery {
                // Recovery needs it or something newer.
                Some(r) => w >= r,
                // No recovery point: nothing of this operator is safe to delete.
                None => true,
            };
            let corrupt = !op.good.contains(&w);
            if protected || corrupt || newest.contains(&w) || Some(w) == manifest.committed {
                kept += 1;
                continue;
            }
            if let Some((storage, _)) = &storage {
                storage
                    .delete(&op.name, w)
                    .map_err(|e| format!("deleting {}: {e}", file.path.display()))?;
            }
            say!(out, "{verb} {}  {}", file.path.display(), size_text(file.size));
            deleted += 1;
            bytes += file.size;
        }
        if !entry.files.is_empty() {
            say!(
                out,
                "{}: kept {}; recovery checkpoint {}",
                op.name,
                plural(kept, "checkpoint", "checkpoints"),
                op.recovery
                    .map_or_else(|| "none, so all are kept".to_owned(), window_text)
            );
        }
    }
    for file in &inventory.set_aside {
        if storage.is_some() {
            fs::remove_file(&file.path).map_err(|e| io_failure("cannot delete", &file.path, &e))?;
        }
        say!(
            out,
            "{verb} {}  {} (a corrupt checkpoint a restart set aside)",
            file.path.display(),
            size_text(file.size)
        );
        deleted += 1;
        bytes += file.size;
    }
    for entry in &inventory.entries {
        if !view.operators.iter().any(|op| op.name == entry.name) && !entry.is_window_data() {
            say!(out, "{}: not in the job manifest, left alone", entry.name);
        }
    }
    say!(
        out,
        "{verb} {} ({}){}",
        plural(deleted, "checkpoint", "checkpoints"),
        size_text(bytes),
        if dry_run && deleted > 0 {
            "; run without --dry-run to delete them"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
