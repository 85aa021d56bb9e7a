//! `checkpoint show`: one snapshot's header and whether it checks.

use std::fmt::Write as _;
use std::process::ExitCode;

use checkpoint_core::{Snapshot, SnapshotError};

use crate::check::placement;
use crate::format::describe;
use crate::inventory::{scan, select};
use crate::source::{Source, read_one};
use crate::{Failure, dump};

pub(crate) fn show(
    source: &Source,
    operator: &str,
    window: Option<&str>,
    out: &mut String,
) -> Result<ExitCode, Failure> {
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
