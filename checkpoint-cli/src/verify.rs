//! `checkpoint verify`: every snapshot's header, CRC-32C and placement, and
//! whether a restart can resume.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;

use checkpoint_runtime::io::WindowDataManager;

use crate::Failure;
use crate::check::check_bytes;
use crate::format::{plural, size_text};
use crate::inventory::{ManifestState, scan};
use crate::source::{ReadError, STORE_NOTE, Source};
use crate::view::job_view;

pub(crate) fn verify(source: &Source, verbose: bool, out: &mut String) -> Result<ExitCode, Failure> {
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
