//! Checking snapshots: each one's header, CRC-32C and placement.

use std::collections::HashMap;
use std::path::PathBuf;

use checkpoint_core::{Snapshot, SnapshotHeader, WindowId};

use crate::format::describe;
use crate::inventory::{Inventory, SnapshotFile};
use crate::source::{ReadError, Source};

/// Every snapshot file's header, or what is wrong with it, by path.
pub(crate) type Health = HashMap<PathBuf, Result<SnapshotHeader, String>>;

/// Reads and checks every snapshot file once.
pub(crate) fn check_all(source: &Source, inventory: &Inventory) -> Health {
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

pub(crate) fn check_bytes(entry_name: &str, window: WindowId, bytes: &[u8]) -> Result<SnapshotHeader, String> {
    let header = Snapshot::verify(bytes).map_err(|e| describe(&e))?;
    placement(entry_name, window, &header)?;
    Ok(header)
}

pub(crate) fn placement(entry_name: &str, window: WindowId, header: &SnapshotHeader) -> Result<(), String> {
    if header.operator != entry_name || header.window != window {
        return Err(format!(
            "misplaced: its header names operator {:?} at window {}, but it is stored as {entry_name:?} at {window}",
            header.operator, header.window
        ));
    }
    Ok(())
}
