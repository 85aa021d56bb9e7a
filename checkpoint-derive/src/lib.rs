//! `#[derive(Checkpoint)]` for `checkpoint-core`.
//!
//! Use it through `checkpoint_core::Checkpoint` (the `derive` feature of
//! `checkpoint-core`, on by default), so a job depends on one crate. The
//! derive's documentation is on [`macro@Checkpoint`].
//!
//! The macro is one pipeline (thiserror's and serde_derive's layout):
//! `ast` builds a typed model of the input with the attributes `attr`
//! parses, `valid` checks the rules that involve several attributes,
//! `expand` generates the impl, or `fallback` a placeholder beside the
//! errors. Every mistake found is reported in the same compile (`ctxt`),
//! spanned on the token to change.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod fingerprint;
mod generics;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `checkpoint_core::Checkpoint`: how an operator's state is saved
/// at a checkpoint and restored after a failure.
///
/// Every field is state unless marked `#[checkpoint(transient)]` or
/// `#[checkpoint(config)]` (see [the three kinds of
/// fields](#three-kinds-of-fields)). Saved fields are encoded with serde + postcard, borrowed
/// (a checkpoint never clones the state) and streamed into the snapshot;
/// decoding builds an owned value. The derive also records the type's
/// layout version and [fingerprint](#the-layout-fingerprint), so a snapshot
/// written by a different layout is refused with an error instead of being
/// decoded into garbage.
///
/// ```
/// use std::collections::HashMap;
///
/// use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, WindowId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct ZoneTotals {
///     rides: u64,
///     cents: u64,
/// }
///
/// struct LogHandle(String);
///
/// fn open_log() -> LogHandle {
///     LogHandle("rides.log".into())
/// }
///
/// #[derive(Checkpoint)]
/// struct RideStats {
///     per_zone: HashMap<u32, ZoneTotals>,
///     last_window: Option<WindowId>,
///     #[checkpoint(transient)]
///     scratch: Vec<u8>,
///     #[checkpoint(transient, default = "open_log")]
///     log: LogHandle,
/// }
///
/// let stats = RideStats {
///     per_zone: HashMap::from([(7, ZoneTotals { rides: 2, cents: 1_150 })]),
///     last_window: Some(WindowId::new(1_700_000_000, 59)),
///     scratch: vec![1, 2, 3],
///     log: LogHandle("live.log".into()),
/// };
/// let window = WindowId::new(1_700_000_000, 59);
/// let bytes = Snapshot::encode(&stats, SnapshotMeta::new("ride-stats", window))?;
///
/// let (header, restored) = Snapshot::decode::<RideStats>(&bytes)?;
/// assert_eq!(header.type_name, "RideStats");
/// assert_eq!(restored.per_zone, stats.per_zone);
/// assert_eq!(restored.last_window, stats.last_window);
/// assert!(restored.scratch.is_empty()); // transient: `Default::default()`
/// assert_eq!(restored.log.0, "rides.log"); // transient: `open_log()`
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
///
/// # Three kinds of fields
///
/// | kind | written | saved | after a restore it is |
/// |---|---|---|---|
/// | state | (nothing) | yes | the value in the checkpoint |
/// | transient | `#[checkpoint(transient)]` | no | `Default::default()` or `default = "fn"`; `setup` re-creates it |
/// | configuration | `#[checkpoint(config)]` | no | the value of the operator handed to the DAG in this run |
///
/// - **State** is what the operator computed: counts, offsets, windows seen.
///   A checkpoint saves it and every restore brings it back, so a recovered
///   job goes on where the checkpoint was.
/// - **Transient** fields hold what cannot or need not be saved: open
///   files, sockets, caches, scratch buffers. The runtime calls `setup`
///   again after every restore, where they are re-created.
/// - **Configuration** is what the job was built with: paths, directories,
///   batch sizes, shared handles. It is not saved; after every restore (a
///   whole job resumed from storage, and an operator recovered in the run
///   after a failure) the runtime sets it from the operator value handed to
///   the DAG in *this* run, so a job resumed with another `--input` reads
///   that file, and a copy of a checkpoint directory resumed with new
///   output paths writes only to them. Each partition of a partitioned
///   operator gets the configuration of its own value (`make(p)`). A
///   snapshot decoded outside the runtime (`Snapshot::decode`) holds
///   `Default::default()` there. The field's type needs `Clone`, `Send`,
///   `'static` (the runtime keeps a copy for the run's later restores) and
///   `Default`. It goes on struct fields, not in enum variants (a restored
///   enum may be in another variant), and cannot be combined with
///   `transient`, `default` or `nested`; the `config` fields of a `nested`
///   field's type stay configuration.
///
/// Which settings are configuration is a choice: those that say where and
/// how fast (paths, directories, rates, shared handles) are; those that
/// change what the job computes (a seed, a ranking size) can stay state, so
/// a resumed job computes what an uninterrupted one would.
///
/// Configuration is not part of the layout [fingerprint](#the-layout-fingerprint):
/// adding or changing a `config` field keeps existing snapshots readable,
/// while turning a saved field into configuration is a layout change
/// (upgrade with `version = N, previous = OldType`; the value the old
/// snapshot saved is dropped for this run's).
///
/// A job stopped by a failure, then run again against the same storage with
/// another label and end: the count resumes from the checkpoint, the label
/// and end are this run's, and the collector writes into this run's list.
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use checkpoint_core::{Checkpoint, MemoryStorageAgent, StorageAgent};
/// use checkpoint_runtime::{
///     Config, Dag, Emit, Fault, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode,
/// };
///
/// #[derive(Checkpoint)]
/// struct Count {
///     /// State: the next number.
///     next: u64,
///     /// Configuration: how numbers are labelled, and where counting ends.
///     #[checkpoint(config)]
///     label: String,
///     #[checkpoint(config)]
///     end: u64,
///     /// Transient: numbers emitted since the last `setup`.
///     #[checkpoint(transient)]
///     since_setup: u64,
/// }
///
/// impl InputOperator for Count {
///     type Output = String;
///     fn emit_tuples(&mut self, out: Output<'_, String>) -> OperatorResult<Emit> {
///         out.emit(format!("{} {}", self.label, self.next));
///         self.next += 1;
///         self.since_setup += 1;
///         Ok(if self.next == self.end { Emit::Done } else { Emit::Continue })
///     }
/// }
///
/// #[derive(Default, Checkpoint)]
/// struct Collect {
///     /// Configuration: the list this run's caller reads.
///     #[checkpoint(config)]
///     seen: Arc<Mutex<Vec<String>>>,
/// }
///
/// impl Operator for Collect {
///     type Input = String;
///     type Output = ();
///     fn process(&mut self, tuple: String, _out: Output<'_, ()>) -> OperatorResult {
///         self.seen.lock().map_err(|_| "poisoned")?.push(tuple);
///         Ok(())
///     }
/// }
///
/// let storage: Arc<dyn StorageAgent> = Arc::new(MemoryStorageAgent::new());
/// let job = |label: &str, end: u64, seen: &Arc<Mutex<Vec<String>>>| {
///     let mut dag = Dag::new();
///     let count = Count { next: 0, label: label.into(), end, since_setup: 0 };
///     let numbers = dag.input("numbers", count);
///     let collect = dag.operator("collect", Collect { seen: Arc::clone(seen) });
///     dag.connect(&numbers, &collect);
///     dag.default_checkpoint_window_count(2);
///     dag
/// };
/// let config = || {
///     Config::default()
///         .shared_storage(Arc::clone(&storage))
///         .window_mode(WindowMode::Tuples(1))
///         // Synchronous saves: every checkpoint before the failure is durable.
///         .async_checkpoints(false)
///         .restart_limit(0)
/// };
///
/// // One number per window, a checkpoint every 2 windows. The first run
/// // fails for good in window 5 of `collect`; the last checkpoint of both
/// // operators, at window 3, is after `a 2`.
/// let first = Arc::new(Mutex::new(Vec::new()));
/// let failed = Runtime::new(config().inject(Fault::error("collect", 5))).run(job("a", 8, &first));
/// assert!(failed.is_err());
/// assert!(first.lock().unwrap().starts_with(&["a 0".to_string(), "a 1".into(), "a 2".into()]));
///
/// // Resumed with label "b" and end 6: from the checkpoint's `next`, with
/// // this run's label, end and list.
/// let second = Arc::new(Mutex::new(Vec::new()));
/// Runtime::new(config()).run(job("b", 6, &second))?;
/// assert_eq!(*second.lock().unwrap(), ["b 3", "b 4", "b 5"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Field attributes
///
/// ## `#[checkpoint(config)]`
///
/// The field is [configuration](#three-kinds-of-fields): not saved, and set
/// after every restore from the operator value handed to the DAG in this
/// run. Its type needs `Clone + Send + 'static` and `Default`.
///
/// ## `#[checkpoint(transient)]`
///
/// The field is not saved. After a restore it is `Default::default()`, and
/// the runtime calls the operator's `setup` again, where resources such as
/// files, sockets and caches are re-created. Its type needs `Default` (and
/// nothing else: it need not be serializable).
///
/// ## `#[checkpoint(transient, default = "path::to::fn")]`
///
/// The field is not saved; after a restore it is the value of the function,
/// which takes no arguments. The path is a string, resolved where the type
/// is defined; `Self::...` works.
///
/// ```
/// use checkpoint_core::Checkpoint;
///
/// #[derive(Checkpoint)]
/// struct Dedup {
///     seen: std::collections::BTreeSet<u64>,
///     #[checkpoint(transient, default = "Self::default_capacity")]
///     capacity: usize,
/// }
///
/// impl Dedup {
///     fn default_capacity() -> usize {
///         1024
///     }
/// }
///
/// let mut bytes = Vec::new();
/// Dedup { seen: [1, 2].into(), capacity: 3 }.encode_state(&mut bytes)?;
/// let back = Dedup::decode_state(&mut &bytes[..])?;
/// assert_eq!((back.seen.len(), back.capacity), (2, 1024));
/// # Ok::<(), checkpoint_core::PayloadError>(())
/// ```
///
/// ## `#[checkpoint(nested)]`
///
/// The field's type is itself `Checkpoint`, and its own impl saves it: its
/// transient fields stay transient, and its fingerprint becomes part of this
/// type's. Without `nested`, a field is saved with serde + postcard, so
/// its type needs `serde::Serialize` and `serde::Deserialize`.
///
/// ```
/// use checkpoint_core::Checkpoint;
///
/// #[derive(Checkpoint)]
/// struct Window {
///     count: u64,
///     #[checkpoint(transient)]
///     pending: Vec<u64>,
/// }
///
/// #[derive(Checkpoint)]
/// struct Counter {
///     #[checkpoint(nested)]
///     window: Window,
///     total: u64,
/// }
///
/// let mut bytes = Vec::new();
/// Counter { window: Window { count: 3, pending: vec![9] }, total: 10 }.encode_state(&mut bytes)?;
/// let back = Counter::decode_state(&mut &bytes[..])?;
/// assert_eq!((back.window.count, back.window.pending.len(), back.total), (3, 0, 10));
/// # Ok::<(), checkpoint_core::PayloadError>(())
/// ```
///
/// ## `#[checkpoint(keyed)]`
///
/// The field is a `checkpoint_core::KeyedMap`:
/// keyed state, split into the job's key groups and saved group by group,
/// so each group can be restored by whichever partition owns it. The
/// field's written type (`KeyedMap<String, u64>`) is part of the
/// fingerprint. `keyed` on any other type is a compile error, and so is a
/// `KeyedMap` field without `keyed` (or `transient`), or a `KeyedMap`
/// inside another type (`Option<KeyedMap<..>>`), which serde would save
/// without its groups.
///
/// ```
/// use checkpoint_core::{Checkpoint, KeyedMap};
///
/// #[derive(Checkpoint, Default)]
/// struct Sessions {
///     #[checkpoint(keyed)]
///     open: KeyedMap<u64, Vec<u64>>,
/// }
///
/// let mut sessions = Sessions::default();
/// sessions.open.entry(7).or_default().push(1_700_000_000);
/// let mut bytes = Vec::new();
/// sessions.encode_state(&mut bytes)?;
/// let back = Sessions::decode_state(&mut &bytes[..])?;
/// assert_eq!(back.open.get(&7), Some(&vec![1_700_000_000]));
/// # Ok::<(), checkpoint_core::PayloadError>(())
/// ```
///
/// Byte buffers (`Vec<u8>` and `Box<[u8]>`, recognized by name) take
/// serde's bytes path and are written as one slice, not byte by byte.
///
/// # Type attributes
///
/// ## `#[checkpoint(stateless)]`
///
/// Nothing is saved (Apex's `@Stateless`): every field is restored from its
/// default as if it were transient (`default = "..."` works without
/// `transient` here), `STATELESS` is `true`, and the runtime counts the
/// operator as checkpointed at every window it completed. Structs only.
///
/// ```
/// use checkpoint_core::Checkpoint;
///
/// #[derive(Checkpoint)]
/// #[checkpoint(stateless)]
/// struct Splitter {
///     #[checkpoint(default = "comma")]
///     separator: char,
///     lines_seen: u64,
/// }
///
/// fn comma() -> char {
///     ','
/// }
///
/// assert!(Splitter::STATELESS);
/// let mut bytes = Vec::new();
/// Splitter { separator: ';', lines_seen: 7 }.encode_state(&mut bytes)?;
/// assert!(bytes.is_empty());
/// let back = Splitter::decode_state(&mut &bytes[..])?;
/// assert_eq!((back.separator, back.lines_seen), (',', 0));
/// # Ok::<(), checkpoint_core::PayloadError>(())
/// ```
///
/// ## `#[checkpoint(version = N, previous = OldType)]`
///
/// Schema evolution. `version` (an integer, 1 by default) is recorded in
/// every snapshot; raise it whenever the saved layout changes. `previous`
/// names the type the previous version is still declared as: it must be
/// `Checkpoint` with a lower version (checked at compile time), and this
/// type must implement `From<OldType>`. A snapshot of an older version is
/// decoded as `OldType` (which may have its own `previous`, to any depth)
/// and converted; every step checks its own version and fingerprint. A
/// snapshot of a version no step knows fails with
/// `SnapshotError::UnknownStateVersion`, one whose fingerprint differs at a
/// known version with `SnapshotError::LayoutMismatch`; both name the type,
/// the version and the fingerprints.
///
/// ```
/// use checkpoint_core::{Checkpoint, Snapshot, SnapshotMeta, WindowId};
///
/// /// The layout snapshots were written with until version 2.
/// #[derive(Checkpoint)]
/// #[checkpoint(version = 1)]
/// struct TotalsV1 {
///     rides: u32,
/// }
///
/// #[derive(Debug, PartialEq, Checkpoint)]
/// #[checkpoint(version = 2, previous = TotalsV1)]
/// struct Totals {
///     rides: u64,
///     cents: u64,
/// }
///
/// impl From<TotalsV1> for Totals {
///     fn from(old: TotalsV1) -> Self {
///         Totals { rides: old.rides.into(), cents: 0 }
///     }
/// }
///
/// let meta = SnapshotMeta::new("totals", WindowId::new(1_700_000_000, 9));
/// let old_snapshot = Snapshot::encode(&TotalsV1 { rides: 5 }, meta)?;
/// let (header, totals) = Snapshot::decode::<Totals>(&old_snapshot)?;
/// assert_eq!(header.state_version, 1);
/// assert_eq!(totals, Totals { rides: 5, cents: 0 });
///
/// // A newer snapshot than the type knows is refused.
/// let new_snapshot = Snapshot::encode(&totals, meta)?;
/// assert!(Snapshot::decode::<TotalsV1>(&new_snapshot).is_err());
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
///
/// ## `#[checkpoint(crate = path)]`
///
/// The path generated code reaches `checkpoint-core` by, for a crate that
/// renames or re-exports it (default: `::checkpoint_core`). A path, not a
/// string.
///
/// ```
/// extern crate checkpoint_core as ck;
///
/// #[derive(ck::Checkpoint)]
/// #[checkpoint(crate = ck)]
/// struct Sum {
///     total: u64,
/// }
///
/// assert_eq!(<Sum as ck::Checkpoint>::VERSION, 1);
/// ```
///
/// ## `#[checkpoint(bound = "...")]`
///
/// For a generic type the derive adds a where-clause bound for each field
/// whose type mentions a type parameter: `FieldType: Serialize +
/// DeserializeOwned` for a saved field, `FieldType: Checkpoint` for a
/// nested one, `FieldType: KeyedField` (a `KeyedMap`) for a keyed one,
/// `FieldType: Default` for a transient one without
/// `default = "..."`, `FieldType: Clone + Default + Send + 'static` for a
/// config one. Fields that do not mention a parameter add nothing.
/// `bound = "..."` replaces all of these with the where-clause predicates
/// in the string.
///
/// ```
/// use std::collections::BTreeMap;
///
/// use checkpoint_core::Checkpoint;
///
/// // Inferred: `BTreeMap<K, u64>: Serialize + DeserializeOwned`, `C: Checkpoint`.
/// #[derive(Checkpoint)]
/// struct PerKey<K: Ord, C> {
///     counts: BTreeMap<K, u64>,
///     #[checkpoint(nested)]
///     inner: C,
/// }
///
/// // Written out by hand.
/// #[derive(Checkpoint)]
/// #[checkpoint(bound = "T: serde::Serialize + serde::de::DeserializeOwned")]
/// struct Latest<T> {
///     value: Option<T>,
/// }
///
/// let mut bytes = Vec::new();
/// PerKey { counts: BTreeMap::from([("a".to_string(), 1)]), inner: 7u64 }.encode_state(&mut bytes)?;
/// Latest { value: Some(2.5f64) }.encode_state(&mut bytes)?;
/// let mut input = &bytes[..];
/// let per_key = PerKey::<String, u64>::decode_state(&mut input)?;
/// let latest = Latest::<f64>::decode_state(&mut input)?;
/// assert_eq!((per_key.counts["a"], per_key.inner, latest.value), (1, 7, Some(2.5)));
/// # Ok::<(), checkpoint_core::PayloadError>(())
/// ```
///
/// # Shapes
///
/// Named, tuple and unit structs; enums (a state machine is state: the
/// variant's index is saved as a varint, then its saved fields; transient
/// fields inside variants get their defaults); generic types. Unions and
/// saved fields of reference type are compile errors.
///
/// ```
/// use checkpoint_core::Checkpoint;
///
/// #[derive(Debug, PartialEq, Checkpoint)]
/// enum Session {
///     Idle,
///     Open {
///         user: String,
///         #[checkpoint(transient)]
///         socket: Option<u32>,
///     },
///     Closing(u64),
/// }
///
/// let mut bytes = Vec::new();
/// Session::Open { user: "ada".into(), socket: Some(4) }.encode_state(&mut bytes)?;
/// assert_eq!(
///     Session::decode_state(&mut &bytes[..])?,
///     Session::Open { user: "ada".into(), socket: None },
/// );
/// # Ok::<(), checkpoint_core::PayloadError>(())
/// ```
///
/// # The layout fingerprint
///
/// `FINGERPRINT` is a 64-bit `LayoutHasher` hash computed at compile time,
/// the same on every build and machine. `docs/FINGERPRINT.md` gives the
/// exact recipe. In short:
///
/// - **It changes** when a saved field is renamed, added, removed, moved,
///   or made transient or config; when a saved field's type is written differently
///   after its path is cut to the last segment (`u32` to `u64`,
///   `HashMap<u32, Zone>` to `HashMap<u64, Zone>`, `Vec<T>` to
///   `VecDeque<T>`); when a nested field's own fingerprint changes; when an
///   enum variant is renamed, added, removed or moved; when `version`
///   changes.
/// - **It does not change** when the type is renamed (the name is for
///   messages only), when a path prefix changes (`std::collections::HashMap`
///   and `HashMap` are the same), when a transient or config field is
///   added, removed or changed, or with attributes and generic bounds.
/// - **It cannot see** inside a type saved with serde: a field added to a
///   plain serde struct, or a type alias pointed at another type, keeps the
///   fingerprint while the bytes change. Bump `version` by hand for such a
///   change; the golden snapshot tests exist to catch one that slips
///   through. Two different types with the same last segment (`a::Id` and
///   `b::Id`) look the same, and for a generic type the fingerprint names
///   the parameter (`Vec<T>`), not the type it is used with.
#[proc_macro_derive(Checkpoint, attributes(checkpoint))]
pub fn derive_checkpoint(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
