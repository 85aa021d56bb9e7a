//! Decoding a snapshot's state to JSON without the job's code, through the
//! layout description every snapshot of a derived state type carries
//! (`docs/FORMAT.md`, "Layout descriptions").
//!
//! The description is checked before it is trusted: its field names, kinds
//! and type texts must give the fingerprint the snapshot records, and its
//! formats must not contradict its type texts. Chunks of keyed state are
//! loaded and checked against the snapshot's chunk table as a restore
//! checks them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use checkpoint_core::{Chunk, ChunkId, DescriptionError, Snapshot, SnapshotHeader, StateDescription, StorageError};

use crate::Failure;
use crate::check::check_bytes;
use crate::format::window_text;
use crate::inventory::{scan, select};
use crate::source::{Source, read_one};

/// A snapshot's state, decoded.
pub(crate) struct Decoded {
    pub(crate) header: SnapshotHeader,
    pub(crate) description: StateDescription,
    pub(crate) value: serde_json::Value,
    /// The key-group count of its keyed maps' chunks, if it has any.
    pub(crate) chunk_key_groups: Option<u32>,
}

/// The description `header` carries, checked against it.
pub(crate) fn description(header: &SnapshotHeader) -> Result<StateDescription, DescriptionError> {
    let text = header.description.as_deref().ok_or_else(|| DescriptionError::Missing {
        type_name: header.type_name.clone(),
    })?;
    let description = StateDescription::from_json(text)?;
    description.check_against(header)?;
    Ok(description)
}

/// Decodes a whole snapshot (`bytes`), loading its chunks, if any, with
/// `load_chunk(operator, chunk)`.
pub(crate) fn decode(
    bytes: &[u8],
    load_chunk: impl Fn(&str, ChunkId) -> Result<Vec<u8>, StorageError>,
) -> Result<Decoded, String> {
    let (header, payload) = Snapshot::payload(bytes).map_err(|e| e.to_string())?;
    let description = description(&header).map_err(|e| e.to_string())?;
    let mut chunks = BTreeMap::new();
    let mut chunk_key_groups = None;
    for reference in &header.chunks {
        let chunk = load_chunk(&header.operator, reference.id)
            .map_err(|e| format!("loading chunk {}/{}: {e}", header.operator, reference.id))?;
        let (found, _) =
            Chunk::decode(&chunk).map_err(|e| format!("chunk {}/{}: {e}", header.operator, reference.id))?;
        if chunk_key_groups.is_some_and(|g| g != found.key_groups) {
            return Err(format!(
                "the chunks of {} disagree on the key-group count: the snapshot is damaged",
                header.operator
            ));
        }
        chunk_key_groups = Some(found.key_groups);
        let (_, entries) =
            Chunk::decode_expected(&chunk, &header.operator, reference, found.key_groups).map_err(|e| e.to_string())?;
        chunks.insert(
            (reference.id.map, reference.id.group),
            (reference.entries, entries.to_vec()),
        );
    }
    let value = description
        .decode_payload(payload, &chunks)
        .map_err(|e| format!("the state does not decode as its description says, at {e}"))?;
    Ok(Decoded {
        header,
        description,
        value,
        chunk_key_groups,
    })
}

pub(crate) fn dump_state(
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
    let decoded =
        decode(&bytes, |op, id| storage.load_chunk(op, id)).map_err(|e| format!("{}: {e}", file.path.display()))?;
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

#[cfg(test)]
mod tests {
    use checkpoint_core::{Checkpoint, KeyGroups, KeyedMap, MemoryStorageAgent, SnapshotMeta, StorageAgent, WindowId};

    use super::*;

    #[derive(Checkpoint, Default)]
    struct Counts {
        label: String,
        #[checkpoint(keyed)]
        per_key: KeyedMap<u64, i64>,
    }

    #[test]
    fn a_chunked_snapshot_decodes_with_its_chunks_and_not_without() -> Result<(), Box<dyn std::error::Error>> {
        let storage = MemoryStorageAgent::new();
        let mut state = Counts {
            label: "c".into(),
            per_key: KeyedMap::with_key_groups(KeyGroups::new(4)?),
        };
        state.per_key.extend((0..20u64).map(|k| (k, -(k as i64))));
        let w = WindowId::new(1, 1);
        let frozen = Snapshot::freeze(&state, SnapshotMeta::new("count", w), Vec::new(), &[])?;
        let done = frozen.finish(|chunks| storage.save_chunks("count", chunks))?;
        let decoded = decode(&done.bytes, |op, id| storage.load_chunk(op, id))?;
        assert_eq!(decoded.value["label"], "c");
        assert_eq!(decoded.value["per_key"]["7"], -7);
        assert_eq!(decoded.value["per_key"].as_object().map(|m| m.len()), Some(20));
        assert_eq!(decoded.chunk_key_groups, Some(4));
        let missing = decode(&done.bytes, |op, id| {
            Err(StorageError::ChunkNotFound {
                operator: op.to_owned(),
                chunk: id.to_string(),
            })
        });
        assert!(missing.is_err());
        Ok(())
    }

    #[test]
    fn a_snapshot_without_a_description_says_so() -> Result<(), Box<dyn std::error::Error>> {
        let bytes = Snapshot::encode(&7u64, SnapshotMeta::new("count", WindowId::new(1, 0)))?;
        let err = decode(&bytes, |_, _| unreachable!("no chunks"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("no layout description"), "{err}");
        Ok(())
    }
}
