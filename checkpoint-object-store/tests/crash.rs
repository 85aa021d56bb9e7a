//! A job checkpointing to an S3 endpoint survives SIGKILL: killed at
//! chosen points of its storage calls and at random progress points, then
//! run again on the same prefix, it publishes byte for byte what an
//! uninterrupted run publishes, through `io::ExactlyOnceFileSink` and
//! through `ExactlyOnceObjectSink`.
//!
//! The child process is this test binary, re-run with `S3_CRASH_URL` set:
//! numbers -> a keyed counter (`KeyedMap`, incremental chunks) -> both
//! sinks, checkpointed to the endpoint every 2 windows. It kills itself
//! from a storage agent wrapping the `ObjectStoreAgent` just before or
//! just after the k-th call of a kind (`S3_CRASH_AT`), or the parent kills
//! it after a random number of committed windows it reports (seed printed;
//! rerun with `S3_CRASH_SEED=<seed>`). A watchdog fails a silent child.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    Checkpoint, ChunkId, KeyGroups, KeyedMap, ManifestVersion, StorageAgent, StorageError, StorageLock, WindowId,
    splitmix64,
};
use checkpoint_object_store::{ExactlyOnceObjectSink, ObjectOutput, ObjectStoreAgent};
use checkpoint_runtime::io::{ExactlyOnceFileSink, read_output};
use checkpoint_runtime::{Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, Runtime, WindowMode};

const TUPLES: u64 = 1_500;
const KEYS: u64 = 40;
/// Short, so a restart takes a killed job's lease over quickly, but not so
/// short that a loaded machine (2 cores compiling while moto answers) lets
/// a live job's renewals lapse: at 400 ms a run once stopped itself with
/// `LeaseUncertain` after 200 ms without a renewal.
const LEASE: Duration = Duration::from_millis(1_000);
const WATCHDOG: Duration = Duration::from_secs(90);

const URL_VAR: &str = "S3_CRASH_URL";
const OUT_VAR: &str = "S3_CRASH_OUT";
const CRASH_VAR: &str = "S3_CRASH_AT";
const SEED_VAR: &str = "S3_CRASH_SEED";

#[derive(Checkpoint)]
struct Numbers {
    next: u64,
}

impl InputOperator for Numbers {
    type Output = u64;
    fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
        let end = (self.next + 7).min(TUPLES);
        for n in self.next..end {
            out.emit(n);
        }
        self.next = end;
        Ok(if self.next == TUPLES {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// Counts per key; emits `n key count` for each tuple, and with `report`
/// prints `committed <seq>` (the parent's progress gate).
#[derive(Default, Checkpoint)]
struct Count {
    #[checkpoint(keyed)]
    counts: KeyedMap<u64, u64>,
    #[checkpoint(config)]
    report: bool,
}

impl Operator for Count {
    type Input = u64;
    type Output = String;
    fn process(&mut self, n: u64, out: Output<'_, String>) -> OperatorResult {
        let key = splitmix64(n) % KEYS;
        let count = self.counts.entry(key).or_insert(0);
        *count += 1;
        out.emit(format!("{n} {key} {count}"));
        Ok(())
    }
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        if self.report {
            println!("committed {}", window.sequence());
            std::io::stdout().flush().expect("flush");
        }
        Ok(())
    }
}

/// Where a run checkpoints and publishes.
struct Place {
    checkpoints: String,
    objects: String,
    dir: std::path::PathBuf,
}

fn job(place: &Place, storage: Arc<dyn StorageAgent>, report: bool) -> (Dag, Config) {
    let mut dag = Dag::new();
    let numbers = dag.input("numbers", Numbers { next: 0 });
    let count = dag.operator(
        "count",
        Count {
            report,
            ..Count::default()
        },
    );
    let files = dag.operator("file-sink", ExactlyOnceFileSink::<String>::new(&place.dir));
    let objects = dag.operator(
        "object-sink",
        ExactlyOnceObjectSink::<String>::new(Arc::new(output(&place.objects))),
    );
    dag.connect(&numbers, &count)
        .connect(&count, &files)
        .connect(&count, &objects)
        .default_checkpoint_window_count(2);
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(50))
        .window_base(0x6553_f500)
        .key_groups(KeyGroups::new(8).expect("valid"))
        .restart_limit(0);
    (dag, config)
}

fn output(url: &str) -> ObjectOutput {
    let settings = common::settings();
    ObjectOutput::from_url_with(url, settings.iter().map(|(k, v)| (*k, v.as_str()))).expect("output")
}

fn agent(url: &str) -> ObjectStoreAgent {
    common::agent_at(url).with_lease(LEASE)
}

// ---------------------------------------------------------------------------
// Crash points.

/// A storage call the child can die at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    SaveChunks,
    Save,
    Delete,
    DeleteChunk,
    Manifest,
}

impl Call {
    const ALL: [Call; 5] = [
        Call::SaveChunks,
        Call::Save,
        Call::Delete,
        Call::DeleteChunk,
        Call::Manifest,
    ];

    fn name(self) -> &'static str {
        match self {
            Call::SaveChunks => "save-chunks",
            Call::Save => "save",
            Call::Delete => "delete",
            Call::DeleteChunk => "delete-chunk",
            Call::Manifest => "manifest",
        }
    }
}

/// Dies just before (`after` false) or just after the `k`-th `call`.
#[derive(Debug, Clone, Copy)]
struct CrashAt {
    call: Call,
    after: bool,
    k: u32,
}

impl CrashAt {
    fn to_arg(self) -> String {
        format!(
            "{} {} {}",
            self.call.name(),
            if self.after { "after" } else { "before" },
            self.k
        )
    }

    fn parse(arg: &str) -> CrashAt {
        let words: Vec<&str> = arg.split_whitespace().collect();
        let [call, when, k] = words[..] else {
            panic!("bad {CRASH_VAR}: {arg:?}");
        };
        CrashAt {
            call: *Call::ALL.iter().find(|c| c.name() == call).expect("a call"),
            after: when == "after",
            k: k.parse().expect("k"),
        }
    }
}

fn crash_now(what: &str) -> ! {
    println!("crashing {what}");
    std::io::stdout().flush().expect("flush");
    // SAFETY: sending a signal to ourselves.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL is not caught");
}

/// The object-store agent, dying at the chosen call.
#[derive(Debug)]
struct Crashing {
    inner: ObjectStoreAgent,
    crash: Option<CrashAt>,
    seen: [AtomicU32; 5],
}

impl Crashing {
    fn around<T>(&self, call: Call, f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
        let index = Call::ALL.iter().position(|c| *c == call).expect("a call");
        let n = self.seen[index].fetch_add(1, Ordering::SeqCst) + 1;
        let chosen = self.crash.filter(|c| c.call == call && c.k == n);
        if let Some(crash) = chosen.filter(|c| !c.after) {
            crash_now(&crash.to_arg());
        }
        let result = f();
        if let Some(crash) = chosen.filter(|c| c.after) {
            crash_now(&crash.to_arg());
        }
        result
    }
}

impl StorageAgent for Crashing {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        self.around(Call::Save, || self.inner.save(operator, window, snapshot))
    }
    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        self.inner.load(operator, window)
    }
    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        self.around(Call::Delete, || self.inner.delete(operator, window))
    }
    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        self.inner.windows(operator)
    }
    fn operators(&self) -> Result<Vec<String>, StorageError> {
        self.inner.operators()
    }
    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        self.around(Call::Manifest, || self.inner.save_manifest(manifest))
    }
    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.load_manifest()
    }
    fn load_manifest_versioned(&self) -> Result<Option<(Vec<u8>, ManifestVersion)>, StorageError> {
        self.inner.load_manifest_versioned()
    }
    fn replace_manifest(
        &self,
        manifest: &[u8],
        expected: Option<&ManifestVersion>,
    ) -> Result<ManifestVersion, StorageError> {
        self.around(Call::Manifest, || self.inner.replace_manifest(manifest, expected))
    }
    fn lock(&self) -> Result<StorageLock, StorageError> {
        self.inner.lock()
    }
    fn supports_chunks(&self) -> bool {
        self.inner.supports_chunks()
    }
    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        self.around(Call::SaveChunks, || self.inner.save_chunks(operator, chunks))
    }
    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        self.inner.load_chunk(operator, id)
    }
    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        self.around(Call::DeleteChunk, || self.inner.delete_chunk(operator, id))
    }
    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        self.inner.chunks(operator)
    }
    fn set_aside(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        self.inner.set_aside(operator, window)
    }
}

fn place_from_env() -> Option<Place> {
    Some(Place {
        checkpoints: std::env::var(URL_VAR).ok()?,
        objects: std::env::var(OUT_VAR).ok()?,
        dir: std::env::var_os("S3_CRASH_DIR")?.into(),
    })
}

/// The child: runs the job, dying where `S3_CRASH_AT` says, if set.
#[test]
#[ignore = "child process of a_job_on_s3_survives_sigkill"]
fn s3_crash_child() {
    let place = place_from_env().expect("run by a_job_on_s3_survives_sigkill only");
    let crash = std::env::var(CRASH_VAR).ok().map(|arg| CrashAt::parse(&arg));
    let storage = Crashing {
        inner: agent(&place.checkpoints),
        crash,
        seen: Default::default(),
    };
    let (dag, config) = job(&place, Arc::new(storage), true);
    Runtime::new(config).run(dag).expect("the job runs");
    println!("finished");
}

// ---------------------------------------------------------------------------
// The parent.

fn fresh_place(root: &Path, name: &str) -> Place {
    Place {
        checkpoints: common::location(&format!("{name}/checkpoints")),
        objects: common::location(&format!("{name}/out")),
        dir: root.join(name),
    }
}

/// What both sinks published.
fn published(place: &Place) -> (Vec<u8>, Vec<u8>) {
    (
        read_output(&place.dir).expect("file output"),
        output(&place.objects).read_output().expect("object output"),
    )
}

/// How the child dies.
#[derive(Debug, Clone, Copy)]
enum Kill {
    At(CrashAt),
    /// The parent kills it once it reported this many commits.
    After(u32),
}

/// Runs a child until it dies as `kill` says; whether it died (a random
/// kill may come after the job finished).
fn run_child(place: &Place, kill: Kill, context: &str) -> bool {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "s3_crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(URL_VAR, &place.checkpoints)
        .env(OUT_VAR, &place.objects)
        .env("S3_CRASH_DIR", &place.dir)
        .env("CHECKPOINT_S3_ENDPOINT", common::endpoint())
        .env_remove(CRASH_VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Kill::At(crash) = kill {
        command.env(CRASH_VAR, crash.to_arg());
    }
    let mut child = command.spawn().expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut commits = 0;
    let mut killed = false;
    loop {
        match rx.recv_timeout(WATCHDOG) {
            Ok(line) => {
                if line.contains("committed ") {
                    commits += 1;
                    if matches!(kill, Kill::After(n) if n == commits) && !killed {
                        child.kill().expect("SIGKILL the child");
                        killed = true;
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{context}: watchdog: the child was silent for {WATCHDOG:?}");
            }
        }
    }
    let status = child.wait().expect("wait");
    match status.signal() {
        Some(libc::SIGKILL) => true,
        _ => {
            assert!(status.success(), "{context}: the child ended with {status:?}");
            assert!(
                matches!(kill, Kill::After(_)),
                "{context}: the chosen crash point was never reached"
            );
            false
        }
    }
}

/// Runs the job to its end on `place`, in this process.
fn finish(place: &Place, context: &str) {
    let (dag, config) = job(place, Arc::new(agent(&place.checkpoints)), false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Runtime::new(config).run(dag));
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(result) => {
            result.unwrap_or_else(|e| panic!("{context}: the run after the kill fails: {e}"));
        }
        Err(_) => panic!("{context}: watchdog: the run after the kill did not finish in {WATCHDOG:?}"),
    }
}

#[test]
fn a_job_on_s3_survives_sigkill() {
    let root = tempfile::tempdir().expect("tempdir");
    let reference = fresh_place(root.path(), "reference");
    finish(&reference, "the uninterrupted run");
    let expected = published(&reference);
    assert!(!expected.0.is_empty());
    assert_eq!(expected.0, expected.1, "both sinks publish the same lines");
    assert_eq!(expected.0.iter().filter(|b| **b == b'\n').count() as u64, TUPLES);

    let mut kills: Vec<Kill> = Vec::new();
    for call in Call::ALL {
        for after in [false, true] {
            kills.push(Kill::At(CrashAt { call, after, k: 3 }));
        }
    }
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("random kills: seed {seed} (rerun with {SEED_VAR}={seed})");
    for i in 0..3 {
        kills.push(Kill::After(1 + (splitmix64(seed.wrapping_add(i)) % 12) as u32));
    }
    for (i, kill) in kills.iter().enumerate() {
        let context = format!("{kill:?} (seed {seed})");
        let place = fresh_place(root.path(), &format!("run-{i}"));
        let died = run_child(&place, *kill, &context);
        println!(
            "{context}: {}",
            if died { "killed" } else { "finished before the kill" }
        );
        finish(&place, &context);
        let got = published(&place);
        assert!(got.0 == expected.0, "{context}: the file sink published other bytes");
        assert!(got.1 == expected.1, "{context}: the object sink published other bytes");
    }
}
