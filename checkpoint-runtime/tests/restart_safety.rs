//! Restarts that never lose or repeat output: a job stopped at every save
//! of its start-up, run and shut-down, then restarted; a completed job run
//! again; unreadable versus corrupt checkpoints; one job per directory;
//! settings a restart may not change.
//!
//! A stop is a save (or a manifest write) that fails with the job's restart
//! limit at 0: the job ends there, leaving on disk exactly what a kill at
//! that instant leaves (every save is atomic), and the next run resumes
//! from it. The SIGKILL tests of the examples kill real processes at random.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use checkpoint_core::{Checkpoint, FsStorageAgent, StorageAgent, StorageError, WindowId};
use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput, published_windows, read_output};
use checkpoint_runtime::{
    Config, Dag, Fault, JobManifest, Operator, OperatorResult, Output, ProcessingMode, RunError, RunReport, Runtime,
    WindowMode, plan_from_storage,
};

mod common;

use common::{Intercept, Op, eio, with_watchdog};

const BASE: u32 = 0x6553_f100;
const INPUT: &str = "lines";
const COUNT: &str = "count";
const SINK: &str = "sink";
const LINES: u64 = 40;

/// Per window: how many lines, and the first and last one.
#[derive(Default, Checkpoint)]
struct Summary {
    lines: u64,
    first: Option<String>,
    last: Option<String>,
    total: u64,
}

impl Operator for Summary {
    type Input = String;
    type Output = String;
    fn process(&mut self, line: String, _out: Output<'_, String>) -> OperatorResult {
        self.lines += 1;
        self.total += 1;
        if self.first.is_none() {
            self.first = Some(line.clone());
        }
        self.last = Some(line);
        Ok(())
    }
    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        out.emit(format!(
            "lines={} first={} last={} total={}",
            std::mem::take(&mut self.lines),
            self.first.take().unwrap_or_default(),
            self.last.take().unwrap_or_default(),
            self.total
        ));
        Ok(())
    }
}

/// Passes lines on, keeping nothing.
#[derive(Default, Checkpoint)]
#[checkpoint(stateless)]
struct PassLines;

impl Operator for PassLines {
    type Input = String;
    type Output = String;
    fn process(&mut self, line: String, out: Output<'_, String>) -> OperatorResult {
        out.emit(line);
        Ok(())
    }
}

/// Which saves or loads a rule picks, by operator and window.
type Rule = Box<dyn Fn(&str, WindowId) -> bool + Send + Sync>;

/// A filesystem agent under `root` that logs every call.
fn intercepted(root: &Path) -> Intercept {
    Intercept::new(FsStorageAgent::new(root).expect("storage"))
}

/// Fails the saves `rule` picks with EIO.
fn fail_save(storage: Intercept, rule: Rule) -> Intercept {
    storage.before(move |_, op| match op {
        Op::Save(o, w) if rule(o, w) => Some(eio("writing (injected)")),
        _ => None,
    })
}

/// Fails the `n`-th (1-based) manifest write with EIO.
fn fail_manifest(storage: Intercept, n: usize) -> Intercept {
    let writes = AtomicUsize::new(0);
    storage.before(move |_, op| match op {
        Op::SaveManifest if writes.fetch_add(1, Ordering::SeqCst) + 1 == n => {
            Some(eio("writing the manifest (injected)"))
        }
        _ => None,
    })
}

/// Fails the loads `rule` picks with EIO.
fn fail_load(storage: Intercept, rule: Rule) -> Intercept {
    storage.before(move |_, op| match op {
        Op::Load(o, w) if rule(o, w) => Some(eio("reading (injected)")),
        _ => None,
    })
}

/// Never returns from the saves `rule` picks.
fn hang_save(storage: Intercept, rule: Rule) -> Intercept {
    storage.before(move |_, op| {
        if let Op::Save(o, w) = op
            && rule(o, w)
        {
            loop {
                std::thread::park();
            }
        }
        None
    })
}

struct Job {
    root: PathBuf,
    text: PathBuf,
    out: PathBuf,
    checkpoints: PathBuf,
}

impl Job {
    fn new(root: &Path) -> Self {
        let job = Job::paths(root);
        let lines: String = (0..LINES).map(|i| format!("line {i:03}\n")).collect();
        fs::write(&job.text, lines).expect("input");
        job
    }

    /// The job in `root`, whose input is already written.
    fn paths(root: &Path) -> Self {
        Job {
            root: root.to_path_buf(),
            text: root.join("input.txt"),
            out: root.join("out"),
            checkpoints: root.join("checkpoints"),
        }
    }

    fn dag(&self) -> Dag {
        let mut dag = Dag::new();
        let lines = dag.input(INPUT, LineInput::new(&self.text).lines_per_call(2));
        let count = dag.operator(COUNT, Summary::default());
        let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(&self.out));
        dag.connect(&lines, &count).connect(&count, &sink);
        dag.default_checkpoint_window_count(2);
        dag
    }

    fn config(&self, storage: Arc<dyn StorageAgent>) -> Config {
        Config::default()
            .shared_storage(storage)
            .window_mode(WindowMode::Tuples(6))
            .window_base(BASE)
            .batch_size(4)
    }

    fn run_with(&self, storage: Arc<dyn StorageAgent>) -> Result<RunReport, RunError> {
        Runtime::new(self.config(storage)).run(self.dag())
    }

    fn run(&self) -> Result<RunReport, RunError> {
        self.run_with(Arc::new(FsStorageAgent::new(&self.checkpoints).expect("storage")))
    }

    fn output(&self) -> Vec<u8> {
        read_output(&self.out).expect("output")
    }

    fn published(&self) -> Vec<WindowId> {
        published_windows(&self.out).expect("published")
    }
}

/// A short fingerprint of a file's bytes (FNV-1a), for readable diffs.
fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{} bytes, {hash:016x}", bytes.len())
}

/// Every file under `dir` with a digest of its bytes (directories and FIFOs
/// by kind).
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("list") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("type");
            if kind.is_dir() {
                files.insert(entry.path(), "<dir>".to_owned());
                stack.push(entry.path());
            } else if kind.is_file() {
                files.insert(entry.path(), digest(&fs::read(entry.path()).expect("read")));
            } else {
                files.insert(entry.path(), "<other>".to_owned());
            }
        }
    }
    files
}

/// One run that never failed.
struct Reference {
    /// What it published.
    output: Vec<u8>,
    /// Every snapshot it saved, in order.
    saves: Vec<(String, WindowId)>,
    /// How many times it wrote the manifest.
    manifests: usize,
}

/// The reference: one run that never failed, with every save it made.
fn reference() -> Reference {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    let storage = Arc::new(intercepted(&job.checkpoints));
    job.run_with(storage.clone()).expect("reference run");
    let saves = storage
        .calls("save")
        .into_iter()
        .filter(|c| c.ok)
        .map(|c| (c.operator, c.window))
        .collect();
    let manifests = storage.calls("manifest").len();
    Reference {
        output: job.output(),
        saves,
        manifests,
    }
}

/// Stops a job where `fail` says, then restarts it until it completes, and
/// runs it once more: the output is the reference's, and the last run
/// publishes nothing.
fn stop_and_resume(what: &str, expected: &[u8], fail: impl FnOnce(Intercept) -> Intercept) {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    let storage = fail(intercepted(&job.checkpoints));
    let stopped = Runtime::new(job.config(Arc::new(storage)).restart_limit(0)).run(job.dag());
    // A failure after the job's last commit cannot stop it any more.
    if let Err(e) = &stopped {
        assert!(!e.to_string().is_empty(), "{what}");
    }
    let resumed = job.run().unwrap_or_else(|e| panic!("{what}: the restart failed: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&job.output()),
        String::from_utf8_lossy(expected),
        "{what}: output after the restart ({:?})",
        resumed.notes
    );
    let published = job.published();
    job.run()
        .unwrap_or_else(|e| panic!("{what}: the run after completion failed: {e}"));
    assert_eq!(job.published(), published, "{what}: a completed job published more");
    assert_eq!(job.output(), expected, "{what}: a completed job changed its output");
}

#[test]
fn a_completed_job_run_again_publishes_nothing_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    job.run().expect("first run");
    let output = job.output();
    let published = job.published();
    assert!(published.len() >= 6, "{published:?}");
    for run in 2..=3 {
        let report = job.run().expect("run again");
        assert_eq!(job.published(), published, "run {run} published another window");
        assert_eq!(job.output(), output, "run {run}");
        let tuples: u64 = report.operators.iter().map(|o| o.tuples_in).sum();
        assert_eq!(tuples, 0, "run {run} processed tuples again: {:?}", report.operators);
    }
}

#[test]
fn a_job_stopped_at_any_checkpoint_save_resumes_to_the_same_output() {
    let Reference {
        output: expected,
        saves,
        ..
    } = reference();
    // Initial checkpoints (start-up), every later one, and the final ones
    // (shut-down).
    for (operator, window) in saves {
        let what = format!("stopped at the save of {operator} at {window}");
        stop_and_resume(&what, &expected, |storage| {
            fail_save(storage, Box::new(move |op, w| op == operator && w == window))
        });
    }
}

#[test]
fn a_job_stopped_at_any_manifest_write_resumes_to_the_same_output() {
    let Reference {
        output: expected,
        manifests,
        ..
    } = reference();
    assert!(manifests >= 4, "{manifests} manifest writes");
    for n in 1..=manifests {
        stop_and_resume(&format!("stopped at manifest write {n}"), &expected, |storage| {
            fail_manifest(storage, n)
        });
    }
}

#[test]
fn a_job_stopped_before_any_initial_checkpoint_resumes_as_new() {
    let expected = reference().output;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    let storage = fail_save(intercepted(&job.checkpoints), Box::new(|_, w| w.sequence() == 0));
    let stopped = Runtime::new(job.config(Arc::new(storage)).restart_limit(0)).run(job.dag());
    assert!(stopped.is_err(), "every initial checkpoint failed");
    let agent = FsStorageAgent::new(&job.checkpoints).expect("storage");
    let manifest =
        JobManifest::from_bytes(&agent.load_manifest().expect("read").expect("written first")).expect("manifest");
    let plan = plan_from_storage(&agent, &manifest).expect("plan");
    assert_eq!(plan.problem(), None, "{plan:?}");
    let report = job.run().expect("resume");
    assert!(
        report.notes.iter().any(|n| n.contains("starts as new")),
        "{:?}",
        report.notes
    );
    assert_eq!(job.output(), expected);
}

/// A job stopped half-way: its newest checkpoints are past the committed
/// window.
fn half_done(job: &Job, saves: &[(String, WindowId)]) {
    let (_, stop_at) = saves
        .iter()
        .filter(|(op, _)| op == SINK)
        .nth(3)
        .cloned()
        .expect("a fourth sink checkpoint");
    let storage = fail_save(
        intercepted(&job.checkpoints),
        Box::new(move |op, w| op == SINK && w == stop_at),
    );
    let stopped = Runtime::new(job.config(Arc::new(storage)).restart_limit(0)).run(job.dag());
    assert!(stopped.is_err());
}

/// A job stopped half-way in a directory of its own, and the output an
/// uninterrupted run publishes.
fn stopped_half_way() -> (tempfile::TempDir, Job, Vec<u8>) {
    let Reference { output, saves, .. } = reference();
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    half_done(&job, &saves);
    (dir, job, output)
}

fn newest(job: &Job, operator: &str) -> WindowId {
    *FsStorageAgent::new(&job.checkpoints)
        .expect("storage")
        .windows(operator)
        .expect("windows")
        .last()
        .expect("a checkpoint")
}

#[test]
fn an_unreadable_checkpoint_stops_the_restart_and_changes_nothing() {
    let (_dir, job, expected) = stopped_half_way();
    let unreadable = newest(&job, COUNT);
    let before = tree(&job.root);
    let storage = fail_load(
        intercepted(&job.checkpoints),
        Box::new(move |op, w| op == COUNT && w == unreadable),
    );
    let error = job.run_with(Arc::new(storage)).expect_err("an unreadable checkpoint");
    let message = error.to_string();
    assert!(
        message.contains("\"count\"")
            && message.contains(&unreadable.to_string())
            && message.contains("cannot be read"),
        "{message}"
    );
    assert_eq!(tree(&job.root), before, "the failed restart changed files");
    // Readable again: the job resumes and nothing was lost.
    job.run().expect("resume");
    assert_eq!(job.output(), expected);
}

#[test]
fn a_corrupt_checkpoint_is_set_aside_never_deleted() {
    let (_dir, job, expected) = stopped_half_way();
    let corrupt = newest(&job, COUNT);
    let path = job.checkpoints.join(COUNT).join(format!("{:016x}", corrupt.as_u64()));
    let mut bytes = fs::read(&path).expect("read");
    let at = bytes.len() - 6;
    bytes[at] ^= 0x40;
    fs::write(&path, &bytes).expect("corrupt it");
    let report = job.run().expect("resume past a corrupt checkpoint");
    assert_eq!(job.output(), expected);
    let aside = job
        .checkpoints
        .join(COUNT)
        .join(format!(".{:016x}.corrupt", corrupt.as_u64()));
    assert_eq!(fs::read(&aside).expect("set aside, not deleted"), bytes);
    assert!(
        report.notes.iter().any(|n| n.contains("set aside")),
        "{:?}",
        report.notes
    );
}

#[test]
fn a_directory_or_fifo_named_like_a_checkpoint_is_not_one() {
    let (_dir, job, expected) = stopped_half_way();
    let later = WindowId::new(BASE, 0xff);
    let as_dir = job.checkpoints.join(COUNT).join(format!("{:016x}", later.as_u64()));
    fs::create_dir(&as_dir).expect("mkdir");
    let fifo = job.checkpoints.join(SINK).join(format!("{:016x}", later.as_u64()));
    let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    job.run().expect("resume");
    assert_eq!(job.output(), expected);
    assert!(as_dir.is_dir(), "left alone");
    assert!(fs::symlink_metadata(&fifo).is_ok(), "left alone");
}

#[test]
fn an_unreadable_checkpoint_during_a_recovery_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    let storage = fail_load(intercepted(&job.checkpoints), Box::new(|op, _| op == COUNT));
    let config = job.config(Arc::new(storage)).inject(Fault::panic(COUNT, 5));
    let error = Runtime::new(config).run(job.dag()).expect_err("cannot recover");
    let message = error.to_string();
    assert!(
        message.contains("cannot be used") && message.contains("\"count\"") && !message.contains("out of order"),
        "{message}"
    );
}

#[test]
fn a_second_job_on_a_locked_directory_is_refused_and_touches_nothing() {
    let (_dir, job, expected) = stopped_half_way();
    let before = tree(&job.root);
    // Another process's job holds the checkpoint directory.
    let held = FsStorageAgent::new(&job.checkpoints)
        .expect("storage")
        .lock()
        .expect("lock");
    let second = job.run().expect_err("the directory is in use");
    assert!(
        matches!(second, RunError::Storage(StorageError::Locked { .. })),
        "{second}"
    );
    assert!(second.to_string().contains("in use by another job"), "{second}");
    assert_eq!(tree(&job.root), before, "the refused job changed files");
    drop(held);
    // Another one holds the output directory: the sink refuses it.
    let published = job.published();
    let held = checkpoint_core::lock_directory(&job.out, "output").expect("lock");
    let error = Runtime::new(
        job.config(Arc::new(FsStorageAgent::new(&job.checkpoints).expect("storage")))
            .restart_limit(0),
    )
    .run(job.dag())
    .expect_err("the output directory is in use");
    assert!(error.to_string().contains("in use by another job"), "{error}");
    assert_eq!(job.published(), published, "the refused job published");
    drop(held);
    job.run().expect("alone again, it resumes");
    assert_eq!(job.output(), expected);
}

#[test]
fn a_job_started_while_another_runs_is_refused_and_the_first_is_unharmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    // The first job, its input held idle (so it cannot finish) until
    // released.
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = job.config(Arc::new(FsStorageAgent::new(&job.checkpoints).expect("storage")));
    let runtime = Runtime::new(config);
    let mut dag = Dag::new();
    let held = dag.input(
        INPUT,
        Held {
            next: 0,
            released: Some(released.clone()),
        },
    );
    let count = dag.operator(COUNT, Summary::default());
    let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(&job.out));
    dag.connect(&held, &count).connect(&count, &sink);
    dag.default_checkpoint_window_count(2);
    let first = std::thread::spawn(move || runtime.run(dag));
    // Its sink is set up (and holds the output directory) once its initial
    // checkpoint exists.
    let view = FsStorageAgent::new(&job.checkpoints).expect("storage");
    while view.windows(SINK).map(|w| w.is_empty()).unwrap_or(true) {
        assert!(!first.is_finished(), "the first job ended early");
        std::thread::yield_now();
    }
    let second = with_watchdog({
        let job = Job::paths(dir.path());
        move || job.run()
    })
    .expect_err("the directory is in use");
    assert!(
        matches!(second, RunError::Storage(StorageError::Locked { .. })),
        "{second}"
    );
    // Another job with checkpoints of its own, publishing into the same
    // output directory.
    let other_root = dir.path().join("other");
    fs::create_dir_all(&other_root).expect("mkdir");
    let other = Job {
        out: job.out.clone(),
        ..Job::new(&other_root)
    };
    let error = with_watchdog(move || {
        let storage = Arc::new(FsStorageAgent::new(&other.checkpoints).expect("storage"));
        Runtime::new(other.config(storage).restart_limit(0)).run(other.dag())
    })
    .expect_err("the output directory is in use");
    assert!(error.to_string().contains("in use by another job"), "{error}");
    // The first job finishes as if alone: every line counted once.
    released.store(true, Ordering::SeqCst);
    with_watchdog(move || first.join().expect("thread")).expect("the first job");
    let output = String::from_utf8(job.output()).expect("utf-8");
    let lines: u64 = output
        .lines()
        .filter_map(|l| l.strip_prefix("lines=")?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(lines, LINES, "{output}");
    assert!(output.trim_end().ends_with(&format!("total={LINES}")), "{output}");
}

#[test]
fn every_setting_a_restart_may_not_change_is_its_own_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    let saves = reference().saves;
    half_done(&job, &saves);
    let storage = || -> Arc<dyn StorageAgent> { Arc::new(FsStorageAgent::new(&job.checkpoints).expect("storage")) };
    let try_run = |config: Config, dag: Dag| {
        Runtime::new(config)
            .run(dag)
            .expect_err("a changed setting")
            .to_string()
    };

    let message = try_run(job.config(storage()).window_mode(WindowMode::Tuples(7)), job.dag());
    assert!(
        message.contains("window mode") && message.contains("tuples 6") && message.contains("tuples 7"),
        "{message}"
    );

    let mut dag = job.dag();
    dag.default_checkpoint_window_count(4);
    let message = try_run(job.config(storage()), dag);
    assert!(
        message.contains("checkpoint window count") && message.contains('2') && message.contains('4'),
        "{message}"
    );

    type Change =
        Box<dyn Fn(&mut Dag, &checkpoint_runtime::Node<String, String>, &checkpoint_runtime::Node<String, ()>)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "the application window count of operator \"count\" was 1 when the job started and is 2 now",
            Box::new(|dag, count, _| {
                dag.application_window_count(count, 2);
            }),
        ),
        (
            "the checkpoint window count of operator \"count\" was 2 when the job started and is 4 now",
            Box::new(|dag, count, _| {
                dag.checkpoint_window_count(count, 4);
            }),
        ),
        (
            "the processing mode of operator \"sink\" was at-least-once when the job started and is at-most-once now",
            Box::new(|dag, _, sink| {
                dag.processing_mode(sink, ProcessingMode::AtMostOnce);
            }),
        ),
    ];
    for (expected, change) in changes {
        let mut dag = Dag::new();
        let lines = dag.input(INPUT, LineInput::new(&job.text).lines_per_call(2));
        let count = dag.operator(COUNT, Summary::default());
        let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(&job.out));
        dag.connect(&lines, &count).connect(&count, &sink);
        dag.default_checkpoint_window_count(2);
        change(&mut dag, &count, &sink);
        let message = try_run(job.config(storage()), dag);
        assert!(message.contains(expected), "{message}");
    }

    // The same name, now a stateless operator.
    let mut dag = Dag::new();
    let lines = dag.input(INPUT, LineInput::new(&job.text).lines_per_call(2));
    let count = dag.operator(COUNT, PassLines);
    let sink = dag.operator(SINK, ExactlyOnceFileSink::<String>::new(&job.out));
    dag.connect(&lines, &count).connect(&count, &sink);
    dag.default_checkpoint_window_count(2);
    let message = try_run(job.config(storage()), dag);
    assert!(
        message
            .contains("the statelessness of operator \"count\" was stateful when the job started and is stateless now"),
        "{message}"
    );

    // Unchanged, it resumes.
    job.run().expect("the same settings resume");
}

#[test]
fn a_save_that_never_completes_fails_the_job_after_the_save_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    // The checkpoint at window 3 hangs in storage forever.
    let storage = hang_save(
        intercepted(&job.checkpoints),
        Box::new(|op, w| op == COUNT && w.sequence() == 3),
    );
    let config = job
        .config(Arc::new(storage))
        .save_timeout(std::time::Duration::from_millis(300))
        .restart_limit(0);
    let error = with_watchdog(move || Runtime::new(config).run(job.dag())).expect_err("a hung save");
    let message = error.to_string();
    assert!(
        message.contains("\"count\"") && message.contains("did not become durable"),
        "{message}"
    );
}

/// Emits `LINES` lines, one per call, once released; idle until then.
#[derive(Checkpoint)]
struct Held {
    next: u64,
    #[checkpoint(transient)]
    released: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl checkpoint_runtime::InputOperator for Held {
    type Output = String;
    fn emit_tuples(&mut self, out: Output<'_, String>) -> OperatorResult<checkpoint_runtime::Emit> {
        if !self.released.as_ref().is_some_and(|r| r.load(Ordering::SeqCst)) {
            return Ok(checkpoint_runtime::Emit::Idle);
        }
        out.emit(format!("line {:03}", self.next));
        self.next += 1;
        Ok(if self.next == LINES {
            checkpoint_runtime::Emit::Done
        } else {
            checkpoint_runtime::Emit::Continue
        })
    }
}

/// Passes lines on; blocks for ever in the `end_window` of window 2 once
/// (telling the test it did).
#[derive(Default, Checkpoint)]
struct Stuck {
    #[checkpoint(transient)]
    window: Option<WindowId>,
    #[checkpoint(transient)]
    blocked: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Operator for Stuck {
    type Input = String;
    type Output = String;
    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = Some(window);
        Ok(())
    }
    fn process(&mut self, line: String, out: Output<'_, String>) -> OperatorResult {
        out.emit(line);
        Ok(())
    }
    fn end_window(&mut self, _out: Output<'_, String>) -> OperatorResult {
        if let (Some(blocked), Some(2)) = (&self.blocked, self.window.map(|w| w.sequence()))
            && !blocked.swap(true, Ordering::SeqCst)
        {
            loop {
                std::thread::park();
            }
        }
        Ok(())
    }
}

/// Fails in `process` once `Stuck` is blocked.
#[derive(Default, Checkpoint)]
struct FailWhenBlocked {
    #[checkpoint(transient)]
    blocked: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Operator for FailWhenBlocked {
    type Input = String;
    type Output = String;
    fn process(&mut self, line: String, out: Output<'_, String>) -> OperatorResult {
        if self.blocked.as_ref().is_some_and(|b| b.load(Ordering::SeqCst)) {
            return Err("failing while its downstream is stuck".into());
        }
        out.emit(line);
        Ok(())
    }
}

#[test]
fn a_thread_that_does_not_stop_after_a_failure_ends_the_job_after_the_stop_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = Job::new(dir.path());
    let blocked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut dag = Dag::new();
    let lines = dag.input(INPUT, LineInput::new(&job.text).lines_per_call(1));
    let fail = dag.operator(
        COUNT,
        FailWhenBlocked {
            blocked: Some(blocked.clone()),
        },
    );
    let stuck = dag.operator(
        "stuck",
        Stuck {
            window: None,
            blocked: Some(blocked),
        },
    );
    dag.connect(&lines, &fail).connect(&fail, &stuck);
    dag.default_checkpoint_window_count(2);
    let config = job
        .config(Arc::new(FsStorageAgent::new(&job.checkpoints).expect("storage")))
        .window_mode(WindowMode::Tuples(2))
        .stop_timeout(std::time::Duration::from_millis(300))
        .restart_limit(3);
    let error = with_watchdog(move || Runtime::new(config).run(dag)).expect_err("a stuck thread");
    let message = error.to_string();
    assert!(
        message.contains("\"stuck\"") && message.contains("did not stop within"),
        "{message}"
    );
}
