//! `checkpoint purge`: deletes the checkpoints recovery no longer needs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::process::ExitCode;

use checkpoint_core::WindowId;

use crate::Failure;
use crate::format::{plural, size_text, window_text};
use crate::inventory::{ManifestState, scan};
use crate::source::{Source, io_failure};
use crate::view::job_view;

pub(crate) fn purge(source: &Source, keep: usize, dry_run: bool, out: &mut String) -> Result<ExitCode, Failure> {
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
