//! Edges of restart safety found in review: a stateless input that ended,
//! a graceful stop, two inputs of which one ends early, a save thread of a
//! failed incarnation (it must neither delete the new incarnation's
//! checkpoint nor write after the job returned), a hung initial save, good
//! checkpoints never labelled corrupt, and a restart whose restore read
//! fails having changed nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpoint_core::{Checkpoint, FsStorageAgent, StorageAgent, WindowId};
use checkpoint_runtime::io::{ExactlyOnceFileSink, LineInput, published_windows, read_output};
use checkpoint_runtime::{
    Config, Dag, Emit, InputOperator, Operator, OperatorResult, Output, RunError, RunReport, Runtime, WindowMode,
};

mod common;

use common::{Intercept, Op, eio, with_watchdog};

/// The saves that succeeded, in order.
fn successful_saves(storage: &Intercept) -> Vec<(String, WindowId)> {
    storage
        .calls("save")
        .into_iter()
        .filter(|c| c.ok)
        .map(|c| (c.operator, c.window))
        .collect()
}

const BASE: u32 = 0x6553_f100;

/// Per window: how many lines, and the running total (order-insensitive).
#[derive(Default, Checkpoint)]
struct Count {
    lines: u64,
    total: u64,
}

impl Operator for Count {
    type Input = String;
    type Output = String;
    fn process(&mut self, _line: String, _out: Output<'_, String>) -> OperatorResult {
        self.lines += 1;
        self.total += 1;
        Ok(())
    }
    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        out.emit(format!(
            "lines={} total={}",
            std::mem::take(&mut self.lines),
            self.total
        ));
        Ok(())
    }
}

/// A stateless input (an external queue that keeps its own position, say)
/// that has nothing left: it ends at once.
#[derive(Default, Checkpoint)]
#[checkpoint(stateless)]
struct DrainedQueue;

impl InputOperator for DrainedQueue {
    type Output = String;
    fn emit_tuples(&mut self, _out: Output<'_, String>) -> OperatorResult<Emit> {
        Ok(Emit::Done)
    }
}

fn sink_out(dir: &Path) -> PathBuf {
    dir.join("out")
}

/// Defect 1 of the issue, for a stateless input: a completed job run again
/// must publish nothing new.
#[test]
fn a_completed_job_with_a_stateless_input_run_again_publishes_nothing_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = || -> Result<RunReport, RunError> {
        let mut dag = Dag::new();
        let queue = dag.input("queue", DrainedQueue);
        let count = dag.operator("count", Count::default());
        let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(sink_out(dir.path())));
        dag.connect(&queue, &count).connect(&count, &sink);
        dag.default_checkpoint_window_count(2);
        let config = Config::default()
            .storage(FsStorageAgent::new(dir.path().join("checkpoints")).expect("storage"))
            .window_mode(WindowMode::Tuples(6))
            .window_base(BASE);
        with_watchdog(move || Runtime::new(config).run(dag))
    };
    run().expect("first run");
    let published = published_windows(sink_out(dir.path())).expect("published");
    let output = read_output(sink_out(dir.path())).expect("output");
    for again in 2..=3 {
        run().expect("run again");
        assert_eq!(
            published_windows(sink_out(dir.path())).expect("published"),
            published,
            "run {again} published another window; output now:\n{}",
            String::from_utf8_lossy(&read_output(sink_out(dir.path())).expect("output"))
        );
        assert_eq!(read_output(sink_out(dir.path())).expect("output"), output);
    }
}

/// Two inputs, one much shorter than the other, into one counter.
struct TwoInputs {
    dir: PathBuf,
}

impl TwoInputs {
    fn new(dir: &Path) -> Self {
        let short: String = (0..6).map(|i| format!("short {i}\n")).collect();
        let long: String = (0..40).map(|i| format!("long {i:03}\n")).collect();
        fs::write(dir.join("short.txt"), short).expect("input");
        fs::write(dir.join("long.txt"), long).expect("input");
        TwoInputs { dir: dir.to_path_buf() }
    }

    fn dag(&self) -> Dag {
        let mut dag = Dag::new();
        let short = dag.input("short", LineInput::new(self.dir.join("short.txt")).lines_per_call(2));
        let long = dag.input("long", LineInput::new(self.dir.join("long.txt")).lines_per_call(2));
        let count = dag.operator("count", Count::default());
        let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(sink_out(&self.dir)));
        dag.connect(&short, &count)
            .connect(&long, &count)
            .connect(&count, &sink);
        dag.default_checkpoint_window_count(2);
        dag
    }

    fn run(&self, storage: Arc<dyn StorageAgent>, restart_limit: u32) -> Result<RunReport, RunError> {
        let config = Config::default()
            .shared_storage(storage)
            .window_mode(WindowMode::Tuples(6))
            .window_base(BASE)
            .batch_size(4)
            .restart_limit(restart_limit);
        let dag = self.dag();
        with_watchdog(move || Runtime::new(config).run(dag))
    }

    /// The job's storage, failing the save of `fail` if given.
    fn storage(&self, fail: Option<(String, WindowId)>) -> Arc<Intercept> {
        let storage = Intercept::new(FsStorageAgent::new(self.dir.join("checkpoints")).expect("storage"));
        Arc::new(storage.before(move |_, op| match (op, &fail) {
            (Op::Save(o, w), Some((fo, fw))) if o == fo && w == *fw => Some(eio("writing (injected)")),
            _ => None,
        }))
    }

    fn output(&self) -> Vec<u8> {
        read_output(sink_out(&self.dir)).expect("output")
    }
}

/// Several inputs, one ended and one not: stopped at every save, resumed,
/// then run once more, the output is the uninterrupted run's.
#[test]
fn two_inputs_one_ending_early_stopped_at_every_save_resume_to_the_same_output() {
    let reference = tempfile::tempdir().expect("tempdir");
    let job = TwoInputs::new(reference.path());
    let storage = job.storage(None);
    job.run(storage.clone(), 5).expect("reference");
    let expected = job.output();
    let saves = successful_saves(&storage);
    let mut failures = Vec::new();
    for (operator, window) in saves {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = TwoInputs::new(dir.path());
        let _ = job.run(job.storage(Some((operator.clone(), window))), 0);
        if let Err(e) = job.run(job.storage(None), 0) {
            failures.push(format!("{operator}@{window}: restart failed: {e}"));
            continue;
        }
        if job.output() != expected {
            failures.push(format!(
                "{operator}@{window}: output differs:\n{}\nexpected:\n{}",
                String::from_utf8_lossy(&job.output()),
                String::from_utf8_lossy(&expected)
            ));
            continue;
        }
        if let Err(e) = job.run(job.storage(None), 0) {
            failures.push(format!("{operator}@{window}: run after completion failed: {e}"));
            continue;
        }
        if job.output() != expected {
            failures.push(format!(
                "{operator}@{window}: a completed job run again changed its output"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Requests a graceful stop when the total reaches a number, passing lines on.
#[derive(Default, Checkpoint)]
struct StopAt {
    #[checkpoint(transient)]
    stop: Option<checkpoint_runtime::StopHandle>,
    #[checkpoint(transient)]
    fired: Option<Arc<AtomicBool>>,
    seen: u64,
}

impl Operator for StopAt {
    type Input = String;
    type Output = String;
    fn process(&mut self, line: String, out: Output<'_, String>) -> OperatorResult {
        self.seen += 1;
        if self.seen == 13
            && let Some(stop) = &self.stop
        {
            stop.stop();
            if let Some(f) = &self.fired {
                f.store(true, Ordering::SeqCst);
            }
        }
        out.emit(line);
        Ok(())
    }
}

/// A graceful stop is not an end: the resumed job reads on.
#[test]
fn a_job_stopped_gracefully_resumes_to_the_same_output() {
    let reference = tempfile::tempdir().expect("tempdir");
    let one_run = |dir: &Path, stop: bool| {
        let job = TwoInputs::new(dir);
        let _ = &job;
        let config = Config::default()
            .storage(FsStorageAgent::new(dir.join("checkpoints")).expect("storage"))
            .window_mode(WindowMode::Tuples(6))
            .window_base(BASE)
            .batch_size(4);
        let runtime = Runtime::new(config);
        let fired = Arc::new(AtomicBool::new(false));
        let mut dag = Dag::new();
        let long = dag.input("long", LineInput::new(dir.join("long.txt")).lines_per_call(2));
        let gate = dag.operator(
            "gate",
            StopAt {
                stop: stop.then(|| runtime.stop_handle()),
                fired: Some(fired.clone()),
                seen: 0,
            },
        );
        let count = dag.operator("count", Count::default());
        let sink = dag.operator("sink", ExactlyOnceFileSink::<String>::new(sink_out(dir)));
        dag.connect(&long, &gate).connect(&gate, &count).connect(&count, &sink);
        dag.default_checkpoint_window_count(2);
        with_watchdog(move || runtime.run(dag)).expect("run");
        fired.load(Ordering::SeqCst)
    };
    one_run(reference.path(), false);
    let expected = read_output(sink_out(reference.path())).expect("output");
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(one_run(dir.path(), true), "the stop fired");
    one_run(dir.path(), false);
    assert_eq!(
        String::from_utf8_lossy(&read_output(sink_out(dir.path())).expect("output")),
        String::from_utf8_lossy(&expected)
    );
}

/// `Saver::stop` joins the saver only if it already finished: a save in
/// flight when the job fails goes on writing into the checkpoint directory
/// after `Runtime::run` returned and released the directory's lock, when
/// a restarted job (or `checkpoint purge`) may already hold it.
#[test]
fn no_checkpoint_is_written_after_the_job_returned_and_unlocked_its_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = TwoInputs::new(dir.path());
    let slow_window = WindowId::new(BASE, 3);
    // Slow storage for one save.
    let storage = Arc::new(
        Intercept::new(FsStorageAgent::new(dir.path().join("checkpoints")).expect("storage")).before(move |_, op| {
            if op == Op::Save("count", slow_window) {
                std::thread::sleep(std::time::Duration::from_millis(400));
            }
            None
        }),
    );
    let config = Config::default()
        .shared_storage(storage.clone())
        .window_mode(WindowMode::Tuples(6))
        .window_base(BASE)
        .batch_size(4)
        .restart_limit(0)
        .inject(checkpoint_runtime::Fault::panic("sink", 5));
    let dag = job.dag();
    let error = with_watchdog(move || Runtime::new(config).run(dag)).expect_err("the sink fails, no restarts");
    // The directory is free: a restarted job could hold it now, so every
    // save the job began must be over. The slow one was begun (count ended
    // window 3 before the sink could reach window 5) and takes longer than
    // the rest of the job: had the job left it running, it would not be
    // done yet.
    let _lock = FsStorageAgent::new(dir.path().join("checkpoints"))
        .expect("storage")
        .lock()
        .expect("the failed job released the directory");
    let done: Vec<String> = successful_saves(&storage)
        .iter()
        .map(|(op, w)| format!("{op}@{w}"))
        .collect();
    assert!(
        done.contains(&format!("count@{slow_window}")),
        "the job returned ({error}) with a save still running: done {done:?}"
    );
}

/// A save on the operator's own thread (the initial checkpoint; every
/// checkpoint with `async_checkpoints(false)`, of an EXACTLY_ONCE operator
/// or of a chained one) has the same deadline as a background one: storage
/// that hangs fails the job with a clear error instead of hanging it.
#[test]
fn a_hung_initial_save_ends_in_an_error_after_the_save_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = TwoInputs::new(dir.path());
    // Storage that never answers the initial save of `count`.
    let storage = Arc::new(
        Intercept::new(FsStorageAgent::new(dir.path().join("checkpoints")).expect("storage")).before(|_, op| {
            if let Op::Save("count", w) = op
                && w.sequence() == 0
            {
                loop {
                    std::thread::park();
                }
            }
            None
        }),
    );
    let config = Config::default()
        .shared_storage(storage)
        .window_mode(WindowMode::Tuples(6))
        .window_base(BASE)
        .save_timeout(std::time::Duration::from_millis(300))
        .stop_timeout(std::time::Duration::from_millis(300))
        .restart_limit(0);
    let dag = job.dag();
    let result = common::with_watchdog_secs(20, move || Runtime::new(config).run(dag));
    let error = result.expect_err("a hung save");
    assert!(error.to_string().contains("did not become durable"), "{error}");
}

/// `resume_from_storage` renames good checkpoints past a restore point that
/// a corrupt snapshot pushed behind the committed window to
/// `.<window>.corrupt`: the same name as a corrupt one. `checkpoint verify`
/// then lists them as corrupt and `checkpoint purge` deletes them as "a
/// corrupt checkpoint a restart set aside", although they verify.
#[test]
fn only_corrupt_snapshots_are_set_aside_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = TwoInputs::new(dir.path());
    job.run(job.storage(None), 0).expect("a complete run");
    let root = dir.path().join("checkpoints");
    let agent = FsStorageAgent::new(&root).expect("storage");
    let last = *agent
        .windows("sink")
        .expect("windows")
        .last()
        .expect("a final checkpoint");
    let path = root.join("sink").join(format!("{:016x}", last.as_u64()));
    let mut bytes = fs::read(&path).expect("read");
    let at = bytes.len() - 6;
    bytes[at] ^= 0x40;
    fs::write(&path, &bytes).expect("corrupt the sink's newest, committed checkpoint");
    // Retention may have kept an older checkpoint of the sink (then the
    // restart resumes from it) or not (the sink reached its end before the
    // last-but-one commit: then the restart cannot resume and says so).
    // Either way no good snapshot may be labelled corrupt.
    let notes = match job.run(job.storage(None), 0) {
        Ok(report) => report.notes,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("no usable checkpoint") && message.contains("corrupt"),
                "{message}"
            );
            Vec::new()
        }
    };
    let mut mislabelled = Vec::new();
    for operator in agent.operators().expect("operators") {
        for entry in fs::read_dir(root.join(&operator)).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name().into_string().expect("utf-8");
            if name.ends_with(".corrupt") {
                let bytes = fs::read(entry.path()).expect("read");
                if checkpoint_core::Snapshot::verify(&bytes).is_ok() {
                    mislabelled.push(format!("{operator}/{name}"));
                }
            }
        }
    }
    assert!(
        mislabelled.is_empty(),
        "good snapshots set aside as corrupt: {mislabelled:?} (notes: {notes:?})"
    );
}

fn snapshot_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in fs::read_dir(root).expect("list") {
        let dir = dir.expect("entry").path();
        if dir.is_dir() {
            for file in fs::read_dir(&dir).expect("list") {
                files.push(file.expect("entry").path());
            }
        }
    }
    files.sort();
    files
}

/// `resume_from_storage` deletes each operator's checkpoints past its
/// restore point, operator by operator, before it has loaded the next
/// operator's snapshot: a load that fails there (a transient EIO on the
/// second read) ends the restart with "nothing was deleted" after deletes.
#[test]
fn a_restore_that_fails_to_load_has_deleted_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = TwoInputs::new(dir.path());
    // Stopped half-way: the sink's fourth checkpoint fails, the others ran ahead.
    let reference = job.storage(None);
    {
        let probe = tempfile::tempdir().expect("tempdir");
        let probe_job = TwoInputs::new(probe.path());
        let log = probe_job.storage(None);
        probe_job.run(log.clone(), 0).expect("reference");
        let saves = successful_saves(&log);
        let stop_at = saves
            .iter()
            .filter(|(op, _)| op == "sink")
            .nth(3)
            .cloned()
            .expect("a 4th sink save");
        drop(reference);
        let _ = job.run(job.storage(Some(stop_at)), 0);
    }
    let root = dir.path().join("checkpoints");
    let before = snapshot_files(&root);
    // The plan reads each of the sink's snapshots once; the restore's
    // second read fails, a transient EIO.
    let loads = std::sync::atomic::AtomicUsize::new(0);
    let storage = Arc::new(Intercept::new(FsStorageAgent::new(&root).expect("storage")).before(
        move |inner, op| match op {
            Op::Load("sink", _) => {
                let n = loads.fetch_add(1, Ordering::SeqCst);
                let listed = inner.windows("sink").map_or(0, |w| w.len());
                (n >= listed).then(|| eio("reading (injected)"))
            }
            _ => None,
        },
    ));
    let error = job
        .run(storage, 0)
        .expect_err("the sink's snapshot cannot be read the second time");
    assert_eq!(
        snapshot_files(&root),
        before,
        "the failed restart ({error}) deleted files"
    );
}

/// A save that fails (here: panics after its bytes are written) is a
/// failure of the operator, and nothing more: no save thread deletes a
/// checkpoint, since a newer incarnation may have saved the same window
/// meanwhile (a failed save leaves nothing behind by the storage contract).
#[test]
fn a_failed_save_never_deletes_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = TwoInputs::new(dir.path());
    let failed_once = Arc::new(AtomicBool::new(false));
    let hook_failed = failed_once.clone();
    let inner = FsStorageAgent::new(dir.path().join("checkpoints"))
        .expect("storage")
        .on_save_phase(move |op, w, phase| {
            if op == "count"
                && w.sequence() == 3
                && phase == checkpoint_core::SavePhase::AfterRename
                && !hook_failed.swap(true, Ordering::SeqCst)
            {
                panic!("the disk went away after the rename");
            }
        });
    let storage = Arc::new(Intercept::new(inner));
    let config = Config::default()
        .shared_storage(storage.clone())
        .window_mode(WindowMode::Tuples(6))
        .window_base(BASE)
        .batch_size(4)
        .restart_limit(3);
    let dag = job.dag();
    let report = with_watchdog(move || Runtime::new(config).run(dag)).expect("recovers");
    assert!(failed_once.load(Ordering::SeqCst), "the save failed once");
    assert!(!report.recoveries.is_empty(), "the failed save was a failure");
    let by_savers: Vec<_> = storage
        .calls("delete")
        .into_iter()
        .filter(|c| c.thread.starts_with("save:"))
        .collect();
    assert!(by_savers.is_empty(), "save threads deleted checkpoints: {by_savers:?}");
}
