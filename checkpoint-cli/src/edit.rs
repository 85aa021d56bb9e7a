//! `checkpoint edit`: changes values in a stopped job's state and writes
//! its checkpoint again, decoded and encoded through the layout
//! description the snapshot carries (what Flink's State Processor API does
//! with Java code, as a command).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use checkpoint_core::{DEFAULT_KEY_GROUPS, KeyGroups, Snapshot, SnapshotMeta, StateLayout, StorageError, WindowId};
use serde_json::Value;

use crate::format::window_text;
use crate::inventory::{ManifestState, scan, select};
use crate::source::{Source, read_one};
use crate::view::job_view;
use crate::{Failure, dump};

/// What `checkpoint edit` was asked to do.
pub(crate) struct EditRequest<'a> {
    pub(crate) operator: &'a str,
    pub(crate) window: Option<&'a str>,
    /// `POINTER=JSON`, in order.
    pub(crate) sets: &'a [String],
    pub(crate) backup: Option<&'a Path>,
}

pub(crate) fn edit(source: &Source, request: &EditRequest<'_>, out: &mut String) -> Result<ExitCode, Failure> {
    let operator = request.operator;
    let changes = request
        .sets
        .iter()
        .map(|set| parse_set(set))
        .collect::<Result<Vec<_>, Failure>>()?;
    // Locked before anything is read: a job that starts meanwhile must not
    // restore the state being replaced, nor save over it.
    let storage = source.agent()?;
    let _lock = storage.lock().map_err(|e| format!("nothing is changed: {e}"))?;
    let inventory = scan(source, false)?;
    let manifest = match &inventory.manifest {
        ManifestState::Job(manifest) => Some(manifest),
        _ => None,
    };
    let recovery = match (request.window, manifest) {
        (None, Some(manifest)) => job_view(source, manifest)?
            .operators
            .iter()
            .find(|op| op.name == operator)
            .and_then(|op| op.recovery),
        _ => None,
    };
    let file = match recovery {
        Some(window) => inventory
            .entry(operator)?
            .files
            .iter()
            .find(|f| f.window == window)
            .ok_or_else(|| format!("the recovery checkpoint of {operator:?} at {window} is not stored"))?,
        None => select(&inventory, operator, request.window)?,
    };
    let bytes = read_one(source, operator, file)?;
    let place = file.path.display().to_string();
    let decoded = dump::decode(&bytes, |op, id| storage.load_chunk(op, id)).map_err(|e| format!("{place}: {e}"))?;

    let mut value = decoded.value.clone();
    let mut report = Vec::new();
    for (pointer, new) in changes {
        let old = set_pointer(&mut value, &pointer, new.clone())?;
        report.push((pointer, old, new));
    }
    let key_groups = manifest
        .and_then(|m| m.key_groups)
        .or(decoded.chunk_key_groups)
        .unwrap_or(DEFAULT_KEY_GROUPS);
    // A partition of a keyed operator owns some key groups only.
    let partition = manifest.and_then(|m| {
        m.operators.iter().find_map(|op| {
            let index = op.physical.iter().position(|name| name == operator)?;
            (op.physical.len() > 1).then_some((op.name.clone(), index, op.physical.len()))
        })
    });
    if let (Some(manifest), Some((logical, _, _))) = (manifest, &partition)
        && manifest.rescaling.contains_key(logical)
    {
        return Err(format!(
            "{logical} is being rescaled: a restart reads its old partitions' chunks again until a window past the \
             rescale is committed, and an edited checkpoint keeps its keyed state inline, which cannot be split; \
             run the job until it commits, then edit; nothing is changed"
        ));
    }
    let owned = match (&partition, KeyGroups::new(key_groups)) {
        (Some((_, index, partitions)), Ok(groups)) => Some(groups.range_of_partition(*index, *partitions)),
        _ => None,
    };
    let header = &decoded.header;
    let meta = SnapshotMeta::new(&header.operator, header.window);
    let layout = StateLayout {
        type_name: &header.type_name,
        version: header.state_version,
        fingerprint: header.fingerprint,
    };
    let encode = |value: &Value| -> Result<Vec<u8>, Failure> {
        let description = &decoded.description;
        let payload = match &owned {
            Some(owned) => description.encode_partition_payload(value, key_groups, owned.clone()),
            None => description.encode_payload(value, key_groups),
        };
        let payload = payload.map_err(|e| {
            format!(
                "the new state does not fit {}'s layout, at {e}; nothing is changed",
                header.type_name
            )
        })?;
        Snapshot::from_payload(meta, layout, &payload, header.description.as_deref())
            .map_err(|e| format!("writing the new snapshot: {e}; nothing is changed"))
    };
    let edited = encode(&value)?;
    // Read back as a restore reads it, before anything is written.
    let no_chunks = |op: &str, id: checkpoint_core::ChunkId| {
        Err(StorageError::ChunkNotFound {
            operator: op.to_owned(),
            chunk: id.to_string(),
        })
    };
    let reread = dump::decode(&edited, no_chunks).map_err(|e| format!("the new snapshot does not read back: {e}"))?;
    // What it reads back as must write the same bytes again (a fixed
    // point): a float narrowed to `f32` reads back as the nearest `f32`,
    // not the JSON number given, and that is the value stored.
    if encode(&reread.value)? != edited {
        return Err("internal error: the new snapshot reads back as another state; nothing is changed".to_owned());
    }

    // The original first, self-contained (chunks inline): retention may
    // delete the chunks the stored snapshot refers to once it is replaced.
    let original = if header.chunks.is_empty() {
        bytes.clone()
    } else {
        encode(&decoded.value)?
    };
    let backup = request
        .backup
        .map_or_else(|| default_backup(operator, header.window), Path::to_path_buf);
    write_new(&backup, &original)?;
    storage
        .save(operator, header.window, &edited)
        .map_err(|e| format!("replacing {place}: {e} (the original is in {})", backup.display()))?;

    for (pointer, old, new) in &report {
        say!(out, "{pointer}: {} -> {}", compact(old), compact(new));
    }
    say!(
        out,
        "replaced {place}: {} of {operator} at window {}{}",
        header.type_name,
        window_text(header.window),
        if recovery.is_some() {
            " (its recovery checkpoint)"
        } else {
            ""
        }
    );
    say!(out, "the original is in {}", backup.display());
    Ok(ExitCode::SUCCESS)
}

/// `POINTER=JSON`.
fn parse_set(set: &str) -> Result<(String, Value), Failure> {
    let Some((pointer, json)) = set.split_once('=') else {
        return Err(format!(
            "--set {set:?}: expected POINTER=JSON, as in --set /counts/apex=42 or --set '/label=\"new\"'"
        ));
    };
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return Err(format!(
            "--set {set:?}: {pointer:?} is not a JSON pointer; they start with / (as in /counts/apex)"
        ));
    }
    let value = serde_json::from_str(json).map_err(|e| {
        format!("--set {set:?}: {json:?} is not JSON ({e}); a string needs its quotes: --set '{pointer}=\"{json}\"'")
    })?;
    Ok((pointer.to_owned(), value))
}

/// Sets the value at `pointer` (RFC 6901) to `new`, returning the old one
/// (`null` for a new key of an object). The parent must exist.
fn set_pointer(root: &mut Value, pointer: &str, new: Value) -> Result<Value, Failure> {
    if pointer.is_empty() {
        return Ok(std::mem::replace(root, new));
    }
    let tokens: Vec<String> = pointer[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens
        .split_last()
        .ok_or_else(|| format!("{pointer:?} names nothing"))?;
    let mut at = root;
    let mut walked = String::new();
    for token in parents {
        walked.push('/');
        walked.push_str(token);
        at = match at {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{pointer}: the state has nothing at {walked} (see `checkpoint dump`)"))?;
    }
    match at {
        Value::Object(map) => Ok(map.insert(last.clone(), new).unwrap_or(Value::Null)),
        Value::Array(items) => {
            let len = items.len();
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get_mut(i))
                .ok_or_else(|| format!("{pointer}: no element {last} (the array has {len})"))?;
            Ok(std::mem::replace(slot, new))
        }
        other => Err(format!(
            "{pointer}: {} is {}, which has no member {last:?}",
            if walked.is_empty() { "the state" } else { &walked },
            compact(other)
        )),
    }
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

/// `./<operator>-<window>.snapshot`, `/` and `#` made safe for a file name.
fn default_backup(operator: &str, window: WindowId) -> PathBuf {
    PathBuf::from(format!(
        "{}-{:016x}.snapshot",
        operator.replace(['/', '\\', '#'], "_"),
        window.as_u64()
    ))
}

/// Writes `bytes` to a new file (never over an existing one), durably.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let failed = |e: std::io::Error| format!("writing the backup {}: {e}; nothing is changed", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "the backup {} already exists; give another with --backup FILE; nothing is changed",
                    path.display()
                )
            } else {
                failed(e)
            }
        })?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_set_members_elements_and_new_keys() {
        let mut state = json!({"counts": {"apex": 3}, "log": [1, 2], "a/b": {"~x": 0}});
        assert_eq!(set_pointer(&mut state, "/counts/apex", json!(7)), Ok(json!(3)));
        assert_eq!(set_pointer(&mut state, "/counts/flink", json!(1)), Ok(Value::Null));
        assert_eq!(set_pointer(&mut state, "/log/1", json!(9)), Ok(json!(2)));
        assert_eq!(set_pointer(&mut state, "/a~1b/~0x", json!(5)), Ok(json!(0)));
        assert_eq!(
            state,
            json!({"counts": {"apex": 7, "flink": 1}, "log": [1, 9], "a/b": {"~x": 5}})
        );
        assert!(set_pointer(&mut state, "/log/5", json!(0)).is_err());
        assert!(set_pointer(&mut state, "/nothing/here", json!(0)).is_err());
        assert!(set_pointer(&mut state, "/log/0/x", json!(0)).is_err());
    }

    #[test]
    fn a_set_is_a_pointer_and_json() {
        assert_eq!(parse_set("/a=1"), Ok(("/a".to_owned(), json!(1))));
        assert_eq!(parse_set("/a=\"x=y\""), Ok(("/a".to_owned(), json!("x=y"))));
        assert!(parse_set("/a=apex").is_err_and(|e| e.contains("quotes")));
        assert!(parse_set("a=1").is_err());
        assert!(parse_set("/a").is_err());
    }
}
