//! The `keyed-count` workload of DESIGN.md, end to end through the runtime:
//! source -> keyed counter -> summing sink, with checkpoints off, every
//! second and every 100 ms, for K = 100,000 and K = 5,000,000 keys.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-runtime --bench keyed_count
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-runtime --bench keyed_count -- \
//!     --config off --keys 100000 --runs 1          # one configuration, e.g. to profile it
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-runtime --bench keyed_count -- \
//!     --workload u64,string --config off,1s        # u64 keys against 32-byte string keys
//! ```
//!
//! Tuple `i` (0-based, `i < N`) has key `splitmix64(i) % K` and value 1
//! (`--dist uniform`).
//! The counter keeps one count per key and emits `(key, new count)` for each
//! tuple; the sink sums the new counts. The result must equal the sum over
//! keys of `c(c+1)/2`, where the counts `c` are found here by counting keys
//! directly, without the runtime; a mismatch ends the benchmark with an
//! error.
//!
//! Two workloads (`--workload`) run that same job with two key types:
//! - `u64`: the key is the number itself (DESIGN.md's workload);
//! - `string`: the key is the number written in decimal, left-padded with
//!   zeros to 32 bytes (`"000…0042"`), so every tuple owns a 32-byte heap
//!   `String`. The source allocates it, the counter looks it up in a
//!   `HashMap<String, u64>` (cloning it only for a new key) and moves it on
//!   in `(key, new count)`, and the sink frees it, on its own thread. The
//!   text is a one-to-one image of the number, so the expected sum is the
//!   `u64` workload's.
//!
//! Each run goes, by default, in a process of its own: the binary runs
//! itself (`std::env::current_exe()`) with the arguments of that one run,
//! and the child's JSON line, with the child's own peak RSS, is printed
//! here. `--in-process` runs everything in this process instead, as before;
//! then `peak_rss_mib` is the high-water mark of the whole session so far
//! and cannot compare configurations.
//!
//! Every run prints one JSON object on stdout; the medians per
//! configuration follow on stderr. Flags (all optional):
//!
//! - `--tuples N`: tuples per run (default 200,000,000: about 4 s for
//!   K = 100,000 with checkpoints off on the 2-core VM of
//!   `docs/BENCHMARKS.md`; K = 5,000,000 runs take 30-35 s, 70-100 s with
//!   checkpoints every 100 ms; a default session about 10 minutes);
//! - `--keys K[,K...]`: key counts (default `100000,5000000`);
//! - `--config C[,C...]`: `off`, `1s`, `100ms` (default all three), or
//!   `bare`: the same work in one plain loop on one thread, no runtime;
//! - `--runs R`: runs per configuration, interleaved (default 3);
//! - `--window-ms MS`: streaming window (default 100; checkpoint intervals
//!   are whole multiples of it);
//! - `--batch-size B`: tuples per batch between threads (default: the
//!   runtime's `Config::default()`);
//! - `--replay-cap BYTES`: `Config::replay_memory_cap` (bytes the job's
//!   replay buffers keep in memory together before spilling; default
//!   512 MiB);
//! - `--chunk C`: tuples the source emits per `emit_tuples` call (default
//!   1,024);
//! - `--dir PATH`: where checkpoint directories are made (default `/tmp`);
//! - `--storage S[,S...]`: where checkpoints go, `fs` (a directory under
//!   `--dir`, `FsStorageAgent`, the default) and/or `s3` (the
//!   `checkpoint-object-store` agent on a fresh bucket of an S3 endpoint:
//!   `CHECKPOINT_S3_ENDPOINT` if set, with `CHECKPOINT_S3_BUCKET` naming an
//!   existing bucket for a server that does not create buckets from an
//!   unsigned `PUT /bucket`, else a `moto` server this process starts on a
//!   loopback port, as the object-store crate's tests do); several are
//!   interleaved in one session, like scopes;
//! - `--scope S[,S...]`: recovery scopes, `partial` (Apex's, the runtime's
//!   default: replay buffers kept) and/or `global` (Flink's: none kept);
//!   default `partial`; several are interleaved in one session;
//! - `--workload W[,W...]`: `u64` (the default) and/or `string` (see
//!   above); several are interleaved in one session, like scopes;
//! - `--hasher H`: the counter's map hasher, `sip` (std's default
//!   `RandomState`, the default here) or `fx` (a multiply-rotate hash, to
//!   measure what hashing costs);
//! - `--state S`: the counter's state, `keyed` (a `KeyedMap`, split into
//!   key groups and checkpointed incrementally, the default) or `hashmap`
//!   (a plain `HashMap` saved whole, for comparison);
//! - `--dist D`: `uniform` (the default) or `hot` (every key once, then a
//!   hot set of 8 keys: what incremental checkpoints are for);
//! - `--in-process`: run every configuration in this one process (no value).
//!
//! `--child-run R` and `--expected SUM` are internal: they make the binary
//! the child process of one run.
//!
//! Figures and their reading are in `docs/BENCHMARKS.md`.
#![allow(missing_docs, reason = "a benchmark binary, not an API")]

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkpoint_core::{Checkpoint, FsStorageAgent, KeyedMap, StateKey, StorageAgent, StorageError};
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, RecoveryScope, Runtime, Tuple, WindowMode,
};

/// The S3 endpoint of `--storage s3`: the object-store crate's test
/// helper (an endpoint from the environment, or a `moto` server started
/// here).
#[path = "../../checkpoint-object-store/tests/common/mod.rs"]
mod s3;

/// splitmix64 as DESIGN.md defines it (wrapping u64 arithmetic).
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// rustc's FxHash: a multiply and a rotate per 8 bytes, against
/// SipHash-1-3's dozens of rounds. Only to measure what the map's hashing
/// costs (`--hasher fx`); not DoS-resistant.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(le));
        }
        for &b in words.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Fx = BuildHasherDefault<FxHasher>;

/// The bytes of a `string` workload key: `--workload string`'s tuples each
/// own a heap `String` of exactly this length.
const TEXT_KEY_LEN: usize = 32;

/// A key type of the workload: how tuple `i`'s key is made and counted.
trait Key: Tuple + Hash + Eq + StateKey {
    const WORKLOAD: Workload;

    /// The key for the number `key` (`splitmix64(i) % K`).
    fn make(key: u64) -> Self;

    /// Adds one to `key`'s count; gives back the key and its new count.
    fn count<S: BuildHasher>(counts: &mut HashMap<Self, u64, S>, key: Self) -> (Self, u64);

    /// The same in a `KeyedMap`: the key is cloned only when it is new.
    fn count_keyed(counts: &mut KeyedMap<Self, u64>, key: Self) -> (Self, u64) {
        if let Some(count) = counts.get_mut(&key) {
            *count += 1;
            return (key, *count);
        }
        counts.insert(key.clone(), 1);
        (key, 1)
    }
}

impl Key for u64 {
    const WORKLOAD: Workload = Workload::U64;

    fn make(key: u64) -> Self {
        key
    }

    fn count<S: BuildHasher>(counts: &mut HashMap<u64, u64, S>, key: u64) -> (u64, u64) {
        let count = counts.entry(key).or_default();
        *count += 1;
        (key, *count)
    }
}

impl Key for String {
    const WORKLOAD: Workload = Workload::Text;

    /// `key` in decimal, left-padded with zeros to [`TEXT_KEY_LEN`] bytes,
    /// in an allocation of exactly that size.
    fn make(key: u64) -> Self {
        let mut text = vec![b'0'; TEXT_KEY_LEN];
        let mut rest = key;
        for digit in text.iter_mut().rev() {
            if rest == 0 {
                break;
            }
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        String::from_utf8(text).expect("ASCII digits")
    }

    /// The tuple's own `String` moves on downstream; the map gets a clone
    /// only when the key is new (K times a run).
    fn count<S: BuildHasher>(counts: &mut HashMap<String, u64, S>, key: String) -> (String, u64) {
        if let Some(count) = counts.get_mut(&key) {
            *count += 1;
            return (key, *count);
        }
        counts.insert(key.clone(), 1);
        (key, 1)
    }
}

/// The source: tuples `next..end`, `chunk` per call, each as its key.
#[derive(Checkpoint)]
struct Keys<K> {
    next: u64,
    end: u64,
    keys: u64,
    chunk: u64,
    #[checkpoint(transient)]
    dist: Option<Dist>,
    #[checkpoint(transient)]
    key_type: PhantomData<K>,
}

impl<K: Key> InputOperator for Keys<K> {
    type Output = K;

    fn emit_tuples(&mut self, out: Output<'_, K>) -> OperatorResult<Emit> {
        let stop = self.next.saturating_add(self.chunk).min(self.end);
        for i in self.next..stop {
            out.emit(K::make(self.dist.unwrap_or(Dist::Uniform).key(i, self.keys)));
        }
        self.next = stop;
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// The keyed counter: one count per key; every tuple has value 1. `S` is
/// the map's hasher: std's SipHash (`RandomState`, what a user writes by
/// default) or [`Fx`].
#[derive(Checkpoint)]
struct Counter<K, S> {
    counts: HashMap<K, u64, S>,
}

impl<K: Key, S: BuildHasher + Default + Send + Sync + 'static> Operator for Counter<K, S> {
    type Input = K;
    type Output = (K, u64);

    fn process(&mut self, key: K, out: Output<'_, (K, u64)>) -> OperatorResult {
        out.emit(K::count(&mut self.counts, key));
        Ok(())
    }
}

/// The keyed counter with its counts in a `KeyedMap` (`--state keyed`, the
/// default): split into the job's 128 key groups, frozen at a checkpoint
/// (copy-on-write) and saved incrementally, group by group.
#[derive(Checkpoint)]
struct KeyedCounter<K: Key> {
    #[checkpoint(keyed)]
    counts: KeyedMap<K, u64>,
}

impl<K: Key> Operator for KeyedCounter<K> {
    type Input = K;
    type Output = (K, u64);

    fn process(&mut self, key: K, out: Output<'_, (K, u64)>) -> OperatorResult {
        out.emit(K::count_keyed(&mut self.counts, key));
        Ok(())
    }
}

/// The sink: the sum of the new counts. `result` hands the total to the
/// benchmark when the operator stops; it is not state.
#[derive(Checkpoint)]
struct SumCounts<K> {
    total: u128,
    #[checkpoint(transient)]
    result: Arc<Mutex<Option<u128>>>,
    #[checkpoint(transient)]
    key_type: PhantomData<K>,
}

impl<K: Key> Operator for SumCounts<K> {
    type Input = (K, u64);
    type Output = ();

    fn process(&mut self, (_key, count): (K, u64), _out: Output<'_, ()>) -> OperatorResult {
        self.total += u128::from(count);
        Ok(())
    }

    fn teardown(&mut self) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.total);
    }
}

/// How many keys the `hot` distribution draws from after its first pass.
const HOT_KEYS: u64 = 8;

/// Which keys the tuples have (`--dist`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dist {
    /// Tuple `i` has key `splitmix64(i) % K` (DESIGN.md's workload).
    Uniform,
    /// Tuple `i < K` has key `i` (the state comes to hold every key), then
    /// every tuple has one of `HOT_KEYS` keys, `splitmix64(i) % 8`: a
    /// small hot set over a large, cold state, the case incremental
    /// checkpoints are for.
    Hot,
}

impl Dist {
    fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Hot => "hot",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        [Dist::Uniform, Dist::Hot]
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown --dist {s:?} (uniform, hot)"))
    }

    /// Tuple `i`'s key number.
    #[inline]
    fn key(self, i: u64, keys: u64) -> u64 {
        match self {
            Dist::Uniform => splitmix64(i) % keys,
            Dist::Hot if i < keys => i,
            Dist::Hot => splitmix64(i) % HOT_KEYS.min(keys),
        }
    }
}

/// Where checkpoints go (`--storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// `FsStorageAgent` in a fresh directory under `--dir`.
    Fs,
    /// `ObjectStoreAgent` on a fresh bucket (or prefix) of the S3 endpoint.
    S3,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Storage::Fs => "fs",
            Storage::S3 => "s3",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        [Storage::Fs, Storage::S3]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown --storage {s:?} (fs, s3)"))
    }
}

/// The counter's state (`--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateKind {
    /// A `KeyedMap` (the default).
    Keyed,
    /// A plain `HashMap`, saved whole at every checkpoint.
    HashMap,
}

impl StateKind {
    fn name(self) -> &'static str {
        match self {
            StateKind::Keyed => "keyed",
            StateKind::HashMap => "hashmap",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        [StateKind::Keyed, StateKind::HashMap]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown --state {s:?} (keyed, hashmap)"))
    }
}

/// The expected result, without the runtime: count each key's tuples, then
/// sum `c(c+1)/2` over the keys. The same for both workloads, since a
/// `string` key is a one-to-one image of its number.
fn expected(tuples: u64, keys: u64, dist: Dist) -> u128 {
    let mut counts = vec![0u64; usize::try_from(keys).expect("K fits in memory")];
    for i in 0..tuples {
        counts[dist.key(i, keys) as usize] += 1;
    }
    counts.iter().map(|&c| u128::from(c) * (u128::from(c) + 1) / 2).sum()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    Off,
    EverySecond,
    Every100ms,
    /// Not a runtime configuration: the same work in one loop on one
    /// thread, as a yardstick for the runtime's overhead.
    Bare,
}

impl Checkpoints {
    const ALL: [Checkpoints; 3] = [Checkpoints::Off, Checkpoints::EverySecond, Checkpoints::Every100ms];

    fn name(self) -> &'static str {
        match self {
            Checkpoints::Off => "off",
            Checkpoints::EverySecond => "1s",
            Checkpoints::Every100ms => "100ms",
            Checkpoints::Bare => "bare",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        Checkpoints::ALL
            .into_iter()
            .chain([Checkpoints::Bare])
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown --config {s:?} (off, 1s, 100ms, bare)"))
    }

    fn interval(self) -> Option<Duration> {
        match self {
            Checkpoints::Off | Checkpoints::Bare => None,
            Checkpoints::EverySecond => Some(Duration::from_secs(1)),
            Checkpoints::Every100ms => Some(Duration::from_millis(100)),
        }
    }
}

/// The key type the job runs with (`--workload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `u64` keys.
    U64,
    /// 32-byte `String` keys.
    Text,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::U64 => "u64",
            Workload::Text => "string",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        [Workload::U64, Workload::Text]
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown --workload {s:?} (u64, string)"))
    }
}

/// One line of the medians table: what a run runs, apart from K.
#[derive(Debug, Clone, Copy)]
struct Variant {
    config: Checkpoints,
    scope: RecoveryScope,
    workload: Workload,
    storage: Storage,
}

impl Variant {
    /// The scope as the JSON line names it (`-` for `bare`).
    fn scope_name(self) -> &'static str {
        if self.config == Checkpoints::Bare {
            "-"
        } else {
            scope_name(self.scope)
        }
    }

    /// The storage as the JSON line names it (`-` without checkpoints).
    fn storage_name(self) -> &'static str {
        if self.config.interval().is_none() {
            "-"
        } else {
            self.storage.name()
        }
    }
}

#[derive(Debug)]
struct Options {
    tuples: u64,
    keys: Vec<u64>,
    configs: Vec<Checkpoints>,
    runs: usize,
    window: Duration,
    batch_size: Option<usize>,
    replay_cap: Option<usize>,
    chunk: u64,
    dir: PathBuf,
    storages: Vec<Storage>,
    fx: bool,
    scopes: Vec<RecoveryScope>,
    workloads: Vec<Workload>,
    in_process: bool,
    state: StateKind,
    dist: Dist,
    /// Set in a child process: the one run it does, and its expected sum.
    child: Option<(usize, u128)>,
}

fn scope_name(scope: RecoveryScope) -> &'static str {
    match scope {
        RecoveryScope::Global => "global",
        _ => "partial",
    }
}

fn parse_scope(s: &str) -> Result<RecoveryScope, String> {
    match s {
        "partial" => Ok(RecoveryScope::Partial),
        "global" => Ok(RecoveryScope::Global),
        _ => Err(format!("unknown --scope {s:?} (partial, global)")),
    }
}

fn parse_list<T>(value: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    value.split(',').map(|v| parse(v.trim())).collect()
}

fn parse_number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .replace('_', "")
        .parse::<u64>()
        .map_err(|e| format!("{flag} {value:?}: {e}"))
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        tuples: 200_000_000,
        keys: vec![100_000, 5_000_000],
        configs: Checkpoints::ALL.to_vec(),
        runs: 3,
        window: Duration::from_millis(100),
        batch_size: None,
        replay_cap: None,
        chunk: 1024,
        dir: PathBuf::from("/tmp"),
        storages: vec![Storage::Fs],
        fx: false,
        scopes: vec![RecoveryScope::Partial],
        workloads: vec![Workload::U64],
        in_process: false,
        state: StateKind::Keyed,
        dist: Dist::Uniform,
        child: None,
    };
    let mut child_run = None;
    let mut child_expected = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            // `cargo bench` passes `--bench` to every benchmark binary.
            "--bench" => continue,
            "--in-process" => {
                options.in_process = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tuples" | "-n" => options.tuples = parse_number(&flag, &value)?,
            "--keys" | "-k" => options.keys = parse_list(&value, |v| parse_number(&flag, v))?,
            "--config" => options.configs = parse_list(&value, Checkpoints::parse)?,
            "--runs" => options.runs = parse_number(&flag, &value)? as usize,
            "--window-ms" => options.window = Duration::from_millis(parse_number(&flag, &value)?),
            "--batch-size" => options.batch_size = Some(parse_number(&flag, &value)? as usize),
            "--replay-cap" => options.replay_cap = Some(parse_number(&flag, &value)? as usize),
            "--chunk" => options.chunk = parse_number(&flag, &value)?,
            "--dir" => options.dir = PathBuf::from(value),
            "--storage" => options.storages = parse_list(&value, Storage::parse)?,
            "--scope" => options.scopes = parse_list(&value, parse_scope)?,
            "--workload" => options.workloads = parse_list(&value, Workload::parse)?,
            "--state" => options.state = StateKind::parse(&value)?,
            "--dist" => options.dist = Dist::parse(&value)?,
            "--hasher" => {
                options.fx = match value.as_str() {
                    "sip" => false,
                    "fx" => true,
                    _ => return Err(format!("unknown --hasher {value:?} (sip, fx)")),
                }
            }
            "--child-run" => child_run = Some(parse_number(&flag, &value)? as usize),
            "--expected" => {
                child_expected = Some(value.parse::<u128>().map_err(|e| format!("{flag} {value:?}: {e}"))?);
            }
            _ => return Err(format!("unknown flag {flag:?} (see the top of benches/keyed_count.rs)")),
        }
    }
    if options.keys.contains(&0) || options.chunk == 0 || options.runs == 0 || options.window.is_zero() {
        return Err("--keys, --chunk, --runs and --window-ms must be positive".to_owned());
    }
    for config in &options.configs {
        if let Some(interval) = config.interval()
            && (interval.as_nanos() % options.window.as_nanos() != 0 || interval < options.window)
        {
            return Err(format!(
                "checkpoints every {} need a streaming window that divides it, not {} ms",
                config.name(),
                options.window.as_millis()
            ));
        }
    }
    match (child_run, child_expected) {
        (None, None) => {}
        (Some(run), Some(expected)) => {
            let one = |n: usize| n == 1;
            if !(one(options.keys.len())
                && one(options.configs.len())
                && one(options.scopes.len())
                && one(options.workloads.len()))
            {
                return Err("--child-run takes one K, config, scope and workload".to_owned());
            }
            options.child = Some((run, expected));
        }
        _ => return Err("--child-run and --expected go together".to_owned()),
    }
    Ok(options)
}

/// What one run measured.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    config: String,
    /// The recovery scope (`-` for `bare`).
    scope: String,
    /// `u64` or `string` keys.
    workload: String,
    hasher: String,
    keys: u64,
    tuples: u64,
    run: usize,
    seconds: f64,
    tuples_per_second: f64,
    /// Checkpoints of the counter, the initial one included.
    checkpoints: u64,
    /// Bytes the counter's last checkpoint wrote (with a `KeyedMap`: its
    /// new chunks and the snapshot).
    last_checkpoint_bytes: u64,
    /// `keyed` or `hashmap`.
    state: String,
    /// Where checkpoints went: `fs` or `s3` (`-` without checkpoints).
    storage: String,
    /// `uniform` or `hot`.
    dist: String,
    /// The bytes of the counter's whole newest checkpoint (with a
    /// `KeyedMap`: every chunk it refers to).
    full_state_bytes: Option<u64>,
    /// Streaming windows the counter completed.
    windows: u64,
    committed: Option<String>,
    /// The counter's longest checkpoint encode (its thread's pause), ms.
    max_encode_ms: f64,
    /// The counter's last checkpoint encode, ms.
    last_encode_ms: f64,
    /// The median of the counter's last 32 checkpoint encodes, ms.
    median_encode_ms: f64,
    /// The counter's longest encode-to-durable latency, ms.
    max_durable_ms: f64,
    /// Time to load and decode the counter's newest checkpoint from its
    /// storage after the run (what a recovery pays for it), ms.
    restore_ms: Option<f64>,
    /// Peak resident set size of the process so far, MiB (Linux): of this
    /// run alone if `own_process`, else of the session up to this run.
    peak_rss_mib: Option<f64>,
    /// Whether the run had a process of its own (not `--in-process`).
    own_process: bool,
    /// Bytes the operators' replay buffers held in memory at the end of
    /// the run (0 in the global scope, where none are kept).
    replay_bytes: u64,
    result: u128,
    expected: u128,
    check: String,
}

/// VmHWM from /proc/self/status.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn check(ok: bool) -> String {
    if ok { "ok" } else { "MISMATCH" }.to_owned()
}

/// The workload without the runtime: one thread, one loop, the same
/// operators' code paths (key, `HashMap` entry, sum).
fn run_bare<K: Key, S: BuildHasher + Default>(options: &Options, keys: u64, expected: u128, run: usize) -> RunRecord {
    let started = Instant::now();
    let mut counts: HashMap<K, u64, S> = HashMap::default();
    let mut total = 0u128;
    for i in 0..options.tuples {
        let (_key, count) = K::count(&mut counts, K::make(options.dist.key(i, keys)));
        total += u128::from(count);
    }
    let seconds = started.elapsed().as_secs_f64();
    RunRecord {
        config: Checkpoints::Bare.name().to_owned(),
        scope: "-".to_owned(),
        workload: K::WORKLOAD.name().to_owned(),
        hasher: hasher_name(options).to_owned(),
        keys,
        tuples: options.tuples,
        run,
        seconds,
        tuples_per_second: options.tuples as f64 / seconds,
        checkpoints: 0,
        last_checkpoint_bytes: 0,
        state: "-".to_owned(),
        storage: "-".to_owned(),
        dist: options.dist.name().to_owned(),
        full_state_bytes: None,
        windows: 0,
        committed: None,
        max_encode_ms: 0.0,
        last_encode_ms: 0.0,
        median_encode_ms: 0.0,
        max_durable_ms: 0.0,
        restore_ms: None,
        peak_rss_mib: peak_rss_mib(),
        own_process: options.child.is_some(),
        replay_bytes: 0,
        result: total,
        expected,
        check: check(total == expected),
    }
}

fn hasher_name(options: &Options) -> &'static str {
    if options.fx { "fx" } else { "sip" }
}

fn run_once(options: &Options, variant: Variant, keys: u64, expected: u128, run: usize) -> Result<RunRecord, String> {
    match variant.workload {
        Workload::U64 => run_typed::<u64>(options, variant, keys, expected, run),
        Workload::Text => run_typed::<String>(options, variant, keys, expected, run),
    }
}

fn run_typed<K: Key>(
    options: &Options,
    variant: Variant,
    keys: u64,
    expected: u128,
    run: usize,
) -> Result<RunRecord, String> {
    match (variant.config, options.fx) {
        (Checkpoints::Bare, false) => Ok(run_bare::<K, RandomState>(options, keys, expected, run)),
        (Checkpoints::Bare, true) => Ok(run_bare::<K, Fx>(options, keys, expected, run)),
        (_, false) => run_job::<K, RandomState>(options, variant, keys, expected, run),
        (_, true) => run_job::<K, Fx>(options, variant, keys, expected, run),
    }
}

fn run_job<K: Key, S: BuildHasher + Default + Send + Sync + 'static>(
    options: &Options,
    variant: Variant,
    keys: u64,
    expected: u128,
    run: usize,
) -> Result<RunRecord, String> {
    let Variant { config, scope, .. } = variant;
    let result = Arc::new(Mutex::new(None));
    let mut dag = Dag::new();
    let source = dag.input(
        "keys",
        Keys::<K> {
            next: 0,
            end: options.tuples,
            keys,
            chunk: options.chunk,
            dist: Some(options.dist),
            key_type: PhantomData,
        },
    );
    let counter = match options.state {
        StateKind::Keyed => dag.operator(
            "count",
            KeyedCounter::<K> {
                counts: KeyedMap::new(),
            },
        ),
        StateKind::HashMap => dag.operator(
            "count",
            Counter::<K, S> {
                counts: HashMap::default(),
            },
        ),
    };
    let sink = dag.operator(
        "sum",
        SumCounts::<K> {
            total: 0,
            result: Arc::clone(&result),
            key_type: PhantomData,
        },
    );
    dag.connect(&source, &counter).connect(&counter, &sink);

    let mut runtime_config = Config::default()
        .window_mode(WindowMode::Time(options.window))
        .recovery_scope(scope);
    if let Some(cap) = options.replay_cap {
        runtime_config = runtime_config.replay_memory_cap(cap);
    }
    if let Some(batch) = options.batch_size {
        runtime_config = runtime_config.batch_size(batch);
    }
    // Kept alive until the run is over, then removed.
    let mut dir = None;
    // Where the checkpoints are, to restore from after the run.
    let mut checkpoints: Option<CheckpointPlace> = None;
    if let Some(interval) = config.interval() {
        let every = u32::try_from(interval.as_nanos() / options.window.as_nanos()).map_err(|e| e.to_string())?;
        dag.default_checkpoint_window_count(every);
        match variant.storage {
            Storage::Fs => {
                let tmp = tempfile::Builder::new()
                    .prefix("keyed-count-")
                    .tempdir_in(&options.dir)
                    .map_err(|e| format!("making a checkpoint directory in {}: {e}", options.dir.display()))?;
                let storage = FsStorageAgent::new(tmp.path()).map_err(|e| e.to_string())?;
                runtime_config = runtime_config.storage(storage);
                checkpoints = Some(CheckpointPlace::Dir(tmp.path().to_owned()));
                dir = Some(tmp);
            }
            Storage::S3 => {
                let url = s3::location("keyed-count");
                runtime_config = runtime_config.storage(s3::agent_at(&url));
                checkpoints = Some(CheckpointPlace::S3(url));
            }
        }
    }

    let started = Instant::now();
    let report = Runtime::new(runtime_config).run(dag).map_err(|e| {
        format!(
            "{} {} K={keys}: the job failed: {e}",
            config.name(),
            variant.workload.name()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    // The job's own peak, before the restore below builds a second map.
    let peak_rss = peak_rss_mib();
    // Recovery's cost for the counter: load its newest snapshot and decode it.
    let mut full_state_bytes = None;
    let restore_ms = match &checkpoints {
        Some(place) => {
            // A fresh agent, as a recovering process would make.
            let storage: Box<dyn StorageAgent> = match place {
                CheckpointPlace::Dir(path) => Box::new(FsStorageAgent::new(path).map_err(|e| e.to_string())?),
                CheckpointPlace::S3(url) => Box::new(s3::agent_at(url)),
            };
            let newest = *storage
                .windows("count")
                .map_err(|e| e.to_string())?
                .last()
                .ok_or("no checkpoint of `count`")?;
            let started = Instant::now();
            let bytes = storage.load("count", newest).map_err(|e| e.to_string())?;
            let took = match options.state {
                // Its chunks loaded and its groups decoded on several threads.
                StateKind::Keyed => {
                    let (header, state) = checkpoint_core::Snapshot::decode_with_chunks::<KeyedCounter<K>>(
                        &bytes,
                        "count",
                        None,
                        |op, id| storage.load_chunk(op, id),
                    )
                    .map_err(|e| e.to_string())?;
                    let took = started.elapsed().as_secs_f64() * 1e3;
                    full_state_bytes = Some(header.chunks.iter().map(|c| c.len).sum::<u64>());
                    drop(state);
                    took
                }
                StateKind::HashMap => {
                    let (_, state) =
                        checkpoint_core::Snapshot::decode::<Counter<K, S>>(&bytes).map_err(|e| e.to_string())?;
                    let took = started.elapsed().as_secs_f64() * 1e3;
                    full_state_bytes = Some(bytes.len() as u64);
                    drop(state);
                    took
                }
            };
            if matches!(place, CheckpointPlace::S3(_)) {
                // The endpoint may keep objects in memory (moto does).
                remove_all(&*storage).map_err(|e| format!("emptying the bucket: {e}"))?;
            }
            Some(took)
        }
        None => None,
    };
    drop(dir);

    let count = report.operator("count").ok_or("no report for `count`")?;
    let got = result
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or("the sink never reported its total")?;
    let tuples_ok =
        count.tuples_in == options.tuples && report.operator("sum").map(|o| o.tuples_in) == Some(options.tuples);
    let replay_bytes = report.operators.iter().map(|o| o.replay_bytes).sum();
    Ok(RunRecord {
        config: config.name().to_owned(),
        scope: variant.scope_name().to_owned(),
        workload: K::WORKLOAD.name().to_owned(),
        replay_bytes,
        hasher: hasher_name(options).to_owned(),
        keys,
        tuples: options.tuples,
        run,
        seconds,
        tuples_per_second: options.tuples as f64 / seconds,
        checkpoints: count.checkpoints,
        last_checkpoint_bytes: count.last_checkpoint_bytes,
        state: options.state.name().to_owned(),
        storage: variant.storage_name().to_owned(),
        dist: options.dist.name().to_owned(),
        full_state_bytes,
        windows: count.windows,
        committed: report.committed.map(|w| w.to_string()),
        max_encode_ms: count.max_encode_time.as_secs_f64() * 1e3,
        last_encode_ms: count.last_encode_time.as_secs_f64() * 1e3,
        median_encode_ms: count.median_encode_time.as_secs_f64() * 1e3,
        max_durable_ms: count.max_durable_latency.as_secs_f64() * 1e3,
        restore_ms,
        peak_rss_mib: peak_rss,
        own_process: options.child.is_some(),
        result: got,
        expected,
        check: check(got == expected && tuples_ok),
    })
}

/// One run in a child process (this binary, with the arguments of that run
/// and `--child-run`): its JSON line and the record read back from it.
/// Where a run's checkpoints are.
enum CheckpointPlace {
    Dir(PathBuf),
    /// An `s3://bucket/prefix` URL on the endpoint.
    S3(String),
}

/// Deletes every operator's snapshots and chunks.
fn remove_all(storage: &dyn StorageAgent) -> Result<(), StorageError> {
    for operator in storage.operators()? {
        for window in storage.windows(&operator)? {
            storage.delete(&operator, window)?;
        }
        for chunk in storage.chunks(&operator)? {
            storage.delete_chunk(&operator, chunk)?;
        }
    }
    Ok(())
}

fn run_in_child(
    options: &Options,
    variant: Variant,
    keys: u64,
    expected: u128,
    run: usize,
) -> Result<(String, RunRecord), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary to run a child: {e}"))?;
    let mut command = Command::new(&exe);
    command
        .args(["--tuples", &options.tuples.to_string()])
        .args(["--keys", &keys.to_string()])
        .args(["--config", variant.config.name()])
        .args(["--scope", scope_name(variant.scope)])
        .args(["--workload", variant.workload.name()])
        .args(["--window-ms", &options.window.as_millis().to_string()])
        .args(["--chunk", &options.chunk.to_string()])
        .args(["--hasher", hasher_name(options)])
        .args(["--state", options.state.name()])
        .args(["--dist", options.dist.name()])
        .arg("--dir")
        .arg(&options.dir)
        .args(["--storage", variant.storage.name()])
        .args(["--child-run", &run.to_string()])
        .args(["--expected", &expected.to_string()]);
    if let Some(batch) = options.batch_size {
        command.args(["--batch-size", &batch.to_string()]);
    }
    if let Some(cap) = options.replay_cap {
        command.args(["--replay-cap", &cap.to_string()]);
    }
    if variant.storage_name() == "s3" {
        // The parent's endpoint (a `moto` it started, or the environment's).
        command.env("CHECKPOINT_S3_ENDPOINT", s3::endpoint());
    }
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    let what = format!(
        "the child process of {} {} {} K={keys} run {run}",
        variant.config.name(),
        variant.scope_name(),
        variant.workload.name()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        return Err(format!("{what} printed no result ({})", output.status));
    };
    let record: RunRecord = serde_json::from_str(line).map_err(|e| format!("{what} printed {line:?}: {e}"))?;
    // A wrong result exits with a failure too, after its line: the caller
    // reports it. Any other failure is the child's own.
    if !output.status.success() && record.check == "ok" {
        return Err(format!("{what} failed ({})", output.status));
    }
    Ok((line.to_owned(), record))
}

/// Every (checkpoints, scope, workload, storage) to run; `bare` and `off`
/// with one scope and one storage, since those only matter with
/// checkpoints.
fn variants(options: &Options) -> Vec<Variant> {
    let mut out = Vec::new();
    for &config in &options.configs {
        let (scopes, storages) = if config.interval().is_none() {
            (&options.scopes[..1], &options.storages[..1])
        } else {
            (&options.scopes[..], &options.storages[..])
        };
        for &scope in scopes {
            for &storage in storages {
                for &workload in &options.workloads {
                    out.push(Variant {
                        config,
                        scope,
                        workload,
                        storage,
                    });
                }
            }
        }
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A child process: the one run its arguments name; its JSON line on
/// stdout; a failure exit if the job failed or its result is wrong.
fn child_main(options: &Options, run: usize, expected: u128) -> ExitCode {
    let variant = Variant {
        config: options.configs[0],
        scope: options.scopes[0],
        workload: options.workloads[0],
        storage: options.storages[0],
    };
    let record = match run_once(options, variant, options.keys[0], expected, run) {
        Ok(record) => record,
        Err(e) => {
            eprintln!("keyed_count: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string(&record) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("keyed_count: {e}");
            return ExitCode::FAILURE;
        }
    }
    if record.check == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("keyed_count: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some((run, expected)) = options.child {
        return child_main(&options, run, expected);
    }
    let mut expectations = Vec::new();
    for &keys in &options.keys {
        let started = Instant::now();
        let value = expected(options.tuples, keys, options.dist);
        eprintln!(
            "keyed_count: K={keys} N={}: expected sum {value} (counted in {:.1} s)",
            options.tuples,
            started.elapsed().as_secs_f64()
        );
        expectations.push((keys, value));
    }

    let mut records: Vec<RunRecord> = Vec::new();
    // Interleaved, so a noisy minute of the shared machine touches every
    // configuration rather than one.
    for run in 0..options.runs {
        for &(keys, expected) in &expectations {
            for variant in variants(&options) {
                let outcome = if options.in_process {
                    run_once(&options, variant, keys, expected, run).and_then(|record| {
                        let line = serde_json::to_string(&record).map_err(|e| e.to_string())?;
                        Ok((line, record))
                    })
                } else {
                    run_in_child(&options, variant, keys, expected, run)
                };
                let (line, record) = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        eprintln!("keyed_count: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                println!("{line}");
                if record.check != "ok" {
                    eprintln!(
                        "keyed_count: WRONG RESULT for {} {} K={keys} N={}: got {}, expected {}",
                        record.config, record.workload, record.tuples, record.result, record.expected
                    );
                    return ExitCode::FAILURE;
                }
                records.push(record);
            }
        }
    }

    eprintln!();
    eprintln!(
        "| checkpoints | scope | storage | workload | K | N | runs | median s | median tuples/s | checkpoints \
         | last checkpoint | median max durable | median restore | median peak RSS |"
    );
    eprintln!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(keys, _) in &expectations {
        for variant in variants(&options) {
            let scope = variant.scope_name();
            let workload = variant.workload.name();
            let storage = variant.storage_name();
            let runs: Vec<&RunRecord> = records
                .iter()
                .filter(|r| {
                    r.keys == keys
                        && r.config == variant.config.name()
                        && r.scope == scope
                        && r.workload == workload
                        && r.storage == storage
                })
                .collect();
            let mut durable: Vec<f64> = runs.iter().map(|r| r.max_durable_ms).collect();
            let mut restore: Vec<f64> = runs.iter().filter_map(|r| r.restore_ms).collect();
            let restore = if restore.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0} ms", median(&mut restore))
            };
            let mut seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
            let mut rates: Vec<f64> = runs.iter().map(|r| r.tuples_per_second).collect();
            let mut checkpoints: Vec<f64> = runs.iter().map(|r| r.checkpoints as f64).collect();
            let mut rss: Vec<f64> = runs.iter().filter_map(|r| r.peak_rss_mib).collect();
            let rss = if options.in_process || rss.is_empty() {
                // The session's high-water mark, not this configuration's.
                "-".to_owned()
            } else {
                format!("{:.0} MiB", median(&mut rss))
            };
            let bytes = runs.last().map_or(0, |r| r.last_checkpoint_bytes);
            eprintln!(
                "| {} | {scope} | {storage} | {workload} | {keys} | {} | {} | {:.2} | {:.2}M | {} | {:.1} MB | {:.0} ms \
                 | {restore} | {rss} |",
                variant.config.name(),
                options.tuples,
                runs.len(),
                median(&mut seconds),
                median(&mut rates) / 1e6,
                median(&mut checkpoints),
                bytes as f64 / 1e6,
                median(&mut durable)
            );
        }
    }
    ExitCode::SUCCESS
}
