//! Power cuts under the exactly-once job: whatever was not fsync'd is lost,
//! and the published output after a restart must still be byte-identical
//! to that of a run that never failed.
//!
//! The job (`power-loss-job`: `LineInput` -> a per-window operator ->
//! `ExactlyOnceFileSink`, deterministic windows) keeps its checkpoints and
//! its output on a FUSE mount of [`lazyfs::LazyFs`], which keeps what was
//! written apart from what was fsync'd (file data after `fsync`, directory
//! entries after an fsync of the directory) and at a cut keeps only the
//! latter. A cut turns the power off at a chosen file system operation, the
//! job is killed with SIGKILL, the cut is applied, the file system is
//! mounted again and the job restarted until it completes; then the power is
//! cut once more, and what is published must equal the reference.
//!
//! Three layouts, because a lost directory hides behind its parent: a
//! storage root the library creates (`state/checkpoints`) beside an output
//! directory that already existed, an output directory the library creates
//! (`results/out`) beside an existing storage root, and both existing (only
//! the sink's `.pending` and the operators' directories are new). Every
//! start of the job passes a new window base, as the wall clock would after
//! a reboot; a job resumed from its checkpoints keeps its own, so a job that
//! lost them publishes under other window ids.
//!
//! Cuts fire at chosen points (before the first operation, once the storage
//! root exists, once the first checkpoint is durable, right after a publish
//! in mid-run, right before the final checkpoint is durable) and at random
//! operations after random progress reported by the job: in a new job's
//! start-up before its initial checkpoints are durable, and after its final
//! checkpoint too. A job that completed is run once more, and must publish
//! nothing new.
//!
//! Unreadable versus corrupt checkpoints, on the same mount, with real
//! processes: the file system makes chosen files fail to read with `EIO`
//! or `EACCES` ([`lazyfs::LazyFs::fail_reads`]; as root, `chmod` cannot).
//! A job stopped half-way by a cut whose newest checkpoint of one operator
//! (or whose manifest) cannot be read must refuse to restart, naming the
//! file and the error, and change nothing: the whole tree (every path and
//! its bytes) is the same before and after; once the file reads again it
//! resumes to the reference output. The same checkpoint corrupt (a byte
//! flipped through the mount) is set aside as `.<16 hex>.corrupt` with its
//! bytes and the output stays exact. A running job whose recovery (of an
//! injected failure, `POWER_LOSS_JOB_FAIL`) meets an unreadable checkpoint
//! fails naming it, never with "out of order". A directory named like a
//! newer checkpoint is not one: the restart leaves it alone.
//!
//! Each run prints its seed; `CHECKPOINT_POWER_SEED=<seed>` repeats its
//! random choices (where a cut lands still depends on thread timing), and
//! `CHECKPOINT_POWER_CASES=<n>` cuts `n` jobs instead of 30. A job
//! silent for [`WATCHDOG`] is killed and the test fails. Without
//! `/dev/fuse` the tests fail, unless `CHECKPOINT_SKIP_FUSE=1`.
#![cfg(target_os = "linux")]

#[path = "power_loss/lazyfs.rs"]
mod lazyfs;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use checkpoint_core::{FsStorageAgent, StorageAgent as _, WindowId};
use checkpoint_runtime::io::{published_windows, read_output};
use checkpoint_runtime::{JobManifest, plan_from_storage};
use fuser::Errno;
use lazyfs::{Entry, FailAt, LazyFs, Mount, OpKind, Trigger};

const JOB: &str = env!("CARGO_BIN_EXE_power-loss-job");
/// A job that reports nothing (no progress line, no cut, no exit) for this
/// long is hung.
const WATCHDOG: Duration = Duration::from_secs(30);
const LINES: usize = 62;
const WINDOW_LINES: u64 = 3;
const CHECKPOINT_WINDOWS: u32 = 2;
/// The window base of the first start of every job.
const BASE: u32 = 1_700_000_000;
/// Jobs the random test cuts (`CHECKPOINT_POWER_CASES` overrides it, for a
/// longer soak).
const RANDOM_CASES: usize = 30;

/// Where a job keeps its checkpoints and its output, relative to the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The library creates the storage root; the output directory exists.
    NewStorageRoot,
    /// The library creates the output directory; the storage root exists.
    NewOutputDir,
    /// Both exist.
    Existing,
}

impl Layout {
    const ALL: [Layout; 3] = [Layout::NewStorageRoot, Layout::NewOutputDir, Layout::Existing];

    fn storage(self) -> &'static str {
        match self {
            Layout::NewStorageRoot => "state/checkpoints",
            _ => "checkpoints",
        }
    }

    fn output(self) -> &'static str {
        match self {
            Layout::NewOutputDir => "results/out",
            _ => "out",
        }
    }

    /// The directories that exist, durably, before the job first starts.
    fn existing(self) -> &'static [&'static str] {
        match self {
            Layout::NewStorageRoot => &["out"],
            Layout::NewOutputDir => &["checkpoints"],
            Layout::Existing => &["checkpoints", "out"],
        }
    }
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic random source.
struct Rng(u64);

impl Rng {
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = splitmix64(self.0);
        self.0 % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("CHECKPOINT_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn input_text() -> String {
    (0..LINES)
        .map(|i| format!("line {i:03} {:x}\n", splitmix64(i as u64) >> 40))
        .collect()
}

/// What the job must publish, computed from the input alone: every line
/// numbered across the input, each window closed by its line count.
fn expected_output() -> Vec<u8> {
    let text = input_text();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut n = 0;
    for window in lines.chunks(WINDOW_LINES as usize) {
        for line in window {
            n += 1;
            let _ = writeln!(out, "{n} {line}");
        }
        let _ = writeln!(out, "-- {} lines", window.len());
    }
    out.into_bytes()
}

fn window_name(window: WindowId) -> String {
    format!("{:016x}", window.as_u64())
}

/// Fails the test unless `/dev/fuse` can be opened; `false` (skip) if it
/// cannot and `CHECKPOINT_SKIP_FUSE=1`.
fn fuse_available() -> bool {
    match fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => true,
        Err(e) if std::env::var("CHECKPOINT_SKIP_FUSE").as_deref() == Ok("1") => {
            eprintln!("power_loss: skipped: /dev/fuse cannot be opened ({e}) and CHECKPOINT_SKIP_FUSE=1");
            false
        }
        Err(e) => panic!(
            "power_loss: /dev/fuse cannot be opened ({e}): these tests need FUSE (the `fuse` kernel module and \
             the rights to mount, as root). Set CHECKPOINT_SKIP_FUSE=1 to skip them."
        ),
    }
}

/// What the job reports, and the file system's cuts.
#[derive(Debug)]
enum Event {
    Line(String),
    /// The job closed its output: it exited.
    Eof,
    /// A cut fired, before this operation.
    Cut(String),
}

/// A started job; killed on drop.
struct Job {
    child: Child,
    events: mpsc::Receiver<Event>,
    sender: mpsc::Sender<Event>,
    stderr: Option<JoinHandle<String>>,
    lines: Vec<String>,
    /// The job closed its output.
    ended: bool,
}

impl Job {
    /// The next event; fails the test after [`WATCHDOG`] of silence.
    fn next(&mut self, fs: &LazyFs, context: &str) -> Event {
        if self.ended {
            return Event::Eof;
        }
        match self.events.recv_timeout(WATCHDOG) {
            Ok(event) => {
                match &event {
                    Event::Line(line) => self.lines.push(line.clone()),
                    Event::Eof => self.ended = true,
                    Event::Cut(_) => {}
                }
                event
            }
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr();
                panic!(
                    "{context}: watchdog: nothing from the job for {WATCHDOG:?}; its last lines {:?}; \
                     the file system's last operations {:?}; stderr:\n{stderr}",
                    self.lines.iter().rev().take(5).collect::<Vec<_>>(),
                    fs.recent_ops(),
                );
            }
        }
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Kills the job (it is dead when this returns).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the job's end: it must have failed. Returns its lines and
    /// its standard error.
    fn failure(mut self, fs: &LazyFs, context: &str) -> (Vec<String>, String) {
        loop {
            match self.next(fs, context) {
                Event::Eof => break,
                Event::Cut(at) => panic!("{context}: a cut fired in a run meant to fail, at {at}"),
                Event::Line(_) => {}
            }
        }
        let status = self.child.wait().expect("wait for the job");
        let stderr = self.stderr();
        assert!(
            !status.success(),
            "{context}: the job succeeded; its last lines {:?}; stderr:\n{stderr}",
            self.lines.iter().rev().take(5).collect::<Vec<_>>(),
        );
        (std::mem::take(&mut self.lines), stderr)
    }

    /// Waits for the job's end: it must have succeeded. Returns its lines.
    fn finish(mut self, fs: &LazyFs, context: &str) -> Vec<String> {
        loop {
            match self.next(fs, context) {
                Event::Eof => break,
                Event::Cut(at) => panic!("{context}: a cut fired in a run meant to complete, at {at}"),
                Event::Line(_) => {}
            }
        }
        let status = self.child.wait().expect("wait for the job");
        let stderr = self.stderr();
        assert!(
            status.success() && self.lines.last().map(String::as_str) == Some("done"),
            "{context}: the job failed ({status}); its last lines {:?}; the file system's last operations {:?}; \
             stderr:\n{stderr}",
            self.lines.iter().rev().take(5).collect::<Vec<_>>(),
            fs.recent_ops(),
        );
        std::mem::take(&mut self.lines)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mounted file system, the job's directories on it, and its input.
struct Machine {
    _dir: tempfile::TempDir,
    input: PathBuf,
    mountpoint: PathBuf,
    fs: LazyFs,
    /// Unmounted when the machine is dropped (before the temporary
    /// directory holding the mount point goes), even when a test fails.
    mount: Option<Mount>,
    layout: Layout,
    /// Starts of the job so far (each gets a new window base).
    starts: u32,
}

impl Machine {
    fn new(layout: Layout) -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("input.txt");
        fs::write(&input, input_text()).expect("write the input");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint).expect("mkdir mountpoint");
        let fs = LazyFs::new();
        let mount = fs.mount(&mountpoint).unwrap_or_else(|e| {
            panic!(
                "power_loss: mounting the FUSE file system at {} failed ({e}): these tests mount as root \
                 (CAP_SYS_ADMIN), with no libfuse or fusermount. Set CHECKPOINT_SKIP_FUSE=1 to skip them.",
                mountpoint.display()
            )
        });
        let machine = Machine {
            _dir: dir,
            input,
            mountpoint,
            fs,
            mount: Some(mount),
            layout,
            starts: 0,
        };
        for existing in layout.existing() {
            // Made durable by hand, as a directory that has long existed.
            fs::create_dir(machine.path(existing)).expect("mkdir");
            File::open(&machine.mountpoint)
                .and_then(|d| d.sync_all())
                .expect("fsync the mount's root");
        }
        machine
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }

    fn storage(&self) -> PathBuf {
        self.path(self.layout.storage())
    }

    fn output(&self) -> PathBuf {
        self.path(self.layout.output())
    }

    /// Starts the job with the next window base.
    fn start(&mut self) -> Job {
        self.start_with(&[])
    }

    /// Starts the job with the next window base and these environment
    /// variables.
    fn start_with(&mut self, env: &[(&str, &str)]) -> Job {
        let base = BASE + self.starts;
        self.starts += 1;
        let path = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        let mut child = Command::new(JOB)
            .args([
                path(&self.input),
                path(&self.storage()),
                path(&self.output()),
                base.to_string(),
                WINDOW_LINES.to_string(),
                CHECKPOINT_WINDOWS.to_string(),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start power-loss-job");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (sender, events) = mpsc::channel();
        let lines = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(Event::Line(line)).is_err() {
                    return;
                }
            }
            let _ = lines.send(Event::Eof);
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Job {
            child,
            events,
            sender,
            stderr: Some(stderr),
            lines: Vec::new(),
            ended: false,
        }
    }

    /// Arms a cut that reports to `job`.
    fn arm(&self, job: &Job, trigger: Trigger) {
        let sender = job.sender.clone();
        self.fs.arm(trigger, move |at| {
            let _ = sender.send(Event::Cut(at));
        });
    }

    /// Kills the job (if any), cuts the power and boots again: unmount,
    /// keep only what was durable, mount.
    fn power_cut(&mut self, job: Option<Job>) {
        self.fs.power_off();
        if let Some(job) = job {
            job.kill();
        }
        if let Some(mount) = self.mount.take() {
            mount.unmount().expect("unmount the FUSE file system");
        }
        self.fs.power_cut();
        self.mount = Some(
            self.fs
                .mount(&self.mountpoint)
                .expect("mount the FUSE file system again"),
        );
    }

    /// The published windows' sequence numbers, checking they share one
    /// window base (a job that lost its checkpoints after publishing starts
    /// again under a new one).
    fn published_sequences(&self, context: &str) -> Vec<u32> {
        let windows = published_windows(self.output()).expect("list published windows");
        assert!(
            windows.iter().all(|w| w.base_seconds() == windows[0].base_seconds()),
            "{context}: windows published under several window bases (a restart lost the checkpoints): {windows:?}"
        );
        windows.iter().map(|w| w.sequence()).collect()
    }

    /// Checks that what is published is a prefix of the reference, window
    /// by window.
    fn check_prefix(&self, reference: &Reference, context: &str) {
        let sequences = self.published_sequences(context);
        assert!(
            reference.sequences.starts_with(&sequences),
            "{context}: published windows {sequences:?} are not a prefix of the reference's {:?}",
            reference.sequences
        );
        let windows = published_windows(self.output()).expect("list published windows");
        for (window, expected) in windows.iter().zip(&reference.window_bytes) {
            let bytes = fs::read(self.output().join(window_name(*window))).expect("read a published window");
            assert!(
                &bytes == expected,
                "{context}: published window {window} differs from the reference"
            );
        }
    }

    /// Runs the job to its end (once more if it `completed` already: a
    /// completed job run again publishes nothing), cuts the power once more
    /// and checks the published output against the reference.
    fn complete_and_check(&mut self, completed: bool, reference: &Reference, context: &str) {
        // A cut armed late in a job that completed first has not fired.
        self.fs.disarm();
        self.start().finish(&self.fs, context);
        if completed {
            self.start().finish(&self.fs, context);
        }
        self.power_cut(None);
        let windows = self.published_sequences(context);
        let output = read_output(self.output()).expect("read the published output");
        if output != reference.output || windows != reference.sequences {
            let at = output.iter().zip(&reference.output).take_while(|(a, b)| a == b).count();
            panic!(
                "{context}: after the job completed and a last power cut, the published output ({} bytes, {} \
                 windows) differs from an uninterrupted run's ({} bytes, {} windows) from byte {at}; published \
                 windows {:?}..{:?}",
                output.len(),
                windows.len(),
                reference.output.len(),
                reference.sequences.len(),
                windows.first(),
                windows.last(),
            );
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Nothing may still use the mount: a failing test may leave the
        // power off, and unmounting must not wait for anything.
        self.fs.power_off();
        if let Some(mount) = self.mount.take() {
            drop(mount);
        }
    }
}

/// An uninterrupted run.
struct Reference {
    output: Vec<u8>,
    windows: Vec<WindowId>,
    sequences: Vec<u32>,
    window_bytes: Vec<Vec<u8>>,
    /// The sink's final checkpoint file, relative to the storage root.
    final_checkpoint: String,
    /// Progress lines (`checkpoint ...`) the job reported.
    checkpoint_reports: u64,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let mut machine = Machine::new(Layout::Existing);
        let lines = machine.start().finish(&machine.fs, "the reference run");
        let checkpoint_reports = lines.iter().filter(|l| l.starts_with("checkpoint ")).count() as u64;
        machine.power_cut(None);
        let output = read_output(machine.output()).expect("read the reference output");
        assert!(
            output == expected_output(),
            "the reference run published:\n{}\nexpected:\n{}",
            String::from_utf8_lossy(&output),
            String::from_utf8_lossy(&expected_output())
        );
        let windows = published_windows(machine.output()).expect("list published windows");
        let window_bytes = windows
            .iter()
            .map(|w| fs::read(machine.output().join(window_name(*w))).expect("read a window"))
            .collect();
        let last = *windows.last().expect("published windows");
        assert!(
            machine.storage().join("sink").join(window_name(last)).is_file(),
            "the reference run has no sink checkpoint at its last window {last}"
        );
        Reference {
            output,
            sequences: windows.iter().map(|w| w.sequence()).collect(),
            windows,
            window_bytes,
            final_checkpoint: format!("sink/{}", window_name(last)),
            checkpoint_reports,
        }
    })
}

/// A chosen cut point.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Before the job's first file system operation.
    Start,
    /// Once the storage root exists (a new root: right after its `mkdir`
    /// and the fsync that follows; an existing one: right after the job
    /// manifest is renamed into it, before that is durable).
    StorageRoot,
    /// Right after the sink's first checkpoint after the initial one is
    /// durable, before its window is committed.
    FirstCheckpoint,
    /// Right after the middle window is published (renamed), before the
    /// output directory is fsync'd.
    MidRun,
    /// Right after the sink's final checkpoint is renamed into place,
    /// before it is durable.
    BeforeEnd,
}

impl Point {
    const ALL: [Point; 5] = [
        Point::Start,
        Point::StorageRoot,
        Point::FirstCheckpoint,
        Point::MidRun,
        Point::BeforeEnd,
    ];

    fn trigger(self, layout: Layout, reference: &Reference) -> Trigger {
        let storage = layout.storage();
        match self {
            Point::Start => Trigger::after_ops(0),
            Point::StorageRoot if layout == Layout::NewStorageRoot => Trigger::after(OpKind::Mkdir, storage, 1, 1),
            Point::StorageRoot => Trigger::after(OpKind::Rename, format!("{storage}/.manifest"), 1, 0),
            // The first fsync of the sink's directory is its initial
            // checkpoint's.
            Point::FirstCheckpoint => Trigger::after(OpKind::Fsyncdir, format!("{storage}/sink"), 2, 0),
            Point::MidRun => {
                let middle = reference.windows[reference.windows.len() / 2];
                Trigger::after(
                    OpKind::Rename,
                    format!("{}/{}", layout.output(), window_name(middle)),
                    1,
                    0,
                )
            }
            Point::BeforeEnd => Trigger::after(
                OpKind::Rename,
                format!("{storage}/{}", reference.final_checkpoint),
                1,
                0,
            ),
        }
    }
}

/// Runs `job` until a cut fires (returns the operation it fired at, the job
/// killed and the cut applied) or it completes (`None`).
fn until_cut(machine: &mut Machine, mut job: Job, context: &str) -> Option<String> {
    loop {
        match job.next(&machine.fs, context) {
            Event::Cut(at) => {
                machine.power_cut(Some(job));
                return Some(at);
            }
            Event::Eof => {
                job.finish(&machine.fs, context);
                return None;
            }
            Event::Line(_) => {}
        }
    }
}

#[test]
fn power_cuts_at_chosen_points_keep_the_output_exact() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    let reference = reference();
    // Every case runs, so a failure shows every point and layout it breaks.
    let mut failed = Vec::new();
    for layout in Layout::ALL {
        for point in Point::ALL {
            let context = format!("{layout:?}, cut at {point:?}");
            let case = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut machine = Machine::new(layout);
                let storage = layout.storage();
                machine
                    .fs
                    .set_horizon(format!("{storage}/{}", reference.final_checkpoint));
                let job = machine.start();
                machine.arm(&job, point.trigger(layout, reference));
                let at = until_cut(&mut machine, job, &context);
                let at = at.unwrap_or_else(|| panic!("{context}: the job completed without reaching the cut point"));
                println!("{context}: the power went off before {at}");
                machine.check_prefix(reference, &context);
                machine.complete_and_check(false, reference, &context);
            }));
            if case.is_err() {
                failed.push(context);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "power cuts broke the output in: {failed:#?} (each case's panic is above)"
    );
    println!("power_loss: 15 chosen cuts in {:?}", started.elapsed());
}

#[test]
fn power_cuts_at_random_points_keep_the_output_exact() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    let seed = seed();
    println!("power_loss seed {seed} (rerun with CHECKPOINT_POWER_SEED={seed})");
    let reference = reference();
    let mut rng = Rng(seed);
    let cases = std::env::var("CHECKPOINT_POWER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(RANDOM_CASES);
    let mut cuts = 0;
    for case in 0..cases {
        let layout = Layout::ALL[case % Layout::ALL.len()];
        let mut machine = Machine::new(layout);
        let planned = 1 + rng.below(3);
        let mut completed = false;
        for cut in 0..planned {
            let gate = rng.below(reference.checkpoint_reports);
            let after = rng.below(60);
            let context = format!(
                "seed {seed}, case {case} ({layout:?}), cut {cut}: {after} operations after {gate} progress lines"
            );
            let mut job = machine.start();
            // Cuts land anywhere: in a new job's start-up, before its initial
            // checkpoints are durable, as well as after its last one.
            let mut seen = 0;
            let job = loop {
                if seen >= gate {
                    break Some(job);
                }
                match job.next(&machine.fs, &context) {
                    Event::Line(line) => {
                        if line.starts_with("checkpoint ") {
                            seen += 1;
                        }
                    }
                    Event::Eof => {
                        job.finish(&machine.fs, &context);
                        completed = true;
                        break None;
                    }
                    Event::Cut(at) => panic!("{context}: a cut fired before one was armed, at {at}"),
                }
            };
            let Some(job) = job else { break };
            machine.arm(&job, Trigger::after_ops(after));
            if until_cut(&mut machine, job, &context).is_none() {
                completed = true;
                break;
            }
            cuts += 1;
            machine.check_prefix(reference, &context);
        }
        machine.complete_and_check(completed, reference, &format!("seed {seed}, case {case} ({layout:?})"));
    }
    println!(
        "power_loss: {cuts} random cuts in {cases} jobs in {:?}",
        started.elapsed()
    );
    // Most first cuts land (only one armed near the job's end can miss): far
    // fewer means the gate or the triggers stopped working, not bad luck.
    assert!(
        cases < 10 || cuts * 2 >= cases,
        "seed {seed}: only {cuts} of the cuts planned in {cases} jobs fired"
    );
}

#[test]
fn the_model_keeps_only_what_was_fsynced() {
    if !fuse_available() {
        return;
    }
    let mut machine = Machine::new(Layout::Existing);
    let root = machine.mountpoint.clone();
    let sync = |p: &Path| File::open(p).and_then(|f| f.sync_all()).expect("fsync");
    // A fsync'd directory keeps its entries; a file keeps its fsync'd data
    // only.
    fs::create_dir(root.join("kept")).expect("mkdir");
    sync(&root);
    fs::write(root.join("kept/synced"), "synced").expect("write");
    sync(&root.join("kept/synced"));
    fs::write(root.join("kept/unsynced"), "unsynced").expect("write");
    fs::write(root.join("kept/.tmp"), "new").expect("write");
    sync(&root.join("kept/.tmp"));
    sync(&root.join("kept"));
    // A directory whose parent was not fsync'd since its `mkdir` is lost
    // with what it holds, fsync'd or not.
    fs::create_dir(root.join("lost")).expect("mkdir");
    fs::write(root.join("lost/file"), "x").expect("write");
    sync(&root.join("lost/file"));
    sync(&root.join("lost"));
    // A rename not followed by an fsync of the directory is lost.
    fs::rename(root.join("kept/.tmp"), root.join("kept/synced")).expect("rename");
    // The kernel keeps flock locks for the mount, between processes too.
    let locked = File::open(root.join("kept")).expect("open");
    locked.try_lock().expect("lock");
    let again = File::open(root.join("kept")).expect("open");
    assert!(again.try_lock().is_err(), "a second lock was granted");
    drop((locked, again));
    assert_eq!(fs::read(root.join("kept/synced")).expect("read"), b"new");

    machine.power_cut(None);
    assert!(!root.join("lost").exists(), "a directory never made durable survived");
    assert_eq!(fs::read(root.join("kept/synced")).expect("read"), b"synced");
    assert_eq!(fs::read(root.join("kept/.tmp")).expect("read"), b"new");
    assert_eq!(fs::read(root.join("kept/unsynced")).expect("read"), b"");
    assert!(root.join("out").is_dir() && root.join("checkpoints").is_dir());
}

#[test]
fn the_model_fails_reads_where_told_and_changes_nothing() {
    if !fuse_available() {
        return;
    }
    let machine = Machine::new(Layout::Existing);
    let root = machine.mountpoint.clone();
    fs::create_dir(root.join("dir")).expect("mkdir");
    fs::write(root.join("dir/file"), "bytes").expect("write");
    fs::write(root.join("dirx"), "other").expect("write");
    let before = machine.fs.tree();
    // EACCES at open: the file is still listed, and a regular file.
    machine.fs.fail_reads("dir", FailAt::Open, Errno::EACCES);
    let error = fs::read(root.join("dir/file")).expect_err("open fails");
    assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{error}");
    assert!(fs::metadata(root.join("dir/file")).expect("stat").is_file());
    let listed: Vec<_> = fs::read_dir(root.join("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(listed, ["file"]);
    // Only at or under the path.
    assert_eq!(fs::read(root.join("dirx")).expect("read"), b"other");
    machine.fs.clear_read_faults();
    // EIO at read: the open succeeds.
    machine.fs.fail_reads("dir/file", FailAt::Read, Errno::EIO);
    let mut file = File::open(root.join("dir/file")).expect("open succeeds");
    let error = file.read_to_end(&mut Vec::new()).expect_err("read fails");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert_eq!(machine.fs.tree(), before, "a fault changed the tree");
    // Renamed away from the path, it reads again.
    fs::rename(root.join("dir/file"), root.join("dir/moved")).expect("rename");
    assert_eq!(fs::read(root.join("dir/moved")).expect("read"), b"bytes");
    machine.fs.clear_read_faults();
}

#[test]
fn directories_from_create_dir_all_durable_survive_a_power_cut() {
    if !fuse_available() {
        return;
    }
    let mut machine = Machine::new(Layout::Existing);
    let root = machine.mountpoint.clone();
    checkpoint_core::create_dir_all_durable(root.join("a/b/c")).expect("create durably");
    // An existing directory whose entry is not durable yet (its creator
    // died before the fsync) becomes durable when created again.
    fs::create_dir(root.join("left")).expect("mkdir");
    checkpoint_core::create_dir_all_durable(root.join("left")).expect("create durably again");
    fs::create_dir_all(root.join("x/y/z")).expect("create");
    machine.power_cut(None);
    assert!(
        root.join("a/b/c").is_dir(),
        "a directory from create_dir_all_durable was lost"
    );
    assert!(root.join("left").is_dir(), "an existing directory was not made durable");
    assert!(
        !root.join("x").exists(),
        "the model kept a directory nobody made durable"
    );
}

/// The job's operators, as their checkpoint directories are named.
const OPERATORS: [&str; 3] = ["lines", "number", "sink"];

/// A job stopped half-way by a power cut (right after the sink's fourth
/// checkpoint after the initial one is durable): its checkpoints go past
/// the committed window and its output is partly published.
fn stopped_half_way(reference: &Reference, context: &str) -> Machine {
    let mut machine = Machine::new(Layout::Existing);
    let job = machine.start();
    let storage = Layout::Existing.storage();
    machine.arm(&job, Trigger::after(OpKind::Fsyncdir, format!("{storage}/sink"), 5, 0));
    let at = until_cut(&mut machine, job, context);
    assert!(at.is_some(), "{context}: the job completed before the cut");
    machine.check_prefix(reference, context);
    machine
}

/// The newest checkpoint of `operator` (the file's path relative to the
/// mount, and its window).
fn newest_checkpoint(machine: &Machine, operator: &str) -> (String, WindowId) {
    let dir = format!("{}/{operator}", machine.layout.storage());
    let window = machine
        .fs
        .tree()
        .keys()
        .filter_map(|path| path.strip_prefix(&format!("{dir}/")))
        .filter(|name| name.len() == 16)
        .filter_map(|name| u64::from_str_radix(name, 16).ok())
        .max()
        .map(WindowId::from_u64)
        .unwrap_or_else(|| panic!("{operator} has no checkpoint"));
    (format!("{dir}/{}", window_name(window)), window)
}

/// Fails the test, naming every path that differs, unless `after` equals
/// `before`.
fn assert_unchanged(before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>, context: &str) {
    let differ: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| match (before.contains_key(path), after.contains_key(path)) {
            (true, false) => format!("removed {path}"),
            (false, true) => format!("added {path}"),
            _ => format!("changed {path}"),
        })
        .collect();
    assert!(differ.is_empty(), "{context}: the tree changed: {differ:#?}");
}

/// The two ways a file cannot be read: EIO at each read (a bad disk) and
/// EACCES at its open (a file of mode 000, which root cannot get from
/// `chmod`), with how `std::io::Error` describes each.
const READ_FAULTS: [(FailAt, Errno, &str); 2] = [
    (FailAt::Read, Errno::EIO, "Input/output error"),
    (FailAt::Open, Errno::EACCES, "Permission denied"),
];

#[test]
fn an_unreadable_newest_checkpoint_stops_the_restart_and_changes_nothing() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    let reference = reference();
    let storage_dir = Layout::Existing.storage();
    for target in OPERATORS.iter().copied().chain([".manifest"]) {
        let context = format!("newest checkpoint of {target} unreadable");
        let mut machine = stopped_half_way(reference, &context);
        let (path, window) = if target == ".manifest" {
            (format!("{storage_dir}/.manifest"), None)
        } else {
            let (path, window) = newest_checkpoint(&machine, target);
            (path, Some(window))
        };
        for (at, errno, text) in READ_FAULTS {
            let context = format!("{context} ({text} at {at:?}: {path})");
            machine.fs.fail_reads(&path, at, errno);
            let before = machine.fs.tree();
            let (lines, stderr) = machine.start().failure(&machine.fs, &context);
            let named = match window {
                Some(window) => {
                    stderr.contains(&format!("operator {target:?} at window {window}"))
                        && stderr.contains("cannot be read")
                        && stderr.contains(&window_name(window))
                }
                None => stderr.contains(".manifest"),
            };
            assert!(
                named && stderr.contains(text),
                "{context}: the restart's error does not name the file and its error:\n{stderr}"
            );
            assert!(
                !lines.iter().any(|l| l.starts_with("checkpoint ")),
                "{context}: the failed restart saved checkpoints: {lines:?}"
            );
            println!("{context}: {}", stderr.trim());
            assert_unchanged(&before, &machine.fs.tree(), &context);
            // What `checkpoint verify` shows, from the same plan, in this
            // process: the file is unreadable, not corrupt.
            let storage = FsStorageAgent::new(machine.storage()).expect("storage");
            match window {
                Some(window) => {
                    let manifest = storage.load_manifest().expect("manifest").expect("a manifest");
                    let manifest = JobManifest::from_bytes(&manifest).expect("manifest");
                    let plan = plan_from_storage(&storage, &manifest).expect("plan");
                    let unreadable: Vec<_> = plan
                        .unreadable
                        .iter()
                        .map(|b| (b.operator.as_str(), b.window))
                        .collect();
                    assert_eq!(unreadable, [(target, window)], "{context}: the plan's unreadable files");
                    assert!(plan.corrupt.is_empty(), "{context}: called corrupt: {:?}", plan.corrupt);
                    assert!(
                        plan.problem().is_some_and(|p| p.contains("cannot be read")),
                        "{context}: {:?}",
                        plan.problem()
                    );
                }
                None => {
                    let error = storage.load_manifest().expect_err("an unreadable manifest");
                    assert!(error.to_string().contains(text), "{context}: {error}");
                }
            }
            assert_unchanged(
                &before,
                &machine.fs.tree(),
                &format!("{context}, planned in this process"),
            );
            machine.fs.clear_read_faults();
        }
        // Readable again: the job resumes and publishes exactly the
        // reference.
        machine.complete_and_check(false, reference, &format!("{context}, then readable again"));
    }
    println!("power_loss: unreadable newest checkpoints in {:?}", started.elapsed());
}

#[test]
fn a_corrupt_newest_checkpoint_is_set_aside_and_the_output_stays_exact() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    let reference = reference();
    for operator in OPERATORS {
        let context = format!("newest checkpoint of {operator} corrupt");
        let mut machine = stopped_half_way(reference, &context);
        let (path, window) = newest_checkpoint(&machine, operator);
        // Flipped through the mount, and made durable, as a disk that
        // returns wrong bytes.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(machine.path(&path))
            .expect("open the checkpoint");
        let mut bytes = fs::read(machine.path(&path)).expect("read the checkpoint");
        let at = bytes.len() - 6;
        bytes[at] ^= 0x40;
        std::os::unix::fs::FileExt::write_all_at(&file, &bytes[at..=at], at as u64).expect("flip a byte");
        file.sync_all().expect("fsync the checkpoint");
        drop(file);
        let lines = machine.start().finish(&machine.fs, &context);
        let note = format!("note set aside the corrupt checkpoint of {operator} at {window}");
        assert!(
            lines.iter().any(|l| l.starts_with(&note)),
            "{context}: no note of the set-aside checkpoint: {lines:?}"
        );
        let aside = format!(
            "{}/{operator}/.{}.corrupt",
            machine.layout.storage(),
            window_name(window)
        );
        let check_aside = |machine: &Machine, when: &str| {
            let tree = machine.fs.tree();
            assert_eq!(
                tree.get(&aside),
                Some(&Entry::File(bytes.clone())),
                "{context}: {when}, the corrupt checkpoint is not set aside as {aside} with its bytes"
            );
            // The job ran past the window again and may have saved a new,
            // good checkpoint there (retention decides whether it stays):
            // never the corrupt bytes.
            if let Some(Entry::File(now)) = tree.get(&path) {
                assert!(
                    checkpoint_core::Snapshot::verify(now).is_ok(),
                    "{context}: {when}, {path} holds a snapshot that does not verify"
                );
            }
        };
        check_aside(&machine, "after the restart");
        // Run once more (a completed job publishes nothing new), cut the
        // power, compare with the reference.
        machine.complete_and_check(true, reference, &context);
        check_aside(&machine, "after a power cut");
    }
    println!("power_loss: corrupt newest checkpoints in {:?}", started.elapsed());
}

#[test]
fn a_directory_named_like_a_checkpoint_is_left_alone() {
    if !fuse_available() {
        return;
    }
    let reference = reference();
    let context = "directories named like the newest checkpoints";
    let mut machine = stopped_half_way(reference, context);
    let mut dirs = Vec::new();
    for operator in OPERATORS {
        let (_, newest) = newest_checkpoint(&machine, operator);
        let later = WindowId::from_u64(newest.as_u64() + 1);
        let dir = format!("{}/{operator}/{}", machine.layout.storage(), window_name(later));
        fs::create_dir(machine.path(&dir)).expect("mkdir");
        fs::write(machine.path(&format!("{dir}/inside")), "kept").expect("write");
        dirs.push(dir);
    }
    machine.start().finish(&machine.fs, context);
    let tree = machine.fs.tree();
    for dir in &dirs {
        assert!(
            tree.get(dir) == Some(&Entry::Dir)
                && tree.get(&format!("{dir}/inside")) == Some(&Entry::File(b"kept".to_vec())),
            "{context}: the restart did not leave {dir} alone"
        );
    }
    machine.complete_and_check(true, reference, context);
}

#[test]
fn an_unreadable_checkpoint_during_a_recovery_fails_the_job_clearly() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    let reference = reference();
    let dir = format!("{}/number", Layout::Existing.storage());
    for (at, errno, text) in READ_FAULTS {
        let context = format!("a recovery of number, its checkpoints unreadable ({text} at {at:?})");
        let mut machine = Machine::new(Layout::Existing);
        // Nothing reads a checkpoint while the job runs, but a recovery.
        machine.fs.fail_reads(&dir, at, errno);
        let (lines, stderr) = machine
            .start_with(&[("POWER_LOSS_JOB_FAIL", "number:6")])
            .failure(&machine.fs, &context);
        assert!(
            lines.iter().any(|l| l.starts_with("checkpoint number ")),
            "{context}: the job failed before its first checkpoint: {lines:?}\n{stderr}"
        );
        assert!(
            stderr.contains("cannot be used")
                && stderr.contains("operator \"number\" at window")
                && stderr.contains(text)
                && !stderr.contains("out of order"),
            "{context}: not a clear error:\n{stderr}"
        );
        println!("{context}: {}", stderr.trim());
        // It names the checkpoint, which is still there.
        let name = stderr
            .split_once(&format!("{dir}/"))
            .and_then(|(_, rest)| rest.get(..16))
            .unwrap_or_else(|| panic!("{context}: the error names no checkpoint file:\n{stderr}"));
        let window = WindowId::from_u64(u64::from_str_radix(name, 16).expect("a window file name"));
        assert!(
            stderr.contains(&format!("operator \"number\" at window {window} cannot be used")),
            "{context}: the error names another window than its file:\n{stderr}"
        );
        assert!(
            matches!(machine.fs.tree().get(&format!("{dir}/{name}")), Some(Entry::File(_))),
            "{context}: the checkpoint {name} it names is gone"
        );
        // Readable again: a restart resumes and publishes exactly the
        // reference.
        machine.fs.clear_read_faults();
        machine.complete_and_check(false, reference, &format!("{context}, then readable again"));
    }
    println!(
        "power_loss: unreadable checkpoints in a recovery in {:?}",
        started.elapsed()
    );
}
