//! Incremental keyed checkpoints and chunk retention survive SIGKILL.
//!
//! A child process (this test binary, re-run with `KEYED_CRASH_DIR` set)
//! runs a keyed job on an `FsStorageAgent` in a temp directory: a
//! deterministic input, a keyed counter with 2 partitions over 16 key
//! groups, a checkpoint every 2 windows. The keys are skewed (a few hot
//! keys, a cold key now and then), so each checkpoint writes the chunks of
//! a few groups and refers again to the rest, and retention deletes old
//! snapshots and the chunks only they referred to.
//!
//! The child is killed with SIGKILL
//! - by itself, from the storage agent's phase hook, at the k-th
//!   `ChunksWritten`, `ChunksDurable`, and each snapshot phase of a keyed
//!   operator's save;
//! - by itself, from a `StorageAgent` wrapping the `FsStorageAgent`, just
//!   before or just after the k-th `delete` (a snapshot gone, its chunks
//!   not yet) or `delete_chunk` (in the middle of a retention pass);
//! - by the parent, at a random moment after a random number of committed
//!   windows the child reports on stdout (seed printed; rerun with
//!   `KEYED_CRASH_SEED=<seed>`).
//!
//! After each kill the store as the crash left it is checked (every
//! snapshot decodes with all its chunks), then the parent runs the job to
//! completion on the same directory and checks:
//! 1. the final snapshots of the partitions hold exactly a plain count of
//!    the input;
//! 2. every stored snapshot decodes, with every chunk it refers to present
//!    and matching its reference;
//! 3. no chunk at or below its operator's newest snapshot is left that no
//!    snapshot refers to (retention collected what the crash left), and no
//!    chunk temp file is left.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    Checkpoint, ChunkId, FsStorageAgent, KeyGroups, KeyedMap, SavePhase, Snapshot, StorageAgent, StorageError,
    StorageLock, WindowId,
};
use checkpoint_runtime::{Config, Dag, Operator, OperatorContext, OperatorResult, Output, Runtime, WindowMode};
use common::{Counting, Tagged, with_watchdog_secs};

const BASE: u32 = 0x6553_f300;
const TUPLES: u64 = 6_000;
const WINDOW_TUPLES: u64 = 50;
const CHECKPOINT_EVERY: u32 = 2;
const PARTITIONS: usize = 2;
const KEY_GROUPS: u32 = 16;
const OPERATOR: &str = "count";
/// A child that reports nothing for this long is hung.
const WATCHDOG: Duration = Duration::from_secs(60);

const DIR_VAR: &str = "KEYED_CRASH_DIR";
const CRASH_VAR: &str = "KEYED_CRASH_AT";
const SEED_VAR: &str = "KEYED_CRASH_SEED";

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of input value `v`: one of 3 hot keys, except every 23rd value,
/// which goes to one of 300 cold keys. Between two checkpoints (100
/// tuples) the hot keys' groups and a few cold groups change; the other
/// groups' chunks are referred to again.
fn key_of(v: u64) -> u64 {
    if v.is_multiple_of(23) {
        1_000 + splitmix64(v) % 300
    } else {
        v % 3
    }
}

fn expected_counts() -> BTreeMap<u64, u64> {
    let mut expected = BTreeMap::new();
    for v in 0..TUPLES {
        *expected.entry(key_of(v)).or_insert(0) += 1;
    }
    expected
}

/// Counts tuples per key; with `report`, prints `committed <seq>` when
/// partition 0 hears a window is committed (the parent's progress gate).
#[derive(Default, Checkpoint)]
struct KeyedCounter {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
    tuples: u64,
    /// Configuration: a restored partition takes it from this run's DAG.
    #[checkpoint(config)]
    report: bool,
}

impl Operator for KeyedCounter {
    type Input = Tagged;
    type Output = ();

    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.report &= ctx.name() == "count#0";
        Ok(())
    }

    fn process(&mut self, t: Tagged, _out: Output<'_, ()>) -> OperatorResult {
        *self.counts.entry(key_of(t.value)).or_insert(0) += 1;
        self.tuples += 1;
        Ok(())
    }

    fn committed(&mut self, window: WindowId) -> OperatorResult {
        if self.report {
            println!("committed {}", window.sequence());
        }
        Ok(())
    }
}

fn key_groups() -> KeyGroups {
    KeyGroups::new(KEY_GROUPS).expect("valid")
}

fn dag(report: bool) -> Dag {
    let mut dag = Dag::new();
    let source = dag.input("source", Counting::new(TUPLES, 10));
    let count = dag.operator_partitioned(OPERATOR, PARTITIONS, move |_| KeyedCounter {
        report,
        ..KeyedCounter::default()
    });
    dag.connect_by_key(&source, &count, |t: &Tagged| key_of(t.value))
        .default_checkpoint_window_count(CHECKPOINT_EVERY);
    dag
}

fn config(storage: Arc<dyn StorageAgent>) -> Config {
    Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(WINDOW_TUPLES))
        .window_base(BASE)
        .batch_size(5)
        .key_groups(key_groups())
}

fn partitions() -> impl Iterator<Item = String> {
    (0..PARTITIONS).map(|p| format!("{OPERATOR}#{p}"))
}

// ---------------------------------------------------------------------------
// Crash points.

/// Where the child kills itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashAt {
    /// At the k-th time a keyed operator's save reaches this phase.
    Phase(SavePhase, u32),
    /// Just before (`false`) or after (`true`) the k-th `delete` of a
    /// keyed operator's snapshot.
    Delete { after: bool, k: u32 },
    /// Just before or after the k-th `delete_chunk`.
    DeleteChunk { after: bool, k: u32 },
}

fn phase_name(phase: SavePhase) -> &'static str {
    match phase {
        SavePhase::AfterWrite => "after-write",
        SavePhase::AfterFsync => "after-fsync",
        SavePhase::BeforeRename => "before-rename",
        SavePhase::AfterRename => "after-rename",
        SavePhase::AfterDirFsync => "after-dir-fsync",
        SavePhase::ChunksWritten => "chunks-written",
        SavePhase::ChunksDurable => "chunks-durable",
        _ => "unknown",
    }
}

const PHASES: [SavePhase; 7] = [
    SavePhase::ChunksWritten,
    SavePhase::ChunksDurable,
    SavePhase::AfterWrite,
    SavePhase::AfterFsync,
    SavePhase::BeforeRename,
    SavePhase::AfterRename,
    SavePhase::AfterDirFsync,
];

impl CrashAt {
    fn to_arg(self) -> String {
        let when = |after: bool| if after { "after" } else { "before" };
        match self {
            CrashAt::Phase(phase, k) => format!("phase {} {k}", phase_name(phase)),
            CrashAt::Delete { after, k } => format!("delete {} {k}", when(after)),
            CrashAt::DeleteChunk { after, k } => format!("delete-chunk {} {k}", when(after)),
        }
    }

    fn parse(arg: &str) -> CrashAt {
        let words: Vec<&str> = arg.split_whitespace().collect();
        let [what, how, k] = words[..] else {
            panic!("bad {CRASH_VAR}: {arg:?}");
        };
        let k: u32 = k.parse().expect("occurrence");
        match what {
            "phase" => CrashAt::Phase(
                *PHASES
                    .iter()
                    .find(|p| phase_name(**p) == how)
                    .unwrap_or_else(|| panic!("bad phase {how:?}")),
                k,
            ),
            "delete" => CrashAt::Delete {
                after: how == "after",
                k,
            },
            "delete-chunk" => CrashAt::DeleteChunk {
                after: how == "after",
                k,
            },
            _ => panic!("bad {CRASH_VAR}: {arg:?}"),
        }
    }
}

/// Reports the crash point on stdout and SIGKILLs this process.
fn crash_now(what: &str) -> ! {
    println!("crashing {what}");
    std::io::stdout().flush().expect("flush");
    // SAFETY: sending a signal to ourselves.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL is not caught");
}

/// An `FsStorageAgent` that kills the process at a chosen `delete` or
/// `delete_chunk`; every other call is forwarded as is.
#[derive(Debug)]
struct CrashingStorage {
    inner: FsStorageAgent,
    crash: Option<CrashAt>,
    deletes: AtomicU32,
    chunk_deletes: AtomicU32,
    /// Snapshots of keyed operators saved, and chunks saved.
    saves: AtomicU32,
    chunks_saved: AtomicU32,
}

impl CrashingStorage {
    /// Counts a `delete` (`chunks` false) or `delete_chunk` call before
    /// it is forwarded, and kills the process if it is the chosen one.
    fn deleting(&self, counter: &AtomicU32, chunks: bool, before: bool) {
        let n = if before {
            counter.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            counter.load(Ordering::SeqCst)
        };
        let Some(crash) = self.crash else {
            return;
        };
        let (after, k) = match crash {
            CrashAt::Delete { after, k } if !chunks => (after, k),
            CrashAt::DeleteChunk { after, k } if chunks => (after, k),
            _ => return,
        };
        if n == k && after != before {
            crash_now(&crash.to_arg());
        }
    }
}

impl StorageAgent for CrashingStorage {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        self.inner.save(operator, window, snapshot)?;
        if operator.starts_with(OPERATOR) {
            self.saves.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        self.inner.load(operator, window)
    }
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        let keyed = operator.starts_with(OPERATOR);
        if keyed {
            self.deleting(&self.deletes, false, true);
        }
        let result = self.inner.delete(operator, window);
        if keyed {
            self.deleting(&self.deletes, false, false);
        }
        result
    }
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        self.inner.windows(operator)
    }
    fn operators(&self) -> Result<Vec<String>, StorageError> {
        self.inner.operators()
    }
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        self.inner.save_manifest(manifest)
    }
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.load_manifest()
    }
    fn lock(&self) -> Result<StorageLock, StorageError> {
        self.inner.lock()
    }
    fn supports_chunks(&self) -> bool {
        self.inner.supports_chunks()
    }
    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        self.inner.save_chunks(operator, chunks)?;
        self.chunks_saved.fetch_add(chunks.len() as u32, Ordering::SeqCst);
        Ok(())
    }
    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        self.inner.load_chunk(operator, id)
    }
    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        self.deleting(&self.chunk_deletes, true, true);
        let result = self.inner.delete_chunk(operator, id);
        self.deleting(&self.chunk_deletes, true, false);
        result
    }
    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        self.inner.chunks(operator)
    }
    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        self.inner.set_aside(operator, window)
    }
}

fn storage(dir: &Path, crash: Option<CrashAt>) -> CrashingStorage {
    let mut inner = FsStorageAgent::new(dir).expect("agent");
    if let Some(CrashAt::Phase(phase, k)) = crash {
        let seen = AtomicU32::new(0);
        inner = inner.on_save_phase(move |operator, _window, p| {
            if p == phase && operator.starts_with(OPERATOR) && seen.fetch_add(1, Ordering::SeqCst) + 1 == k {
                crash_now(&CrashAt::Phase(phase, k).to_arg());
            }
        });
    }
    CrashingStorage {
        inner,
        crash,
        deletes: AtomicU32::new(0),
        chunk_deletes: AtomicU32::new(0),
        saves: AtomicU32::new(0),
        chunks_saved: AtomicU32::new(0),
    }
}

/// The child: runs the job on `KEYED_CRASH_DIR` (killing itself at
/// `KEYED_CRASH_AT`, if set), reporting committed windows, then `finished`.
#[test]
#[ignore = "child process of keyed_checkpoints_survive_sigkill"]
fn keyed_crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        panic!("run by keyed_checkpoints_survive_sigkill only");
    };
    let crash = std::env::var(CRASH_VAR).ok().map(|arg| CrashAt::parse(&arg));
    let storage: Arc<dyn StorageAgent> = Arc::new(storage(Path::new(&dir), crash));
    Runtime::new(config(storage)).run(dag(true)).expect("the job runs");
    println!("finished");
}

// ---------------------------------------------------------------------------
// The parent.

enum Line {
    Committed(u32),
    Crashing(String),
    Finished,
}

/// A running child and its progress lines; killed if dropped while alive.
struct ChildJob {
    process: Child,
    lines: mpsc::Receiver<Line>,
}

impl ChildJob {
    fn spawn(dir: &Path, crash: Option<CrashAt>) -> ChildJob {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "keyed_crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env_remove(CRASH_VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(crash) = crash {
            cmd.env(CRASH_VAR, crash.to_arg());
        }
        let mut process = cmd.spawn().expect("spawn child");
        let stdout = process.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness prints `test keyed_crash_child ... ` before the child's first line.
                let line = line.rsplit_once("... ").map_or(line.as_str(), |(_, rest)| rest);
                let parsed = if let Some(seq) = line.strip_prefix("committed ") {
                    match seq.trim().parse() {
                        Ok(seq) => Line::Committed(seq),
                        Err(_) => continue,
                    }
                } else if let Some(what) = line.strip_prefix("crashing ") {
                    Line::Crashing(what.trim().to_owned())
                } else if line.trim() == "finished" {
                    Line::Finished
                } else {
                    continue; // the test harness's own lines
                };
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        ChildJob { process, lines: rx }
    }

    /// The next progress line, `None` once the child's stdout closed.
    fn next(&mut self, context: &str) -> Option<Line> {
        match self.lines.recv_timeout(WATCHDOG) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.process.kill();
                let _ = self.process.wait();
                panic!("{context}: watchdog: child silent for {WATCHDOG:?}");
            }
        }
    }

    /// Waits for the child to exit (its stdout closed first) and checks it
    /// was SIGKILLed.
    fn wait_killed(mut self, context: &str) {
        let status = self.process.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{context}: child ended with {status:?}"
        );
    }
}

impl Drop for ChildJob {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// Every snapshot of a keyed operator decodes, with every chunk it refers
/// to present and matching its reference; the source's snapshots verify.
/// Returns each keyed operator's newest snapshot, decoded.
fn check_snapshots(agent: &FsStorageAgent, context: &str) -> BTreeMap<String, (WindowId, KeyedCounter)> {
    let mut newest = BTreeMap::new();
    for name in partitions() {
        for window in agent.windows(&name).expect("windows") {
            let bytes = agent
                .load(&name, window)
                .unwrap_or_else(|e| panic!("{context}: {name} at {window} does not load: {e}"));
            let (header, state) =
                Snapshot::decode_with_chunks::<KeyedCounter>(&bytes, &name, None, |op, id| agent.load_chunk(op, id))
                    .unwrap_or_else(|e| panic!("{context}: {name} at {window} does not restore: {e}"));
            assert_eq!(header.window, window, "{context}: {name}");
            assert!(
                !header.chunks.is_empty() || state.counts.is_empty(),
                "{context}: {name} at {window} is not incremental"
            );
            assert_eq!(
                state.tuples,
                state.counts.values().sum::<u64>(),
                "{context}: {name} at {window}"
            );
            newest.insert(name.clone(), (window, state));
        }
    }
    for window in agent.windows("source").expect("windows") {
        let bytes = agent.load("source", window).expect("load");
        Snapshot::verify(&bytes).unwrap_or_else(|e| panic!("{context}: source at {window} is corrupt: {e}"));
    }
    newest
}

/// No chunk at or below its operator's newest snapshot that no snapshot
/// refers to, and no chunk temp file.
fn check_no_garbage(agent: &FsStorageAgent, dir: &Path, context: &str) {
    for name in partitions() {
        let windows = agent.windows(&name).expect("windows");
        let newest = *windows.last().expect("a snapshot");
        let mut referenced = BTreeSet::new();
        for window in &windows {
            let header = Snapshot::read_header(&agent.load(&name, *window).expect("load")).expect("header");
            referenced.extend(header.chunks.iter().map(|c| c.id));
        }
        let garbage: Vec<String> = agent
            .chunks(&name)
            .expect("chunks")
            .into_iter()
            .filter(|id| id.window <= newest && !referenced.contains(id))
            .map(|id| id.to_string())
            .collect();
        assert!(
            garbage.is_empty(),
            "{context}: {name} keeps chunks no snapshot refers to (newest snapshot {newest}): {garbage:?}"
        );
        let temp: Vec<String> = std::fs::read_dir(dir.join(&name).join("chunks"))
            .map(|entries| {
                entries
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(temp.is_empty(), "{context}: {name} keeps chunk temp files: {temp:?}");
    }
}

/// What a rerun did, from the storage calls it made.
#[derive(Debug)]
struct RunStats {
    /// Snapshots of the keyed partitions saved.
    saves: u32,
    /// Chunks saved.
    chunks_saved: u32,
    /// Keyed snapshots deleted (retention, restart).
    deletes: u32,
    /// Chunks deleted.
    chunk_deletes: u32,
}

/// Runs the job to completion on `dir` in this process, then checks the
/// three properties.
fn finish_and_check(dir: &Path, context: &str) -> RunStats {
    let storage = Arc::new(storage(dir, None));
    let shared: Arc<dyn StorageAgent> = Arc::clone(&storage) as Arc<dyn StorageAgent>;
    let job_context = context.to_owned();
    with_watchdog_secs(60, move || {
        Runtime::new(config(shared))
            .run(dag(false))
            .unwrap_or_else(|e| panic!("{job_context}: the rerun fails: {e}"))
    });
    let stats = RunStats {
        saves: storage.saves.load(Ordering::SeqCst),
        chunks_saved: storage.chunks_saved.load(Ordering::SeqCst),
        deletes: storage.deletes.load(Ordering::SeqCst),
        chunk_deletes: storage.chunk_deletes.load(Ordering::SeqCst),
    };
    let agent = FsStorageAgent::new(dir).expect("agent");
    let newest = check_snapshots(&agent, context);
    // (1) The final counts are a plain count of the input.
    let mut seen = BTreeMap::new();
    for (name, (_, state)) in &newest {
        for (key, count) in state.counts.iter() {
            assert_eq!(
                seen.insert(*key, *count),
                None,
                "{context}: key {key} in two partitions ({name})"
            );
        }
    }
    assert_eq!(newest.len(), PARTITIONS, "{context}");
    assert_eq!(seen, expected_counts(), "{context}: final counts");
    assert_eq!(
        newest.values().map(|(_, s)| s.tuples).sum::<u64>(),
        TUPLES,
        "{context}: tuples counted"
    );
    // (3) Retention collected what the crash left.
    check_no_garbage(&agent, dir, &format!("{context} (the run that finished: {stats:?})"));
    stats
}

/// How a child dies.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// It kills itself at a chosen point.
    At(CrashAt),
    /// The parent kills it after it reported `commits` committed windows
    /// and a busy loop of `spin` iterations.
    After { commits: u64, spin: u64 },
}

impl Kill {
    fn describe(self) -> String {
        match self {
            Kill::At(crash) => format!("crash at {}", crash.to_arg()),
            Kill::After { commits, spin } => format!("kill after {commits} commits, spin {spin}"),
        }
    }
}

/// Runs a child on `dir` until `kill`, then checks the store it left.
/// Returns how it went, or `None` if the job finished first.
fn kill_child(dir: &Path, kill: Kill, context: &str) -> Option<String> {
    let crash = match kill {
        Kill::At(crash) => Some(crash),
        Kill::After { .. } => None,
    };
    let mut child = ChildJob::spawn(dir, crash);
    let mut committed = 0;
    let mut last_committed = None;
    let mut crashed = None;
    let mut finished = false;
    let mut killed = false;
    while let Some(line) = child.next(context) {
        match line {
            Line::Committed(seq) => {
                committed += 1;
                last_committed = Some(seq);
                if let Kill::After { commits, spin } = kill
                    && committed == commits
                    && !killed
                {
                    // Vary the instant of the kill within the next windows.
                    let mut x = 0u64;
                    for i in 0..spin {
                        x = std::hint::black_box(x.wrapping_add(i));
                    }
                    child.process.kill().expect("SIGKILL the child");
                    killed = true;
                }
            }
            Line::Crashing(what) => crashed = Some(what),
            Line::Finished => finished = true,
        }
    }
    if finished {
        let status = child.process.wait().expect("wait");
        assert!(crashed.is_none(), "{context}: crashed and finished");
        // Killed after it printed `finished`, or never reached the kill.
        assert!(
            status.success() || status.signal() == Some(libc::SIGKILL),
            "{context}: child ended with {status:?}"
        );
        return None;
    }
    child.wait_killed(context);
    if let Some(crash) = crash {
        assert_eq!(crashed.as_deref(), Some(crash.to_arg().as_str()), "{context}");
    } else {
        assert!(killed, "{context}: the child died on its own");
    }
    let how = format!(
        "{} (after {committed} commits, the last of window {last_committed:?})",
        kill.describe()
    );
    check_snapshots(
        &FsStorageAgent::new(dir).expect("agent"),
        &format!("{context}: {how}, as the kill left it"),
    );
    Some(how)
}

/// One kill on a fresh directory, then the job finished and checked.
fn kill_once(kill: Kill, context: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let how = kill_child(dir.path(), kill, context)
        .unwrap_or_else(|| panic!("{context}: the job finished before {}", kill.describe()));
    finish_and_check(dir.path(), &format!("{context}: {how}"));
}

/// A random kill for a chain: early in the resumed job.
fn random_kill(random: &mut impl FnMut(u64) -> u64) -> Kill {
    let after = random(2) == 1;
    match random(5) {
        0 | 1 => Kill::At(CrashAt::Phase(
            PHASES[random(PHASES.len() as u64) as usize],
            1 + random(4) as u32,
        )),
        2 => Kill::At(CrashAt::Delete {
            after,
            k: 1 + random(4) as u32,
        }),
        3 => Kill::At(CrashAt::DeleteChunk {
            after,
            k: 1 + random(8) as u32,
        }),
        _ => Kill::After {
            commits: 1 + random(12),
            spin: random(3_000_000),
        },
    }
}

#[test]
fn keyed_checkpoints_survive_sigkill() {
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("keyed crash test seed {seed} (rerun with {SEED_VAR}={seed})");
    let mut rng = seed;
    let mut random = move |n: u64| {
        rng = splitmix64(rng);
        rng % n
    };
    let started = Instant::now();

    // A clean run: the baseline for the checks, and a check that the job
    // has the shape the crash points need: many checkpoints, most groups'
    // chunks referred to again rather than written, retention deleting
    // snapshots and chunks.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = finish_and_check(dir.path(), &format!("clean run (seed {seed})"));
        println!("clean run: {stats:?} in {:?}", started.elapsed());
        let groups_per_partition = KEY_GROUPS / PARTITIONS as u32;
        assert!(stats.saves >= 100, "{stats:?}");
        assert!(
            stats.chunks_saved * 2 < stats.saves * groups_per_partition,
            "most groups should be referred to again: {stats:?}"
        );
        assert!(stats.deletes >= stats.saves / 2, "{stats:?}");
        assert!(stats.chunk_deletes >= 20, "{stats:?}");
        let agent = FsStorageAgent::new(dir.path()).expect("agent");
        for name in partitions() {
            let newest = *agent.windows(&name).expect("windows").last().expect("a snapshot");
            let header = Snapshot::read_header(&agent.load(&name, newest).expect("load")).expect("header");
            assert!(
                header.chunks.iter().any(|c| c.id.window < newest),
                "{name}: the final snapshot refers to no older chunk"
            );
        }
    }

    // Chosen crash points, each at the k-th occurrence.
    let mut kills: Vec<Kill> = PHASES
        .iter()
        .map(|phase| Kill::At(CrashAt::Phase(*phase, 2 + random(6) as u32)))
        .collect();
    for after in [false, true] {
        kills.push(Kill::At(CrashAt::Delete {
            after,
            k: 1 + random(6) as u32,
        }));
        kills.push(Kill::At(CrashAt::DeleteChunk {
            after,
            k: 1 + random(12) as u32,
        }));
    }
    // Random kills from outside, anywhere in the job.
    for _ in 0..4 {
        kills.push(Kill::After {
            commits: 1 + random(50),
            spin: random(3_000_000),
        });
    }
    for (i, kill) in kills.into_iter().enumerate() {
        let context = format!("kill {i} (seed {seed})");
        let t = Instant::now();
        kill_once(kill, &context);
        println!("{context}: {} ok in {:?}", kill.describe(), t.elapsed());
    }

    // Chains: several kills in a row on one directory, each child resuming
    // from what the previous one left (crashes during restarts, restores
    // from chunks, stale chunks of snapshots a restart deleted).
    for chain in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let mut done = Vec::new();
        for step in 0..4 {
            let kill = random_kill(&mut random);
            let context = format!("chain {chain} step {step} (seed {seed}; before: {done:?})");
            match kill_child(dir.path(), kill, &context) {
                Some(how) => done.push(how),
                None => {
                    done.push(format!("{}: the job finished first", kill.describe()));
                    break;
                }
            }
        }
        finish_and_check(dir.path(), &format!("chain {chain} (seed {seed}): {done:?}"));
        println!("chain {chain}: {done:?} ok in {:?}", t.elapsed());
    }
    println!("all crashes survived in {:?}", started.elapsed());
}

/// Kills at the end of the job: in its last retention passes, when the
/// rerun has little or nothing left to do (so it may run no retention pass
/// of its own to collect what the kill left). A kill between deleting a
/// snapshot and deleting its chunks (or half way through the chunks)
/// leaves chunks no snapshot refers to; the runtime collects them when a
/// job resumes and when it ends (`collect_all_chunks`), so the rerun
/// leaves none.
#[test]
fn kills_in_the_last_retention_passes() {
    let clean = tempfile::tempdir().expect("tempdir");
    let stats = finish_and_check(clean.path(), "clean run");
    let mut kills = Vec::new();
    for back in 0..3 {
        kills.push(Kill::At(CrashAt::Delete {
            after: true,
            k: stats.deletes - back,
        }));
        kills.push(Kill::At(CrashAt::DeleteChunk {
            after: false,
            k: stats.chunk_deletes - back,
        }));
        kills.push(Kill::At(CrashAt::DeleteChunk {
            after: true,
            k: stats.chunk_deletes - back,
        }));
    }
    let mut failures = Vec::new();
    for kill in kills {
        let dir = tempfile::tempdir().expect("tempdir");
        let context = format!("late {} (clean run: {stats:?})", kill.describe());
        match kill_child(dir.path(), kill, &context) {
            Some(how) => {
                let checked = std::panic::catch_unwind(|| finish_and_check(dir.path(), &format!("late {how}")));
                match checked {
                    Ok(rerun) => println!("{how}: ok, rerun {rerun:?}"),
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        // Would yet another run collect it?
                        let again = std::panic::catch_unwind(|| finish_and_check(dir.path(), "another run"));
                        failures.push(format!("{message}; another run collects it: {}", again.is_ok()));
                    }
                }
            }
            None => println!("{context}: the job finished first"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} late kills failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A kill at `ChunksWritten` leaves the batch's chunk temp files
/// (`<operator>/chunks/.<id>.tmp`). In the main test the rerun writes the
/// same chunks again (its windows are deterministic), which consumes them;
/// a job whose windows differ on the rerun (`WindowMode::Time`) never
/// writes those ids again, so the sweep a job runs before it starts,
/// `FsStorageAgent::remove_stale_temp_files`, removes them.
#[test]
fn the_stale_temp_sweep_removes_chunk_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kill = Kill::At(CrashAt::Phase(SavePhase::ChunksWritten, 3));
    kill_child(dir.path(), kill, "sweep").expect("killed at chunks-written");
    let temp_files = || -> Vec<String> {
        partitions()
            .flat_map(|name| {
                std::fs::read_dir(dir.path().join(&name).join("chunks"))
                    .map(|entries| {
                        entries
                            .map(|e| format!("{name}/chunks/{}", e.expect("entry").file_name().to_string_lossy()))
                            .filter(|n| n.ends_with(".tmp"))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    let before = temp_files();
    assert!(!before.is_empty(), "the kill left chunk temp files");
    let swept = FsStorageAgent::new(dir.path())
        .expect("agent")
        .remove_stale_temp_files()
        .expect("sweep");
    assert_eq!(
        temp_files(),
        Vec::<String>::new(),
        "swept {swept} files; before: {before:?}"
    );
}
