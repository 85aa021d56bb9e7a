//! `checkpoint history`.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::Failure;
use crate::inventory::{ManifestState, manifest_state};
use crate::source::Source;

/// `checkpoint history`: the manifest's checkpoint history as a table.
pub(crate) fn history(source: &Source, out: &mut String) -> Result<ExitCode, Failure> {
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
