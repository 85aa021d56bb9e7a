//! The `keyed-count` workload of DESIGN.md, end to end through the runtime:
//! source -> keyed counter -> summing sink, with checkpoints off, every
//! second and every 100 ms, for K = 100,000 and K = 5,000,000 keys.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-runtime --bench keyed_count
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p checkpoint-runtime --bench keyed_count -- \
//!     --config off --keys 100000 --runs 1          # one configuration, e.g. to profile it
//! ```
//!
//! Tuple `i` (0-based, `i < N`) has key `splitmix64(i) % K` and value 1.
//! The counter keeps one count per key and emits `(key, new count)` for each
//! tuple; the sink sums the new counts. The result must equal the sum over
//! keys of `c(c+1)/2`, where the counts `c` are found here by counting keys
//! directly, without the runtime; a mismatch ends the benchmark with an
//! error.
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
//! - `--batch-size B`: tuples per batch between threads (runtime default
//!   1,024);
//! - `--chunk C`: tuples the source emits per `emit_tuples` call (default
//!   1,024);
//! - `--dir PATH`: where checkpoint directories are made (default `/tmp`);
//! - `--scope S[,S...]`: recovery scopes, `partial` (Apex's, the runtime's
//!   default: replay buffers kept) and/or `global` (Flink's: none kept);
//!   default `partial`; several are interleaved in one session;
//! - `--hasher H`: the counter's map hasher, `sip` (std's default
//!   `RandomState`, the default here) or `fx` (a multiply-rotate hash, to
//!   measure what hashing costs).
//!
//! Figures and their reading are in `docs/BENCHMARKS.md`.
#![allow(missing_docs, reason = "a benchmark binary, not an API")]

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkpoint_core::{Checkpoint, FsStorageAgent, StorageAgent};
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, RecoveryScope, Runtime, WindowMode,
};

/// splitmix64 as DESIGN.md defines it (wrapping u64 arithmetic).
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// rustc's FxHash for one `u64`: a multiply and a rotate, against
/// SipHash-1-3's dozens of rounds. Only to measure what the map's hashing
/// costs (`--hasher fx`); not DoS-resistant.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
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

/// The source: tuples `next..end`, `chunk` per call, each as its key.
#[derive(Checkpoint)]
struct Keys {
    next: u64,
    end: u64,
    keys: u64,
    chunk: u64,
}

impl InputOperator for Keys {
    type Output = u64;

    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let stop = self.next.saturating_add(self.chunk).min(self.end);
        for i in self.next..stop {
            out.emit(splitmix64(i) % self.keys);
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
#[derive(Default, Checkpoint)]
struct Counter<S> {
    counts: HashMap<u64, u64, S>,
}

impl<S: BuildHasher + Default + Send + Sync + 'static> Operator for Counter<S> {
    type Input = u64;
    type Output = (u64, u64);

    fn process(&mut self, key: u64, out: Output<'_, (u64, u64)>) -> OperatorResult {
        let count = self.counts.entry(key).or_default();
        *count += 1;
        out.emit((key, *count));
        Ok(())
    }
}

/// The sink: the sum of the new counts. `result` hands the total to the
/// benchmark when the operator stops; it is not state.
#[derive(Default, Checkpoint)]
struct SumCounts {
    total: u128,
    #[checkpoint(transient)]
    result: Arc<Mutex<Option<u128>>>,
}

impl Operator for SumCounts {
    type Input = (u64, u64);
    type Output = ();

    fn process(&mut self, (_key, count): (u64, u64), _out: Output<'_, ()>) -> OperatorResult {
        self.total += u128::from(count);
        Ok(())
    }

    fn teardown(&mut self) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.total);
    }
}

/// The expected result, without the runtime: count each key's tuples, then
/// sum `c(c+1)/2` over the keys.
fn expected(tuples: u64, keys: u64) -> u128 {
    let mut counts = vec![0u64; usize::try_from(keys).expect("K fits in memory")];
    for i in 0..tuples {
        counts[(splitmix64(i) % keys) as usize] += 1;
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

#[derive(Debug)]
struct Options {
    tuples: u64,
    keys: Vec<u64>,
    configs: Vec<Checkpoints>,
    runs: usize,
    window: Duration,
    batch_size: Option<usize>,
    chunk: u64,
    dir: PathBuf,
    fx: bool,
    scopes: Vec<RecoveryScope>,
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
        chunk: 1024,
        dir: PathBuf::from("/tmp"),
        fx: false,
        scopes: vec![RecoveryScope::Partial],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        // `cargo bench` passes `--bench` to every benchmark binary.
        if flag == "--bench" {
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tuples" | "-n" => options.tuples = parse_number(&flag, &value)?,
            "--keys" | "-k" => options.keys = parse_list(&value, |v| parse_number(&flag, v))?,
            "--config" => options.configs = parse_list(&value, Checkpoints::parse)?,
            "--runs" => options.runs = parse_number(&flag, &value)? as usize,
            "--window-ms" => options.window = Duration::from_millis(parse_number(&flag, &value)?),
            "--batch-size" => options.batch_size = Some(parse_number(&flag, &value)? as usize),
            "--chunk" => options.chunk = parse_number(&flag, &value)?,
            "--dir" => options.dir = PathBuf::from(value),
            "--scope" => options.scopes = parse_list(&value, parse_scope)?,
            "--hasher" => {
                options.fx = match value.as_str() {
                    "sip" => false,
                    "fx" => true,
                    _ => return Err(format!("unknown --hasher {value:?} (sip, fx)")),
                }
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
    Ok(options)
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
struct RunRecord {
    config: &'static str,
    /// The recovery scope (`-` for `bare`).
    scope: &'static str,
    hasher: &'static str,
    keys: u64,
    tuples: u64,
    run: usize,
    seconds: f64,
    tuples_per_second: f64,
    /// Checkpoints of the counter, the initial one included.
    checkpoints: u64,
    /// Size of the counter's last checkpoint, in bytes.
    last_checkpoint_bytes: u64,
    /// Streaming windows the counter completed.
    windows: u64,
    committed: Option<String>,
    /// The counter's longest checkpoint encode (its thread's pause), ms.
    max_encode_ms: f64,
    /// The counter's last checkpoint encode, ms.
    last_encode_ms: f64,
    /// The counter's longest encode-to-durable latency, ms.
    max_durable_ms: f64,
    /// Time to load and decode the counter's newest checkpoint from disk
    /// after the run (what a recovery pays for it), ms.
    restore_ms: Option<f64>,
    /// Peak resident set size of the process so far, MiB (Linux).
    peak_rss_mib: Option<f64>,
    /// Bytes the operators' replay buffers held in memory at the end of
    /// the run (0 in the global scope, where none are kept).
    replay_bytes: u64,
    result: u128,
    expected: u128,
    check: &'static str,
}

/// VmHWM from /proc/self/status.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The workload without the runtime: one thread, one loop, the same
/// operators' code paths (key, `HashMap` entry, sum).
fn run_bare<S: BuildHasher + Default>(options: &Options, keys: u64, expected: u128, run: usize) -> RunRecord {
    let started = Instant::now();
    let mut counts: HashMap<u64, u64, S> = HashMap::default();
    let mut total = 0u128;
    for i in 0..options.tuples {
        let count = counts.entry(splitmix64(i) % keys).or_default();
        *count += 1;
        total += u128::from(*count);
    }
    let seconds = started.elapsed().as_secs_f64();
    RunRecord {
        config: Checkpoints::Bare.name(),
        scope: "-",
        hasher: hasher_name(options),
        keys,
        tuples: options.tuples,
        run,
        seconds,
        tuples_per_second: options.tuples as f64 / seconds,
        checkpoints: 0,
        last_checkpoint_bytes: 0,
        windows: 0,
        committed: None,
        max_encode_ms: 0.0,
        last_encode_ms: 0.0,
        max_durable_ms: 0.0,
        restore_ms: None,
        peak_rss_mib: peak_rss_mib(),
        replay_bytes: 0,
        result: total,
        expected,
        check: if total == expected { "ok" } else { "MISMATCH" },
    }
}

fn hasher_name(options: &Options) -> &'static str {
    if options.fx { "fx" } else { "sip" }
}

fn run_once(
    options: &Options,
    (config, scope): (Checkpoints, RecoveryScope),
    keys: u64,
    expected: u128,
    run: usize,
) -> Result<RunRecord, String> {
    match (config, options.fx) {
        (Checkpoints::Bare, false) => Ok(run_bare::<RandomState>(options, keys, expected, run)),
        (Checkpoints::Bare, true) => Ok(run_bare::<Fx>(options, keys, expected, run)),
        (_, false) => run_job::<RandomState>(options, (config, scope), keys, expected, run),
        (_, true) => run_job::<Fx>(options, (config, scope), keys, expected, run),
    }
}

fn run_job<S: BuildHasher + Default + Send + Sync + 'static>(
    options: &Options,
    (config, scope): (Checkpoints, RecoveryScope),
    keys: u64,
    expected: u128,
    run: usize,
) -> Result<RunRecord, String> {
    let result = Arc::new(Mutex::new(None));
    let mut dag = Dag::new();
    let source = dag.input(
        "keys",
        Keys {
            next: 0,
            end: options.tuples,
            keys,
            chunk: options.chunk,
        },
    );
    let counter = dag.operator("count", Counter::<S>::default());
    let sink = dag.operator(
        "sum",
        SumCounts {
            total: 0,
            result: Arc::clone(&result),
        },
    );
    dag.connect(&source, &counter).connect(&counter, &sink);

    let mut runtime_config = Config::default()
        .window_mode(WindowMode::Time(options.window))
        .recovery_scope(scope);
    if let Some(batch) = options.batch_size {
        runtime_config = runtime_config.batch_size(batch);
    }
    // Kept alive until the run is over, then removed.
    let mut dir = None;
    if let Some(interval) = config.interval() {
        let every = u32::try_from(interval.as_nanos() / options.window.as_nanos()).map_err(|e| e.to_string())?;
        dag.default_checkpoint_window_count(every);
        let tmp = tempfile::Builder::new()
            .prefix("keyed-count-")
            .tempdir_in(&options.dir)
            .map_err(|e| format!("making a checkpoint directory in {}: {e}", options.dir.display()))?;
        let storage = FsStorageAgent::new(tmp.path()).map_err(|e| e.to_string())?;
        runtime_config = runtime_config.storage(storage);
        dir = Some(tmp);
    }

    let started = Instant::now();
    let report = Runtime::new(runtime_config)
        .run(dag)
        .map_err(|e| format!("{} K={keys}: the job failed: {e}", config.name()))?;
    let seconds = started.elapsed().as_secs_f64();
    // Recovery's cost for the counter: load its newest snapshot and decode it.
    let restore_ms = match &dir {
        Some(tmp) => {
            let storage = FsStorageAgent::new(tmp.path()).map_err(|e| e.to_string())?;
            let newest = *storage
                .windows("count")
                .map_err(|e| e.to_string())?
                .last()
                .ok_or("no checkpoint of `count`")?;
            let started = Instant::now();
            let bytes = storage.load("count", newest).map_err(|e| e.to_string())?;
            let (_, state) = checkpoint_core::Snapshot::decode::<Counter<S>>(&bytes).map_err(|e| e.to_string())?;
            let took = started.elapsed().as_secs_f64() * 1e3;
            drop(state);
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
        config: config.name(),
        scope: scope_name(scope),
        replay_bytes,
        hasher: hasher_name(options),
        keys,
        tuples: options.tuples,
        run,
        seconds,
        tuples_per_second: options.tuples as f64 / seconds,
        checkpoints: count.checkpoints,
        last_checkpoint_bytes: count.last_checkpoint_bytes,
        windows: count.windows,
        committed: report.committed.map(|w| w.to_string()),
        max_encode_ms: count.max_encode_time.as_secs_f64() * 1e3,
        last_encode_ms: count.last_encode_time.as_secs_f64() * 1e3,
        max_durable_ms: count.max_durable_latency.as_secs_f64() * 1e3,
        restore_ms,
        peak_rss_mib: peak_rss_mib(),
        result: got,
        expected,
        check: if got == expected && tuples_ok { "ok" } else { "MISMATCH" },
    })
}

/// Every (checkpoints, scope) pair to run; `bare` and `off` once, since the
/// scope only matters with checkpoints.
fn variants(options: &Options) -> Vec<(Checkpoints, RecoveryScope)> {
    let mut out = Vec::new();
    for &config in &options.configs {
        if config.interval().is_none() {
            out.push((config, options.scopes[0]));
        } else {
            out.extend(options.scopes.iter().map(|&scope| (config, scope)));
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

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("keyed_count: {e}");
            return ExitCode::from(2);
        }
    };
    let mut expectations = Vec::new();
    for &keys in &options.keys {
        let started = Instant::now();
        let value = expected(options.tuples, keys);
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
            for (config, scope) in variants(&options) {
                let record = match run_once(&options, (config, scope), keys, expected, run) {
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
                if record.check != "ok" {
                    eprintln!(
                        "keyed_count: WRONG RESULT for {} K={keys} N={}: got {}, expected {}",
                        record.config, record.tuples, record.result, record.expected
                    );
                    return ExitCode::FAILURE;
                }
                records.push(record);
            }
        }
    }

    eprintln!();
    eprintln!("| checkpoints | scope | K | N | runs | median s | median tuples/s | checkpoints | last checkpoint |");
    eprintln!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for &(keys, _) in &expectations {
        for (config, scope) in variants(&options) {
            let scope = if config == Checkpoints::Bare {
                "-"
            } else {
                scope_name(scope)
            };
            let runs: Vec<&RunRecord> = records
                .iter()
                .filter(|r| r.keys == keys && r.config == config.name() && r.scope == scope)
                .collect();
            let mut seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
            let mut rates: Vec<f64> = runs.iter().map(|r| r.tuples_per_second).collect();
            let mut checkpoints: Vec<f64> = runs.iter().map(|r| r.checkpoints as f64).collect();
            let bytes = runs.last().map_or(0, |r| r.last_checkpoint_bytes);
            eprintln!(
                "| {} | {scope} | {keys} | {} | {} | {:.2} | {:.2}M | {} | {:.1} MB |",
                config.name(),
                options.tuples,
                runs.len(),
                median(&mut seconds),
                median(&mut rates) / 1e6,
                median(&mut checkpoints),
                bytes as f64 / 1e6
            );
        }
    }
    ExitCode::SUCCESS
}
