//! `checkpoint ls`: operators, their checkpoints and sizes, the committed
//! window and each operator's recovery checkpoint.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;

use checkpoint_core::WindowId;
use checkpoint_runtime::JobManifest;

use crate::Failure;
use crate::check::{Health, check_all};
use crate::format::{plural, size_text, window_text};
use crate::inventory::{Entry, Inventory, ManifestState, scan};
use crate::source::{STORE_NOTE, Source};
use crate::view::{JobView, job_view};

pub(crate) fn ls(source: &Source, out: &mut String) -> Result<ExitCode, Failure> {
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
