//! The job manifest: what the job is, written through the storage agent at
//! start and at every commit.

use std::collections::BTreeMap;

use checkpoint_core::WindowId;
use serde::{Deserialize, Serialize};

/// The current manifest format.
pub const MANIFEST_FORMAT: u32 = 1;

/// A record of the job's shape and progress, stored as JSON through
/// [`StorageAgent::save_manifest`](checkpoint_core::StorageAgent::save_manifest).
///
/// On a restart it is compared with the DAG being run; the `checkpoint`
/// tool reads it to show what is committed.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::JobManifest;
///
/// let json = br#"{"format":1,"window_base":1700000000,"streaming_window_ms":500,
///   "checkpoint_window_count":60,"operators":[],"edges":[],"committed":null}"#;
/// let manifest = JobManifest::from_bytes(json)?;
/// assert_eq!(manifest.window_base, 1_700_000_000);
/// assert_eq!(JobManifest::from_bytes(&manifest.to_bytes())?, manifest);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobManifest {
    /// The manifest format version.
    pub format: u32,
    /// The job's window base (high 32 bits of every window id).
    pub window_base: u32,
    /// The streaming window length in time-based mode, in milliseconds.
    pub streaming_window_ms: u64,
    /// The DAG's default checkpoint window count.
    pub checkpoint_window_count: u32,
    /// The logical operators.
    pub operators: Vec<ManifestOperator>,
    /// The logical edges.
    pub edges: Vec<ManifestEdge>,
    /// The last committed window, once there is one.
    #[serde(with = "opt_window")]
    pub committed: Option<WindowId>,
    /// The window mode (`"time"`, `"tuples 100"`, `"stepped"`); absent in
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_mode: Option<String>,
    /// Inputs whose stream ended (their source said `Done`), by physical
    /// name, with the window of their final checkpoint. Recorded durably
    /// before that checkpoint is saved, so a restart that restores an input
    /// from exactly that checkpoint knows the stream is over and opens no
    /// further window.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "window_map")]
    pub ended: BTreeMap<String, WindowId>,
    /// The job's key-group count (`Config::key_groups`), fixed for its
    /// life; absent in manifests written before key groups, whose keyed
    /// edges sent a key to partition `stable_hash % partitions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<u32>,
    /// Keyed operators whose partition count changed, by logical name,
    /// until the job commits a window past the one they were split or
    /// merged at: until then, a restart restores them from the old
    /// partitions' snapshots again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rescaling: BTreeMap<String, ManifestRescale>,
    /// How many runs of the job have taken its storage (fencing): each run
    /// writes the manifest with the generation after the one it found, on
    /// the condition that nobody wrote it since it read it, and every later
    /// write of that run is conditional on its own previous one. 0 in
    /// manifests written before generations were recorded.
    #[serde(default)]
    pub generation: u64,
    /// The job's newest durable checkpoints, oldest first (at most
    /// [`MANIFEST_HISTORY`]), as of the last commit: what `checkpoint
    /// history` shows of a stored job. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ManifestCheckpoint>,
}

/// How many checkpoints the manifest's history keeps.
pub const MANIFEST_HISTORY: usize = 64;

/// One durable checkpoint in the manifest's history.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::ManifestCheckpoint;
///
/// let json = r#"{"operator":"count","window":"0x0000000100000009","bytes":4096,"encode_us":120,"durable_us":2500}"#;
/// let c: ManifestCheckpoint = serde_json::from_str(json)?;
/// assert_eq!((c.operator.as_str(), c.window.sequence(), c.bytes), ("count", 9, 4096));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCheckpoint {
    /// The physical operator.
    pub operator: String,
    /// The checkpoint's window.
    #[serde(with = "window_text")]
    pub window: WindowId,
    /// Bytes it wrote.
    pub bytes: u64,
    /// Its encode (the operator's pause), in microseconds.
    pub encode_us: u64,
    /// From the end of the encode until durable, in microseconds.
    pub durable_us: u64,
}

/// A keyed operator restarted with another partition count, in the
/// manifest until the job commits a window past `window`.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::JobManifest;
///
/// let json = br#"{"format":1,"window_base":1,"streaming_window_ms":500,"checkpoint_window_count":10,
///   "operators":[],"edges":[],"committed":null,
///   "rescaling":{"count":{"window":"0x0000000100000009","partitions":2,"physical":["count#0","count#1"]}}}"#;
/// let manifest = JobManifest::from_bytes(json)?;
/// let rescale = &manifest.rescaling["count"];
/// assert_eq!((rescale.window.sequence(), rescale.partitions, rescale.finished), (9, 2, false));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRescale {
    /// The window every old partition was restored at.
    #[serde(with = "window_text")]
    pub window: WindowId,
    /// The old partition count.
    pub partitions: usize,
    /// The old partitions' physical names: their snapshots at `window`
    /// hold the operator's state, each the key groups its partition owned.
    pub physical: Vec<String>,
    /// A window past `window` is committed: the old partitions' files are
    /// being removed, and a restart never restores from them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

/// One logical operator in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestOperator {
    /// Its name.
    pub name: String,
    /// `"input"` or `"operator"`.
    pub kind: String,
    /// Its partition count.
    pub partitions: usize,
    /// Whether its state type is stateless.
    pub stateless: bool,
    /// Its processing mode.
    pub mode: String,
    /// Streaming windows per application window.
    pub application_window_count: u32,
    /// Streaming windows per checkpoint.
    pub checkpoint_window_count: u32,
    /// The physical operators (partitions) whose checkpoints are stored:
    /// `name`, or `name#0`, `name#1`, ...
    pub physical: Vec<String>,
}

/// One logical edge in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEdge {
    /// The upstream operator.
    pub from: String,
    /// The downstream operator.
    pub to: String,
    /// `"plain"`, `"converted"`, `"keyed"` or `"thread-local"`.
    pub kind: String,
}

impl JobManifest {
    /// The manifest as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a manifest from JSON bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

mod window_map {
    use std::collections::BTreeMap;

    use checkpoint_core::WindowId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(map: &BTreeMap<String, WindowId>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, w)| (k, w.to_string())))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, WindowId>, D::Error> {
        let text: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
        text.into_iter()
            .map(|(k, t)| t.parse().map(|w| (k, w)).map_err(serde::de::Error::custom))
            .collect()
    }
}

mod window_text {
    use checkpoint_core::WindowId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(window: &WindowId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&window.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WindowId, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

mod opt_window {
    use checkpoint_core::WindowId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(window: &Option<WindowId>, s: S) -> Result<S::Ok, S::Error> {
        match window {
            Some(w) => s.serialize_some(&w.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WindowId>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom)).transpose()
    }
}
