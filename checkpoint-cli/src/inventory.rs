//! What a directory or prefix holds: the operators' snapshots, what is not
//! part of the layout, and the job manifest.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use checkpoint_core::{StorageAgent, StorageError, WindowId};
use checkpoint_runtime::JobManifest;
use checkpoint_runtime::io::WindowDataManager;

use crate::Failure;
use crate::format::window_text;
use crate::source::{Source, io_failure, open_dir, store_hint};

/// One snapshot: `<root>/<storage name>/<16 hex digits>`.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    pub(crate) window: WindowId,
    /// A file's path, or an object's URL (printed, never opened).
    pub(crate) path: PathBuf,
    /// In bytes; for an object store, 0 unless the scan read the sizes.
    pub(crate) size: u64,
}

/// One subdirectory: an operator's checkpoints, or an input's window data.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// Ascending by window.
    pub(crate) files: Vec<SnapshotFile>,
    /// Files in its `chunks/` directory (keyed state saved by key group)
    /// and their bytes (not read from an object store: `None`).
    pub(crate) chunks: (usize, Option<u64>),
}

impl Entry {
    pub(crate) fn is_window_data(&self) -> bool {
        WindowDataManager::is_storage_name(&self.name)
    }
}

/// What a directory or prefix holds, read without interpreting any
/// snapshot.
#[derive(Debug)]
pub(crate) struct Inventory {
    /// The directory or URL, for messages.
    root: String,
    store: bool,
    /// Sorted by name.
    pub(crate) entries: Vec<Entry>,
    /// Files and directories that are not part of the layout, with why.
    pub(crate) strays: Vec<(PathBuf, &'static str)>,
    /// Temp files of interrupted saves.
    pub(crate) temps: Vec<PathBuf>,
    /// Corrupt snapshots a restart set aside (`.<16 hex digits>.corrupt`).
    pub(crate) set_aside: Vec<SnapshotFile>,
    pub(crate) manifest: ManifestState,
}

#[derive(Debug)]
pub(crate) enum ManifestState {
    Missing,
    /// A runtime job manifest.
    Job(Box<JobManifest>),
    /// JSON that is not a readable job manifest: a damaged one.
    Corrupt(String),
    /// Something else, such as `resume-demo`'s `window-base=...`.
    Other(String),
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
pub(crate) fn scan(source: &Source, sizes: bool) -> Result<Inventory, Failure> {
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

fn read_manifest(root: &Path) -> Result<ManifestState, Failure> {
    let path = root.join(".manifest");
    match fs::read(&path) {
        Ok(bytes) => Ok(manifest_state(Some(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(manifest_state(None)),
        Err(e) => Err(io_failure("cannot read", &path, &e)),
    }
}

pub(crate) fn manifest_state(bytes: Option<Vec<u8>>) -> ManifestState {
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
    pub(crate) fn entry(&self, name: &str) -> Result<&Entry, Failure> {
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

    pub(crate) fn snapshot_count(&self) -> usize {
        self.entries.iter().map(|e| e.files.len()).sum()
    }

    /// An error if the directory holds neither a manifest nor a snapshot.
    pub(crate) fn require_checkpoints(&self) -> Result<(), Failure> {
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

/// The snapshot `operator` has at `window` (default: its newest).
pub(crate) fn select<'a>(
    inventory: &'a Inventory,
    operator: &str,
    window: Option<&str>,
) -> Result<&'a SnapshotFile, Failure> {
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
