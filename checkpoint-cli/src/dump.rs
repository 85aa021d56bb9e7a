//! The state types `checkpoint dump` can decode.
//!
//! A snapshot records its state type's name, version and layout fingerprint,
//! not its field names, so decoding a payload needs the type itself, compiled
//! into the tool. [`DUMPABLE`] lists those types (the example jobs', from the
//! `checkpoint-examples` library); [`dump`] picks the entry by the type name
//! a snapshot records and decodes it with [`Snapshot::decode`] (which checks
//! the checksum, the version and the fingerprint first) into JSON.

use checkpoint_core::{Checkpoint, Snapshot};
use checkpoint_examples::ride_totals::RideTotals;
use checkpoint_examples::rides::{RideSource, RideStats};
use serde::Serialize;

/// Decodes a whole snapshot (envelope and payload) into JSON, or says why
/// it cannot.
type DumpFn = fn(&[u8]) -> Result<serde_json::Value, String>;

/// Every state type `checkpoint dump` can decode: the type name snapshots
/// record (`Checkpoint::TYPE_NAME`) and its decoder.
///
/// To register a type that implements `Checkpoint + serde::Serialize`, add
/// `(T::TYPE_NAME, dump_as::<T>)` here (and a dependency on its crate).
const DUMPABLE: &[(&str, DumpFn)] = &[
    (RideTotals::TYPE_NAME, dump_as::<RideTotals>),
    (RideSource::TYPE_NAME, dump_as::<RideSource>),
    (RideStats::TYPE_NAME, dump_as::<RideStats>),
];

/// Decodes `snapshot` as a `T` and converts the state to JSON with its
/// `Serialize` implementation (transient fields are whatever `Serialize`
/// makes of their restored defaults; skip them with `#[serde(skip)]`).
fn dump_as<T: Checkpoint + Serialize>(snapshot: &[u8]) -> Result<serde_json::Value, String> {
    let (_, state) = Snapshot::decode::<T>(snapshot).map_err(|e| e.to_string())?;
    serde_json::to_value(&state).map_err(|e| format!("converting {} to JSON: {e}", T::TYPE_NAME))
}

/// Whether [`dump`] knows a state type by the name snapshots record.
pub(crate) fn decodes(type_name: &str) -> bool {
    DUMPABLE.iter().any(|(name, _)| *name == type_name)
}

/// The type names [`DUMPABLE`] knows, sorted, without duplicates.
fn known_types() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = DUMPABLE.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Decodes `snapshot` (a whole snapshot file's bytes) with the registered
/// type its header names.
///
/// Errors: the envelope is unreadable or corrupt; no registered type has
/// that name (the message lists the known ones); or the registered type
/// cannot read it (another version or layout). Two registered types may
/// share a name: the first that decodes wins.
pub(crate) fn dump(snapshot: &[u8]) -> Result<serde_json::Value, String> {
    let header = Snapshot::verify(snapshot).map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for (name, decode) in DUMPABLE {
        if *name == header.type_name {
            match decode(snapshot) {
                Ok(value) => return Ok(value),
                Err(e) => failures.push(e),
            }
        }
    }
    if failures.is_empty() {
        return Err(format!(
            "this build cannot decode state type {:?} (it knows: {}); register the type in checkpoint-cli/src/dump.rs",
            header.type_name,
            known_types().join(", ")
        ));
    }
    Err(failures.join("; "))
}

#[cfg(test)]
mod tests {
    use checkpoint_core::{SnapshotMeta, WindowId};

    use super::*;

    #[test]
    fn dump_as_decodes_a_registered_type_and_refuses_a_damaged_snapshot() -> Result<(), Box<dyn std::error::Error>> {
        let mut totals = RideTotals::default();
        totals.process_window(WindowId::new(1, 0));
        let bytes = Snapshot::encode(&totals, SnapshotMeta::new("ride-totals", WindowId::new(1, 0)))?;
        let json = dump_as::<RideTotals>(&bytes)?;
        assert_eq!(json["rides"], 1_000);
        assert!(dump_as::<RideTotals>(&bytes[1..]).is_err());
        assert_eq!(dump(&bytes)?, json, "found by its type name");
        Ok(())
    }

    #[test]
    fn dump_names_the_known_types_for_an_unknown_one() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = Snapshot::encode(&7u64, SnapshotMeta::new("count", WindowId::new(1, 0)))?;
        let err = dump(&bytes).expect_err("u64 is not registered");
        assert!(err.contains("u64") && err.contains("RideTotals"), "{err}");
        assert_eq!(known_types(), ["RideSource", "RideStats", "RideTotals"]);
        assert!(decodes("RideTotals") && !decodes("u64"));
        Ok(())
    }
}
